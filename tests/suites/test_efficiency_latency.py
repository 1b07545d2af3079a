"""Latency statistics on a synthetic timer with known durations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.suites.efficiency.latency import (
    CudaEventTimer,
    PerfCounterTimer,
    default_timer,
    lookup_peak_flops,
    peak_flops,
    summarize_latency,
    time_calls,
)
from workbench.errors import ConfigError
from workbench.stats import bootstrap_stat_ci


class SyntheticTimer:
    """Runs the call and reports the next preset duration instead of the real one."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = list(durations)
        self.calls = 0

    def __call__(self, fn) -> float:
        fn()
        d = self.durations[self.calls]
        self.calls += 1
        return d


def test_warmup_calls_are_run_but_not_timed():
    calls = []
    timer = SyntheticTimer([0.1, 0.2, 0.3])
    samples = time_calls(lambda: calls.append(1), warmup=4, repeats=3, timer=timer)
    assert len(calls) == 7 and timer.calls == 3
    np.testing.assert_array_equal(samples, [0.1, 0.2, 0.3])


def test_quantiles_cis_and_throughput_against_independent_references():
    durations = [0.010 + 0.001 * i for i in range(20)] + [0.050]  # a slow outlier
    samples = time_calls(lambda: None, warmup=0, repeats=21, timer=SyntheticTimer(durations))
    s = summarize_latency(samples, batch_size=8, seed=3, n_boot=400)
    ref = np.array(durations)
    assert s.n == 21
    assert s.quantiles["p50"] == pytest.approx(0.020)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert s.quantiles[name] == pytest.approx(np.quantile(ref, q))
        # the vectorised bootstrap equals workbench.stats' loop with the same seed
        lo, hi = bootstrap_stat_ci(lambda idx, q=q: float(np.quantile(ref[idx], q)), ref.size, n_boot=400, seed=3)
        assert s.quantile_ci[name] == pytest.approx((lo, hi))
        assert lo <= s.quantiles[name] <= hi
    assert s.quantiles["p99"] > 0.040  # the outlier shows in the tail, not in the median
    assert s.throughput == pytest.approx(8 / 0.020)
    lo, hi = s.quantile_ci["p50"]
    assert s.throughput_ci == pytest.approx((8 / hi, 8 / lo))
    assert s.mean == pytest.approx(ref.mean())


def test_constant_durations_give_no_interval_not_certainty():
    s = summarize_latency([0.5] * 10, batch_size=2, n_boot=50)
    assert s.quantiles == {"p50": 0.5, "p95": 0.5, "p99": 0.5}
    assert all(np.isnan(s.quantile_ci["p99"]))  # a degenerate bootstrap is missing, not [0.5, 0.5]
    assert s.throughput == pytest.approx(4.0)


def test_blocks_are_timed_apart_and_their_spread_is_a_t_interval():
    """Three blocks whose medians differ (10, 13, 11 ms): the per-call CI of one block is
    narrow, the between-block interval is the Student-t interval of the block medians."""
    from scipy import stats as sps

    from workbench.suites.efficiency.latency import block_spread, time_blocks

    durations = []
    for base in (0.010, 0.013, 0.011):
        durations += [base + 0.0001 * i for i in range(5)]
    calls = []
    samples = time_blocks(lambda: calls.append(1), warmup=2, repeats=5, blocks=3, timer=SyntheticTimer(durations))
    assert samples.shape == (3, 5) and len(calls) == 3 * (2 + 5)  # each block warms up again
    spread = block_spread(samples)
    medians = np.array([0.0102, 0.0132, 0.0112])
    np.testing.assert_allclose(spread.block_p50, medians)
    lo, hi = sps.t.interval(0.95, 2, loc=medians.mean(), scale=sps.sem(medians))
    assert spread.ci == pytest.approx((lo, hi)) and spread.n == 3
    assert spread.relative_range == pytest.approx((0.0132 - 0.0102) / medians.mean())
    one_block = summarize_latency(samples[0], batch_size=1, n_boot=200)
    assert one_block.quantile_ci["p50"][1] < spread.ci[1]  # the per-call CI misses the run-to-run spread
    assert block_spread(samples[:1]).ci is None  # one block: no spread measured


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [-0.1, 0.2]])
def test_bad_samples_are_rejected(bad):
    with pytest.raises(ConfigError):
        summarize_latency(bad, batch_size=1)


def test_bad_counts_are_rejected():
    with pytest.raises(ConfigError):
        time_calls(lambda: None, warmup=0, repeats=0, timer=SyntheticTimer([]))
    with pytest.raises(ConfigError):
        summarize_latency([0.1], batch_size=0)


def test_perf_counter_timer_measures_real_time():
    import time

    d = PerfCounterTimer()(lambda: time.sleep(0.02))
    assert 0.015 < d < 1.0
    assert isinstance(default_timer("cpu"), PerfCounterTimer)


@pytest.mark.gpu
def test_cuda_event_timer_measures_gpu_time():
    x = torch.randn(2048, 2048, device="cuda")
    d = CudaEventTimer()(lambda: x @ x)
    assert 0 < d < 1.0
    assert isinstance(default_timer("cuda"), CudaEventTimer)


def test_peak_flops_table_and_unknowns():
    value, note = peak_flops("cpu")
    assert value is None and "cpu" in note
    assert lookup_peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == (312e12, "bf16 on NVIDIA A100-SXM4-80GB")
    assert lookup_peak_flops("NVIDIA H100 PCIe", "fp32")[0] == 51.2e12
    assert lookup_peak_flops("NVIDIA H100 80GB HBM3", "bf16")[0] == 989.4e12
    assert lookup_peak_flops("NVIDIA A10", "fp32")[0] == 31.2e12
    assert lookup_peak_flops("NVIDIA A10G", "fp32")[0] is None  # not the A10
    assert lookup_peak_flops("NVIDIA L40S", "fp32")[0] == 91.6e12  # not the L4
    assert lookup_peak_flops("Tesla T4", "bf16")[0] is None
    assert lookup_peak_flops("Tesla V100-SXM2-16GB", "fp32")[0] == 15.7e12
    assert "not in the peak" in lookup_peak_flops("Mystery GPU", "fp32")[1]
