"""Energy meters: a fake RAPL sysfs tree, counter wrap-around, and null-with-reason here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.suites.efficiency.energy import (
    NvmlMeter,
    RaplMeter,
    energy_unavailable_reason,
    measure_energy,
    rapl_delta_uj,
)


def _zone(root: Path, name: str, energy: int, max_range: int = 262_143_328_850) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    (d / "name").write_text("package-0\n")
    return d


def test_delta_handles_wrap_around():
    assert rapl_delta_uj(100, 350, 1000) == 250
    assert rapl_delta_uj(900, 50, 1000) == 150  # 100 to the wrap, 50 after it
    assert rapl_delta_uj(5, 5, 1000) == 0


def test_fake_rapl_tree_sums_packages_only(tmp_path: Path):
    p0 = _zone(tmp_path, "intel-rapl:0", 1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", 5_000_000)
    core = _zone(tmp_path, "intel-rapl:0:0", 10)  # a subzone of package 0: already in it
    mmio = _zone(tmp_path, "intel-rapl-mmio:0", 10)  # duplicate interface of package 0
    meter = RaplMeter(tmp_path)
    assert [z.name for z in meter.zones()] == ["intel-rapl:0", "intel-rapl:1"]
    assert meter.unavailable_reason() is None

    def work() -> None:  # what a real workload would make the counters do
        (p0 / "energy_uj").write_text("3500000\n")
        (p1 / "energy_uj").write_text("5250000\n")
        (core / "energy_uj").write_text("999999999\n")
        (mmio / "energy_uj").write_text("999999999\n")

    reading = measure_energy(work, "cpu", rapl_root=tmp_path)
    assert reading.measured and reading.source == "rapl"
    assert reading.joules == pytest.approx((2_500_000 + 250_000) / 1e6)
    assert reading.zones == ("intel-rapl:0", "intel-rapl:1")


def test_fake_rapl_counter_wrapping_during_the_call(tmp_path: Path):
    z = _zone(tmp_path, "intel-rapl:0", 999_000, max_range=1_000_000)
    reading = RaplMeter(tmp_path).measure(lambda: (z / "energy_uj").write_text("4000\n"))
    assert reading.joules == pytest.approx((1_000 + 4_000) / 1e6)


def test_unreadable_or_missing_rapl_is_unavailable_with_reason(tmp_path: Path):
    missing = RaplMeter(tmp_path / "nope")
    assert "no RAPL access on this machine" in missing.unavailable_reason()
    assert "missing" in missing.unavailable_reason()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no intel-rapl:N zones" in RaplMeter(empty).unavailable_reason()
    broken = tmp_path / "broken"
    (broken / "intel-rapl:0" / "energy_uj").mkdir(parents=True)  # unreadable as a file
    ran = []
    reading = measure_energy(lambda: ran.append(1), "cpu", rapl_root=broken)
    assert reading.joules is None and reading.source == "unavailable"
    assert "cannot read" in reading.reason and ran == []


def test_this_machine_reports_null_with_the_reason():
    reason = energy_unavailable_reason("cpu")
    if reason is None:
        pytest.skip("this machine exposes readable RAPL counters")
    reading = measure_energy(lambda: None, "cpu")
    assert reading.joules is None and not reading.measured
    assert reading.reason.startswith("no RAPL access on this machine")


def test_nvml_without_pynvml_gives_a_reason(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("no pynvml")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    reading = NvmlMeter(torch.device("cuda", 0)).measure(lambda: None)
    assert reading.joules is None and "pynvml is not installed" in reading.reason
