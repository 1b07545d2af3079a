"""The robustness suite: adversarial attacks with a worst-case headline, gradient-masking
checks, adversarially trained variants side by side, corruptions and drift.

The maths lives in `functional.py` (attacks), `masking.py`, `corruptions.py`, `drift.py` and
`training.py`; this file only wires them to the Suite protocol. See README.md (the suite
card) for the metrics, tags and artifacts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from workbench.errors import ConfigError, check_positive_int
from workbench.records import MetricRecord
from workbench.suite import ModelHandle, RunContext, Suite

ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "apgd_ce", "apgd_dlr", "apgd_t", "random_search")
RECIPES: tuple[str, ...] = ("pgd_at", "fgsm_rs", "trades")


def _tuple(name: str, value: Any, kind: type | tuple[type, ...]) -> tuple:
    if isinstance(value, (list, tuple)):
        out = tuple(value)
    else:
        raise ConfigError(f"Expected `{name}` to be a list, got {type(value).__name__} {value!r}.")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ConfigError(f"Expected every element of `{name}` to be {kind}, got {v!r}.")
    return out


def _prob(name: str, v: Any, *, open_low: bool = True) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not ((0 < v if open_low else 0 <= v) and v < 1):
        raise ConfigError(f"Expected `{name}` in {'(' if open_low else '['}0, 1), got {v!r}.")


class RobustnessSuite(Suite):
    name: ClassVar[str] = "robustness"
    description: ClassVar[str] = (
        "Adversarial robustness (FGSM, PGD, APGD-CE, APGD-T; per-sample worst case), gradient-masking "
        "checks, adversarially trained variants, corruptions at several severities and input drift."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    modalities: ClassVar[frozenset[str] | None] = frozenset({"image", "tabular", "tokens"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """n_samples: test points for corruptions and drift; attack_samples: how many of them
        are attacked (default: all). eps: the radius grid, in input units for images (pixel range of data.bounds) and
        standardised tabular features (train-std units), relative to the embedding scale for
        token models (see README). attacks run in the order given; the headline worst case
        is per sample over all of them (and, at masking_eps, the masking-check attacks)."""

        n_samples: int = 500
        attack_samples: int | None = None
        eps: tuple[float, ...] = (0.05, 0.1, 0.2)
        norm: str = "linf"
        attacks: tuple[str, ...] = ("fgsm", "pgd", "apgd_ce", "apgd_t")
        pgd_steps: int = 20
        apgd_steps: int = 50
        apgd_targets: int = 9
        restarts: int = 1
        masking_checks: bool = True
        masking_eps: float | None = None
        masking_tolerance: float = 0.02
        dlr_gap: float = 0.1
        random_search_queries: int = 300
        transfer_attack: bool = False
        n_examples: int = 8
        corruptions: tuple[str, ...] = ()
        severities: tuple[int, ...] = (1, 2, 3, 4, 5)
        drift: bool = True
        drift_alpha: float = 0.05
        drift_permutations: int = 200
        psi_floor: float = 0.1
        psi_bins: int = 10
        decay_threshold: float = 0.1
        adversarial_training: tuple[str, ...] = ()
        training_eps: float | None = None
        training_epochs: int | None = None

        def __post_init__(self) -> None:
            from workbench.suites.robustness.corruptions import CORRUPTIONS
            from workbench.errors import did_you_mean

            set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
            check_positive_int("n_samples", self.n_samples)
            if self.attack_samples is not None:
                check_positive_int("attack_samples", self.attack_samples)
            eps = _tuple("eps", self.eps, (int, float))
            if not eps or any(not (math.isfinite(e) and e >= 0) for e in eps):
                raise ConfigError(f"Expected `eps` to be a non-empty list of finite floats >= 0, got {list(eps)}.")
            set_("eps", tuple(sorted(float(e) for e in eps)))
            if self.norm not in ("linf", "l2"):
                raise ConfigError(f"Expected `norm` to be one of ['linf', 'l2'], got {self.norm!r}.")
            attacks = _tuple("attacks", self.attacks, str)
            for a in attacks:
                if a not in ATTACKS:
                    raise ConfigError(f"Unknown attack {a!r}.{did_you_mean(a, ATTACKS)} Valid attacks: {', '.join(ATTACKS)}.")
            if not attacks:
                raise ConfigError(f"Expected at least one attack in `attacks`; valid attacks: {', '.join(ATTACKS)}.")
            set_("attacks", attacks)
            for k in ("pgd_steps", "apgd_steps", "apgd_targets", "restarts", "random_search_queries",
                      "drift_permutations", "psi_bins"):
                check_positive_int(k, getattr(self, k))
            check_positive_int("n_examples", self.n_examples, allow_zero=True)
            if self.masking_eps is not None and not (isinstance(self.masking_eps, (int, float)) and self.masking_eps > 0):
                raise ConfigError(f"Expected `masking_eps` to be a float > 0 or absent, got {self.masking_eps!r}.")
            _prob("masking_tolerance", self.masking_tolerance, open_low=False)
            _prob("dlr_gap", self.dlr_gap)
            _prob("drift_alpha", self.drift_alpha)
            _prob("decay_threshold", self.decay_threshold)
            if isinstance(self.psi_floor, bool) or not isinstance(self.psi_floor, (int, float)) or self.psi_floor < 0:
                raise ConfigError(f"Expected `psi_floor` to be a float >= 0, got {self.psi_floor!r}.")
            corr = _tuple("corruptions", self.corruptions, str)
            for c in corr:
                if c not in CORRUPTIONS:
                    raise ConfigError(f"Unknown corruption {c!r}.{did_you_mean(c, CORRUPTIONS)} "
                                      f"Valid corruptions: {', '.join(CORRUPTIONS)}.")
            set_("corruptions", corr)
            sev = _tuple("severities", self.severities, int)
            if any(not 1 <= s <= 5 for s in sev):
                raise ConfigError(f"Expected `severities` to be ints in 1..5, got {list(sev)}.")
            set_("severities", tuple(sorted(set(sev))))
            at = _tuple("adversarial_training", self.adversarial_training, str)
            for r in at:
                if r not in RECIPES:
                    raise ConfigError(f"Unknown adversarial training recipe {r!r}.{did_you_mean(r, RECIPES)} "
                                      f"Valid recipes: {', '.join(RECIPES)}.")
            set_("adversarial_training", at)
            if self.training_eps is not None and not (isinstance(self.training_eps, (int, float)) and self.training_eps > 0):
                raise ConfigError(f"Expected `training_eps` to be a float > 0 or absent, got {self.training_eps!r}.")
            if self.training_epochs is not None:
                check_positive_int("training_epochs", self.training_epochs)

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU quickstart: 100 attacked points (200 for corruptions and drift), 3 eps, PGD-10,
        # APGD-CE 20 steps + APGD-T 3 targets x 20 steps: <= ~10 s CPU per tiny reference model.
        "quick": {"n_samples": 200, "attack_samples": 100, "eps": (0.05, 0.1, 0.2), "pgd_steps": 10, "apgd_steps": 20, "apgd_targets": 3,
                  "restarts": 1, "random_search_queries": 100, "severities": (1, 3, 5), "drift_permutations": 200,
                  "adversarial_training": ()},
        # GPU: the whole test split, a finer eps grid, AutoAttack-strength settings, the three AT recipes.
        "full": {"n_samples": 10000, "eps": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3), "pgd_steps": 50, "apgd_steps": 100,
                 "apgd_targets": 9, "restarts": 3, "random_search_queries": 1000, "transfer_attack": True,
                 "severities": (1, 2, 3, 4, 5), "drift_permutations": 1000,
                 "adversarial_training": ("fgsm_rs", "pgd_at", "trades")},
    }

    def applicable(self, model: ModelHandle, data: Any) -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        if model.output != "logits":
            return f"suite 'robustness' needs a classifier returning logits (B, K), got output {model.output!r}"
        return None

    # ------------------------------------------------------------------ run
    def run(self, model: ModelHandle, data: Any, ctx: RunContext) -> Any:
        from workbench.torch_utils import derive_seed

        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        p = self.params
        n = ctx.limit(len(data.test), p.n_samples)
        n_att = min(n, p.attack_samples or n)
        perm = torch.randperm(len(data.test), generator=ctx.generator(17))
        test = data.test.subset(perm[:n].sort().values)
        attacked = data.test.subset(perm[:n_att].sort().values)  # a subset of `test`
        metrics: list[MetricRecord] = []
        summary: dict[str, Any] = {
            "modality": data.modality, "norm": p.norm, "eps": list(p.eps), "attacks": list(p.attacks),
            "class_names": list(data.class_names) if data.class_names else [str(k) for k in range(data.num_classes or 0)],
            "bounds": list(data.bounds) if data.bounds else None, "n": n, "n_attacked": n_att, "variants": {}, "notes": [],
        }
        if data.modality == "tabular" and data.bounds is None:
            summary["notes"].append("tabular inputs have no declared bounds: attacks are unbounded (eps in train-std units)")
        seed_of = lambda *keys: derive_seed(ctx.seed, *map(str, keys))  # noqa: E731

        transfer = None
        if p.transfer_attack and p.masking_checks and model.trainer is not None:
            try:
                transfer = model.trainer(seed=ctx.seed + 1)
            except Exception as exc:  # a failed copy only removes the transfer check
                summary["notes"].append(f"transfer attack skipped: training a copy failed ({exc})")
        elif p.transfer_attack and p.masking_checks:
            summary["notes"].append("transfer attack skipped: the model has no trainer (cannot train a copy)")

        variants: list[tuple[str, nn.Module | None, dict[str, Any]]] = [
            ("standard", model.module, {"train_seconds": model.train_seconds, "time_source": "trainer"})
        ]
        train_eps = p.training_eps if p.training_eps is not None else _middle(p.eps)
        for recipe in p.adversarial_training:
            info: dict[str, Any] = {"recipe": recipe, "training_eps": train_eps}
            if model.trainer is None:
                variants.append((recipe, None, {**info, "error": "the model has no trainer (a user model that cannot be retrained)"}))
                continue
            params = {"eps": train_eps, "norm": p.norm, "bounds": list(data.bounds) if data.bounds else None}
            t0 = time.perf_counter()
            try:
                module_v = model.trainer(recipe=recipe, recipe_params=params, epochs=p.training_epochs)
            except Exception as exc:
                variants.append((recipe, None, {**info, "error": f"training failed: {type(exc).__name__}: {exc}"}))
                continue
            wall = time.perf_counter() - t0
            secs = getattr(module_v, "train_seconds", None)
            info.update(train_seconds=secs if secs is not None else wall,
                        time_source="trainer" if secs is not None else "wall clock of trainer() (a cache hit is fast)",
                        trained_with=_describe_recipe(recipe, params, p))
            variants.append((recipe, module_v, info))

        examples_saved = False
        for variant, module_v, info in variants:
            vtags = {"variant": variant}
            if module_v is None:
                metrics.append(MetricRecord.unavailable("robust_accuracy", info["error"], higher_is_better=True,
                                                        unit="fraction", tags={**vtags, "attack": "worst_case"}))
                summary["variants"][variant] = {"error": info["error"]}
                continue
            out = _attack_variant(module_v, data, attacked, p, ctx, variant, seed_of, transfer,
                                  save_examples=not examples_saved and p.n_examples > 0)
            metrics += out["metrics"]
            if out.get("examples") is not None:
                ctx.save_artifact("adversarial_examples", out["examples"])
                examples_saved = True
            secs = info.get("train_seconds")
            if secs is None:
                metrics.append(MetricRecord.unavailable(
                    "training_time", "training time unknown (model loaded from a checkpoint or built by the user)",
                    higher_is_better=False, unit="s", tags=vtags))
            else:
                metrics.append(MetricRecord(name="training_time", value=float(secs), higher_is_better=False, unit="s",
                                            tags={**vtags, "source": info.get("time_source", "trainer")}))
            summary["variants"][variant] = {**out["summary"], "train_seconds": secs,
                                            "trained_with": info.get("trained_with", "standard training")}
        if "masking" in summary["variants"].get("standard", {}):
            ctx.save_artifact("masking_flags", {v: s.get("masking", []) for v, s in summary["variants"].items()})

        corr_metrics, corr_rows, drift_rows = _corruptions_and_drift(model.module, data, test, p, ctx, seed_of)
        metrics += corr_metrics
        summary["corruptions"] = corr_rows
        ctx.save_artifact("corruptions", corr_rows)
        if p.drift:
            ctx.save_artifact("drift", drift_rows)
        ctx.save_artifact("robustness_summary", summary)
        return ctx.result(metrics, config=self.config())

    # Headline: robust accuracy at each eps > 0, the worst case over attacks (this suite
    # reports its own per-example worst case as attack="worst_case"); the masking-check
    # attacks and the clean point (eps = 0) stay in the full table.
    headline_metrics: ClassVar[tuple[str, ...]] = ("robust_accuracy",)
    headline_worst_case: ClassVar[dict[str, str]] = {"robust_accuracy": "attack"}
    headline_detail_tags: ClassVar[frozenset[str]] = frozenset(
        {"steps", "restarts", "targets", "role", "attacks", "eps_absolute"})

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        tags = metric.get("tags") or {}
        if tags.get("role") == "masking_check":
            return False
        try:
            if tags.get("eps") is not None and float(tags["eps"]) == 0.0:
                return False
        except (TypeError, ValueError):
            pass
        return super().is_headline(metric)

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.robustness.figures import robustness_figures

        return robustness_figures(result, Path(run_dir))


# ---------------------------------------------------------------------- helpers


def _middle(values: tuple[float, ...]) -> float:
    positive = [v for v in values if v > 0] or list(values)
    return positive[(len(positive) - 1) // 2]


def _describe_recipe(recipe: str, params: dict[str, Any], p: Any) -> str:
    steps = {"pgd_at": "PGD-7", "fgsm_rs": "FGSM-RS (1 step)", "trades": "TRADES PGD-7 on KL"}[recipe]
    return f"{steps} at eps={params['eps']:g} ({p.norm}); evaluated with {'+'.join(p.attacks)} (stronger)"


def _wilson(successes: int, n: int) -> tuple[float, float] | None:
    # the one proportion interval of workbench.stats (Clopper-Pearson; named in `ci_method`)
    from workbench.stats import proportion_ci

    return proportion_ci(successes, n) if n > 0 else None


def _fraction(name: str, correct: torch.Tensor, tags: dict[str, Any], *, higher: bool = True,
              empty_reason: str = "no examples") -> MetricRecord:
    n = int(correct.numel())
    if n == 0:
        return MetricRecord.unavailable(name, empty_reason, higher_is_better=higher, unit="fraction", n=0, tags=tags)
    k = int(correct.sum())
    from workbench.stats import PROPORTION_METHOD

    return MetricRecord(name=name, value=k / n, higher_is_better=higher, unit="fraction", n=n,
                        ci=_wilson(k, n), tags={**tags, "ci_method": PROPORTION_METHOD})


def _attack_input(module: nn.Module, data: Any, x: torch.Tensor, norm: str) -> dict[str, Any]:
    """What the attacks see: the input itself, or token embeddings via EmbeddingSpace."""
    from workbench.suites.robustness import functional as A

    if data.modality == "tokens":
        try:
            space = A.EmbeddingSpace(module)
        except ConfigError as exc:
            return {"error": f"token model cannot be attacked in embedding space: {exc}"}
        e = space.embed(x)
        scale = A.embedding_eps_scale(e, norm)
        return {"model": space, "x": e, "bounds": None, "scale": scale, "tags": {"space": "embedding"}}
    bounds = tuple(data.bounds) if data.bounds else None
    return {"model": module, "x": x, "bounds": bounds, "scale": 1.0, "tags": {}}


def _attack_variant(module: nn.Module, data: Any, test: Any, p: Any, ctx: RunContext, variant: str, seed_of: Any,
                    transfer: nn.Module | None, *, save_examples: bool) -> dict[str, Any]:
    from workbench.suites.robustness import functional as A
    from workbench.suites.robustness.masking import gradient_masking_checks
    from workbench.torch_utils import module_device

    device = module_device(module)
    x, y = test.x.to(device), test.y.to(device)
    vt = {"variant": variant}
    metrics: list[MetricRecord] = []
    space = _attack_input(module, data, x, p.norm)
    if "error" in space:
        metrics.append(MetricRecord.unavailable("robust_accuracy", space["error"], higher_is_better=True,
                                                unit="fraction", tags={**vt, "attack": "worst_case"}))
        return {"metrics": metrics, "summary": {"error": space["error"]}}
    model, xin, bounds, scale, stags = space["model"], space["x"], space["bounds"], space["scale"], space["tags"]
    bs = ctx.batch_size
    logits = A.predict_logits(model, xin, batch_size=bs)
    clean = (logits.argmax(1) == y).cpu()
    metrics.append(_fraction("clean_accuracy", clean, {**vt}))
    idx = clean.nonzero().squeeze(1).to(device)  # only clean-correct points can be flipped
    k = data.num_classes or logits.shape[1]
    class_names = list(data.class_names) if data.class_names else [str(c) for c in range(k)]
    check_eps = p.masking_eps if p.masking_eps is not None else _middle(p.eps)
    if check_eps not in p.eps and p.masking_checks:
        ctx.log(f"robustness: masking_eps={check_eps} is not in the eps grid; the checks run at it separately")
    eps_list = sorted(set(p.eps) | ({check_eps} if p.masking_checks else set()))
    curves: dict[str, dict[str, list[float]]] = {}
    masking_out: list[dict[str, Any]] = []
    examples = None
    norm_unit = f"{p.norm} norm, " + ("relative to the embedding scale" if stags else "input units")
    for eps in eps_list:
        eps_abs = eps * scale
        etags = {**vt, "eps": eps, "norm": p.norm, **stags}
        if stags:
            etags["eps_absolute"] = round(eps_abs, 6)
        correct: dict[str, torch.Tensor] = {}
        advs: dict[str, torch.Tensor] = {}
        for attack in p.attacks:
            gen = torch.Generator().manual_seed(seed_of(variant, eps, attack))
            x_adv = xin.clone()
            if idx.numel() > 0 and eps > 0:
                x_adv[idx] = _run_attack(attack, model, xin[idx], y[idx], eps_abs, bounds, p, gen, bs)
            c = clean.clone()
            if idx.numel() > 0:
                c[idx.cpu()] = (A.predict_logits(model, x_adv[idx], batch_size=bs).argmax(1) == y[idx]).cpu()
            correct[attack], advs[attack] = c, x_adv
            atags = {**etags, "attack": attack, **_attack_tags(attack, p)}
            if eps in p.eps:
                metrics += _attack_metrics(c, clean, x_adv - xin, y.cpu(), atags, class_names, p.norm, scale, norm_unit)
                _append_curve(curves, attack, eps, c)
        worst = clean.clone()
        first_fool = torch.full_like(y.cpu(), -1)
        for j, attack in enumerate(p.attacks):
            newly = worst & ~correct[attack]
            first_fool[newly] = j
            worst &= correct[attack]
        included = list(p.attacks)
        if p.masking_checks and eps == check_eps:
            gen = torch.Generator().manual_seed(seed_of(variant, eps, "masking"))
            known = {"clean": clean, **{a: correct[a] for a in ("fgsm", "pgd", "apgd_ce", "apgd_t") if a in correct}}
            curve_pts = {a: list(zip(c["eps"], c["accuracy"])) for a, c in curves.items()}
            tmodel = None
            if transfer is not None and not stags:
                tmodel = transfer
            rep = gradient_masking_checks(
                model, xin, y, eps=eps_abs, norm=p.norm, bounds=bounds, num_classes=k, known=known,
                curves=None, pgd_steps=p.pgd_steps, pgd_restarts=p.restarts, apgd_steps=p.apgd_steps,
                apgd_targets=min(p.apgd_targets, 3), queries=p.random_search_queries,
                tolerance=p.masking_tolerance, dlr_gap=p.dlr_gap, transfer_model=tmodel, generator=gen, batch_size=bs,
            )
            masking_eps_rep = (rep, curve_pts, etags)
            for extra, c in rep.correct.items():
                if extra == "pgd_unbounded":
                    continue
                metrics.append(_fraction("robust_accuracy", c, {**etags, "attack": extra, "role": "masking_check"}))
                worst &= c
                included.append(extra)
        wtags = {**etags, "attack": "worst_case", "attacks": "+".join(included)}
        if eps in p.eps:
            metrics += _attack_metrics(worst, clean, None, y.cpu(), wtags, class_names, p.norm, scale, norm_unit)
            _append_curve(curves, "worst_case", eps, worst)
        if save_examples and eps == check_eps:
            examples = _examples(model, xin, y, clean, worst, first_fool, advs, p, data, x, scale, bs)
    if p.masking_checks:
        from workbench.suites.robustness.masking import check_increasing

        rep, _, etags = masking_eps_rep
        tol = max(p.masking_tolerance, 2.0 / max(len(y), 1))
        mono = check_increasing({a: list(zip(c["eps"], c["accuracy"])) for a, c in curves.items()}, tol)
        checks = [mono if c.check == "accuracy_increases_with_eps" else c for c in rep.checks]
        for c in checks:
            tags = {**etags, "check": c.check, "reason": c.reason}
            if c.flagged is None:
                metrics.append(MetricRecord.unavailable("gradient_masking_flag", c.reason, higher_is_better=False,
                                                        unit="flag", tags=tags))
            else:
                metrics.append(MetricRecord(name="gradient_masking_flag", value=float(c.flagged), higher_is_better=False,
                                            unit="flag", n=len(y), tags=tags))
        n_flags = sum(1 for c in checks if c.flagged)
        metrics.append(MetricRecord(name="gradient_masking_flags", value=float(n_flags), higher_is_better=False,
                                    unit="checks", n=len(checks), tags={**vt, "eps": check_eps, "norm": p.norm, **stags}))
        masking_out = [c.to_dict() for c in checks]
    summary = {"clean_accuracy": float(clean.float().mean()), "n": int(clean.numel()), "curves": curves,
               "eps_scale": scale, "space": "embedding" if stags else "input", "check_eps": check_eps}
    if p.masking_checks:
        summary["masking"] = masking_out
    return {"metrics": metrics, "summary": summary, "examples": examples}


def _attack_tags(attack: str, p: Any) -> dict[str, Any]:
    if attack == "fgsm":
        return {"steps": 1, "restarts": 1}
    if attack == "pgd":
        return {"steps": p.pgd_steps, "restarts": p.restarts}
    if attack in ("apgd_ce", "apgd_dlr"):
        return {"steps": p.apgd_steps, "restarts": p.restarts}
    if attack == "apgd_t":
        return {"steps": p.apgd_steps, "restarts": p.restarts, "targets": p.apgd_targets}
    return {"steps": p.random_search_queries, "restarts": 1}


def _run_attack(attack: str, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float, bounds: Any, p: Any,
                gen: torch.Generator, bs: int) -> torch.Tensor:
    from workbench.suites.robustness import functional as A

    common = dict(eps=eps, norm=p.norm, bounds=bounds, batch_size=bs)
    if attack == "fgsm":
        return A.fgsm(model, x, y, **common)
    if attack == "pgd":
        return A.pgd(model, x, y, steps=p.pgd_steps, restarts=p.restarts, generator=gen, **common)
    if attack == "apgd_ce":
        return A.apgd(model, x, y, steps=p.apgd_steps, restarts=p.restarts, loss="ce", generator=gen, **common)
    if attack == "apgd_dlr":
        return A.apgd(model, x, y, steps=p.apgd_steps, restarts=p.restarts, loss="dlr", generator=gen, **common)
    if attack == "apgd_t":
        return A.apgd_targeted(model, x, y, steps=p.apgd_steps, n_targets=p.apgd_targets, restarts=p.restarts,
                               generator=gen, **common)
    return A.random_search(model, x, y, queries=p.random_search_queries, generator=gen, **common)


def _append_curve(curves: dict[str, dict[str, list[float]]], attack: str, eps: float, correct: torch.Tensor) -> None:
    n, k = int(correct.numel()), int(correct.sum())
    lo, hi = _wilson(k, n) or (float("nan"), float("nan"))
    c = curves.setdefault(attack, {"eps": [], "accuracy": [], "ci_low": [], "ci_high": []})
    c["eps"].append(eps)
    c["accuracy"].append(k / n if n else float("nan"))
    c["ci_low"].append(lo)
    c["ci_high"].append(hi)


def _attack_metrics(correct: torch.Tensor, clean: torch.Tensor, delta: torch.Tensor | None, y: torch.Tensor,
                    tags: dict[str, Any], class_names: list[str], norm: str, scale: float,
                    norm_unit: str) -> list[MetricRecord]:
    from workbench.suites.robustness import functional as A
    from workbench.stats import bootstrap_mean_ci

    out = [_fraction("robust_accuracy", correct, tags)]
    fooled = clean & ~correct
    out.append(_fraction("attack_success_rate", fooled[clean], tags, higher=False,
                         empty_reason="no correctly classified clean example to attack"))
    if delta is not None:
        norms = (A.perturbation_norm(delta, norm).cpu() / scale)[fooled].double().numpy()
        if norms.size == 0:
            out.append(MetricRecord.unavailable("mean_perturbation_norm", "the attack fooled no example",
                                                higher_is_better=True, unit=norm_unit, n=0, tags=tags))
        else:
            out.append(MetricRecord(name="mean_perturbation_norm", value=float(norms.mean()), higher_is_better=True,
                                    unit=norm_unit, n=int(norms.size), ci=bootstrap_mean_ci(norms, seed=0), tags=tags))
    for c, cname in enumerate(class_names):
        sel = y == c
        out.append(_fraction("per_class_robust_accuracy", correct[sel], {**tags, "class": cname},
                             empty_reason=f"no test example of class {cname!r} in the sample"))
    return out


def _examples(model: Any, xin: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, worst: torch.Tensor,
              first_fool: torch.Tensor, advs: dict[str, torch.Tensor], p: Any, data: Any, x_raw: torch.Tensor,
              scale: float, bs: int) -> dict[str, np.ndarray]:
    """A few adversarial examples at the masking eps: those the attacks fooled first, then others."""
    from workbench.suites.robustness import functional as A

    fooled = (clean & ~worst).nonzero().squeeze(1).tolist()
    fooled_set = set(fooled)
    rest = [i for i in range(len(y)) if i not in fooled_set]
    sel = torch.tensor((fooled + rest)[: p.n_examples], dtype=torch.long)
    names = list(p.attacks)
    chosen = []
    for i in sel.tolist():
        j = int(first_fool[i])
        chosen.append(advs[names[j]][i] if j >= 0 else advs[names[-1]][i])
    dev = xin.device
    adv = torch.stack(chosen).to(dev)
    cl = xin[sel.to(dev)]
    probs_clean = torch.softmax(A.predict_logits(model, cl, batch_size=bs).float(), dim=1).cpu()
    probs_adv = torch.softmax(A.predict_logits(model, adv, batch_size=bs).float(), dim=1).cpu()
    out: dict[str, np.ndarray] = {
        "label": y[sel.to(dev)].cpu().numpy(),
        "pred_clean": probs_clean.argmax(1).numpy(),
        "pred_adversarial": probs_adv.argmax(1).numpy(),
        "probs_clean": probs_clean.numpy(),
        "probs_adversarial": probs_adv.numpy(),
        "attack_index": first_fool[sel].numpy(),
    }
    if data.modality == "tokens":
        delta = (adv - cl).float()
        out["tokens"] = x_raw[sel.to(dev)].cpu().numpy()
        out["position_perturbation"] = (delta.norm(dim=-1) / scale).cpu().numpy()  # (k, T) relative L2 per position
    else:
        out["clean"] = cl.float().cpu().numpy()
        out["adversarial"] = adv.float().cpu().numpy()
        out["perturbation"] = (adv - cl).float().cpu().numpy()
    return out


def _corruptions_and_drift(module: nn.Module, data: Any, test: Any, p: Any, ctx: RunContext,
                           seed_of: Any) -> tuple[list[MetricRecord], list[dict[str, Any]], list[dict[str, Any]]]:
    import torch.nn.functional as F

    from workbench.suites.robustness import functional as A
    from workbench.suites.robustness.corruptions import corrupt, corruptions_for
    from workbench.suites.robustness.drift import detect_drift, drift_features, permutation_null, psi_bin_edges, top_token_ids
    from workbench.torch_utils import module_device

    device = module_device(module)
    bs = ctx.batch_size
    names = [c for c in (p.corruptions or corruptions_for(data.modality)) if c in corruptions_for(data.modality)]
    metrics: list[MetricRecord] = []
    skipped = [c for c in p.corruptions if c not in names]
    if skipped:
        ctx.log(f"robustness: corruptions {skipped} do not apply to modality {data.modality!r}; skipped")
    n_train = min(len(data.train), len(test))
    tr_order = torch.randperm(len(data.train), generator=ctx.generator(23))[:n_train].sort().values
    train = data.train.subset(tr_order)

    def losses(xs: torch.Tensor, ys: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        logits = A.predict_logits(module, xs.to(device), batch_size=bs).float().cpu()
        return F.cross_entropy(logits, ys.cpu(), reduction="none").double().numpy(), (logits.argmax(1) == ys.cpu())

    train_loss, _ = losses(train.x, train.y)
    clean_loss, clean_correct = losses(test.x, test.y)
    clean_acc = float(clean_correct.float().mean())
    context: dict[str, Any] = {}
    if data.modality == "image":
        context["bounds"] = tuple(data.bounds) if data.bounds else None
    elif data.modality == "tabular":
        context["fill"] = data.train.x.float().mean(dim=0)
    else:
        context["vocab_size"] = data.vocab_size
        context["pad_id"] = int(data.ground_truth.get("pad_id", 0)) if data.ground_truth else 0
    token_ids = top_token_ids(data.train.x, 256) if data.modality == "tokens" else None
    feats = lambda xs: drift_features(xs, data.modality, vocab_size=data.vocab_size, token_ids=token_ids)  # noqa: E731
    ref = feats(train.x) if p.drift else None
    null = edges = None
    if ref is not None:
        # one permutation null per model: train sample vs clean test sample share a distribution
        # and have the sizes of every shifted set, so the null is valid for all of them
        null = permutation_null(ref, feats(test.x), n_permutations=p.drift_permutations, seed=seed_of("drift-null"))
        edges = psi_bin_edges(ref, p.psi_bins)

    rows: list[dict[str, Any]] = []
    drift_rows: list[dict[str, Any]] = []
    sets: list[tuple[str, int, torch.Tensor]] = [("none", 0, test.x)]
    for name in names:
        for s in p.severities:
            gen = torch.Generator().manual_seed(seed_of("corruption", name, s))
            sets.append((name, s, corrupt(test.x, name, s, generator=gen, **context)))
    for name, s, xs in sets:
        tags = {"corruption": name, "severity": s}
        loss, correct = (clean_loss, clean_correct) if name == "none" else losses(xs, test.y)
        acc = float(correct.float().mean())
        metrics.append(_fraction("corrupted_accuracy", correct, tags))
        gap, ci = float(loss.mean() - train_loss.mean()), _gap_ci(loss, train_loss, seed_of("gap", name, s))
        metrics.append(MetricRecord(name="generalization_gap", value=gap, higher_is_better=False, unit="nats",
                                    n=len(loss), ci=ci, tags=tags))
        row = {"corruption": name, "severity": s, "accuracy": acc, "n": len(loss), "ci": list(_wilson(int(correct.sum()), len(loss)) or []),
               "loss": float(loss.mean()), "generalization_gap": gap}
        if name != "none":
            drop = (clean_acc - acc) / clean_acc if clean_acc > 0 else float("nan")
            if math.isfinite(drop):
                metrics.append(MetricRecord(name="performance_decay", value=float(drop > p.decay_threshold),
                                            higher_is_better=False, unit="flag", n=len(loss),
                                            tags={**tags, "threshold": p.decay_threshold, "relative_drop": round(drop, 4)}))
            else:
                metrics.append(MetricRecord.unavailable("performance_decay", "clean accuracy is 0: no relative drop",
                                                        higher_is_better=False, unit="flag", tags=tags))
            row["relative_drop"] = drop
        rows.append(row)
        if p.drift and ref is not None:
            rep = detect_drift(ref, feats(xs), alpha=p.drift_alpha, psi_floor=p.psi_floor, bins=p.psi_bins,
                               null=null, edges=edges)
            kind = "statistical+practical" if rep.drift else ("statistical_only" if rep.statistically_significant else "none")
            dtags = {"shift": name, "severity": s}
            metrics.append(MetricRecord(name="drift_detected", value=float(rep.drift), higher_is_better=False, unit="flag",
                                        n=rep.n_current, tags={**dtags, "significance": kind}))
            metrics.append(MetricRecord(name="drift_p_value", value=rep.permutation_pvalue, higher_is_better=True,
                                        unit="p-value", n=rep.n_current, tags={**dtags, "test": "permutation_max_ks"}))
            metrics.append(MetricRecord(name="drifted_features", value=float(rep.n_significant_features),
                                        higher_is_better=False, unit="features", n=len(rep.ks_statistic),
                                        tags={**dtags, "test": "ks_bh", "alpha": p.drift_alpha}))
            metrics.append(MetricRecord(name="max_psi", value=rep.max_psi, higher_is_better=False, unit="psi",
                                        n=rep.n_current, tags=dtags))
            drift_rows.append({"shift": name, "severity": s, "significance": kind, **rep.to_dict()})
    return metrics, rows, drift_rows


def _gap_ci(test_loss: np.ndarray, train_loss: np.ndarray, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(test_loss) - mean(train_loss), resampling both
    (independent) samples."""
    from workbench.stats import bootstrap_indices

    a = test_loss[bootstrap_indices(len(test_loss), n_boot, seed)].mean(axis=1)
    b = train_loss[bootstrap_indices(len(train_loss), n_boot, seed + 1)].mean(axis=1)
    lo, hi = np.quantile(a - b, [0.025, 0.975])
    return float(lo), float(hi)
