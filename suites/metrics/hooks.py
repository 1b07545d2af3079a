"""The metrics suite's answers to the core's hooks (see `workbench.suite.Suite`): its
per-example data for paired significance tests, and its sharding over rows of the
evaluated split. Kept out of suite.py, which holds the measurements themselves.

Per example (from the "predictions" artifact, `y_true` (N,) and `y_pred` (N,)):
  classification (integer labels): "accuracy", 1.0 correct / 0.0 wrong (mean = accuracy)
  regression (float targets): "mse", the squared error; "mae", the absolute error (mean =
    the model-units mse / mae)
plus "y_true" and "example_id" (the artifact's `index`) to check that two runs saw the
same examples.

Sharding (classification only): each shard computes the suite's own forward pass on a
contiguous row range and returns its logits and its exact confusion matrix; `combine`
rebuilds the records with the suite's own code over the concatenated logits (the
bootstrap CIs need every row, in order) and checks that the summed shard counts give the
reported accuracy exactly (sum of correct / sum of n, never an average of shard accuracies).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import DataError, ModelError
from workbench.suite import check_tiling, load_artifact, shard_slices

if TYPE_CHECKING:
    import torch

    from workbench.data.base import Dataset
    from workbench.records import SuiteResult
    from workbench.suite import ModelHandle, RunContext
    from workbench.suites.metrics.suite import MetricsSuite


def per_example(result: dict[str, Any], run_dir: Path | str) -> dict[str, np.ndarray]:
    """Per-example arrays (N,) of a metrics result keyed by the metric they average to
    (see the module docstring); {} when the predictions artifact is missing or unreadable."""
    try:
        data = load_artifact(result, run_dir, "predictions", ".npz")
    except (OSError, ValueError):
        return {}
    if not data or "y_true" not in data or "y_pred" not in data:
        return {}
    y_true, y_pred = np.asarray(data["y_true"]), np.asarray(data["y_pred"])
    if y_true.ndim != 1 or y_pred.ndim != 1 or y_true.shape != y_pred.shape:
        return {}
    out: dict[str, np.ndarray] = {"y_true": y_true}
    if y_true.dtype.kind in "biu" and y_pred.dtype.kind in "biu":
        out["accuracy"] = (y_true == y_pred).astype(np.float64)
    elif y_pred.dtype.kind == "f":
        err = y_pred.astype(np.float64) - y_true.astype(np.float64)
        out["mse"] = err**2
        out["mae"] = np.abs(err)
    index = data.get("index")
    if index is not None and index.ndim == 1 and index.shape == y_true.shape:
        out["example_id"] = index
    return out


def _rows(suite: "MetricsSuite", data: "Dataset", ctx: "RunContext") -> int:
    return ctx.limit(len(data.split(suite.params.split)), suite.params.max_examples)


def shards(suite: "MetricsSuite", model: "ModelHandle", data: "Dataset", ctx: "RunContext",
           n_shards: int) -> list[slice] | None:
    if data.task != "classification" or suite.applicable(model, data):
        return None
    slices = shard_slices(_rows(suite, data, ctx), n_shards)
    return slices if len(slices) > 1 else None


def run_shard(suite: "MetricsSuite", model: "ModelHandle", data: "Dataset", ctx: "RunContext",
              rows: slice) -> dict[str, Any]:
    """{"logits": (n, K) float32, "confusion": (K, K) int64} of rows [start, stop)."""
    from workbench.executors.jobs import class_counts

    n = _rows(suite, data, ctx)
    if not 0 <= rows.start < rows.stop <= n:
        raise DataError(f"Expected a shard inside [0, {n}), got [{rows.start}, {rows.stop}).")
    part = data.split(suite.params.split).subset(rows)
    logits = suite._outputs(model.module, part.x, ctx)
    k = int(data.num_classes)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise ModelError(f"Expected logits of shape ({rows.stop - rows.start}, {k}), got {tuple(logits.shape)}.")
    counts = class_counts(logits.argmax(dim=1), part.y.long(), k)
    return {"logits": logits.float().numpy(), "confusion": counts.confusion}


def combine(suite: "MetricsSuite", model: "ModelHandle", data: "Dataset", ctx: "RunContext",
            parts: Sequence[tuple[slice, dict[str, Any]]]) -> "SuiteResult":
    import torch

    from workbench.executors.jobs import ClassCounts, combine_counts

    n = _rows(suite, data, ctx)
    check_tiling(parts, n, f"{ctx.model_name}/{suite.name}")
    counts = combine_counts([ClassCounts(np.asarray(p["confusion"])) for _, p in parts])
    logits = torch.from_numpy(np.concatenate([np.asarray(p["logits"]) for _, p in parts]))
    replay = _replay_class(type(suite))(suite.params, logits)
    res = replay.run(model, data, ctx)
    if res.status == "ok":
        acc = res.metric("accuracy", split=suite.params.split)
        if acc.n != counts.n or acc.value != counts.correct / counts.n:
            raise DataError(f"{ctx.model_name}/{suite.name}: the combined report (accuracy {acc.value}, n {acc.n}) "
                            f"disagrees with the summed shard counts ({counts.correct}/{counts.n}).")
    return res


def _replay_class(base: type) -> type:
    """The suite, with a forward pass that returns logits computed elsewhere (the shards'),
    so the records are built by the suite's own code."""

    class Replay(base):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, logits: "torch.Tensor") -> None:
            super().__init__(params)
            self._logits = logits

        def _outputs(self, module: Any, x: "torch.Tensor", ctx: Any) -> "torch.Tensor":
            if x.shape[0] != self._logits.shape[0]:
                raise DataError(f"Shards cover {self._logits.shape[0]} rows, the suite evaluates {x.shape[0]}.")
            return self._logits

    return Replay
