"""The efficiency suite: size, exact FLOPs, latency, peak memory, energy, generation
speed and the accuracy-vs-cost trade-off of compressed variants. See README.md."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workbench.errors import check_bool, check_number, check_number_list, check_positive_int
from workbench.records import MetricRecord, SuiteResult
from workbench.suite import ModelHandle, RunContext, Suite

# Per-architecture overrides that make a distillation student smaller than the tiny preset.
STUDENT_OVERRIDES: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": (16,)},
    "cnn": {"channels": (8, 16), "hidden": 32},
    "lstm": {"d_embed": 16, "hidden": 16},
    "transformer": {"n_layer": 1, "d_model": 32, "d_ff": 64},
    "gpt": {"n_layer": 1, "d_model": 32, "d_ff": 64},
}


class EfficiencySuite(Suite):
    name: ClassVar[str] = "efficiency"
    description: ClassVar[str] = (
        "Parameters, size, exact FLOPs (forward and forward+backward, per module), latency "
        "p50/p95/p99 over batch sizes, throughput, peak memory, measured energy (or null with the "
        "reason), LM generation speed with/without KV cache, and int8/pruned/distilled variants "
        "on an accuracy-vs-cost Pareto frontier."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression", "lm"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        batch_sizes: tuple[int, ...] = (1, 32)  # latency sweep
        repeats: int = 20  # timed calls per batch size and block
        blocks: int = 3  # independent timing blocks per batch size (run-to-run spread)
        warmup: int = 3  # untimed calls first
        flops_batch_size: int = 1  # the batch FLOPs are counted for
        seq_len: int | None = None  # crop token inputs to this length (None: the data's T)
        memory: bool = True
        energy: bool = True
        generation: bool = True  # LMs: tokens/s with and without the KV cache
        gen_batch_size: int = 4
        gen_prompt_len: int = 4
        gen_tokens: int = 16
        gen_repeats: int = 3
        compression: bool = True
        quantize: bool = True
        sparsities: tuple[float, ...] = (0.5, 0.9)
        structured: bool = True  # structured pruning besides unstructured
        distill: bool = False
        kd_epochs: int = 10
        kd_temperature: float = 4.0
        kd_alpha: float = 0.9
        compression_batch_size: int = 32  # latency of each variant at this batch size
        compression_repeats: int = 10
        eval_samples: int = 1000  # cap on test examples for the task metric
        n_boot: int = 1000

        def __post_init__(self) -> None:
            set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
            set_("batch_sizes", check_number_list("batch_sizes", self.batch_sizes, low=1, integer=True))
            set_("sparsities", check_number_list("sparsities", self.sparsities, low=0, high=1, low_open=True,
                                                 high_open=True, allow_empty=True))
            for name in ("repeats", "blocks", "flops_batch_size", "gen_batch_size", "gen_prompt_len", "gen_tokens",
                         "gen_repeats", "kd_epochs", "compression_batch_size", "compression_repeats",
                         "eval_samples", "n_boot"):
                check_positive_int(name, getattr(self, name))
            check_positive_int("warmup", self.warmup, allow_zero=True)
            if self.seq_len is not None:
                check_positive_int("seq_len", self.seq_len)
            for name in ("memory", "energy", "generation", "compression", "quantize", "structured", "distill"):
                check_bool(name, getattr(self, name))
            check_number("kd_temperature", self.kd_temperature, low=0, low_open=True)
            check_number("kd_alpha", self.kd_alpha, low=0, high=1)

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU quickstart: a few seconds per tiny model on 2 cores
        "quick": {"batch_sizes": (1, 32), "repeats": 20, "warmup": 3, "sparsities": (0.5, 0.9),
                  "distill": False, "compression_batch_size": 8, "compression_repeats": 5, "eval_samples": 200,
                  "gen_tokens": 8, "gen_repeats": 3},
        # what a GPU user wants: a wide sweep, tighter quantiles, distillation on
        "full": {"batch_sizes": (1, 8, 32, 128, 512), "repeats": 100, "warmup": 10,
                 "sparsities": (0.3, 0.5, 0.7, 0.9), "distill": True, "kd_epochs": 20,
                 "compression_repeats": 50, "gen_tokens": 32, "gen_repeats": 5},
    }

    def applicable(self, model: ModelHandle, data: Any) -> str | None:
        reason = super().applicable(model, data)
        if reason is not None:
            return reason
        if len(data.test) == 0:
            return "the test split is empty"
        return None

    # ------------------------------------------------------------------ run
    def run(self, model: ModelHandle, data: Any, ctx: RunContext) -> SuiteResult:
        import torch

        from workbench.suites.efficiency.flops import FLOP_CONVENTION, flop_environment
        from workbench.torch_utils import module_device

        p = self.params
        module = model.module
        device = module_device(module)
        x_test = data.test.x
        seq_len = None
        if data.modality in ("tokens", "lm"):
            T = int(x_test.shape[1])
            seq_len = T if p.seq_len is None else min(p.seq_len, T)
            if p.seq_len is not None and p.seq_len > T:
                ctx.log(f"efficiency: seq_len {p.seq_len} > the data's {T}; using {T}")
        env = flop_environment()
        # every cost figure of the model as given carries variant="base"; compressed variants
        # carry their own `variant` (and `sparsity`), so a (name, tags) selection is unique
        base_tags = {"variant": "base", "torch": env["torch"], "threads": env["threads"], "device": str(device)}
        metrics: list[MetricRecord] = []
        summary: dict[str, Any] = {"environment": {**env, "device": str(device)}, "flop_convention": FLOP_CONVENTION}

        def batch(b: int) -> torch.Tensor:
            idx = torch.arange(b) % x_test.shape[0]  # repeats test examples when b > N
            xb = x_test[idx]
            if seq_len is not None:
                xb = xb[:, :seq_len]
            return xb.to(device)

        metrics += self._size_metrics(module, summary, {"variant": "base"})
        fwd_per_example, backend, flop_metrics = self._flop_metrics(module, batch(p.flops_batch_size), seq_len,
                                                                    base_tags, ctx)
        metrics += flop_metrics
        if backend is not None:  # the inference path that latency and memory measure below
            base_tags["attention_backend"] = backend
        score = self._task_score(module, data, model, device, ctx, seq_len)
        from workbench.stats import BOOTSTRAP, PROPORTION_METHOD

        metrics.append(MetricRecord(name=score.name, value=score.value, higher_is_better=score.higher_is_better,
                                    unit=score.unit, n=score.n, ci=score.ci,
                                    tags={"variant": "base", "device": str(device),
                                          "ci_method": PROPORTION_METHOD if score.name == "accuracy" else BOOTSTRAP}))
        metrics += self._latency_metrics(module, batch, fwd_per_example, base_tags, device, score, ctx, summary)
        if p.memory:
            metrics += self._memory_metrics(module, batch(max(p.batch_sizes)), base_tags, device, summary)
        if p.generation and data.task == "lm":
            metrics += self._generation_metrics(module, x_test, device, base_tags, ctx, summary)
        if p.compression:
            metrics += self._compression(model, data, batch, device, score, seq_len, ctx)
        ctx.save_artifact("summary", summary)
        return ctx.result(metrics, config=self.config())

    # ------------------------------------------------------------------ pieces
    def _size_metrics(self, module: Any, summary: dict[str, Any], tags: dict[str, Any]) -> list[MetricRecord]:
        from workbench.suites.efficiency.functional import count_parameters, model_size_bytes

        counts = count_parameters(module)
        sizes = model_size_bytes(module)
        summary["parameters"] = counts
        summary["model_size_bytes"] = sizes
        out = [
            MetricRecord(name="parameters", value=counts[k], higher_is_better=False, unit="count",
                         tags={**tags, "kind": k})
            for k in ("total", "trainable")
        ]
        for dtype, nbytes in sizes.items():
            out.append(MetricRecord(name="model_size", value=nbytes, higher_is_better=False, unit="bytes",
                                    tags={**tags, "dtype": dtype}))
        return out

    def _flop_metrics(
        self, module: Any, x: Any, seq_len: int | None, base_tags: dict[str, Any], ctx: RunContext
    ) -> tuple[float | None, str | None, list[MetricRecord]]:
        """FLOP metrics; returns (forward FLOPs per example or None, attention backend, metrics)."""
        from workbench.suites.efficiency.flops import forward_backward_flops, forward_flops

        b = int(x.shape[0])
        unit = "FLOPs (2*MAC)"
        tags = {**base_tags, "batch_size": b}
        if seq_len is not None:
            tags["seq_len"] = seq_len
        art: dict[str, Any] = {"batch_size": b, "seq_len": seq_len}
        try:
            fwd = forward_flops(module, x)
        except _COUNTING_ERRORS as exc:
            reason = f"FLOP counting failed: {type(exc).__name__}: {exc}"
            ctx.save_artifact("flops", {**art, "forward": None, "forward_backward": None, "error": reason})
            return None, None, [
                MetricRecord.unavailable("flops", reason, higher_is_better=False, unit=unit, tags={**tags, "pass": pa})
                for pa in ("forward", "forward_backward")
            ]
        art["forward"] = fwd.to_dict()
        out = [MetricRecord(name="flops", value=fwd.total, reason=fwd.uncounted_reason(), higher_is_better=False,
                            unit=unit, n=b, tags={**tags, "pass": "forward", "attention_backend": fwd.attention_backend,
                                                  "counted": "complete" if fwd.complete else "partial"})]
        try:
            fb = forward_backward_flops(module, x)
        except _COUNTING_ERRORS as exc:
            art["forward_backward"] = None
            out.append(MetricRecord.unavailable("flops", f"no backward pass: {exc}", higher_is_better=False, unit=unit,
                                                tags={**tags, "pass": "forward_backward"}))
        else:
            art["forward_backward"] = fb.to_dict()
            out.append(MetricRecord(name="flops", value=fb.total, reason=fb.uncounted_reason(), higher_is_better=False,
                                    unit=unit, n=b,
                                    tags={**tags, "pass": "forward_backward", "attention_backend": fb.attention_backend,
                                          "counted": "complete" if fb.complete else "partial"}))
        ctx.save_artifact("flops", art)
        return (fwd.total / b if fwd.complete else None), fwd.attention_backend, out

    def _task_score(self, module: Any, data: Any, model: ModelHandle, device: Any, ctx: RunContext,
                    seq_len: int | None) -> Any:
        from workbench.suites.efficiency.flops import eval_flags
        from workbench.suites.efficiency.functional import task_score

        n = ctx.limit(len(data.test), self.params.eval_samples)
        x, y = data.test.x[:n], data.test.y[:n]
        if seq_len is not None:
            x = x[:, :seq_len]
            if data.task == "lm":
                y = y[:, :seq_len]
        with eval_flags(module, None):
            return task_score(module, x, y, task=data.task, output=model.output, device=device,
                              batch_size=ctx.batch_size, seed=ctx.seed, n_boot=self.params.n_boot)

    def _latency_metrics(self, module: Any, batch: Callable[[int], Any], fwd_per_example: float | None,
                         base_tags: dict[str, Any], device: Any, score: Any, ctx: RunContext,
                         summary: dict[str, Any]) -> list[MetricRecord]:
        """The sweep: latency quantiles, throughput and achieved FLOP/s per batch size; energy
        is metered around the timed calls of the largest batch."""
        import torch

        from workbench.suites.efficiency.energy import energy_unavailable_reason, measure_energy
        from workbench.suites.efficiency.flops import eval_flags
        from workbench.suites.efficiency.latency import (
            block_spread,
            default_timer,
            peak_flops,
            summarize_latency,
            time_blocks,
            time_calls,
        )
        from workbench.stats import BOOTSTRAP

        p = self.params
        timer = default_timer(device)
        dtype = next((q.dtype for q in module.parameters() if q.is_floating_point()), torch.float32)
        peak, peak_note = peak_flops(device, dtype)
        energy_reason = energy_unavailable_reason(device) if p.energy else "energy measurement switched off"
        largest = max(p.batch_sizes)
        out: list[MetricRecord] = []
        rows, all_samples, energy = [], [], None
        block_samples = []
        with eval_flags(module, None), torch.no_grad():
            for b in p.batch_sizes:
                xb = batch(b)
                fn = (lambda xb=xb: module(xb))
                if b == largest and energy_reason is None:
                    for _ in range(p.warmup):  # outside the metered window: energy is per timed call
                        fn()
                    box: dict[str, Any] = {}
                    energy = measure_energy(  # the first block is the metered one
                        lambda: box.setdefault("s", time_calls(fn, warmup=0, repeats=p.repeats, timer=timer)), device)
                    blocks = [box["s"]]
                    if p.blocks > 1:
                        blocks += list(time_blocks(fn, warmup=p.warmup, repeats=p.repeats, blocks=p.blocks - 1,
                                                   timer=timer))
                    per_block = np.stack(blocks)
                else:
                    per_block = time_blocks(fn, warmup=p.warmup, repeats=p.repeats, blocks=p.blocks, timer=timer)
                samples = per_block.ravel()
                all_samples.append(samples)
                block_samples.append(per_block)
                stats = summarize_latency(samples, b, seed=ctx.seed, n_boot=p.n_boot)
                spread = block_spread(per_block)
                tags = {**base_tags, "batch_size": b, "timer": getattr(timer, "name", type(timer).__name__)}
                for q, v in stats.quantiles.items():
                    out.append(MetricRecord(name="latency", value=v, higher_is_better=False, unit="s", n=stats.n,
                                            ci=stats.quantile_ci[q],
                                            tags={**tags, "quantile": q, "spread": "per_call", "ci_method": BOOTSTRAP}))
                # run-to-run: the median's spread over independent blocks (n = blocks), beside the per-call CI
                out.append(MetricRecord(
                    name="latency_between_blocks", value=spread.mean, higher_is_better=False, unit="s", n=spread.n, ci=spread.ci,
                    reason=None if spread.ci else "one timing block: run-to-run spread not measured (blocks = 1)",
                    tags={**tags, "quantile": "p50", "ci_method": "student_t_over_blocks"}))
                out.append(MetricRecord(name="throughput", value=stats.throughput, higher_is_better=True,
                                        unit="samples/s", n=stats.n, ci=stats.throughput_ci, tags=tags))
                row = {"batch_size": b, **{f"{q}_s": v for q, v in stats.quantiles.items()},
                       "block_p50_s": spread.block_p50.tolist(), "between_blocks_ci": list(spread.ci or []),
                       "between_blocks_relative_range": spread.relative_range,
                       **{f"{q}_ci": list(c) for q, c in stats.quantile_ci.items()},
                       "throughput": stats.throughput, "throughput_ci": list(stats.throughput_ci)}
                if fwd_per_example is None:
                    out.append(MetricRecord.unavailable("achieved_flops", "the FLOP count is partial or failed",
                                                        higher_is_better=True, unit="FLOP/s", tags=tags))
                else:
                    achieved = fwd_per_example * stats.throughput
                    lo, hi = stats.throughput_ci
                    row["achieved_flops"] = achieved
                    out.append(MetricRecord(name="achieved_flops", value=achieved, higher_is_better=True,
                                            unit="FLOP/s", n=stats.n, ci=(fwd_per_example * lo, fwd_per_example * hi),
                                            tags=tags))
                    if peak is None:
                        out.append(MetricRecord.unavailable("achieved_flops_fraction", peak_note,
                                                            higher_is_better=True, unit="fraction", tags=tags))
                    else:
                        row["achieved_flops_fraction"] = achieved / peak
                        out.append(MetricRecord(name="achieved_flops_fraction", value=achieved / peak,
                                                higher_is_better=True, unit="fraction", n=stats.n,
                                                tags={**tags, "peak": peak_note}))
                rows.append(row)
        ctx.save_artifact("latency", {"batch_sizes": np.array(p.batch_sizes), "samples_s": np.stack(all_samples),
                                      "block_samples_s": np.stack(block_samples)})
        summary["latency"] = rows
        reason = energy_reason if energy is None else energy.reason
        out += self._energy_metrics(energy, reason, largest, {**base_tags, "batch_size": largest}, score, summary)
        return out

    def _energy_metrics(self, energy: Any, reason: str | None, batch_size: int, tags: dict[str, Any], score: Any,
                        summary: dict[str, Any]) -> list[MetricRecord]:
        """energy_per_sample and metric_per_joule: measured, or null with the reason."""
        unit_eff = f"{score.name} per J/sample"
        if energy is None or not energy.measured:
            reason = reason or "energy unavailable"
            summary["energy"] = {"status": "unavailable", "reason": reason}
            return [
                MetricRecord.unavailable("energy_per_sample", reason, higher_is_better=False, unit="J/sample",
                                         tags={**tags, "status": "unavailable"}),
                MetricRecord.unavailable("metric_per_joule", reason, higher_is_better=True, unit=unit_eff,
                                         tags={**tags, "status": "unavailable"}),
            ]
        p = self.params
        n_samples = batch_size * p.repeats
        per_sample = energy.joules / n_samples
        summary["energy"] = {"status": "measured", "source": energy.source, "joules": energy.joules,
                             "seconds": energy.seconds, "samples": n_samples, "zones": list(energy.zones)}
        mtags = {**tags, "status": "measured", "source": energy.source}
        out = [MetricRecord(name="energy_per_sample", value=per_sample, higher_is_better=False, unit="J/sample",
                            n=p.repeats, tags=mtags)]
        if score.higher_is_better and per_sample > 0:
            out.append(MetricRecord(name="metric_per_joule", value=score.value / per_sample, higher_is_better=True,
                                    unit=unit_eff, tags={**mtags, "metric": score.name}))
        else:
            why = f"task metric {score.name} is lower-is-better: a per-joule ratio of it has no meaning"
            out.append(MetricRecord.unavailable("metric_per_joule", why, higher_is_better=True, unit=unit_eff,
                                                tags={**mtags, "metric": score.name}))
        return out

    def _memory_metrics(self, module: Any, xb: Any, base_tags: dict[str, Any], device: Any,
                        summary: dict[str, Any]) -> list[MetricRecord]:
        import torch

        from workbench.suites.efficiency.flops import eval_flags, first_tensor
        from workbench.suites.efficiency.memory import measure_peak_memory

        b = int(xb.shape[0])
        out: list[MetricRecord] = []
        summary["memory"] = {}

        def infer() -> None:
            with torch.no_grad():
                module(xb)

        params = [q for q in module.parameters() if q.is_floating_point()]

        def train_step() -> None:
            with torch.enable_grad():
                y = first_tensor(module(xb))
                torch.autograd.grad(y.float().sum(), params, allow_unused=True)

        steps: list[tuple[str, Callable[[], None]]] = [("inference", infer)]
        if params:
            steps.append(("training", train_step))
        with eval_flags(module, None):
            for mode, fn in steps:
                with eval_flags(module, True) if mode == "training" else contextlib.nullcontext():
                    fn()  # warm-up: one-time kernel/primitive caches are not the model's memory
                    m = measure_peak_memory(fn, device)
                tags = {**base_tags, "mode": mode, "batch_size": b, "method": m.method}
                summary["memory"][mode] = {"bytes": m.bytes, "method": m.method, "reason": m.reason, "batch_size": b}
                out.append(MetricRecord(name="peak_memory", value=m.bytes, reason=m.reason, higher_is_better=False,
                                        unit="bytes", tags=tags))
        if not params:
            out.append(MetricRecord.unavailable("peak_memory", "no floating-point parameters: no training step",
                                                higher_is_better=False, unit="bytes",
                                                tags={**base_tags, "mode": "training", "batch_size": b}))
        return out

    def _generation_metrics(self, module: Any, x_test: Any, device: Any, base_tags: dict[str, Any],
                            ctx: RunContext, summary: dict[str, Any]) -> list[MetricRecord]:
        import torch

        from workbench.suites.efficiency.flops import eval_flags
        from workbench.suites.efficiency.latency import default_timer, summarize_latency, time_calls

        p = self.params
        gen = getattr(module, "generate", None)
        tags = {**base_tags, "batch_size": p.gen_batch_size}
        if gen is None or "use_cache" not in inspect.signature(gen).parameters:
            reason = "the model has no generate(..., use_cache=...) method"
            return [MetricRecord.unavailable("generation_throughput", reason, higher_is_better=True, unit="tokens/s",
                                             tags={**tags, "kv_cache": flag}) for flag in (True, False)]
        block = getattr(getattr(module, "config", None), "block_size", None)
        prompt_len = min(p.gen_prompt_len, int(x_test.shape[1]))
        new = p.gen_tokens if block is None else max(1, min(p.gen_tokens, int(block) - prompt_len))
        idx = x_test[torch.arange(p.gen_batch_size) % x_test.shape[0], :prompt_len].to(device)
        timer = default_timer(device)
        out, rows = [], {}
        with eval_flags(module, None):
            for flag in (True, False):
                samples = time_calls(lambda flag=flag: gen(idx, new, temperature=0.0, use_cache=flag),
                                     warmup=1, repeats=p.gen_repeats, timer=timer)
                stats = summarize_latency(samples, p.gen_batch_size * new, seed=ctx.seed, n_boot=p.n_boot)
                rows[str(flag).lower()] = {"tokens_per_s": stats.throughput, "ci": list(stats.throughput_ci),
                                           "p50_s": stats.quantiles["p50"]}
                out.append(MetricRecord(name="generation_throughput", value=stats.throughput, higher_is_better=True,
                                        unit="tokens/s", n=stats.n, ci=stats.throughput_ci,
                                        tags={**tags, "kv_cache": flag, "prompt_len": prompt_len, "new_tokens": new}))
        summary["generation"] = {"prompt_len": prompt_len, "new_tokens": new, "batch_size": p.gen_batch_size,
                                 "kv_cache": rows}
        return out

    def _compression(self, model: ModelHandle, data: Any, batch: Callable[[int], Any], device: Any, base_score: Any,
                     seq_len: int | None, ctx: RunContext) -> list[MetricRecord]:
        import torch

        from workbench.suites.efficiency.compression import (
            distill,
            pareto_front,
            prunable_weights,
            prune_magnitude,
            quantize_dynamic_int8,
        )
        from workbench.suites.efficiency.flops import eval_flags, forward_flops
        from workbench.suites.efficiency.functional import model_size_bytes, task_score, weight_density
        from workbench.suites.efficiency.latency import default_timer, summarize_latency, time_calls

        p = self.params
        base = model.module
        variants: list[tuple[str, float | None, Callable[[], Any]]] = [("base", None, lambda: base)]
        notes: dict[str, str] = {}
        if p.quantize:
            variants.append(("int8_dynamic", None, lambda: quantize_dynamic_int8(base)))
        for structured in ((False, True) if p.structured else (False,)):
            kind = "prune_structured" if structured else "prune_unstructured"
            if not prunable_weights(base, structured=structured):
                notes[kind] = "no layer this pruning applies to"
                continue
            for s in p.sparsities:
                variants.append((kind, s, lambda s=s, st=structured: prune_magnitude(base, s, structured=st)))
        if p.distill:
            reason = self._student_reason(model, data)
            if reason is None:
                variants.append(("distilled", None, lambda: self._distill(model, data, device, ctx, distill)))
            else:
                notes["distilled"] = reason

        n = ctx.limit(len(data.test), p.eval_samples)
        x, y = data.test.x[:n], data.test.y[:n]
        if seq_len is not None:
            x = x[:, :seq_len]
            if data.task == "lm":
                y = y[:, :seq_len]
        b = p.compression_batch_size
        rows: list[dict[str, Any]] = []
        for kind, sparsity, build in variants:
            built = build()
            warns: list[str] = []
            if isinstance(built, tuple):
                built, warns = built
            vdev = torch.device("cpu") if kind == "int8_dynamic" else device
            with eval_flags(built, None):
                score = base_score if kind == "base" else task_score(
                    built, x, y, task=data.task, output=model.output, device=vdev, batch_size=ctx.batch_size,
                    seed=ctx.seed, n_boot=p.n_boot)
                xb = batch(b).to(vdev)
                timer = default_timer(vdev)
                with torch.no_grad():
                    samples = time_calls(lambda: built(xb), warmup=p.warmup, repeats=p.compression_repeats, timer=timer)
            lat = summarize_latency(samples, b, seed=ctx.seed, n_boot=p.n_boot)
            fl = forward_flops(built, batch(p.flops_batch_size).to(vdev))
            targets = prunable_weights(built, structured=False)
            density = weight_density(built, [getattr(m, name) for m, name in targets]) if targets else 1.0
            rows.append({
                "variant": kind, "sparsity": sparsity, "device": str(vdev),
                "metric_name": score.name, "metric": score.value, "unit": score.unit,
                "metric_ci": list(score.ci) if score.ci else None,
                "higher_is_better": score.higher_is_better, "n": score.n,
                "latency_p50_s": lat.quantiles["p50"], "latency_ci": list(lat.quantile_ci["p50"]), "batch_size": b,
                "size_bytes": model_size_bytes(built)["total"], "flops": fl.total, "flops_complete": fl.complete,
                "flops_batch_size": p.flops_batch_size, "nonzero_flops": _nonzero_flops(built, fl),
                "weight_density": density, "warnings": warns,
            })
        directions = ["max" if base_score.higher_is_better else "min", "min", "min", "min"]
        axes = ["metric", "latency_p50_s", "size_bytes", "nonzero_flops"]
        pts = np.array([[r[a] for a in axes] for r in rows], dtype=float)
        front = pareto_front(pts, directions)
        for r, f in zip(rows, front):
            r["pareto"] = bool(f)
        ctx.save_artifact("compression", {"rows": rows, "notes": notes, "pareto_axes": axes, "directions": directions,
                                          "student_overrides": STUDENT_OVERRIDES.get(model.arch)})
        out: list[MetricRecord] = []
        for r in rows:
            tags: dict[str, Any] = {"variant": r["variant"], "device": r["device"]}
            if r["sparsity"] is not None:
                tags["sparsity"] = r["sparsity"]
            if r["variant"] == "base":
                continue  # its task metric, latency, size and FLOPs are reported by the profile
            out.append(MetricRecord(name=r["metric_name"], value=r["metric"], higher_is_better=r["higher_is_better"],
                                    unit=r["unit"], n=r["n"], ci=tuple(r["metric_ci"]) if r["metric_ci"] else None,
                                    tags=tags))
            out.append(MetricRecord(name=f"{r['metric_name']}_change", value=r["metric"] - base_score.value,
                                    higher_is_better=r["higher_is_better"], unit=r["unit"], n=r["n"],
                                    tags={**tags, "relative_to": "base"}))
            out.append(MetricRecord(name="latency", value=r["latency_p50_s"], higher_is_better=False, unit="s",
                                    n=p.compression_repeats, ci=tuple(r["latency_ci"]),
                                    tags={**tags, "quantile": "p50", "batch_size": b}))
            out.append(MetricRecord(name="model_size", value=r["size_bytes"], higher_is_better=False, unit="bytes",
                                    tags={**tags, "dtype": "total"}))
            out.append(MetricRecord(name="flops", value=r["flops"], higher_is_better=False, unit="FLOPs (2*MAC)",
                                    n=p.flops_batch_size,
                                    reason=None if r["flops_complete"] else "partially counted",
                                    tags={**tags, "pass": "forward", "batch_size": p.flops_batch_size}))
        return out

    def _student_reason(self, model: ModelHandle, data: Any) -> str | None:
        from workbench.registry import MODELS

        if data.task not in ("classification", "lm"):
            return f"distillation needs class or token logits, not a {data.task} model"
        if model.arch not in MODELS or model.arch not in STUDENT_OVERRIDES:
            return f"no smaller student is known for architecture {model.arch!r}"
        return None

    def _distill(self, model: ModelHandle, data: Any, device: Any, ctx: RunContext, distill: Callable[..., Any]) -> Any:
        import torch

        from workbench.registry import MODELS

        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            student = MODELS.get(model.arch)(data, size="tiny", **STUDENT_OVERRIDES[model.arch])
        return distill(model.module, student, data.train.x, data.train.y, temperature=p.kd_temperature,
                       alpha=p.kd_alpha, epochs=p.kd_epochs, seed=ctx.seed, device=device)

    # Headline: the cost of the model as given (variant base): median latency, throughput,
    # total parameter count; compressed variants and other quantiles stay in the full table.
    headline_metrics: ClassVar[tuple[str, ...]] = ("latency", "throughput", "parameters")

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        tags = metric.get("tags") or {}
        return (super().is_headline(metric) and tags.get("variant", "base") == "base"
                and tags.get("kind", "total") == "total" and tags.get("quantile", "p50") == "p50")

    def cost(self, model: ModelHandle, data: Any, ctx: RunContext) -> list:
        from workbench.suites.efficiency.cost import efficiency_cost

        return efficiency_cost(self.params, model, data, ctx)

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.efficiency.figures import efficiency_figures

        return efficiency_figures(result, run_dir)


def _nonzero_flops(module: Any, count: Any) -> int:
    """FLOPs left when multiplications by zero weights are skipped: each Linear/Conv/LSTM
    layer's counted FLOPs scaled by the density of its weights (exact under the dense
    convention, where every weight element is used equally often); other FLOPs unchanged."""
    from torch import nn

    from workbench.suites.efficiency.functional import weight_density

    total = float(count.total)
    for name, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LSTM)) and name in count.by_module:
            weights = [q for n_, q in m.named_parameters(recurse=False) if n_.startswith("weight")]
            total -= count.by_module[name] * (1.0 - weight_density(m, weights))
    return int(round(total))


# what a failing FLOP count can raise (a formula meeting an unexpected signature, a model
# whose output is not differentiable): reported as null with the reason, not a crashed suite
_COUNTING_ERRORS = (RuntimeError, AssertionError, TypeError, ValueError, IndexError, NotImplementedError)

__all__ = ["EfficiencySuite", "STUDENT_OVERRIDES"]
