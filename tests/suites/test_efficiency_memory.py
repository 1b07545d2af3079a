"""Peak memory on a workload whose true size is known by construction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.suites.efficiency.memory import clear_refs_reason, measure_peak_memory

MiB = 2**20
# 5 Linear(W, W) layers on an (N, W) float32 batch: each layer output is
# N*W*4 = 32 MiB. Without grad at most two live at once (a layer's input and output) = 64 MiB
# over the input; with grad every layer output is kept for backward (4 saved + the result) = 160 MiB.
N, W, LAYERS = 524_288, 16, 5


@pytest.fixture(scope="module")
def workload():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(W, W) for _ in range(LAYERS)])
    x = torch.randn(N, W)
    assert x.numel() * 4 == 32 * MiB

    def no_grad() -> None:
        with torch.no_grad():
            model(x)

    def with_grad() -> None:
        model(x)

    no_grad()  # warm-up: one-time kernel buffers are not the workload's memory
    with_grad()
    yield no_grad, with_grad
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["vmhwm_clear_refs", "rss_sampler"])
def test_known_workload_measures_within_a_few_percent(workload, method):
    if method == "vmhwm_clear_refs" and clear_refs_reason() is not None:
        pytest.skip(clear_refs_reason())
    no_grad, with_grad = workload
    m = measure_peak_memory(no_grad, "cpu", method=method)
    assert m.method == method
    assert m.bytes == pytest.approx(64 * MiB, rel=0.03)
    m = measure_peak_memory(with_grad, "cpu", method=method)
    assert m.bytes == pytest.approx(160 * MiB, rel=0.03)


def test_auto_prefers_the_high_water_mark():
    m = measure_peak_memory(lambda: None, "cpu")
    expected = "vmhwm_clear_refs" if clear_refs_reason() is None else "rss_sampler"
    assert m.method == expected and m.bytes is not None and m.bytes < 4 * MiB


def test_unavailable_everywhere_gives_a_reason(tmp_path: Path):
    ran = []
    m = measure_peak_memory(lambda: ran.append(1), "cpu", proc=tmp_path)  # an empty fake /proc/self
    assert m.bytes is None and m.method == "unavailable"
    assert "status missing" in m.reason and "statm missing" in m.reason
    assert ran == []


def test_non_cpu_non_cuda_device_is_unavailable():
    m = measure_peak_memory(lambda: None, "meta")
    assert m.bytes is None and "meta" in m.reason


@pytest.mark.gpu
def test_cuda_peak_counts_a_known_allocation():
    def alloc() -> None:
        t = torch.empty(64 * MiB, dtype=torch.uint8, device="cuda")
        del t

    m = measure_peak_memory(alloc, "cuda")
    assert m.method == "cuda_max_memory_allocated" and m.bytes == 64 * MiB
