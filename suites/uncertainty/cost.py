"""The uncertainty suite's model passes, for `workbench.estimate` (no model call is made)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.estimate import Work, passes, training_work

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.suite import ModelHandle, RunContext


def uncertainty_cost(params: object, model: "ModelHandle", data: "Dataset", ctx: "RunContext") -> list[Work]:
    from workbench.suites.uncertainty.suite import OOD_SETS

    p = params
    n_test = ctx.limit(len(data.test), p.max_test)  # type: ignore[attr-defined]
    n_val = ctx.limit(len(data.val), p.max_test)  # type: ignore[attr-defined]
    n_ood = sum(1 for name in p.ood if data.modality in OOD_SETS.get(name, ()))  # type: ignore[attr-defined]
    rows = n_test + n_val + n_ood * n_test  # every method predicts [test | val | ood...]
    methods = set(p.methods)  # type: ignore[attr-defined]
    work: list[Work] = []
    if "single" in methods:
        work += passes("forward", rows, ctx.batch_size, "max_test")
    if "mc_dropout" in methods:
        work += passes("forward", rows * p.mc_samples, ctx.batch_size, "mc_samples")  # type: ignore[attr-defined]
    if "ensemble" in methods and model.trainer is not None:
        members = p.ensemble_size  # type: ignore[attr-defined]
        work += passes("forward", rows * members, ctx.batch_size, "ensemble_size")
        # siblings train through the cache: the upper end is a fresh training of each
        work += training_work(len(data.train), len(data.val), model.train_config or {}, driver="ensemble_size",
                              repeats=max(members - 1, 0))
    return work
