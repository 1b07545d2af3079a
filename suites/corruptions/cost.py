"""The corruptions suite's model passes, for `workbench.estimate` (no model call is made):
one forward of the train sample and of the test points clean and under every corruption
and severity that applies to the modality."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.estimate import Work, passes

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.suite import ModelHandle, RunContext


def corruptions_cost(p: Any, model: "ModelHandle", data: "Dataset", ctx: "RunContext") -> list[Work]:
    from workbench.suites.corruptions.functional import corruptions_for

    n = ctx.limit(len(data.test), p.n_samples)
    valid = corruptions_for(data.modality)
    names = [c for c in (p.corruptions or valid) if c in valid]
    sets = 1 + len(names) * len(p.severities)
    return (passes("forward", min(len(data.train), n), ctx.batch_size)
            + passes("forward", sets * n, ctx.batch_size, "severities"))
