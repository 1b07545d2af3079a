"""Corruptions suite: mean corrupted accuracy (classification) and mean corrupted MSE
(regression) recomputed by corrupting the inputs by hand (the documented formulas, the
suite's per-set seeds) and scoring the model in a plain loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.reference.refkit import ctx, handle, headline
from workbench.data.base import Dataset, Split
from workbench.suites.corruptions.suite import CorruptionsSuite
from workbench.torch_utils import derive_seed

SEVERITY_LEVELS = {"feature_noise": (0.1, 0.25, 0.5, 0.75, 1.0), "scaling": (0.1, 0.2, 0.35, 0.5, 0.7)}


def _by_hand(x: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(derive_seed(seed, "corruption", name, str(severity)))
    a = SEVERITY_LEVELS[name][severity - 1]
    if name == "feature_noise":  # x + a N(0, 1)
        return x + a * torch.randn(tuple(x.shape), generator=g)
    u = (torch.rand(x.shape[1], generator=g) * 2 - 1) * a  # each feature times exp(U(-a, a))
    return x * torch.exp(u)[None, :]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_mean_over_corruptions_against_a_plain_loop(tmp_path, task):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 4, generator=g)
    w = torch.tensor([1.0, -1.0, 0.5, 0.0])
    y = (x @ w > 0).long() if task == "classification" else x @ w
    split = Split(x, y)
    data = Dataset(name="t", modality="tabular", task=task, train=split, val=split, test=split,
                   num_classes=2 if task == "classification" else None)
    torch.manual_seed(0)
    model = (nn.Linear(4, 2) if task == "classification" else nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))).eval()
    names, severities = ["feature_noise", "scaling"], [1, 3, 5]
    suite = CorruptionsSuite.from_config({"n_samples": 90, "corruptions": names, "severities": severities},
                                         profile="quick")
    res = suite.run(handle(model, task=task, output="logits" if task == "classification" else "mean"), data,
                    ctx(tmp_path, "corruptions"))
    assert res.status == "ok", res.reason
    scores = []
    for name in names:
        for s in severities:
            xs = _by_hand(x, name, s, 0)
            with torch.no_grad():
                out = model(xs)
            if task == "classification":
                scores.append([float(p == t) for p, t in zip(out.argmax(1).tolist(), y.tolist())])
            else:
                scores.append([(p - t) ** 2 for p, t in zip(out.double().tolist(), y.double().tolist())])
    (shown,) = headline(res, CorruptionsSuite)
    assert shown.name == ("mean_corrupted_accuracy" if task == "classification" else "mean_corrupted_mse")
    assert shown.value == pytest.approx(float(np.mean(scores)), rel=1e-6)
    assert shown.n == 90 and shown.ci[0] <= shown.value <= shown.ci[1]
