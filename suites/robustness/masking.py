"""Telling a real defence from gradient masking: the checks every robustness run records.

A model can look robust because its gradients are useless to the attacker (saturated
softmax, quantised inputs, non-differentiable layers) rather than because no adversarial
example exists. Each check below compares attacks whose results must be ordered in a
certain way on a genuinely robust model; a violation flags the model, with the evidence.
All checks are at one eps (`eps`) on the same points; accuracies are against the true labels.

  zero_gradient               fraction of inputs whose CE gradient w.r.t. the input is
                              exactly zero > tolerance
  pgd_weaker_than_fgsm        PGD accuracy > FGSM accuracy + tolerance
  accuracy_increases_with_eps an iterative attack's (or the worst case's) accuracy rises
                              with eps by more than tolerance (FGSM is exempt: one large
                              linear step may legitimately overshoot)
  unbounded_eps_not_chance    PGD without random start at an unbounded eps (the whole input
                              range; 100x the largest grid eps for unbounded inputs) leaves
                              accuracy above chance (1/K) + tolerance
  more_iterations_weaker      PGD with 2x the steps (and one more restart when PGD uses
                              several) has higher accuracy than PGD + tolerance
  dlr_much_stronger_than_ce   APGD-CE accuracy - APGD-T(DLR) accuracy > dlr_gap (the
                              scale-invariant DLR loss finds much more than cross-entropy)
  black_box_beats_white_box   a gradient-free random search (or a transfer attack from an
                              independently trained copy) has lower accuracy than the
                              best white-box attack - tolerance
  noise_beats_pgd             random noise of the same eps has lower accuracy than PGD -
                              tolerance

`tolerance` is an absolute accuracy difference, raised to at least 2/n so that a difference
of one point at small n never flags. A check that cannot run (e.g. a single eps) is recorded
with flagged=None and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from workbench.suites.robustness import functional as A
from workbench.errors import ConfigError

CHECKS: tuple[str, ...] = (
    "zero_gradient",
    "pgd_weaker_than_fgsm",
    "accuracy_increases_with_eps",
    "unbounded_eps_not_chance",
    "more_iterations_weaker",
    "dlr_much_stronger_than_ce",
    "black_box_beats_white_box",
    "noise_beats_pgd",
)


@dataclass(frozen=True)
class MaskingCheck:
    """One check: `flagged` True (masking suspected), False (passed) or None (not run),
    `reason` the evidence (or why it did not run), `values` the numbers compared."""

    check: str
    flagged: bool | None
    reason: str
    values: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MaskingReport:
    """All checks plus the per-sample correctness (B,) bool of the extra attacks the checks
    ran (so a caller can fold them into its worst case)."""

    checks: tuple[MaskingCheck, ...]
    correct: dict[str, torch.Tensor]
    accuracy: dict[str, float]

    @property
    def n_flags(self) -> int:
        return sum(1 for c in self.checks if c.flagged)


def _acc(c: torch.Tensor) -> float:
    return float(c.float().mean())


def _pass_or_flag(name: str, bad: bool, msg_bad: str, msg_ok: str, **values: float) -> MaskingCheck:
    return MaskingCheck(name, bool(bad), msg_bad if bad else msg_ok, {k: float(v) for k, v in values.items()})


def check_increasing(curves: dict[str, list[tuple[float, float]]], tol: float) -> MaskingCheck:
    """accuracy_increases_with_eps from accuracy-vs-eps curves {attack: [(eps, acc), ...]}."""
    name = "accuracy_increases_with_eps"
    worst: tuple[float, str, float, float] | None = None
    usable = {a: sorted(c) for a, c in curves.items() if a != "fgsm" and len(c) >= 2}
    if not usable:
        return MaskingCheck(name, None, "needs an iterative attack at two or more eps values")
    for attack, pts in usable.items():
        running_min = pts[0][1]
        for eps, acc in pts[1:]:
            rise = acc - running_min
            if worst is None or rise > worst[0]:
                worst = (rise, attack, eps, acc)
            running_min = min(running_min, acc)
    assert worst is not None
    rise, attack, eps, acc = worst
    return _pass_or_flag(
        name, rise > tol,
        f"{attack} accuracy rises by {rise:.3f} to {acc:.3f} at eps={eps:g} (> tolerance {tol:.3f})",
        f"accuracy never rises with eps by more than {tol:.3f} (largest rise {rise:.3f})",
        largest_rise=rise,
    )


def gradient_masking_checks(
    model: A.Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    bounds: A.Bounds = (0.0, 1.0),
    num_classes: int,
    known: dict[str, torch.Tensor] | None = None,
    curves: dict[str, list[tuple[float, float]]] | None = None,
    pgd_steps: int = 10,
    pgd_restarts: int = 1,
    apgd_steps: int = 20,
    apgd_targets: int = 3,
    queries: int = 100,
    unbounded_eps: float | None = None,
    tolerance: float = 0.02,
    dlr_gap: float = 0.1,
    transfer_model: A.Model | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> MaskingReport:
    """Run every check of the module docstring at `eps` on x (B, ...), y (B,) true labels.

    `known` maps attack names ("clean", "fgsm", "pgd", "apgd_ce", "apgd_t") to per-sample
    correctness (B,) bool already computed at this eps (those attacks are not re-run);
    `curves` maps attack names to [(eps, accuracy)] for the monotonicity check."""
    if num_classes < 2:
        raise ConfigError(f"Expected `num_classes` >= 2, got {num_classes!r}.")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n = x.shape[0]
    tol = max(float(tolerance), 2.0 / max(n, 1))
    known = dict(known or {})

    if unbounded_eps is not None:
        big_eps = float(unbounded_eps)
    elif bounds is not None:
        width = bounds[1] - bounds[0]
        big_eps = width if norm == "linf" else width * float(x[0].numel()) ** 0.5
    else:
        big_eps = 100.0 * eps
    common = dict(norm=norm, bounds=bounds, batch_size=batch_size)
    # each runner gets the model restricted to the rows it attacks (token models bound to their ids)
    runners: dict[str, Callable[[A.Model, torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "fgsm": lambda m, xs, ys: A.fgsm(m, xs, ys, eps=eps, **common),
        "pgd": lambda m, xs, ys: A.pgd(m, xs, ys, eps=eps, steps=pgd_steps, restarts=pgd_restarts,
                                       generator=gen, **common),
        "apgd_ce": lambda m, xs, ys: A.apgd(m, xs, ys, eps=eps, steps=apgd_steps, generator=gen, **common),
        "apgd_t": lambda m, xs, ys: A.apgd_targeted(m, xs, ys, eps=eps, steps=apgd_steps, n_targets=apgd_targets,
                                                    generator=gen, **common),
        "pgd_more_iterations": lambda m, xs, ys: A.pgd(m, xs, ys, eps=eps, steps=2 * pgd_steps,
                                                       restarts=pgd_restarts + (pgd_restarts > 1), generator=gen,
                                                       **common),
        "pgd_unbounded": lambda m, xs, ys: A.pgd(m, xs, ys, eps=big_eps, steps=max(pgd_steps, 10),
                                                 random_start=False, generator=gen, **common),
        "random_search": lambda m, xs, ys: A.random_search(m, xs, ys, eps=eps, queries=queries, generator=gen,
                                                           **common),
        "random_noise": lambda m, xs, ys: A.random_noise(xs, eps=eps, norm=norm, bounds=bounds, generator=gen),
    }
    if transfer_model is not None:
        runners["transfer"] = lambda m, xs, ys: A.pgd(transfer_model, xs, ys, eps=eps, steps=pgd_steps,
                                                      restarts=pgd_restarts, generator=gen, **common)

    def correct_of(m: A.Model, xa: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return (A.predict_logits(m, xa, batch_size=batch_size).argmax(1) == ys).cpu()

    correct: dict[str, torch.Tensor] = {}
    correct["clean"] = known["clean"].cpu().bool() if "clean" in known else correct_of(model, x, y)
    # only correctly classified points can be flipped: attack those, count the rest as wrong
    idx = correct["clean"].nonzero().squeeze(1).to(x.device)
    for name, run in runners.items():
        if name in known:
            correct[name] = known[name].cpu().bool()
            continue
        c = torch.zeros(n, dtype=torch.bool)
        if idx.numel():
            m = A.restrict(model, idx)
            c[idx.cpu()] = correct_of(m, run(m, x[idx], y[idx]), y[idx])
        correct[name] = c
    acc = {k: _acc(v) for k, v in correct.items()}
    white = ("fgsm", "pgd", "apgd_ce", "apgd_t", "pgd_more_iterations")
    white_worst = correct["clean"].clone()
    for k in white:
        white_worst &= correct[k]
    acc["white_box_worst_case"] = _acc(white_worst)

    checks: list[MaskingCheck] = []
    zg = A.zero_gradient_fraction(model, x, y, batch_size=batch_size)
    checks.append(_pass_or_flag(
        "zero_gradient", zg > tol,
        f"{zg:.1%} of inputs have an exactly zero loss gradient (> {tol:.1%})",
        f"{zg:.1%} of inputs have a zero loss gradient", fraction=zg))
    checks.append(_pass_or_flag(
        "pgd_weaker_than_fgsm", acc["pgd"] > acc["fgsm"] + tol,
        f"PGD accuracy {acc['pgd']:.3f} > FGSM accuracy {acc['fgsm']:.3f} + {tol:.3f}",
        f"PGD accuracy {acc['pgd']:.3f} <= FGSM accuracy {acc['fgsm']:.3f} + {tol:.3f}",
        pgd=acc["pgd"], fgsm=acc["fgsm"]))
    checks.append(check_increasing(curves or {}, tol))
    chance = 1.0 / num_classes
    checks.append(_pass_or_flag(
        "unbounded_eps_not_chance", acc["pgd_unbounded"] > chance + tol,
        f"PGD at unbounded eps={big_eps:g} leaves accuracy {acc['pgd_unbounded']:.3f} > chance {chance:.3f} + {tol:.3f}",
        f"PGD at unbounded eps={big_eps:g} drives accuracy to {acc['pgd_unbounded']:.3f} (chance {chance:.3f})",
        pgd_unbounded=acc["pgd_unbounded"], chance=chance, eps=big_eps))
    checks.append(_pass_or_flag(
        "more_iterations_weaker", acc["pgd_more_iterations"] > acc["pgd"] + tol,
        f"PGD with 2x steps: accuracy {acc['pgd_more_iterations']:.3f} > {acc['pgd']:.3f} + {tol:.3f}",
        f"more steps/restarts do not raise accuracy ({acc['pgd_more_iterations']:.3f} vs {acc['pgd']:.3f})",
        pgd=acc["pgd"], pgd_more_iterations=acc["pgd_more_iterations"]))
    gap = acc["apgd_ce"] - acc["apgd_t"]
    checks.append(_pass_or_flag(
        "dlr_much_stronger_than_ce", gap > dlr_gap,
        f"APGD-T (DLR) accuracy {acc['apgd_t']:.3f} is {gap:.3f} below APGD-CE {acc['apgd_ce']:.3f} (> {dlr_gap})",
        f"APGD-T (DLR) {acc['apgd_t']:.3f} vs APGD-CE {acc['apgd_ce']:.3f}: gap {gap:.3f} <= {dlr_gap}",
        apgd_ce=acc["apgd_ce"], apgd_t=acc["apgd_t"], gap=gap))
    black = {k: acc[k] for k in ("random_search", "transfer") if k in acc}
    best_black = min(black, key=black.get)  # type: ignore[arg-type]
    best_white = min(acc[k] for k in white)
    checks.append(_pass_or_flag(
        "black_box_beats_white_box", black[best_black] < best_white - tol,
        f"{best_black} accuracy {black[best_black]:.3f} < best white-box {best_white:.3f} - {tol:.3f}",
        f"black-box ({', '.join(f'{k} {v:.3f}' for k, v in black.items())}) does not beat white-box {best_white:.3f}",
        best_white_box=best_white, **black))
    checks.append(_pass_or_flag(
        "noise_beats_pgd", acc["random_noise"] < acc["pgd"] - tol,
        f"random noise accuracy {acc['random_noise']:.3f} < PGD accuracy {acc['pgd']:.3f} - {tol:.3f}",
        f"random noise ({acc['random_noise']:.3f}) is weaker than PGD ({acc['pgd']:.3f})",
        random_noise=acc["random_noise"], pgd=acc["pgd"]))
    extra = {k: correct[k] for k in runners if k not in known}
    return MaskingReport(checks=tuple(checks), correct=extra, accuracy=acc)
