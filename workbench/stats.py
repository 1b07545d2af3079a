"""Seeded, reproducible confidence intervals shared by every suite.

Percentile bootstrap over examples (or over groups such as documents). All functions
take numpy arrays and return plain floats so records stay JSON-able.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workbench.errors import ConfigError

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95


def _check(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigError(f"Expected `n_boot` to be an int > 0, got {n_boot!r}.")
    if not 0 < level < 1:
        raise ConfigError(f"Expected `level` in (0, 1), got {level!r}.")


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) resampling indices from a seeded generator."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def _percentile(stats: np.ndarray, level: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0
) -> tuple[float, float]:
    """CI of the mean of per-example `values` (N,) (e.g. 0/1 correctness, squared errors)."""
    _check(n_boot, level)
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return (float("nan"), float("nan"))
    if values.size == 1:
        return (float(values[0]), float(values[0]))
    idx = bootstrap_indices(values.size, n_boot, seed)
    return _percentile(values[idx].mean(axis=1), level)


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
        return (float("nan"), float("nan"))
    idx = bootstrap_indices(num.size, n_boot, seed)
    ratio = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-300)
    if transform is not None:
        ratio = transform(ratio)
    return _percentile(ratio, level)


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
        return (float("nan"), float("nan"))
    idx = bootstrap_indices(n, n_boot, seed)
    stats = np.array([statistic(row) for row in idx], dtype=np.float64)
    return _percentile(stats, level)


def wilson_ci(successes: int, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (used for robust accuracy)."""
    from scipy.stats import norm

    if n == 0:
        return (float("nan"), float("nan"))
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
