"""Drift detection against scipy (KS statistic and p-values), a hand BH procedure, a hand
PSI, the textbook PSI (a plain loop and the closed form of two normals) at large n, and the
permutation null against a loop; plus the calibration properties: false alarms <= 5% on
identical distributions at n=100, a small corrected PSI and no practical-size alarm beyond
alpha on identical digits halves at n=60, a real shift detected, a 0.05σ shift at large n
reported as statistically but not practically significant, PSI null below 5 points per bin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from workbench.suites.drift.functional import (
    bh_adjust,
    detect_drift,
    drift_features,
    ks_per_feature,
    ks_statistics,
    permutation_labels,
    permutation_null,
    psi_bin_edges,
    psi_null_bias,
    psi_per_feature,
    top_token_ids,
)
from workbench.errors import ConfigError, DataError


def test_ks_statistic_equals_scipy_with_ties_and_constant_features():
    rng = np.random.default_rng(0)
    cont_a, cont_b = rng.normal(size=(90, 3)), rng.normal(0.3, 1.2, size=(70, 3))
    disc_a, disc_b = rng.integers(0, 4, size=(90, 2)).astype(float), rng.integers(0, 6, size=(70, 2)).astype(float)
    a = np.hstack([cont_a, disc_a, np.ones((90, 1))])
    b = np.hstack([cont_b, disc_b, np.ones((70, 1))])
    expect = np.array([ks_2samp(a[:, f], b[:, f]).statistic for f in range(a.shape[1])])
    np.testing.assert_allclose(ks_statistics(a, b), expect, atol=1e-12)
    stat, p = ks_per_feature(a, b)
    np.testing.assert_allclose(stat, expect, atol=1e-12)
    np.testing.assert_allclose(p, [ks_2samp(a[:, f], b[:, f]).pvalue for f in range(a.shape[1])], rtol=1e-9)


def test_bh_adjustment_equals_the_hand_procedure():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.5, 0.001])
    m = p.size
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adj_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1)
    expect = np.empty(m)
    expect[order] = adj_sorted
    np.testing.assert_allclose(bh_adjust(p), expect, rtol=1e-12)


def test_psi_by_hand():
    ref = np.arange(10, dtype=float)[:, None]  # 10 distinct values <= 10 bins: one bin per value
    cur = np.array([0.0] * 5 + [9.0] * 5)[:, None]
    assert psi_bin_edges(ref, 10)[0].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    # pseudo-count 0.5 per bin: p = (1 + 0.5) / (10 + 5) = 0.1; q = 5.5/15 in the end bins, 0.5/15 elsewhere
    q = np.array([5.5] + [0.5] * 8 + [5.5]) / 15
    expect = np.sum((q - 0.1) * np.log(q / 0.1))
    np.testing.assert_allclose(psi_per_feature(ref, cur, bins=10), [expect], rtol=1e-12)
    # the old 1e-4 floor made the same data read 6.8 (0.1·ln(0.1/1e-4) per empty bin)
    assert expect == pytest.approx(1.2788774788, rel=1e-9)
    assert psi_per_feature(ref, ref, bins=10)[0] == 0.0


def test_bin_edges_respect_ties_and_leave_no_bin_empty_in_the_reference():
    rng = np.random.default_rng(5)
    n = 200
    pixel = np.where(rng.random(n) < 0.6, 0.0, rng.integers(1, 17, n) / 16)  # 60% zeros, 17 levels
    discrete = rng.integers(0, 4, n).astype(float)
    cont = rng.normal(size=n)
    ref = np.stack([pixel, discrete, cont, np.full(n, 3.0)], axis=1)
    edges = psi_bin_edges(ref, 10)
    for f, e in enumerate(edges):
        assert not np.isin(e, ref[:, f]).any()  # no edge on a reference value: ties never straddle
        counts = np.bincount(np.searchsorted(e, ref[:, f], side="right"), minlength=e.size + 1)
        assert (counts > 0).all()
    np.testing.assert_array_equal(edges[1], [0.5, 1.5, 2.5])  # one bin per value
    assert edges[3].size == 0  # constant: one bin
    counts = np.bincount(np.searchsorted(edges[2], cont, side="right"))
    assert counts.tolist() == [20] * 10  # continuous: the reference's deciles
    # the tied zeros fill one bin of their own (the old quantile edges put an empty bin below them)
    assert np.sum(pixel == 0) == np.sum(np.searchsorted(edges[0], pixel, side="right") == 0)


def _textbook_psi(a: np.ndarray, b: np.ndarray, bins: int = 10) -> float:
    """PSI as in the textbooks, by a loop: reference deciles, raw proportions."""
    edges = np.quantile(a, np.arange(1, bins) / bins)
    total = 0.0
    for lo, hi in zip(np.concatenate([[-np.inf], edges]), np.concatenate([edges, [np.inf]])):
        p, q = np.mean((a >= lo) & (a < hi)), np.mean((b >= lo) & (b < hi))
        total += (q - p) * np.log(q / p)
    return total


def test_psi_at_large_n_equals_the_textbook_psi_and_the_closed_form():
    from scipy.stats import norm

    delta = 0.5
    z = norm.ppf(np.arange(1, 10) / 10)  # deciles of N(0, 1)
    q = np.diff(np.concatenate([[0.0], norm.cdf(z - delta), [1.0]]))  # N(δ, 1) mass in each
    closed = float(np.sum((q - 0.1) * np.log(q / 0.1)))  # 0.2377
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(100_000, 1)), rng.normal(delta, 1, size=(100_000, 1))
    rep = detect_drift(a, b, n_permutations=19, seed=0)
    assert rep.max_psi == pytest.approx(_textbook_psi(a[:, 0], b[:, 0]), abs=2e-4)
    # sampling sd ≈ 0.003 at this n; both corrections vanish (the null of PSI is ≈ 1.8e-4 here)
    assert rep.max_psi == pytest.approx(closed, abs=0.012)
    assert rep.max_psi_corrected == pytest.approx(rep.max_psi, abs=2e-3)
    assert rep.psi_lower_bound == pytest.approx(rep.max_psi, abs=2e-3)
    assert rep.drift


def test_permutation_null_equals_a_loop_and_its_psi_bias_the_chi2_approximation():
    rng = np.random.default_rng(7)
    a = np.hstack([rng.normal(size=(120, 2)), rng.integers(0, 3, size=(120, 1)).astype(float), np.full((120, 1), 3.0)])
    b = np.hstack([rng.normal(size=(90, 2)), rng.integers(0, 3, size=(90, 1)).astype(float), np.full((90, 1), 3.0)])
    pooled = np.concatenate([a, b])
    # the reference's own bins, and given bins that put the constant feature in bin 1 of 3
    nulls = [permutation_null(a, b, n_permutations=30, seed=3, edges=edges)
             for edges in (None, psi_bin_edges(a, 10)[:3] + [np.array([-1.0, 5.0])])]
    for null in nulls:
        for i, lab in enumerate(permutation_labels(120, 90, 30, seed=3)):
            r, c = pooled[lab], pooled[~lab]
            np.testing.assert_allclose(null.psi[i], psi_per_feature(r, c, edges=null.edges), rtol=1e-12, atol=1e-15)
            assert null.max_ks[i] == pytest.approx(max(ks_2samp(r[:, f], c[:, f]).statistic for f in range(4)))
    assert nulls[0].psi[:, 3].max() == 0.0 and nulls[0].psi[:, 0].min() > 0  # constant: one bin, PSI 0
    # the null mean of PSI (exact at these n) against (k-1)(1/n + 1/m), at n = m = 1000 continuous
    x, y = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    big = permutation_null(x, y, n_permutations=200, seed=0)
    ratio = big.psi.mean() / psi_null_bias(big.edges, 1000, 1000).mean()  # 9 · 2/1000 = 0.018
    assert 0.9 < ratio < 1.1, ratio


def test_identical_digits_halves_at_n60_small_corrected_psi_and_no_false_alarms():
    """The README's known defect: the old bias-corrected max PSI read ≈ 0.8-1.0 on identical
    data at n = 60 (64 pixel features). 200 seeded pairs of disjoint random halves of
    digits: the corrected max PSI is ≈ 0 on average, and the practical-size rule and the
    drift verdict fire at most at alpha (+ a binomial tolerance)."""
    from scipy.stats import binomtest
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    rng = np.random.default_rng(8)
    trials, corrected, practical, drift = 200, [], 0, 0
    for t in range(trials):
        idx = rng.permutation(len(x))
        rep = detect_drift(x[idx[:60]], x[idx[60:120]], n_permutations=49, seed=t)
        corrected.append(rep.max_psi_corrected)
        practical += rep.practically_significant
        drift += rep.drift
    assert abs(np.mean(corrected)) < 0.03, np.mean(corrected)
    assert np.quantile(corrected, 0.9) < 0.2
    for alarms in (practical, drift):
        assert binomtest(alarms, trials).proportion_ci(0.95).low <= 0.05 and alarms / trials <= 0.08, alarms


def test_psi_is_null_with_its_reason_below_5_points_per_bin():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    rep = detect_drift(a, b, n_permutations=49, seed=0)  # 3 points per bin over 10 bins
    assert rep.psi is None and rep.max_psi is None and rep.psi_lower_bound is None
    assert "not estimable" in rep.psi_reason and "n >= 50" in rep.psi_reason
    assert rep.drift is False and rep.practically_significant is None  # KS not significant: no drift
    b[:, 0] += 3.0
    rep = detect_drift(a, b, n_permutations=49, seed=0)
    assert rep.statistically_significant and rep.drift is None and "practical size unknown" in rep.verdict
    rep = detect_drift(a, b, n_permutations=49, seed=0, bins=6)  # 5 per bin: estimable
    assert rep.drift and rep.psi_reason is None


def test_false_alarm_rate_at_most_5_percent_on_identical_distributions_at_n100():
    """Both halves of the verdict are permutation tests at alpha = 0.05 (P(p <= alpha) <=
    alpha under exchangeability); 500 seeded trials estimate each rate: compatible with
    <= 5% (Clopper-Pearson lower bound <= 0.05) and not far above it, the KS half firing at
    all (a test that never fires is not calibrated), the verdict needing both; while the
    fixed PSI >= 0.1 rule alarms on most identical samples."""
    from scipy.stats import binomtest

    rng = np.random.default_rng(1)
    trials, stat, practical, alarms, psi_alarms = 500, 0, 0, 0, 0
    for t in range(trials):
        a, b = rng.normal(size=(100, 5)), rng.normal(size=(100, 5))
        rep = detect_drift(a, b, n_permutations=99, seed=t)
        stat += rep.statistically_significant
        practical += rep.practically_significant
        alarms += rep.drift
        psi_alarms += rep.max_psi >= 0.1
    for count in (stat, practical, alarms):
        assert binomtest(count, trials).proportion_ci(0.95).low <= 0.05 and count / trials <= 0.065, count
    assert stat / trials >= 0.01 and practical / trials >= 0.005  # calibrated, not tests that never fire
    assert alarms <= min(stat, practical)
    assert psi_alarms / trials > 0.5


def test_a_real_shift_is_detected():
    rng = np.random.default_rng(2)
    hits = 0
    for t in range(20):
        a = rng.normal(size=(200, 5))
        b = rng.normal(size=(200, 5))
        b[:, 2] += 0.8  # one feature shifted by 0.8σ
        rep = detect_drift(a, b, n_permutations=99, seed=t)
        hits += rep.drift
        assert rep.ks_pvalue_adjusted.argmin() == 2
    assert hits >= 19


def test_tiny_shift_at_large_n_is_statistical_but_not_practical():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(20000, 2))
    b = rng.normal(size=(20000, 2))
    b[:, 0] += 0.05
    rep = detect_drift(a, b, n_permutations=99, seed=0)
    assert rep.statistically_significant and not rep.practically_significant and not rep.drift
    assert rep.permutation_pvalue == pytest.approx(0.01)
    assert "not practically" in rep.verdict


def test_precomputed_null_is_used_and_matches_the_default():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(80, 3)), rng.normal(size=(80, 3))
    null = permutation_null(a, b, n_permutations=50, seed=7)
    r1 = detect_drift(a, b, n_permutations=50, seed=7)
    r2 = detect_drift(a, b, null=null)
    assert r1.to_dict() == r2.to_dict()
    # permutation p-value by its definition
    obs = ks_statistics(a, b).max()
    assert r2.permutation_pvalue == pytest.approx((1 + np.sum(null.max_ks >= obs - 1e-12)) / 51)
    # corrected PSI and its lower bound by their definitions
    bias = null.psi.mean(axis=0)
    np.testing.assert_allclose(r2.psi_corrected, r2.psi - bias)
    null_max = (null.psi - bias).max(axis=1)
    assert r2.max_psi_corrected == pytest.approx(r2.psi_corrected.max() - null_max.mean())
    assert r2.psi_lower_bound == pytest.approx(max(0.0, r2.psi_corrected.max() - np.quantile(null_max, 0.95)))
    with pytest.raises(ConfigError, match="same sizes"):
        detect_drift(a, b[:70], null=null)
    with pytest.raises(ConfigError, match="DriftNull"):
        detect_drift(a, b, null=null.max_ks)
    with pytest.raises(ConfigError, match="another reference"):  # same sizes, another reference: its bins are wrong
        detect_drift(rng.normal(size=(80, 3)), b, null=null)


def test_psi_study_runs_and_its_legacy_estimator_is_the_old_formula():
    from workbench.suites.drift.psi_study import legacy_max_psi_corrected, study

    ref = np.arange(10, dtype=float)[:, None]
    cur = np.array([0.0] * 5 + [9.0] * 5)[:, None]
    q = np.array([0.5] + [1e-4] * 8 + [0.5])  # the old floor; minus 9 · (1/10 + 1/10)
    assert legacy_max_psi_corrected(ref, cur) == pytest.approx(np.sum((q - 0.1) * np.log(q / 0.1)) - 1.8)
    rows = study(seeds=1, permutations=9)
    assert len(rows) == 16 and {r["kind"] for r in rows} == {"digits", "normal", "discrete5", "near_constant"}
    assert all((r["max_psi"] is None) == (r["n"] == 30) for r in rows)
    assert all(r["old_max_psi_corrected"] > 0.3 for r in rows if r["n"] == 30)


def test_drift_features_per_modality():
    x_img = torch.rand(4, 1, 8, 8)
    assert drift_features(x_img, "image").shape == (4, 64)
    assert drift_features(x_img, "image", max_features=10).shape[1] == 10
    idx = torch.tensor([[1, 1, 2, 0], [3, 3, 3, 3]])
    f = drift_features(idx, "tokens", vocab_size=4)
    np.testing.assert_array_equal(f, [[1, 2, 1, 0], [0, 0, 0, 4]])
    np.testing.assert_array_equal(top_token_ids(idx, 2), [1, 3])
    with pytest.raises(ConfigError):
        drift_features(idx, "lm")


def test_bad_inputs():
    with pytest.raises(DataError, match="same features"):
        detect_drift(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(DataError, match="NaN"):
        detect_drift(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ConfigError, match="alpha"):
        detect_drift(np.zeros((5, 2)), np.zeros((5, 2)), alpha=1.5)
    with pytest.raises(ConfigError, match="pseudo_count"):
        psi_per_feature(np.zeros((5, 2)), np.zeros((5, 2)), pseudo_count=0)
