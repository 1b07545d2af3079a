"""The certify suite's model passes, for `workbench.estimate` (no model call is made).
The consistency check is counted at every checked radius (it attacks at each) on every
attacked example: an upper end, as it attacks only those g gets right; noise training as if
the cache had no sibling yet. Calls are counted at the full batch: certifying in blocks
(blocks.py) adds at most one partly filled call per stage and block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.estimate import Work, passes, training_work

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.suite import ModelHandle, RunContext


def certify_cost(p: Any, model: "ModelHandle", data: "Dataset", ctx: "RunContext") -> list[Work]:
    n = ctx.limit(len(data.test), p.n_samples)
    bs = ctx.batch_size
    trained = p.noise_training and model.trainer is not None
    certifications = len(p.sigmas) * (2 if trained else 1)  # the standard model at each sigma, a sibling at its own
    work = passes("forward", certifications * n * (p.n0 + p.n + 1), bs, "n")  # + 1: f at x itself (clean accuracy)
    if p.consistency_check:
        radii = len([r for r in (p.check_radii if p.check_radii is not None else p.radii) if r > 0])
        attacked = certifications * radii * min(p.attack_samples, n)
        work += passes("backward", attacked * p.attack_steps * p.attack_noise_samples, bs, "attack_steps")
        work += passes("forward", attacked * p.attack_eval_samples, bs, "attack_eval_samples")
    if trained:
        cfg = dict(model.train_config or {}, recipe="gaussian_noise")
        if p.training_epochs:
            cfg["epochs"] = p.training_epochs
        work += training_work(len(data.train), len(data.val), cfg, driver="noise_training", repeats=len(p.sigmas))
    return work
