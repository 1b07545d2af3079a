"""The one bootstrap and the proportion interval of workbench.stats, against references."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from workbench import stats
from workbench.errors import ConfigError, DataError

GRID = [(n, p) for n in (30, 100, 300) for p in (0.5, 0.9, 0.99)]


def _table(ci, n: int) -> np.ndarray:
    return np.array([ci(i, n) for i in range(n + 1)])  # (n + 1, 2): interval of each count


@pytest.mark.parametrize("n,p", GRID)
def test_proportion_ci_coverage_simulated_is_at_least_093(n, p):
    """Seeded simulation: 4000 binomial samples per cell; the 95% interval every suite
    uses for a proportion holds the true p in >= 93% of them."""
    rng = np.random.default_rng(1000 * n + int(100 * p))
    k = rng.binomial(n, p, size=4000)
    t = _table(stats.proportion_ci, n)
    coverage = float(np.mean((t[k, 0] <= p) & (p <= t[k, 1])))
    assert coverage >= 0.93, (n, p, coverage)


def _exact_coverage(ci, n: int, p: float) -> float:
    t = _table(ci, n)
    return float(binom.pmf(np.arange(n + 1), n, p)[(t[:, 0] <= p) & (p <= t[:, 1])].sum())


@pytest.mark.parametrize("n,p", GRID)
def test_proportion_ci_exact_coverage_by_enumeration(n, p):
    """The same without simulation noise (sum of the Binomial(n, p) pmf over the counts
    whose interval holds p): Clopper-Pearson never covers less than 95%."""
    assert _exact_coverage(stats.proportion_ci, n, p) >= 0.95, (n, p)


def test_why_not_wilson_it_dips_below_093_at_n100_p099():
    assert _exact_coverage(stats.wilson_ci, 100, 0.99) == pytest.approx(0.9206, abs=1e-4)
    assert stats.PROPORTION_METHOD == "clopper_pearson"


def test_clopper_pearson_matches_scipy_exact_interval():
    for k, n in [(0, 30), (30, 30), (297, 300), (15, 30), (1, 1), (0, 1), (3, 114)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        lo, hi = stats.proportion_ci(k, n)
        assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
        assert lo < hi
    ref = binomtest(7, 40).proportion_ci(confidence_level=0.9, method="exact")
    assert stats.proportion_ci(7, 40, 0.9) == pytest.approx((ref.low, ref.high))


def test_percentile_bootstrap_of_a_proportion_undercovers_near_one():
    """Why proportions do not use the bootstrap: at n = 100, p = 0.99 the percentile
    interval of the mean misses p far more often than 5% (every all-correct sample gives
    the point [1, 1])."""
    rng = np.random.default_rng(0)
    n, p, hits, trials = 100, 0.99, 0, 300
    for t in range(trials):
        x = (rng.random(n) < p).astype(float)
        ci = stats.bootstrap_mean_ci(x, n_boot=200, seed=t)
        hits += int(not stats.ci_is_missing(ci) and ci[0] <= p <= ci[1])
    assert hits / trials < 0.8


def test_wilson_matches_scipy_and_never_collapses():
    for k, n in [(0, 30), (30, 30), (297, 300), (15, 30), (1, 1), (0, 1)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert stats.wilson_ci(k, n) == pytest.approx((ref.low, ref.high))
        lo, hi = stats.wilson_ci(k, n)
        assert lo < hi
    assert all(np.isnan(stats.wilson_ci(0, 0)))
    with pytest.raises(DataError, match="successes"):
        stats.wilson_ci(4, 3)
    with pytest.raises(DataError, match="count"):
        stats.wilson_ci(1, -2)


def test_bootstrap_mean_matches_a_plain_loop_and_is_seeded():
    rng = np.random.default_rng(3)
    v = rng.normal(size=57)
    idx = np.random.default_rng(11).integers(0, 57, size=(300, 57))
    loop = [sum(v[i] for i in row) / 57 for row in idx]
    want = tuple(np.quantile(loop, [0.025, 0.975]))
    assert stats.bootstrap_mean_ci(v, n_boot=300, seed=11) == pytest.approx(want, abs=1e-12)
    assert stats.bootstrap_mean_ci(v, n_boot=300, seed=11) != stats.bootstrap_mean_ci(v, n_boot=300, seed=12)


def test_degenerate_bootstrap_is_missing_not_certain():
    assert stats.ci_is_missing(stats.bootstrap_mean_ci(np.ones(40)))
    assert stats.ci_is_missing(stats.bootstrap_mean_ci(np.array([0.3])))
    assert stats.ci_is_missing(stats.bootstrap_ratio_ci(np.full(5, 2.0), np.full(5, 4.0)))
    assert not stats.ci_is_missing(stats.bootstrap_mean_ci(np.array([0.0, 1.0, 1.0])))


def test_chunks_are_one_stream_and_bounded(monkeypatch):
    whole = stats.bootstrap_indices(50, 37, seed=5)
    monkeypatch.setattr(stats, "BOOT_CHUNK_ELEMS", 400)  # 8 rows of 50 per chunk
    chunks = list(stats.bootstrap_index_chunks(50, 37, seed=5))
    assert [c.shape for c in chunks] == [(8, 50)] * 4 + [(5, 50)]
    assert np.array_equal(np.concatenate(chunks), whole)
    assert [c.shape[0] for c in stats.bootstrap_index_chunks(50, 37, seed=5, max_rows=3)][:2] == [3, 3]


def test_bootstrap_memory_is_bounded_for_many_rows():
    """200k rows x 200 resamples would be 320 MB of indices at once; the chunked bootstrap
    stays near two chunks (2 x 32 MB)."""
    v = np.random.default_rng(0).random(200_000)
    tracemalloc.start()
    try:
        ci = stats.bootstrap_mean_ci(v, n_boot=200, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ci[0] < v.mean() < ci[1]
    assert peak < 120e6, peak


def test_bad_parameters_raise():
    with pytest.raises(ConfigError, match="n_boot"):
        stats.bootstrap_mean_ci(np.ones(3), n_boot=0)
    with pytest.raises(ConfigError, match="level"):
        stats.bootstrap_mean_ci(np.ones(3), level=1.5)
    with pytest.raises(DataError, match="at least one row"):
        list(stats.bootstrap_index_chunks(0, 10, 0))


def test_two_sample_mean_difference_matches_a_loop():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 2.0, 25)
    ia, ib = stats.bootstrap_indices(40, 300, 9), stats.bootstrap_indices(25, 300, 10)
    diffs = [sum(a[i] for i in ra) / 40 - sum(b[i] for i in rb) / 25 for ra, rb in zip(ia, ib)]
    want = tuple(np.quantile(diffs, [0.025, 0.975]))
    assert stats.bootstrap_mean_diff_ci(a, b, n_boot=300, seed=9) == pytest.approx(want, abs=1e-12)
