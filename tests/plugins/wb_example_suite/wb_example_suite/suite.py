"""`example_margin`: a third-party suite written against the public Suite protocol only.

For a classifier returning logits (B, K), per test example i with label y_i:
  margin_i = logit_i[y_i] - max_{k != y_i} logit_i[k]   (> 0 exactly when the prediction is right)
  top2_i   = 1 if y_i is among the two largest logits, else 0
It reports their means (`margin`, `top2_accuracy`) and uses every hook the core calls:
headline metrics, per-example data for paired significance tests, sharding over example
ranges (combined exactly: the per-example values are computed one example at a time, so a
shard computes exactly the values the whole run computes), and a dashboard/report figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workbench.errors import check_positive_int
from workbench.records import MetricRecord, SuiteResult
from workbench.suite import ModelHandle, RunContext, Suite, check_tiling, load_artifact, shard_slices


class MarginSuite(Suite):
    name: ClassVar[str] = "example_margin"
    description: ClassVar[str] = "Example plug-in: per-example logit margin and top-2 accuracy."
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """n_samples: test examples used (the first ones). n_boot: resamples of the margin CI."""

        n_samples: int = 200
        n_boot: int = 200

        def __post_init__(self) -> None:
            check_positive_int("n_samples", self.n_samples)
            check_positive_int("n_boot", self.n_boot)

    # ------------------------------------------------------------------ run

    def applicable(self, model: ModelHandle, data: Any) -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        if model.output != "logits":
            return f"suite 'example_margin' needs logits (B, K), got output {model.output!r}"
        return None

    def run(self, model: ModelHandle, data: Any, ctx: RunContext) -> SuiteResult:
        part = self.run_shard(model, data, ctx, slice(0, self._n(data, ctx)))
        return self._report(part["margin"], part["top2"], ctx)

    def _n(self, data: Any, ctx: RunContext) -> int:
        return ctx.limit(len(data.test), self.params.n_samples)

    def _report(self, margin: np.ndarray, top2: np.ndarray, ctx: RunContext) -> SuiteResult:
        from workbench.stats import bootstrap_mean_ci, proportion_ci

        n = int(margin.size)
        ctx.save_artifact("per_example", {"margin": margin, "top2_accuracy": top2, "example_id": np.arange(n)})
        k = int(top2.sum())
        metrics = [
            MetricRecord(name="top2_accuracy", value=k / n, ci=proportion_ci(k, n), n=n, unit="fraction",
                         higher_is_better=True),
            MetricRecord(name="margin", value=float(margin.mean()),
                         ci=bootstrap_mean_ci(margin, n_boot=self.params.n_boot, seed=ctx.seed), n=n,
                         unit="logits", higher_is_better=True),
        ]
        return ctx.result(metrics, config=self.config())

    # ------------------------------------------------------------------ hooks

    headline_metrics: ClassVar[tuple[str, ...]] = ("top2_accuracy", "margin")

    @classmethod
    def per_example(cls, result: dict[str, Any], run_dir: Path) -> dict[str, np.ndarray]:
        data = load_artifact(result, run_dir, "per_example", ".npz")
        return {k: np.asarray(v) for k, v in (data or {}).items()}

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        import plotly.graph_objects as go

        data = load_artifact(result, run_dir, "per_example", ".npz")
        if not data:
            return []
        fig = go.Figure(go.Histogram(x=data["margin"], nbinsx=30, name="margin"))
        fig.update_layout(xaxis_title="logit margin (true class - best other)", yaxis_title="examples")
        return [("Logit margin per example", fig)]

    def shards(self, model: ModelHandle, data: Any, ctx: RunContext, n_shards: int) -> list[slice] | None:
        slices = shard_slices(self._n(data, ctx), n_shards)
        return slices if len(slices) > 1 else None

    def run_shard(self, model: ModelHandle, data: Any, ctx: RunContext, rows: slice) -> dict[str, Any]:
        """{"margin": (n,) float64, "top2": (n,) float64} of test rows [start, stop), one
        example at a time (so the values do not depend on how rows are grouped)."""
        import torch

        from workbench.torch_utils import frozen_eval

        x, y = data.test.x[rows.start:rows.stop], data.test.y[rows.start:rows.stop].long()
        margin, top2 = np.empty(len(y)), np.empty(len(y))
        with frozen_eval(model.module), torch.no_grad():
            for i in range(len(y)):
                logits = model.module(x[i:i + 1].to(ctx.device)).double().cpu()[0]  # (K,)
                true = logits[y[i]].item()
                other = torch.cat([logits[: y[i]], logits[y[i] + 1:]])
                margin[i] = true - other.max().item()
                top2[i] = float(y[i].item() in torch.topk(logits, min(2, logits.numel())).indices.tolist())
        return {"margin": margin, "top2": top2}

    def combine(self, model: ModelHandle, data: Any, ctx: RunContext,
                parts: Sequence[tuple[slice, dict[str, Any]]]) -> SuiteResult:
        check_tiling(parts, self._n(data, ctx), f"{ctx.model_name}/{self.name}")
        return self._report(np.concatenate([p["margin"] for _, p in parts]),
                            np.concatenate([p["top2"] for _, p in parts]), ctx)
