"""The explain suite: attributions from captum, LIME and SHAP (and our exact/batched
Shapley values), attention maps and rollout, each with quality scores beside it.

The pieces, each typed: `config` (names, `ExplainParams`), `setup` (the shared `Setup`,
`View`, `MethodOutput`), `methods` (the attribution methods), `checks` (the quality
checks, `Quality`), `records` (metric records), `artifacts` (files). This module only
wires them. See README.md (the suite card) for the methods, baselines, value functions,
quality checks, known failures and the artifact keys read by the report and dashboard.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.records import SuiteResult
from workbench.suite import ModelHandle, RunContext, Suite

from .artifacts import save_artifacts
from .checks import run_checks
from .config import ATTENTION, METHODS, QUALITY_CHECKS, ExplainParams, method_seed
from .methods import attention_stack, explain_method
from .records import build_metrics, mean_record
from .setup import MethodOutput, Setup, has_embedding

if TYPE_CHECKING:
    from workbench.data.base import Dataset

__all__ = ["ExplainSuite", "METHODS", "QUALITY_CHECKS"]


class ExplainSuite(Suite):
    """Attributions with quality scores next to each one."""

    name: ClassVar[str] = "explain"
    description: ClassVar[str] = (
        "Saliency, input x gradient, integrated gradients, SmoothGrad, DeepLift, occlusion (captum); LIME; "
        "exact or sampled Shapley values and shap's Kernel/Gradient/Deep explainers; attention maps and "
        "rollout — each with completeness gap, deletion/insertion AUC vs random, model-randomisation "
        "sanity check, seed stability, infidelity, max-sensitivity and ground-truth top-k precision."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression", "lm"})

    Params = ExplainParams

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {
            "methods": ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion",
                        "lime", "shapley", "attention", "rollout"],
            "n_examples": 8, "ig_steps": 32, "smoothgrad_samples": 8, "shap_budget": 1024,
            "lime_samples": 300, "quality": ["completeness", "deletion", "insertion", "sanity", "ground_truth"],
            "sanity_sampling": False,
            "replacements": ["zero", "blur", "sample"], "curve_steps": 16, "random_orders": 8,
        },
        "full": {
            "methods": list(METHODS), "n_examples": 64, "ig_steps": 64, "smoothgrad_samples": 32,
            "shap_budget": 65536, "lime_samples": 1000, "quality": list(QUALITY_CHECKS),
            "shap_value_function": "background", "n_perturb": 16, "random_orders": 32,
        },
    }

    # The full profile's most expensive settings, scaled down (in this order, never below the
    # floor, never when the plan sets them) when the estimate says they would not fit the run's
    # time limit on this device; the result's config says what they were scaled to.
    budget_parameters: ClassVar[tuple[tuple[str, int], ...]] = (
        ("shap_budget", 256), ("shap_background", 4), ("n_examples", 8), ("lime_samples", 100))

    def cost(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> list:
        from .cost import explain_cost

        if data.task == "lm":  # attention maps and rollout only: one forward per example
            from workbench.estimate import passes

            return passes("forward", ctx.limit(len(data.test), self.params.n_examples), ctx.batch_size)
        return explain_cost(self.params, model, data, ctx)

    # ------------------------------------------------------------------ run

    def applicable(self, model: ModelHandle, data: "Dataset") -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        from .attention import supports_attention

        if data.task == "lm":
            if not supports_attention(model.module):
                return ("explain on a language model computes attention maps and rollout only, and this model's "
                        "forward does not accept return_attention=True")
            if not set(self.params.methods) & set(ATTENTION):
                return "explain on a language model computes attention maps and rollout only; neither is in `methods`"
            return None
        if data.modality == "image" and len(data.input_shape) != 3:
            return f"explain expects images (C, H, W), got input shape {data.input_shape}"
        if data.modality == "tokens" and not has_embedding(model.module):
            return "token attributions need `embed`/`forward_from_embeddings` or an nn.Embedding, found neither"
        return None

    def run(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        from .gradients import untouched

        with untouched(model.module):
            if data.task == "lm":
                return self._run_lm(model, data, ctx)
            return self._run(model, data, ctx)

    # ------------------------------------------------------------------ classification / regression

    def _run(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        from .cost import method_progress, method_work, units

        p = self.params
        setup = Setup.build(model, data, ctx, p)
        outputs: dict[str, MethodOutput] = {}
        skipped: dict[str, str] = {}  # not applicable to this model: listed in meta.json only
        failed: dict[str, str] = {}  # raised on this model: a null `method_coverage` with the error
        timings: dict[str, float] = {}
        bar = method_progress(ctx, p, setup, p.methods, "methods x examples")
        for method in p.methods:
            bar.stage(setup.n, method_work(method, p, units(p, data)), note=method)  # skipped/failed: counted done
            why = setup.unavailable(method)
            if why:
                skipped[method] = why
                continue
            t0 = time.perf_counter()
            if method == "attention":
                setup.attention = attention_stack(setup.module, setup.x, setup.batch_size)
                timings[method] = (time.perf_counter() - t0) / setup.n
                continue
            try:
                replayed = getattr(self, "_method_replay", {}).get(method)  # computed by a shard (sharding.py)
                out = replayed if replayed is not None else explain_method(
                    method, setup, setup.model_view(setup.module), method_seed(ctx.seed, method), progress=bar)
            except Exception as exc:  # a method failing on an architecture is a finding, not a crash
                failed[method] = f"failed: {type(exc).__name__}: {exc}"[:500]
                ctx.log(f"explain: {method} failed on {ctx.model_name}: {failed[method]}")
                continue
            outputs[method] = out
            timings[method] = (time.perf_counter() - t0) / setup.n
        bar.advance_to(bar.total)
        bar.close()
        quality = run_checks(outputs, setup, ctx, p)
        metrics = build_metrics(outputs, quality, setup, failed, ctx, p)
        save_artifacts(outputs, quality, setup, {**skipped, **failed}, timings, ctx, p)
        return ctx.result(metrics, config=self.config())

    # ------------------------------------------------------------------ language models

    def _run_lm(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        import numpy as np
        import torch

        from .attention import attention_entropy, attention_maps, attention_rollout

        p = self.params
        n = ctx.limit(min(p.n_examples, len(data.test)))
        x = data.test.x[:n]
        maps = attention_maps(model.module, x, batch_size=ctx.batch_size)  # L x (N, H, T, T)
        roll = attention_rollout(maps, causal=False)  # checked below instead of raising
        stacked = torch.stack(maps, 1)  # (N, L, H, T, T)
        metrics = []
        tags = {"method": "attention"}
        row_err = (stacked.double().sum(-1) - 1).abs().amax(dim=(1, 2, 3)).numpy()  # (N,)
        upper = torch.triu(stacked, diagonal=1).abs().amax(dim=(1, 2, 3, 4)).double().numpy()
        roll_upper = torch.triu(roll, diagonal=1).abs().amax(dim=(1, 2)).double().numpy()
        metrics.append(mean_record("attention_row_sum_error", row_err, ctx, higher_is_better=False,
                                    unit="probability", tags=tags, stat="max"))
        metrics.append(mean_record("causality_violation", upper, ctx, higher_is_better=False, unit="probability",
                                    tags=tags, stat="max"))
        metrics.append(mean_record("causality_violation", roll_upper, ctx, higher_is_better=False,
                                    unit="probability", tags={"method": "rollout"}, stat="max"))
        for layer, a in enumerate(maps):
            ent = attention_entropy(a).mean(1).double().numpy()  # (N,)
            metrics.append(mean_record("attention_entropy", ent, ctx, higher_is_better=None, unit="nats",
                                        tags={"method": "attention", "layer": layer}))
        vocab = data.vocab
        tokens = [[vocab[int(t)] if vocab and int(t) < len(vocab) else str(int(t)) for t in row] for row in x]
        ctx.save_artifact("examples", {"input": x.numpy(), "attention": stacked.numpy().astype(np.float32),
                                       "rollout": roll.numpy().astype(np.float32)})
        ctx.save_artifact("meta", {"modality": data.modality, "task": data.task, "space": "embedding",
                                   "methods": ["attention", "rollout"], "attributions": [], "tokens": tokens,
                                   "causal": True, "n_examples": n,
                                   "note": "language model: attention maps and rollout only"})
        return ctx.result(metrics, config=self.config())

    # Sharding (Ray): the attribution methods, in groups, each computed by a worker; the
    # driver replays their outputs and runs the quality checks (see sharding.py).
    def shards(self, model: ModelHandle, data: "Dataset", ctx: RunContext, n_shards: int) -> list[Any] | None:
        from .sharding import pieces

        return pieces(self, model, data, ctx, n_shards)

    def run_shard(self, model: ModelHandle, data: "Dataset", ctx: RunContext, shard: Any) -> Any:
        from .sharding import run_piece

        return run_piece(self, model, data, ctx, shard)

    def combine(self, model: ModelHandle, data: "Dataset", ctx: RunContext, parts: Any) -> SuiteResult:
        from .sharding import combine

        return combine(self, model, data, ctx, parts)

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from .figures import explain_figures

        return explain_figures(result, run_dir)
