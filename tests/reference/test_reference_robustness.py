"""Robustness suite: the worst-case robust accuracy of a linear two-class model against
its closed form. For logits z = W x + b and an unbounded L-inf ball, the smallest
perturbation that flips a correctly classified x has size |margin| / ||w_1 - w_0||_1
(margin = z_y - z_other), and one signed-gradient step of size eps reaches it, so FGSM,
PGD and their worst case are all exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from tests.reference.refkit import ctx, handle, headline
from workbench.data.base import Dataset, Split
from workbench.suites.robustness.suite import RobustnessSuite


def test_linear_model_worst_case_robust_accuracy_is_the_closed_form(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    split = Split(x, y)
    data = Dataset(name="lin", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=2)
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-0.5, -0.2, 0.1, 0.0], [0.5, 0.3, -0.1, 0.05]]))
        model.bias.copy_(torch.tensor([0.05, -0.05]))
    model.eval()
    eps_grid = [0.1, 0.3, 0.6]
    suite = RobustnessSuite.from_config({"n_samples": 120, "eps": eps_grid,
                                         "attacks": ["fgsm", "pgd"], "pgd_steps": 10, "masking_checks": False,
                                         "n_examples": 0}, profile="quick")
    res = suite.run(handle(model), data, ctx(tmp_path, "robustness"))
    assert res.status == "ok", res.reason
    w = model.weight.detach().double().numpy()
    b = model.bias.detach().double().numpy()
    xx, yy = x.double().numpy(), y.numpy()
    z = xx @ w.T + b
    correct = z.argmax(1) == yy
    margin = np.abs(z[:, 1] - z[:, 0])
    radius = margin / np.abs(w[1] - w[0]).sum()  # L-inf distance to the decision boundary
    shown = [m for m in headline(res, RobustnessSuite) if m.name == "robust_accuracy"]
    assert sorted({m.tags["eps"] for m in shown}) == eps_grid
    assert {m.tags["attack"] for m in shown} == {"fgsm", "pgd", "worst_case"}
    for m in shown:  # every attack and their per-example worst case hit the closed form
        eps = m.tags["eps"]
        k = int(np.sum(correct & (radius > eps)))
        assert m.value == pytest.approx(k / len(yy)), eps
        exact = binomtest(k, len(yy)).proportion_ci(0.95, method="exact")
        assert m.ci == pytest.approx((exact.low, exact.high))
        for attack in ("fgsm", "pgd"):
            assert res.metric("robust_accuracy", attack=attack, eps=eps).value == pytest.approx(k / len(yy))
