"""Latency and throughput: warm-up, repeated timed calls, quantiles with bootstrap CIs.

The timer is injectable: a `Timer` is any callable that runs `fn()` once and returns its
duration in seconds. `PerfCounterTimer` (CPU wall clock) and `CudaEventTimer` (CUDA
events, synchronised) are the real ones; tests pass a synthetic timer with known
durations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from workbench.errors import ConfigError, check_positive_int
from workbench.stats import DEFAULT_LEVEL, bootstrap_indices

QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


class Timer(Protocol):
    """Runs `fn()` once and returns how long it took, in seconds."""

    def __call__(self, fn: Callable[[], Any]) -> float: ...


class PerfCounterTimer:
    """Wall-clock time of one call with `time.perf_counter` (CPU work is synchronous)."""

    name = "perf_counter"

    def __call__(self, fn: Callable[[], Any]) -> float:
        import time

        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


class CudaEventTimer:
    """GPU time of one call between two CUDA events recorded on the current stream, after
    synchronising before (no queued work counted) and after (the call has finished)."""

    name = "cuda_events"

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device

    def __call__(self, fn: Callable[[], Any]) -> float:
        torch.cuda.synchronize(self.device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(self.device)
        return start.elapsed_time(end) / 1000.0  # ms -> s


def default_timer(device: torch.device | str | None) -> Timer:
    """CUDA events on a CUDA device, perf_counter otherwise."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return CudaEventTimer(dev)
    return PerfCounterTimer()


def time_calls(fn: Callable[[], Any], *, warmup: int, repeats: int, timer: Timer) -> np.ndarray:
    """Run `fn` `warmup` times untimed, then `repeats` timed calls: durations (repeats,) in s."""
    check_positive_int("warmup", warmup, allow_zero=True)
    check_positive_int("repeats", repeats)
    for _ in range(warmup):
        fn()
    return np.array([float(timer(fn)) for _ in range(repeats)], dtype=np.float64)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of `samples` (seconds per call) of a call that processes `batch_size` examples.

    quantiles / quantile_ci: "p50", "p95", "p99" -> seconds, and their 95% percentile-
    bootstrap intervals (resampling the timed calls; seeded).
    throughput / throughput_ci: batch_size / p50 in samples per second (the CI maps the
    p50 interval through the same monotone function).
    """

    batch_size: int
    samples: np.ndarray
    quantiles: dict[str, float]
    quantile_ci: dict[str, tuple[float, float]]
    mean: float
    throughput: float
    throughput_ci: tuple[float, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.samples.size)


def summarize_latency(
    samples: Sequence[float] | np.ndarray, batch_size: int, *, seed: int = 0, n_boot: int = 1000
) -> LatencyStats:
    """Quantiles (numpy's default linear interpolation), their bootstrap CIs and throughput."""
    check_positive_int("batch_size", batch_size)
    s = np.asarray(samples, dtype=np.float64).ravel()
    if s.size == 0:
        raise ConfigError("Expected at least one latency sample, got none.")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ConfigError(f"Expected finite latency samples >= 0 s, got min {s.min()!r}.")
    check_positive_int("n_boot", n_boot)
    quantiles = {k: float(np.quantile(s, q)) for k, q in QUANTILES.items()}
    # the resampling of workbench.stats.bootstrap_stat_ci (same indices for a seed), vectorised:
    # all resamples and quantiles in one np.quantile call instead of 3 x n_boot Python calls
    idx = bootstrap_indices(s.size, n_boot, seed)  # (n_boot, n)
    boot = np.quantile(s[idx], list(QUANTILES.values()), axis=1)  # (3, n_boot)
    alpha = (1 - DEFAULT_LEVEL) / 2
    cis: dict[str, tuple[float, float]] = {}
    for k, row in zip(QUANTILES, boot):
        lo, hi = np.quantile(row, [alpha, 1 - alpha])
        cis[k] = (float(lo), float(hi))
    p50 = quantiles["p50"]
    lo, hi = cis["p50"]
    throughput = batch_size / p50 if p50 > 0 else float("inf")
    tci = (batch_size / hi if hi > 0 else float("inf"), batch_size / lo if lo > 0 else float("inf"))
    return LatencyStats(
        batch_size=int(batch_size), samples=s, quantiles=quantiles, quantile_ci=cis,
        mean=float(s.mean()), throughput=throughput, throughput_ci=tci,
    )


# Dense (no structured sparsity) peak throughput in FLOP/s from the vendors' datasheets.
# "fp32" = CUDA cores; "tf32"/"bf16" = tensor cores. Matched by substring of
# whole words of torch.cuda.get_device_name(), most specific first (so "A10" does not
# match "A10G", nor "L4" "L40S"). None = the format is not supported by that GPU.
GPU_PEAK_FLOPS: tuple[tuple[str, dict[str, float | None]], ...] = (
    ("H100 PCIe", {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12}),
    ("H100 NVL", {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835e12}),
    ("H100", {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12}),  # SXM5
    ("H200", {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12}),
    ("A100", {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12}),
    ("A10", {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12}),
    ("L40S", {"fp32": 91.6e12, "tf32": 183e12, "bf16": 362e12}),
    ("L4", {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12}),
    ("T4", {"fp32": 8.1e12, "tf32": None, "bf16": None}),
    ("V100", {"fp32": 15.7e12, "tf32": None, "bf16": None}),  # SXM2
)


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[float | None, str]:
    """(peak FLOP/s, "format on device name") or (None, reason). float32 uses the TF32
    tensor-core peak when `torch.backends.cuda.matmul.allow_tf32` is on."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None, f"no peak FLOP/s table for {dev.type} devices (GPU datasheet peaks only)"
    name = torch.cuda.get_device_name(dev)
    if dtype == torch.float32:
        fmt = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    elif dtype == torch.bfloat16:
        fmt = "bf16"
    else:
        return None, f"no peak FLOP/s entry for dtype {dtype}"
    return lookup_peak_flops(name, fmt)


def lookup_peak_flops(name: str, fmt: str) -> tuple[float | None, str]:
    """Peak of format `fmt` ("fp32" | "tf32" | "bf16") for a GPU called `name`."""
    import re

    for key, table in GPU_PEAK_FLOPS:
        if re.search(r"\b" + re.escape(key) + r"\b", name):
            value = table.get(fmt)
            if value is None:
                return None, f"{name} has no {fmt} tensor-core peak"
            return value, f"{fmt} on {name}"
    return None, f"GPU {name!r} is not in the peak FLOP/s table"
