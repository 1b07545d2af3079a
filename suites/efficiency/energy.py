"""Measured energy, or an explicit "unavailable" with the reason: never an estimate.

- GPU: NVIDIA NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ since
  the driver loaded; Volta and newer) through `pynvml` when it is importable.
- CPU: Intel RAPL through the Linux powercap interface,
  `/sys/class/powercap/intel-rapl:N/energy_uj` (µJ) for each package zone N. Subzones
  (`intel-rapl:N:M`: cores, uncore, dram) are parts of a package and are not added again;
  `intel-rapl-mmio:*` duplicates the package counters and is skipped. Each counter wraps
  at `max_energy_range_uj`; a reading below the start reading is taken to have wrapped
  once (delta = max_range - start + end), so a measured call must be shorter than one
  wrap period (minutes to hours at typical package power).

Tools such as CodeCarbon fall back to TDP x time and report it as joules; here a
missing meter gives `joules=None` and a reason such as
"no RAPL access on this machine: /sys/class/powercap missing".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one measured call. `source`: "rapl" | "nvml" | "unavailable"; `joules` is
    None exactly when unavailable, and `reason` says why. `zones` lists what was summed."""

    joules: float | None
    source: str
    seconds: float | None = None
    reason: str | None = None
    zones: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        return self.joules is not None


def rapl_delta_uj(start: int, end: int, max_range: int) -> int:
    """Energy between two readings of one RAPL counter that wraps at `max_range` µJ."""
    if end >= start:
        return end - start
    return max_range - start + end


class RaplMeter:
    """Sum of the package-level RAPL counters under `root` (a powercap directory)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root if root is not None else POWERCAP)

    def zones(self) -> list[Path]:
        """Package zones: `intel-rapl:N` (no subzones, no mmio duplicates)."""
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            name = d.name
            if name.startswith("intel-rapl:") and name.count(":") == 1:
                out.append(d)
        return out

    def unavailable_reason(self) -> str | None:
        """None when the counters can be read, else why not."""
        if not self.root.exists():
            return f"no RAPL access on this machine: {self.root} missing"
        zones = self.zones()
        if not zones:
            return f"no RAPL access on this machine: no intel-rapl:N zones under {self.root}"
        for z in zones:
            try:
                int((z / "energy_uj").read_text())
                int((z / "max_energy_range_uj").read_text())
            except PermissionError:
                return (
                    f"no RAPL access on this machine: {z / 'energy_uj'} is not readable "
                    "(root only since Linux 5.10)"
                )
            except (OSError, ValueError) as exc:
                return f"no RAPL access on this machine: cannot read {z}: {exc}"
        return None

    def read(self) -> dict[str, int]:
        return {z.name: int((z / "energy_uj").read_text()) for z in self.zones()}

    def max_ranges(self) -> dict[str, int]:
        return {z.name: int((z / "max_energy_range_uj").read_text()) for z in self.zones()}

    def measure(self, fn: Callable[[], Any]) -> EnergyReading:
        why = self.unavailable_reason()
        if why is not None:
            return EnergyReading(None, "unavailable", reason=why)
        ranges = self.max_ranges()
        start = self.read()
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        end = self.read()
        uj = sum(rapl_delta_uj(start[k], end[k], ranges[k]) for k in start)
        return EnergyReading(uj / 1e6, "rapl", seconds, zones=tuple(sorted(start)))


class NvmlMeter:
    """NVML total-energy counter of one CUDA device (mJ)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def unavailable_reason(self) -> str | None:
        try:
            import pynvml  # noqa: F401
        except ImportError:
            return "no NVML energy counter: pynvml is not installed (pip install nvidia-ml-py)"
        try:
            self._handle()
        except Exception as exc:  # pynvml raises NVMLError subclasses
            return f"no NVML energy counter: {exc}"
        return None

    def _handle(self) -> Any:
        import pynvml

        pynvml.nvmlInit()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises on pre-Volta GPUs
        return handle

    def measure(self, fn: Callable[[], Any]) -> EnergyReading:
        why = self.unavailable_reason()
        if why is not None:
            return EnergyReading(None, "unavailable", reason=why)
        import pynvml

        handle = self._handle()
        torch.cuda.synchronize(self.device)
        start = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        end = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return EnergyReading((end - start) / 1e3, "nvml", seconds, zones=(f"cuda:{self.device.index or 0}",))


def measure_energy(
    fn: Callable[[], Any], device: torch.device | str = "cpu", *, rapl_root: Path | str | None = None
) -> EnergyReading:
    """Energy of `fn()` from the meter for `device`, or unavailable with the reason
    (in which case `fn` is not run)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return NvmlMeter(dev).measure(fn)
    if dev.type == "cpu":
        return RaplMeter(rapl_root).measure(fn)
    return EnergyReading(None, "unavailable", reason=f"no energy meter for {dev.type} devices")


def energy_unavailable_reason(device: torch.device | str = "cpu", *, rapl_root: Path | str | None = None) -> str | None:
    """None when `device` has a readable energy meter, else why not (`rapl_root` defaults to
    /sys/class/powercap)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return NvmlMeter(dev).unavailable_reason()
    if dev.type == "cpu":
        return RaplMeter(rapl_root).unavailable_reason()
    return f"no energy meter for {dev.type} devices"
