"""Drift suite: the headline verdict (drift_detected on the clean evaluation sample)
recomputed from scratch: per-feature two-sample KS from scipy, Benjamini-Hochberg by a
loop, PSI over reference-quantile bins by a loop, and an own permutation test of the
largest KS statistic."""

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


def _psi_corrected(ref: np.ndarray, cur: np.ndarray, bins: int = 10, floor: float = 1e-4) -> float:
    out = []
    for f in range(ref.shape[1]):
        edges = np.unique(np.quantile(ref[:, f], np.linspace(0, 1, bins + 1)[1:-1]))
        p = np.bincount(np.searchsorted(edges, ref[:, f], side="right"), minlength=len(edges) + 1) / len(ref)
        q = np.bincount(np.searchsorted(edges, cur[:, f], side="right"), minlength=len(edges) + 1) / len(cur)
        p, q = np.maximum(p, floor), np.maximum(q, floor)
        psi = float(np.sum((q - p) * np.log(q / p)))
        out.append(psi - len(edges) * (1 / len(ref) + 1 / len(cur)))
    return max(out)


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
    psi_corr = _psi_corrected(a, b)
    assert row["max_psi_corrected"] == pytest.approx(psi_corr, abs=1e-9)
    rng = np.random.default_rng(1)  # own permutation test of max_f KS
    both, obs = np.concatenate([a, b]), _max_ks(a, b)
    null = []
    for _ in range(300):
        perm = rng.permutation(2 * N)
        null.append(_max_ks(both[perm[:N]], both[perm[N:]]))
    p_own = (1 + np.sum(np.array(null) >= obs - 1e-12)) / 301
    want = float(p_own <= 0.05 and psi_corr >= 0.1)
    assert flag.value == want and flag.value == (1.0 if shift else 0.0)
