"""Peak memory of one call, as the increase over what was in use just before it.

- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus
  `memory_allocated` before (tensor memory; allocator caching and the CUDA context excluded).
- CPU, first choice: reset the process's resident-set high-water mark by writing "5" to
  `/proc/self/clear_refs`, then read `VmHWM` from `/proc/self/status` after the call.
  Torch allocates CPU tensors with malloc outside Python's allocator, so `tracemalloc`
  sees nothing, and `ru_maxrss` cannot be reset; the high-water mark can.
- CPU fallback: a thread sampling RSS (`/proc/self/statm`) every millisecond; a spike
  shorter than the interval can be missed.
- Otherwise: unavailable, with the reason.

Freed heap memory kept by glibc would be reused without raising RSS, so before a CPU
measurement the heap is trimmed (`malloc_trim(0)`; no `gc.collect()`, which costs ~0.4 s
once torch is imported and only matters for tensors held by reference cycles). The
figure is for the whole process: another thread allocating at the same time is counted.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_PROC = Path("/proc/self")


@dataclass(frozen=True)
class PeakMemory:
    """`bytes`: peak increase over the baseline (None when unavailable, with `reason`).
    `method`: "cuda_max_memory_allocated" | "vmhwm_clear_refs" | "rss_sampler" | "unavailable"."""

    bytes: int | None
    method: str
    reason: str | None = None


def _status_kib(field_name: str, proc: Path = _PROC) -> int:
    for line in (proc / "status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])  # "VmHWM:   123456 kB"
    raise OSError(f"{field_name} not in {proc / 'status'}")


def _rss_bytes(proc: Path = _PROC) -> int:
    pages = int((proc / "statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def clear_refs_reason(proc: Path = _PROC) -> str | None:
    """None when the high-water mark can be reset here, else why not."""
    if not (proc / "status").exists():
        return f"{proc / 'status'} missing (not Linux)"
    if not (proc / "clear_refs").exists():
        return f"{proc / 'clear_refs'} missing"
    try:
        (proc / "clear_refs").write_text("5")
    except OSError as exc:
        return f"cannot write {proc / 'clear_refs'}: {exc}"
    return None


def cpu_peak_vmhwm(fn: Callable[[], Any], proc: Path = _PROC) -> int:
    """Peak RSS increase (bytes) during `fn()` from the reset high-water mark."""
    _trim_heap()
    (proc / "clear_refs").write_text("5")  # VmHWM := current RSS
    base = _status_kib("VmHWM", proc)
    fn()
    peak = _status_kib("VmHWM", proc)
    return max(0, peak - base) * 1024


def cpu_peak_rss_sampler(fn: Callable[[], Any], interval_s: float = 0.001, proc: Path = _PROC) -> int:
    """Peak RSS increase (bytes) during `fn()` seen by a thread sampling every `interval_s`."""
    _trim_heap()
    base = _rss_bytes(proc)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes(proc))
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        peak[0] = max(peak[0], _rss_bytes(proc))
        stop.set()
        thread.join()
    return max(0, peak[0] - base)


def cuda_peak(fn: Callable[[], Any], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return max(0, int(torch.cuda.max_memory_allocated(device)) - int(base))


def measure_peak_memory(
    fn: Callable[[], Any], device: torch.device | str = "cpu", *, method: str = "auto", proc: Path = _PROC
) -> PeakMemory:
    """Peak memory increase of `fn()` on `device` with the best method that works here.
    `method` forces "vmhwm_clear_refs" or "rss_sampler" on CPU (for tests)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return PeakMemory(cuda_peak(fn, dev), "cuda_max_memory_allocated")
    if dev.type != "cpu":
        return PeakMemory(None, "unavailable", f"no peak-memory method for {dev.type} devices")
    reasons = []
    if method in ("auto", "vmhwm_clear_refs"):
        why = clear_refs_reason(proc)
        if why is None:
            return PeakMemory(cpu_peak_vmhwm(fn, proc), "vmhwm_clear_refs")
        reasons.append(why)
    if method in ("auto", "rss_sampler"):
        if (proc / "statm").exists():
            return PeakMemory(cpu_peak_rss_sampler(fn, proc=proc), "rss_sampler")
        reasons.append(f"{proc / 'statm'} missing")
    return PeakMemory(None, "unavailable", "no CPU peak-memory method works here: " + "; ".join(reasons))
