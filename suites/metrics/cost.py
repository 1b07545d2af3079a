"""The metrics suite's model passes, for `workbench.estimate` (no model call is made)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.estimate import Work, passes

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.suite import ModelHandle, RunContext


def metrics_cost(params: object, model: "ModelHandle", data: "Dataset", ctx: "RunContext") -> list[Work]:
    n = ctx.limit(len(data.split(params.split)), params.max_examples)  # type: ignore[attr-defined]
    work = passes("forward", n, ctx.batch_size, "max_examples")
    if data.task == "lm":
        window = int(data.test.x.shape[1]) if data.test.x.ndim > 1 else 1
        gen_len = params.gen_len or max(1, window - (params.prompt_len or window // 2))  # type: ignore[attr-defined]
        prompts = min(int(params.n_prompts), n)  # type: ignore[attr-defined]
        work += passes("forward", prompts * gen_len, max(prompts, 1), "n_prompts")
    return work
