"""PSI on IDENTICAL distributions at small n: the old estimator against the current one.

    .venv/bin/python -m workbench.suites.drift.psi_study [--seeds 20] [--power]

For each kind of feature (64 features each) and n = m in 30, 60, 200, 1000, `--seeds` pairs
of samples from one distribution: disjoint random halves of sklearn's digits pixels (/16:
discrete, many near-constant), N(0, 1), a 5-level discrete uniform, and a near-constant
feature (95% zeros, else U(0, 1)). Printed per row, averaged over seeds: the old
bias-corrected max PSI (proportions floored at 1e-4, reference-quantile edges,
minus (k-1)(1/n + 1/m), max over features), the current `max_psi`, `max_psi_corrected`,
`psi_lower_bound`, and how often the practical-size rule, the KS test and the drift verdict
fire (each should be about alpha = 0.05 or less). Every true PSI here is 0.

`--power`: the price of a calibrated maximum. 64 N(0, 1) features, the first shifted by
delta in the current sample (true PSI in the reference's deciles, closed form); how often
the verdict is drift and the mean `psi_lower_bound`, at n = m = 60 and 200.
"""

from __future__ import annotations

import argparse

import numpy as np

from workbench.suites.drift.functional import detect_drift

KINDS = ("digits", "normal", "discrete5", "near_constant")
SIZES = (30, 60, 200, 1000)


def legacy_max_psi_corrected(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """The estimator before the fix, for comparison only: np.quantile edges (ties merged),
    proportions floored at 1e-4, minus the χ² bias (k-1)(1/n + 1/m), max over features."""
    out = []
    for f in range(ref.shape[1]):
        e = np.unique(np.quantile(ref[:, f], np.linspace(0, 1, bins + 1)[1:-1]))
        p = np.bincount(np.searchsorted(e, ref[:, f], side="right"), minlength=e.size + 1) / len(ref)
        q = np.bincount(np.searchsorted(e, cur[:, f], side="right"), minlength=e.size + 1) / len(cur)
        p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
        out.append(np.sum((q - p) * np.log(q / p)) - e.size * (1 / len(ref) + 1 / len(cur)))
    return float(max(out))


def identical_pair(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two samples (n, 64) of one distribution of the given kind."""
    if kind == "digits":
        from sklearn.datasets import load_digits

        x = load_digits().data / 16.0
        idx = rng.permutation(len(x))
        return x[idx[:n]], x[idx[n : 2 * n]]
    if kind == "normal":
        return rng.normal(size=(n, 64)), rng.normal(size=(n, 64))
    if kind == "discrete5":
        return rng.integers(0, 5, size=(n, 64)).astype(float), rng.integers(0, 5, size=(n, 64)).astype(float)
    if kind == "near_constant":
        draw = lambda: np.where(rng.random((n, 64)) < 0.95, 0.0, rng.random((n, 64)))  # noqa: E731
        return draw(), draw()
    raise ValueError(f"Unknown kind {kind!r}; expected one of {', '.join(KINDS)}.")


def study(seeds: int = 20, permutations: int = 99) -> list[dict[str, object]]:
    """One row per (kind, n); None where PSI is not estimable (n < 5 per bin)."""
    rows = []
    for kind in KINDS:
        for n in SIZES:
            n = min(n, 898) if kind == "digits" else n  # digits: 1797 images, two disjoint halves
            rng = np.random.default_rng(n)
            old, reps = [], []
            for seed in range(seeds):
                a, b = identical_pair(kind, n, rng)
                old.append(legacy_max_psi_corrected(a, b))
                reps.append(detect_drift(a, b, n_permutations=permutations, seed=seed))
            mean = lambda key: (None if reps[0].psi is None  # noqa: E731
                                else float(np.mean([getattr(r, key) for r in reps])))
            rows.append({"kind": kind, "n": n, "old_max_psi_corrected": float(np.mean(old)),
                         "max_psi": mean("max_psi"), "max_psi_corrected": mean("max_psi_corrected"),
                         "psi_lower_bound": mean("psi_lower_bound"), "practical_rate": mean("practically_significant"),
                         "ks_rate": float(np.mean([r.statistically_significant for r in reps])),
                         "drift_rate": float(np.mean([r.drift is True for r in reps]))})
    return rows


def power(seeds: int = 20, permutations: int = 99) -> list[dict[str, object]]:
    """One row per (n, delta): true PSI, drift rate, mean psi_lower_bound."""
    from scipy.stats import norm

    z = norm.ppf(np.arange(1, 10) / 10)
    rows = []
    for n in (60, 200):
        for delta in (0.5, 1.0, 1.5):
            q = np.diff(np.concatenate([[0.0], norm.cdf(z - delta), [1.0]]))
            rng = np.random.default_rng(0)
            reps = []
            for seed in range(seeds):
                a, b = rng.normal(size=(n, 64)), rng.normal(size=(n, 64))
                b[:, 0] += delta
                reps.append(detect_drift(a, b, n_permutations=permutations, seed=seed))
            rows.append({"n": n, "delta": delta, "true_psi": float(np.sum((q - 0.1) * np.log(q / 0.1))),
                         "drift_rate": float(np.mean([r.drift is True for r in reps])),
                         "psi_lower_bound": float(np.mean([r.psi_lower_bound for r in reps]))})
    return rows


def _table(rows: list[dict[str, object]]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--power", action="store_true", help="shifted samples instead of identical ones")
    args = ap.parse_args()
    _table(power(args.seeds) if args.power else study(args.seeds))


if __name__ == "__main__":
    main()
