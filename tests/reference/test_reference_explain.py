"""Explain suite (no headline figures of its own; its key ones): exact Shapley values by
a plain enumeration of subsets, and the completeness gap of integrated gradients from
the saved attributions and the model's own outputs."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.reference.refkit import ctx, handle
from workbench.data.base import Dataset, Split
from workbench.suites.explain.suite import ExplainSuite


def test_exact_shapley_and_ig_completeness_against_enumeration(tmp_path):
    g = torch.Generator().manual_seed(0)
    m_features = 5
    x = torch.randn(60, m_features, generator=g)
    split = Split(x, (x[:, 0] * x[:, 1] > 0).long())
    data = Dataset(name="t", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=2, feature_names=tuple(f"f{i}" for i in range(m_features)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(m_features, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    suite = ExplainSuite.from_config({"methods": ["integrated_gradients", "shapley"], "n_examples": 4,
                                      "quality": ["completeness"], "shap_value_function": "baseline",
                                      "ig_steps": 64}, profile="quick")
    res = suite.run(handle(model), data, ctx(tmp_path, "explain"))
    assert res.status == "ok", res.reason
    with np.load(tmp_path / res.artifacts["examples"]) as ex:
        attr_shap, attr_ig = ex["attr_shapley"], ex["attr_integrated_gradients"]
        xs, target = torch.as_tensor(ex["input"]), ex["prediction"]

    def f(inp: torch.Tensor, t: int) -> float:  # the explained logit
        with torch.no_grad():
            return float(model(inp[None].float())[0, t])

    for i in range(len(xs)):
        t = int(target[i])
        for j in range(m_features):  # baseline Shapley: absent features are 0
            others = [k for k in range(m_features) if k != j]
            phi = 0.0
            for size in range(m_features):
                for s in itertools.combinations(others, size):
                    w = math.factorial(size) * math.factorial(m_features - size - 1) / math.factorial(m_features)
                    with_j, without = torch.zeros(m_features), torch.zeros(m_features)
                    with_j[list(s) + [j]] = xs[i][list(s) + [j]]
                    without[list(s)] = xs[i][list(s)]
                    phi += w * (f(with_j, t) - f(without, t))
            assert attr_shap[i, j] == pytest.approx(phi, abs=1e-5)
    quality = json.loads((tmp_path / res.artifacts["quality"]).read_text())
    for i in range(len(xs)):  # |sum(IG) - (f(x) - f(0))| / |f(x) - f(0)|
        t = int(target[i])
        delta = f(xs[i], t) - f(torch.zeros(m_features), t)
        gap = abs(attr_ig[i].sum() - delta) / max(abs(delta), 1e-6)
        assert quality["integrated_gradients"]["completeness_gap"][i] == pytest.approx(gap, abs=1e-5)
    med = res.metric("completeness_gap", method="integrated_gradients")
    assert med.value == pytest.approx(float(np.median(quality["integrated_gradients"]["completeness_gap"])))
