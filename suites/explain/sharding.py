"""Sharding the explain suite (its answer to `Suite.shards` / `run_shard` / `combine`, used
by the Ray executor).

The work is the attribution methods over the explained examples: each method has its own
seed (`method_seed`) and sees the same `Setup` (same examples, targets, baselines), so a
worker computes exactly the `MethodOutput` the whole run computes. A piece is a group of
methods. The driver runs the suite with those outputs replayed in place of the methods:
the quality checks (which perturb the model or the inputs), the records and the artifacts
come from the suite's own code, so the result is the unsharded one. Attention maps, and a
method that fails in its worker, are computed in the driver (as the whole run would).
Language models (attention only) do not shard.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from workbench.errors import DataError

from .config import ATTENTION, method_seed
from .methods import explain_method
from .setup import Setup

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.records import SuiteResult
    from workbench.suite import ModelHandle, RunContext

    from .suite import ExplainSuite


def _methods(suite: "ExplainSuite", data: "Dataset") -> list[str]:
    if data.task == "lm":
        return []
    return [m for m in suite.params.methods if m not in ATTENTION]


def pieces(suite: "ExplainSuite", model: "ModelHandle", data: "Dataset", ctx: "RunContext",
           n_shards: int) -> list[tuple[str, ...]] | None:
    """Up to `n_shards` groups of methods (round robin), or None for fewer than 2."""
    methods = _methods(suite, data)
    k = min(int(n_shards), len(methods))
    if k < 2:
        return None
    return [tuple(methods[i::k]) for i in range(k)]


def run_piece(suite: "ExplainSuite", model: "ModelHandle", data: "Dataset", ctx: "RunContext",
              piece: Sequence[str]) -> dict[str, Any]:
    """{"outputs": {method: MethodOutput}} for the piece's methods that apply and succeed."""
    from .cost import method_progress, method_work, units
    from .gradients import untouched

    out: dict[str, Any] = {}
    with untouched(model.module):
        setup = Setup.build(model, data, ctx, suite.params)
        bar = method_progress(ctx, suite.params, setup, piece, "methods x examples (shard)")
        for method in piece:
            bar.stage(setup.n, method_work(method, suite.params, units(suite.params, data)), note=method)
            if setup.unavailable(method):
                continue
            try:
                res = explain_method(method, setup, setup.model_view(setup.module), method_seed(ctx.seed, method),
                                     progress=bar)
            except Exception:  # noqa: BLE001 - the driver reruns it and records the failure as the run does
                continue
            if res is not None:
                out[method] = res
        bar.advance_to(bar.total)
        bar.close()
    return {"outputs": out}


def combine(suite: "ExplainSuite", model: "ModelHandle", data: "Dataset", ctx: "RunContext",
            parts: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> "SuiteResult":
    covered = sorted(m for piece, _ in parts for m in piece)
    if covered != sorted(_methods(suite, data)):
        raise DataError(f"Shards of {ctx.model_name}/explain cover methods {covered}, "
                        f"expected {sorted(_methods(suite, data))}.")
    replay: dict[str, Any] = {}
    for _, part in parts:
        replay.update(part["outputs"])
    replaying = copy.copy(suite)
    replaying._method_replay = replay
    return replaying.run(model, data, ctx)
