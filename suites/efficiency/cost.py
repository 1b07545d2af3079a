"""The efficiency suite's model passes, for `workbench.estimate` (no model call is made).
Timed calls dominate: every batch size of the latency sweep is called (warmup + repeats) per
timing block; every compression variant is scored on `eval_samples` and timed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.estimate import Work, passes, training_work

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.suite import ModelHandle, RunContext


def efficiency_cost(params: object, model: "ModelHandle", data: "Dataset", ctx: "RunContext") -> list[Work]:
    p = params
    work: list[Work] = []
    for b in p.batch_sizes:  # type: ignore[attr-defined]
        calls = p.blocks * (p.warmup + p.repeats)  # type: ignore[attr-defined]
        work += passes("forward", calls * b, b, "repeats")
    # FLOPs (forward, forward+backward) and peak memory: a handful of calls at small batches
    fb = p.flops_batch_size  # type: ignore[attr-defined]
    work += passes("forward", 3 * fb, fb) + passes("backward", fb, fb)
    if p.memory:  # type: ignore[attr-defined]
        work += passes("forward", 2 * max(p.batch_sizes), max(p.batch_sizes))  # type: ignore[attr-defined]
    n_eval = ctx.limit(len(data.test), p.eval_samples)  # type: ignore[attr-defined]
    work += passes("forward", n_eval, ctx.batch_size, "eval_samples")  # the base task score
    if data.task == "lm" and p.generation and hasattr(model.module, "generate"):  # type: ignore[attr-defined]
        tokens = 2 * (1 + p.gen_repeats) * p.gen_tokens * p.gen_batch_size  # type: ignore[attr-defined]
        work += passes("forward", tokens, p.gen_batch_size, "gen_tokens")  # type: ignore[attr-defined]
    if p.compression:  # type: ignore[attr-defined]
        variants = (1 if p.quantize else 0) + len(p.sparsities) * (2 if p.structured else 1)  # type: ignore[attr-defined]
        cb = p.compression_batch_size  # type: ignore[attr-defined]
        work += passes("forward", variants * n_eval, ctx.batch_size, "sparsities")
        work += passes("forward", (variants + 1) * (p.warmup + p.compression_repeats) * cb, cb,  # type: ignore[attr-defined]
                       "compression_repeats")
        if p.distill and model.trainer is not None:  # type: ignore[attr-defined]
            cfg = dict(model.train_config or {}, epochs=p.kd_epochs)  # type: ignore[attr-defined]
            work += training_work(len(data.train), len(data.val), cfg, driver="kd_epochs")
    return work
