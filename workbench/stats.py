"""Seeded, reproducible confidence intervals shared by every suite: the one bootstrap.

Two interval families, each named in the metric's `ci_method` tag:

- Proportions (accuracy, per-class recall and precision, robust accuracy, interval
  coverage) use the Clopper-Pearson ("exact") interval (`proportion_ci`, method
  `PROPORTION_METHOD` = "clopper_pearson"). A percentile bootstrap of a proportion near
  0 or 1 undercovers: at 3 errors in 300 it gives [0.977, 1.000] and covers the true
  accuracy about 90% of the time at a nominal 95%, and it collapses to [1, 1] when every
  example is right. Wilson is better but still dips to 92.1% at n = 100, p = 0.99 (exact
  enumeration); Clopper-Pearson never covers less than its nominal level, at the price
  of a slightly wider interval (tests/test_stats.py enumerates and simulates both).
  `wilson_ci` stays for callers that want the narrower interval.
- Everything else uses the percentile bootstrap over examples (or groups such as
  documents), method "bootstrap_percentile". All bootstraps here draw their indices from
  one seeded stream in row chunks (`bootstrap_index_chunks`), so memory stays
  O(`BOOT_CHUNK_ELEMS`) however many rows there are, and the same seed gives the same
  replicates whatever the consumer (mean, ratio, any statistic, paired difference).
  A bootstrap whose replicates are all equal (one example, or one distinct value) is
  degenerate: it says nothing about uncertainty, so it is returned as (nan, nan), which
  a `MetricRecord` stores as `ci = None`; `DEGENERATE_BOOTSTRAP` is the reason to give.

All functions take numpy arrays and return plain floats so records stay JSON-able.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from workbench.errors import ConfigError, DataError, check_number, check_positive_int

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95
# Indices held at once by a bootstrap (32 MB of int64): a chunk is (BOOT_CHUNK_ELEMS // n) rows.
BOOT_CHUNK_ELEMS = 4_000_000

WILSON = "wilson"
CLOPPER_PEARSON = "clopper_pearson"
PROPORTION_METHOD = CLOPPER_PEARSON
BOOTSTRAP = "bootstrap_percentile"
DEGENERATE_BOOTSTRAP = (
    "no confidence interval: every bootstrap resample gave the same value, which reflects too few "
    "examples or distinct values, not certainty"
)

NAN_CI = (float("nan"), float("nan"))


def _check(n_boot: int, level: float) -> None:
    check_positive_int("n_boot", n_boot)
    check_number("level", level, low=0, high=1, low_open=True, high_open=True)


def bootstrap_index_chunks(
    n: int, n_boot: int, seed: int, *, max_rows: int | None = None
) -> Iterator[np.ndarray]:
    """Seeded resampling indices for `n_boot` replicates of `n` rows, yielded as (b, n)
    int64 chunks in order (b * n <= BOOT_CHUNK_ELEMS, and b <= `max_rows` when given).

    One `np.random.default_rng(seed)` stream: concatenating the chunks gives
    `bootstrap_indices(n, n_boot, seed)`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"Expected at least one row to resample, got n={n!r}.")
    _check(n_boot, 0.5)
    step = max(1, BOOT_CHUNK_ELEMS // int(n))
    if max_rows is not None:
        step = min(step, max(1, int(max_rows)))
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - start), int(n)))


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """All (n_boot, n) resampling indices at once, for small n (tests, loops over rows).
    The same draws as `bootstrap_index_chunks`; prefer that for large n."""
    return np.concatenate(list(bootstrap_index_chunks(n, n_boot, seed)))


def bootstrap_replicates(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    max_rows: int | None = None,
) -> np.ndarray:
    """Replicates of a vectorised statistic: `statistic(idx)` gets a (b, n) chunk of
    indices and returns (b,) or (b, ...) values; the chunks' results are concatenated
    to (n_boot, ...)."""
    parts = [np.asarray(statistic(idx), dtype=np.float64) for idx in bootstrap_index_chunks(n, n_boot, seed,
                                                                                          max_rows=max_rows)]
    return np.concatenate(parts, axis=0)


def percentile_interval(replicates: np.ndarray, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """Percentile interval along axis 0 of (n_boot, ...) replicates -> (..., 2).

    Non-finite replicates are dropped per column; a column with none left, or whose
    finite replicates are all equal (degenerate), gets (nan, nan)."""
    alpha = (1 - level) / 2
    stats = np.asarray(replicates, dtype=np.float64)
    flat = stats.reshape(stats.shape[0], -1)
    out = np.full((flat.shape[1], 2), np.nan)
    if np.all(np.isfinite(flat)):
        lo, hi = np.quantile(flat, [alpha, 1 - alpha], axis=0)
        out[:, 0], out[:, 1] = lo, hi
        same = _all_equal(flat.min(axis=0), flat.max(axis=0))
    else:
        same = np.ones(flat.shape[1], dtype=bool)
        for j in range(flat.shape[1]):
            col = flat[:, j][np.isfinite(flat[:, j])]
            if col.size:
                out[j] = np.quantile(col, [alpha, 1 - alpha])
                same[j] = _all_equal(col.min(), col.max())
    out[same] = np.nan
    return out.reshape(*stats.shape[1:], 2)


def _all_equal(lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    # equal up to summation-order rounding of the same resampled values
    return np.asarray(hi - lo <= 1e-12 * np.maximum(1.0, np.abs(hi)))


def _pair(ci: np.ndarray) -> tuple[float, float]:
    return float(ci[0]), float(ci[1])


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean of per-example `values` (N,) (e.g. squared errors);
    (nan, nan) when empty or degenerate (see the module docstring)."""
    _check(n_boot, level)
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return NAN_CI
    reps = bootstrap_replicates(lambda idx: values[idx].mean(axis=1), values.size, n_boot=n_boot, seed=seed)
    return _pair(percentile_interval(reps, level))


def bootstrap_ratio_ci(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """CI of transform(sum(num) / sum(den)) resampling groups (rows) together, e.g.
    perplexity = exp(sum NLL / sum tokens) with one row per document."""
    _check(n_boot, level)
    num = np.asarray(numerator, dtype=np.float64).ravel()
    den = np.asarray(denominator, dtype=np.float64).ravel()
    if num.shape != den.shape:
        raise ConfigError(f"Expected numerator and denominator of equal shape, got {num.shape} and {den.shape}.")
    if num.size == 0:
        return NAN_CI

    def ratio(idx: np.ndarray) -> np.ndarray:
        r = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-300)
        return transform(r) if transform is not None else r

    return _pair(percentile_interval(bootstrap_replicates(ratio, num.size, n_boot=n_boot, seed=seed), level))


def bootstrap_mean_diff_ci(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of mean(a) - mean(b) for two INDEPENDENT samples (e.g. test and train
    losses), each resampled on its own stream (`seed` for a, `seed + 1` for b)."""
    _check(n_boot, level)
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return NAN_CI
    ra = bootstrap_replicates(lambda idx: a[idx].mean(axis=1), a.size, n_boot=n_boot, seed=seed)
    rb = bootstrap_replicates(lambda idx: b[idx].mean(axis=1), b.size, n_boot=n_boot, seed=seed + 1)
    return _pair(percentile_interval(ra - rb, level))


def bootstrap_stat_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """CI of an arbitrary statistic; `statistic(idx)` gets an index array (n,) into the
    examples and returns a float (e.g. macro-F1 of the resampled predictions)."""
    _check(n_boot, level)
    if n == 0:
        return NAN_CI
    reps = bootstrap_replicates(lambda idx: np.array([statistic(row) for row in idx]), n, n_boot=n_boot, seed=seed)
    return _pair(percentile_interval(reps, level))


def wilson_ci(successes: int, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion successes / n (method "wilson").
    Narrower than `proportion_ci`, but covers only ~92% at n = 100, p = 0.99.

    Never a single point for n >= 1 (at 0 or n successes one end is exactly 0 or 1, the
    other is not); (nan, nan) for n == 0."""
    from scipy.stats import norm

    _check_count(successes, n, level)
    if n == 0:
        return NAN_CI
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return float(lo), float(hi)


def _check_count(successes: int, n: int, level: float) -> None:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise DataError(f"Expected `n` to be a count >= 0, got {n!r}.")
    if int(successes) != successes or not 0 <= successes <= n:
        raise DataError(f"Expected `successes` to be a count in [0, n={n}], got {successes!r}.")
    if not 0 < level < 1:
        raise ConfigError(f"Expected `level` in (0, 1), got {level!r}.")


def clopper_pearson_ci(successes: int, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Clopper-Pearson interval of successes / n: the Beta quantiles
    (B(a/2; k, n-k+1), B(1-a/2; k+1, n-k)), with 0 at k = 0 and 1 at k = n. Its coverage
    is >= `level` for every true p; never a point for n >= 1; (nan, nan) for n == 0."""
    from scipy.stats import beta

    _check_count(successes, n, level)
    if n == 0:
        return NAN_CI
    k, alpha = int(successes), 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def proportion_ci(successes: int, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The interval every suite uses for a proportion (method `PROPORTION_METHOD`)."""
    return clopper_pearson_ci(successes, n, level)


def ci_is_missing(ci: tuple[float, float] | None) -> bool:
    """True when `ci` is None or holds a non-finite end (empty or degenerate)."""
    return ci is None or not (math.isfinite(ci[0]) and math.isfinite(ci[1]))
