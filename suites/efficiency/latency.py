"""Latency and throughput: warm-up, repeated timed calls, quantiles with bootstrap CIs.

Two kinds of spread, reported side by side and never confused:
- per call: p50/p95/p99 of the timed calls with percentile-bootstrap CIs over calls
  (`summarize_latency`). They describe the calls of one timing block; they say nothing
  about how much the median moves from one run to the next (four CLI runs of one model
  gave batch-1 p50s of 135/102/101/100 us while the first run's CI was [134, 138]).
- run to run: the calls are timed in `blocks` independent blocks (each with its own
  warm-up); `between_blocks` gives the mean of the block medians and a Student-t CI over
  blocks (`block_spread`). Blocks in one process still share its allocator and caches,
  so spread across separate processes can be larger still; the block count is stated.

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
from workbench.stats import DEFAULT_LEVEL, bootstrap_replicates, percentile_interval

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
    # all resamples and quantiles in one np.quantile call per chunk instead of 3 x n_boot calls
    boot = bootstrap_replicates(lambda idx: np.quantile(s[idx], list(QUANTILES.values()), axis=1).T,
                                s.size, n_boot=n_boot, seed=seed)  # (n_boot, 3)
    ci = percentile_interval(boot, DEFAULT_LEVEL)  # (3, 2); (nan, nan) where degenerate
    cis: dict[str, tuple[float, float]] = {k: (float(ci[j, 0]), float(ci[j, 1])) for j, k in enumerate(QUANTILES)}
    p50 = quantiles["p50"]
    lo, hi = cis["p50"]
    throughput = batch_size / p50 if p50 > 0 else float("inf")
    tci = (batch_size / hi if hi > 0 else float("inf"), batch_size / lo if lo > 0 else float("inf"))
    return LatencyStats(
        batch_size=int(batch_size), samples=s, quantiles=quantiles, quantile_ci=cis,
        mean=float(s.mean()), throughput=throughput, throughput_ci=tci,
    )


def time_blocks(fn: Callable[[], Any], *, warmup: int, repeats: int, blocks: int, timer: Timer) -> np.ndarray:
    """`blocks` independent timing blocks, each `warmup` untimed then `repeats` timed
    calls: durations (blocks, repeats) in s."""
    check_positive_int("blocks", blocks)
    return np.stack([time_calls(fn, warmup=warmup, repeats=repeats, timer=timer) for _ in range(blocks)])


@dataclass(frozen=True)
class BlockSpread:
    """Run-to-run spread of the median latency, from the medians of independent blocks.

    block_p50: (blocks,) median call time of each block, s. mean: their mean.
    ci: Student-t 95% interval of that mean over blocks (None for one block: no spread
    can be measured). relative_range: (max - min) / mean of the block medians."""

    block_p50: np.ndarray
    mean: float
    ci: tuple[float, float] | None
    relative_range: float

    @property
    def n(self) -> int:
        return int(self.block_p50.size)


def block_spread(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> BlockSpread:
    """Spread of the per-block medians of `samples` (blocks, repeats), s."""
    from scipy.stats import t as student_t

    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 2 or s.size == 0:
        raise ConfigError(f"Expected latency samples of shape (blocks, repeats), got {s.shape}.")
    med = np.median(s, axis=1)
    mean = float(med.mean())
    ci = None
    if med.size >= 2:
        half = float(student_t.ppf(1 - (1 - level) / 2, med.size - 1) * med.std(ddof=1) / np.sqrt(med.size))
        ci = (mean - half, mean + half)
    rel = float((med.max() - med.min()) / mean) if mean > 0 else float("nan")
    return BlockSpread(block_p50=med, mean=mean, ci=ci, relative_range=rel)


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
