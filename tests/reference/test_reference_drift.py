"""Drift suite: the headline verdict (drift_detected on the clean evaluation sample)
recomputed from scratch: per-feature two-sample KS from scipy, Benjamini-Hochberg by a
loop, PSI over reference-quantile bins by a loop (+0.5 count per bin), and an own
permutation test of the largest KS statistic and of the largest bias-corrected PSI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from tests.reference.refkit import ctx, handle, headline
from workbench.data.base import Dataset, Split
from workbench.suites.drift.suite import DriftSuite

N = 150


def _bh(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 1.0
    for rank in range(len(p), 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * len(p) / rank)
        adj[i] = running
    return adj


def _psi(ref: np.ndarray, cur: np.ndarray, bins_of: np.ndarray, bins: int = 10, pseudo: float = 0.5) -> np.ndarray:
    """Per-feature PSI by a loop in the bins of the sample `bins_of`: cuts halfway between its
    order statistics at ranks j·n/bins (continuous data, n divisible by bins), +0.5 count per bin."""
    out = []
    for f in range(ref.shape[1]):
        s = np.sort(bins_of[:, f])
        edges = [(s[j * len(s) // bins - 1] + s[j * len(s) // bins]) / 2 for j in range(1, bins)]
        lo, hi = [-np.inf] + edges, edges + [np.inf]
        total = 0.0
        for a, b in zip(lo, hi):
            p = (np.sum((ref[:, f] >= a) & (ref[:, f] < b)) + pseudo) / (len(ref) + pseudo * bins)
            q = (np.sum((cur[:, f] >= a) & (cur[:, f] < b)) + pseudo) / (len(cur) + pseudo * bins)
            total += (q - p) * np.log(q / p)
        out.append(total)
    return np.array(out)


def _max_ks(a: np.ndarray, b: np.ndarray) -> float:
    return max(ks_2samp(a[:, f], b[:, f]).statistic for f in range(a.shape[1]))


@pytest.mark.parametrize("shift", [0.0, 0.8])
def test_drift_verdict_against_scipy_and_an_own_permutation_test(tmp_path, shift):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(N, 3, generator=g)
    test = torch.randn(N, 3, generator=g)
    test[:, 0] += shift
    tr, te = Split(train, (train[:, 0] > 0).long()), Split(test, (test[:, 0] > 0).long())
    data = Dataset(name="d", modality="tabular", task="classification", train=tr, val=te, test=te, num_classes=2)
    model = torch.nn.Linear(3, 2).eval()
    res = DriftSuite.from_config({"n_samples": N, "shifts": [], "permutations": 200}, profile="quick").run(
        handle(model), data, ctx(tmp_path, "drift"))
    assert res.status == "ok", res.reason
    (flag,) = headline(res, DriftSuite)
    rows = json.loads((tmp_path / res.artifacts["drift"]).read_text())
    row = next(r for r in rows if r["shift"] == "none")
    a, b = train.double().numpy(), test.double().numpy()
    # n·m = 22 500 >= 10^4: the suite uses scipy's asymptotic p-values there (exact below)
    ks = [ks_2samp(a[:, f], b[:, f], method="asymp") for f in range(3)]
    assert row["ks_statistic"] == pytest.approx([k.statistic for k in ks])
    assert row["ks_pvalue"] == pytest.approx([k.pvalue for k in ks], rel=1e-6)
    assert row["ks_pvalue_adjusted"] == pytest.approx(_bh(np.array([k.pvalue for k in ks])).tolist(), rel=1e-6)
    psi = _psi(a, b, a)
    assert row["psi"] == pytest.approx(psi.tolist(), abs=1e-12)
    rng = np.random.default_rng(1)  # own permutation test of max_f KS; own null of PSI in a's bins
    both, obs = np.concatenate([a, b]), _max_ks(a, b)
    null, null_psi = [], []
    for _ in range(300):
        perm = rng.permutation(2 * N)
        null.append(_max_ks(both[perm[:N]], both[perm[N:]]))
        null_psi.append(_psi(both[perm[:N]], both[perm[N:]], a))
    p_own = (1 + np.sum(np.array(null) >= obs - 1e-12)) / 301
    bias = np.mean(null_psi, axis=0)  # practical size: largest bias-corrected PSI beyond its null 95% quantile
    lower = (psi - bias).max() - np.quantile((np.array(null_psi) - bias).max(axis=1), 0.95)
    assert row["psi_lower_bound"] == pytest.approx(max(0.0, lower), abs=0.03)  # own vs suite permutations
    want = float(p_own <= 0.05 and lower >= 0.1)
    assert flag.value == want and flag.value == (1.0 if shift else 0.0)
