"""Certify suite: randomized smoothing of a linear two-class model, whose smoothed
classifier has a closed form. For f(x) = argmax(W x + b) and noise N(0, s^2 I) the top
class has probability p_A = Phi(d / s) with d = |margin| / ||w_1 - w_0||_2 the L2
distance to the boundary, and the exact certified radius s Phi^-1(p_A) is d. The suite's
radius s Phi^-1(p_lower) (scipy's normal quantile) must never exceed d and come close to
it; the mean certified radius and smoothed accuracy are recomputed from the saved
certificates and the closed-form predictions."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from torch import nn

from tests.reference.refkit import ctx, handle, headline
from workbench.data.base import Dataset, Split
from workbench.suites.certify.suite import CertifySuite

SIGMA = 0.5


def test_linear_model_certificates_against_the_closed_form(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = (x[:, 0] - 0.5 * x[:, 2] > 0).long()
    split = Split(x, y)
    data = Dataset(name="lin", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=2)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-0.6, 0.1, 0.25], [0.6, -0.1, -0.3]]))
        model.bias.zero_()
    model.eval()
    suite = CertifySuite.from_config({"n_samples": 40, "sigmas": [SIGMA], "n0": 32, "n": 2000, "alpha": 0.001,
                                      "radii": [0.0, 0.5, 1.0], "noise_training": False,
                                      "consistency_check": False}, profile="quick")
    res = suite.run(handle(model), data, ctx(tmp_path, "certify"))
    assert res.status == "ok", res.reason
    w = model.weight.detach().double().numpy()
    xx, yy = x.double().numpy(), y.numpy()
    margin = xx @ (w[1] - w[0])
    distance = np.abs(margin) / np.linalg.norm(w[1] - w[0])
    base_pred = (margin > 0).astype(int)
    cert = np.load(tmp_path / res.artifacts["certificates"])
    key = next(k for k in cert.files if k.endswith("_radius"))
    prefix = key[: -len("radius")]
    radius, p_lower, pred = cert[key], cert[prefix + "p_lower"], cert[prefix + "prediction"]
    certified = pred >= 0  # -1 = abstain
    assert np.all(pred[certified] == base_pred[certified])  # the smoothed top class is the base prediction
    np.testing.assert_allclose(radius[certified], SIGMA * norm.ppf(p_lower[certified]), rtol=1e-9, atol=1e-12)
    assert np.all(radius[certified] <= distance[certified] + 1e-9)  # never more than the exact radius
    # p_lower is below the exact p_A = Phi(d / sigma), and not below the one-sided
    # Clopper-Pearson bound (scipy's Beta quantile, alpha 0.001) of a count as low as the
    # 1e-6 quantile of Binomial(2000, p_A): a loose certificate would fail this
    p_exact = norm.cdf(distance / SIGMA)
    assert np.all(p_lower[certified] <= p_exact[certified] + 1e-12)
    k_low = binom.ppf(1e-6, 2000, p_exact[certified])
    floor = np.where(k_low > 0, beta.ppf(0.001, np.maximum(k_low, 1), 2000 - k_low + 1), 0.0)
    assert np.all(p_lower[certified] >= floor - 1e-12)
    shown = {m.name: m for m in headline(res, CertifySuite)}
    correct_radius = np.where(pred == yy, radius, 0.0)
    assert shown["mean_certified_radius"].value == pytest.approx(float(correct_radius.mean()))
    smoothed = cert[prefix + "smoothed_prediction"]
    assert shown["smoothed_accuracy"].value == pytest.approx(float(np.mean(smoothed == yy)))
    # away from the boundary the smoothed prediction is the closed-form one (p_A > 0.99)
    far = norm.cdf(distance / SIGMA) > 0.99
    assert np.all(smoothed[far] == base_pred[far])
