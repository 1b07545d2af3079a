"""Sharding the attacks (the robustness suite's answer to `Suite.shards` / `run_shard` /
`combine`, used by the Ray executor).

The work is the attacks: for the standard model, one unit per (eps, attack) over every
attacked example, each with its own generator seeded by (variant, eps, attack). A piece
is a group of such units; a worker computes their adversarial points exactly as the
unsharded run does (same examples, same clean-correct subset, same generator, same batch
size). The driver then runs the suite with those points replayed in place of the attacks
(`_attack_variant(..., attack_fn=...)`): every record, the per-example worst case over
attacks (an example counts only if every attack fails on it), the masking checks and the
artifacts come from the suite's own code, so the result is the unsharded one.
Adversarially trained variants and the masking-check attacks run in the driver.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.errors import DataError

if TYPE_CHECKING:
    from workbench.records import SuiteResult
    from workbench.suite import ModelHandle, RunContext
    from workbench.suites.robustness.suite import RobustnessSuite

VARIANT = "standard"


def _units(suite: "RobustnessSuite") -> list[tuple[float, str]]:
    """(eps, attack) pairs the standard model is attacked with (eps > 0), in run order."""
    from workbench.suites.robustness.suite import _middle

    p = suite.params
    check_eps = p.masking_eps if p.masking_eps is not None else _middle(p.eps)
    eps_list = sorted(set(p.eps) | ({check_eps} if p.masking_checks else set()))
    return [(float(eps), attack) for eps in eps_list if eps > 0 for attack in p.attacks]


def pieces(suite: "RobustnessSuite", model: "ModelHandle", data: Any, ctx: "RunContext",
           n_shards: int) -> list[tuple[tuple[float, str], ...]] | None:
    """Up to `n_shards` groups of (eps, attack) units (round robin), or None for fewer than 2."""
    units = _units(suite)
    k = min(int(n_shards), len(units))
    if k < 2:
        return None
    return [tuple(units[i::k]) for i in range(k)]


def _prepare(suite: "RobustnessSuite", model: "ModelHandle", data: Any, ctx: "RunContext") -> dict[str, Any] | None:
    """What `run` and `_attack_variant` attack for the standard model (kept in step with them;
    the contract test compares sharded with unsharded results on every tiny model)."""
    from workbench.suites.robustness import functional as A
    from workbench.suites.robustness.suite import _attack_input
    from workbench.torch_utils import module_device

    p = suite.params
    n = ctx.limit(len(data.test), p.n_samples)
    attacked = data.test.subset(ctx.sample_rows(len(data.test), n, 17))
    device = module_device(model.module)
    x, y = attacked.x.to(device), attacked.y.to(device)
    space = _attack_input(model.module, data, x, p.norm, getattr(model, "embedding", None))
    if "error" in space:
        return None
    logits = A.predict_logits(space["model"], space["x"], batch_size=ctx.batch_size)
    clean = (logits.argmax(1) == y).cpu()
    idx = clean.nonzero().squeeze(1).to(device)
    return {"space": space, "y": y, "idx": idx}


def run_piece(suite: "RobustnessSuite", model: "ModelHandle", data: Any, ctx: "RunContext",
              piece: Sequence[tuple[float, str]]) -> dict[str, Any]:
    """{"adv": {(attack, eps_abs): (n_clean_correct, ...) float array}} for the piece's units."""
    from workbench.suites.robustness import functional as A
    from workbench.suites.robustness.suite import _run_attack
    from workbench.torch_utils import derive_seed

    prep = _prepare(suite, model, data, ctx)
    out: dict[tuple[str, float], np.ndarray] = {}
    if prep is None or prep["idx"].numel() == 0:
        return {"adv": out}  # the driver's run reports why (or attacks nothing)
    space, y, idx = prep["space"], prep["y"], prep["idx"]
    bar = ctx.progress(len(piece), "attacks (shard)", unit="(eps, attack)")
    for eps, attack in piece:
        eps_abs = eps * space["scale"]
        gen = torch.Generator().manual_seed(derive_seed(ctx.seed, *map(str, (VARIANT, eps, attack))))
        adv = _run_attack(attack, A.restrict(space["model"], idx), space["x"][idx], y[idx], eps_abs, space["bounds"],
                          suite.params, gen, ctx.batch_size)
        out[(attack, eps_abs)] = adv.detach().cpu().numpy()
        bar.update(note=f"{attack} eps={eps:g}")
    bar.close()
    return {"adv": out}


def combine(suite: "RobustnessSuite", model: "ModelHandle", data: Any, ctx: "RunContext",
            parts: Sequence[tuple[Any, dict[str, Any]]]) -> "SuiteResult":
    expected = {unit for piece, _ in parts for unit in piece}
    if expected != set(_units(suite)):
        raise DataError(f"Shards of {ctx.model_name}/robustness cover {sorted(expected)}, "
                        f"expected {sorted(_units(suite))}.")
    adv: dict[tuple[str, float], np.ndarray] = {}
    for _, part in parts:
        adv.update(part["adv"])

    def replay(attack: str, model_: Any, x: torch.Tensor, y: torch.Tensor, eps: float, *rest: Any) -> torch.Tensor:
        if (attack, eps) not in adv:
            raise DataError(f"no shard computed attack {attack!r} at eps {eps} for {ctx.model_name}")
        got = torch.from_numpy(np.array(adv[(attack, eps)])).to(device=x.device, dtype=x.dtype)  # a writable copy
        if got.shape != x.shape:
            raise DataError(f"shard's {attack} points have shape {tuple(got.shape)}, expected {tuple(x.shape)}")
        return got

    replaying = copy.copy(suite)
    replaying._attack_replay = {VARIANT: replay}
    return replaying.run(model, data, ctx)
