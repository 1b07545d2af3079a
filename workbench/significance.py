"""Paired and unpaired significance tests used by the gate (workbench/gates.py).

All functions take 1-D numpy arrays of per-example values and return plain floats, so
outcomes stay JSON-able.

- `mcnemar(correct_a, correct_b)`: paired 0/1 correctness of two models on the same
  examples. Exact two-sided binomial test on the discordant pairs when b + c < 25, else
  the chi-squared statistic with continuity correction (Edwards), df = 1. HF `evaluate`
  uses chi-squared without the correction, which is anti-conservative at small b + c.
- `paired_bootstrap_diff_ci(a, b)`: percentile CI of mean(a) - mean(b), resampling
  examples (pairs) together with a seeded generator.
- `welch(a, b)`: Welch's unequal-variance t-test of mean(a) vs mean(b) (independent
  samples, e.g. an A/B test on two evaluation sets), via `scipy.stats.ttest_ind`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from workbench.errors import DataError, check_number, check_positive_int

EXACT_BELOW = 25  # discordant count below which McNemar uses the exact binomial test


class McNemarResult(NamedTuple):
    """statistic: min(b, c) for the exact test, the corrected chi-squared otherwise.
    b: a correct and b wrong; c: a wrong and b correct. method: "exact" | "chi2_cc"."""

    statistic: float
    p_value: float
    method: str
    b: int
    c: int


class BootstrapDiff(NamedTuple):
    """diff = mean(a) - mean(b) on the full sample; (low, high) its percentile CI."""

    diff: float
    low: float
    high: float
    n: int
    n_boot: int


class WelchResult(NamedTuple):
    """t statistic of mean(a) - mean(b), two-sided p-value and Welch-Satterthwaite df."""

    statistic: float
    p_value: float
    df: float


def _as_1d(name: str, x: object, *, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise DataError(f"Expected `{name}` to be a 1-D array of per-example values, got shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"Expected `{name}` to be numeric or boolean, got dtype {arr.dtype}.")
    arr = arr.astype(dtype)
    if dtype is np.float64 and not np.all(np.isfinite(arr)):
        raise DataError(f"`{name}` contains {int(np.sum(~np.isfinite(arr)))} non-finite values.")
    return arr


def _as_binary(name: str, x: object) -> np.ndarray:
    arr = _as_1d(name, x)
    if not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)][:3].tolist()
        raise DataError(f"Expected `{name}` to hold 0/1 (or bool) correctness, got values such as {bad}.")
    return arr.astype(bool)


def _check_paired(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise DataError(
            f"Expected `{names[0]}` and `{names[1]}` to be paired (same examples, same length), "
            f"got lengths {a.size} and {b.size}."
        )
    if a.size == 0:
        raise DataError(f"`{names[0]}` and `{names[1]}` are empty; a paired test needs at least one example.")


def mcnemar(correct_a: object, correct_b: object) -> McNemarResult:
    """McNemar's test of equal accuracy for paired 0/1 correctness arrays (N,).

    Two-sided. With b + c == 0 (the models agree on every example) the p-value is 1.
    """
    a = _as_binary("correct_a", correct_a)
    bb = _as_binary("correct_b", correct_b)
    _check_paired(a, bb, ("correct_a", "correct_b"))
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n = b + c
    if n == 0:
        return McNemarResult(0.0, 1.0, "exact", b, c)
    if n < EXACT_BELOW:
        from scipy.stats import binom

        k = min(b, c)
        p = min(1.0, 2.0 * float(binom.cdf(k, n, 0.5)))
        return McNemarResult(float(k), p, "exact", b, c)
    from scipy.stats import chi2

    stat = (abs(b - c) - 1.0) ** 2 / n
    return McNemarResult(float(stat), float(chi2.sf(stat, 1)), "chi2_cc", b, c)


def paired_bootstrap_diff_ci(
    a: object,
    b: object,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    level: float = 0.95,
    chunk: int = 256,
) -> BootstrapDiff:
    """Percentile bootstrap CI of mean(a) - mean(b) for paired per-example values (N,).

    Each replicate draws N example indices with replacement from
    `workbench.stats.bootstrap_index_chunks` (one seeded stream, at most `chunk`
    replicates at a time so memory stays bounded) and uses the same indices for `a` and
    `b`. A zero-width interval is kept here: identical per-example differences make the
    paired difference certain, which the gate needs to know.
    """
    check_positive_int("n_boot", n_boot)
    check_number("level", level, low=0, high=1, low_open=True, high_open=True)
    x = _as_1d("a", a)
    y = _as_1d("b", b)
    _check_paired(x, y, ("a", "b"))
    d = x - y
    diff = float(d.mean())
    from workbench.stats import bootstrap_replicates

    stats = bootstrap_replicates(lambda idx: d[idx].mean(axis=1), d.size, n_boot=n_boot, seed=seed, max_rows=chunk)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return BootstrapDiff(diff, float(low), float(high), int(d.size), n_boot)


def welch(a: object, b: object) -> WelchResult:
    """Welch's two-sided t-test of mean(a) vs mean(b) (independent samples, unequal
    variances), computed by `scipy.stats.ttest_ind(a, b, equal_var=False)`.

    When both samples have zero variance the t statistic is undefined: equal means give
    p = 1, different means p = 0 (the difference is certain), statistic +-inf.
    """
    x = _as_1d("a", a)
    y = _as_1d("b", b)
    if x.size < 2 or y.size < 2:
        raise DataError(f"Welch's t-test needs at least 2 values per sample, got {x.size} and {y.size}.")
    va, vb = x.var(ddof=1), y.var(ddof=1)
    if va == 0 and vb == 0:
        delta = float(x.mean() - y.mean())
        if delta == 0:
            return WelchResult(0.0, 1.0, float("nan"))
        return WelchResult(math.copysign(math.inf, delta), 0.0, float("nan"))
    from scipy.stats import ttest_ind

    res = ttest_ind(x, y, equal_var=False)
    return WelchResult(float(res.statistic), float(res.pvalue), float(res.df))
