"""Uncertainty suite: ECE, NLL and Brier of a classifier and the predictive-interval
coverage and Gaussian NLL of a mean/variance regressor, recomputed with plain loops and
scipy's normal quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm
from torch import nn

from tests.reference.refkit import ctx, handle, headline
from workbench.data.base import Dataset, Split
from workbench.suites.uncertainty.suite import UncertaintySuite

PARAMS = {"methods": ["single"], "ood": [], "n_boot": 100, "n_calibrated_sims": 50}


def _ece_loop(conf: list[float], correct: list[bool], bins: int = 15) -> float:
    """sum_b |accuracy_b - mean confidence_b| * n_b / N over equal-width bins of [0, 1]."""
    members: dict[int, list[int]] = {}
    for i, c in enumerate(conf):
        members.setdefault(min(int(c * bins), bins - 1), []).append(i)
    total = 0.0
    for idx in members.values():
        acc = sum(correct[i] for i in idx) / len(idx)
        mean_conf = sum(conf[i] for i in idx) / len(idx)
        total += abs(acc - mean_conf) * len(idx) / len(conf)
    return total


def test_classification_headline_against_loops(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 5, generator=g)
    y = ((x[:, 0] - x[:, 1] + 0.8 * torch.randn(240, generator=g)) > 0).long()
    split = Split(x, y)
    data = Dataset(name="u", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2)).eval()
    res = UncertaintySuite.from_config(PARAMS, profile="quick").run(handle(model), data, ctx(tmp_path, "uncertainty"))
    assert res.status == "ok", res.reason
    with torch.no_grad():
        logits = model(x).double()
    nll = brier = 0.0
    conf, correct = [], []
    for row, label in zip(logits.tolist(), y.tolist()):
        m = max(row)
        z = sum(math.exp(v - m) for v in row)
        p = [math.exp(v - m) / z for v in row]
        nll += -(row[label] - m - math.log(z))
        brier += sum((pk - (1.0 if k == label else 0.0)) ** 2 for k, pk in enumerate(p))
        conf.append(max(p))
        correct.append(p.index(max(p)) == label)
    n = len(y)
    shown = {m.name: m for m in headline(res, UncertaintySuite)}
    assert set(shown) == {"ece", "nll", "brier"}
    assert shown["nll"].value == pytest.approx(nll / n, rel=1e-6)
    assert shown["brier"].value == pytest.approx(brier / n, rel=1e-6)
    assert shown["ece"].value == pytest.approx(_ece_loop(conf, correct), abs=1e-9)
    acc = res.metric("accuracy", method="single")
    exact = binomtest(sum(correct), n).proportion_ci(0.95, method="exact")
    assert acc.value == pytest.approx(sum(correct) / n) and acc.ci == pytest.approx((exact.low, exact.high))


class MeanLogVar(nn.Module):
    """Mean w.x and log-variance 2 log(0.5 + |x_0|): a known heteroscedastic Gaussian."""

    output_kind = "mean_logvar"

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -0.5, 0.25]))
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.drop(x) @ self.w
        return torch.stack([mean, 2 * torch.log(0.5 + x[:, 0].abs())], 1)


def test_regression_interval_coverage_and_nll_against_scipy(tmp_path):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.0, -0.5, 0.25]) + (0.5 + x[:, 0].abs()) * 1.3 * torch.randn(200, generator=g)
    split = Split(x, y)
    data = Dataset(name="h", modality="tabular", task="regression", train=split, val=split, test=split)
    model = MeanLogVar().eval()
    res = UncertaintySuite.from_config(PARAMS, profile="quick").run(
        handle(model, task="regression", output="mean_logvar"), data, ctx(tmp_path, "uncertainty"))
    assert res.status == "ok", res.reason
    mean = (x @ torch.tensor([1.0, -0.5, 0.25])).double().numpy()
    sigma = (0.5 + x[:, 0].abs()).double().numpy()
    yy = y.double().numpy()
    z = norm.ppf(0.95)  # the central 90% interval
    k = int(np.sum(np.abs(yy - mean) <= z * sigma))
    shown = {m.name: m for m in headline(res, UncertaintySuite)}
    cov = shown["interval_coverage"]
    assert cov.value == pytest.approx(k / 200) and cov.value < 0.9  # sigma is 1.3x too small: undercovers
    exact = binomtest(k, 200).proportion_ci(0.95, method="exact")
    assert cov.ci == pytest.approx((exact.low, exact.high))
    assert shown["nll"].value == pytest.approx(float(np.mean(-norm.logpdf(yy, mean, sigma))), rel=1e-5)
