"""Quality checks: closed forms, curves against their definition, Spearman against scipy,
the randomisation sanity check on a trained CNN, captum's infidelity/sensitivity on a
linear model where they are known to vanish."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.suites.explain.gradients import ExplainedModel, gradient_attribution, per_unit, untouched
from workbench.suites.explain.quality import (
    completeness_gap,
    curve_auc,
    infidelity_scores,
    max_sensitivity_scores,
    order_units,
    perturbation_curves,
    randomised_copy,
    rank_correlation,
    replacement_inputs,
    top_k_precision,
    unit_index,
)
from workbench.suites.explain.testing import LinearModel, TinyCNN, digits_dataset, quick_train
from workbench.errors import ConfigError, DataError
from workbench.torch_utils import ModuleState

torch.set_num_threads(1)


def test_completeness_gap_closed_form():
    gap = completeness_gap(np.array([1.0, 2.0, 0.5]), np.array([3.0, 3.0, 1.0]), np.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(gap[:2], [0.5, 1 / 3])
    assert gap[2] == pytest.approx(0.5 / 1e-6)  # |delta| = 0 falls back to eps
    with pytest.raises(DataError):
        completeness_gap(np.zeros(2), np.zeros(3), np.zeros(3))


def test_curve_auc_trapezoid():
    np.testing.assert_allclose(curve_auc(np.full((2, 5), 0.3)), [0.3, 0.3])
    np.testing.assert_allclose(curve_auc(np.linspace(1, 0, 9)[None]), [0.5])


def test_rank_correlation_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 20)), rng.normal(size=(4, 20))
    b[:, :5] = a[:, :5]  # some ties in |.| and shared values
    got = rank_correlation(a, b, absolute=False)
    for i in range(4):
        assert got[i] == pytest.approx(spearmanr(a[i], b[i]).statistic)
    got_abs = rank_correlation(a, b, absolute=True)
    assert got_abs[0] == pytest.approx(spearmanr(np.abs(a[0]), np.abs(b[0])).statistic)
    assert np.isnan(rank_correlation(np.ones((1, 20)), a[:1])[0])


def test_top_k_precision_and_order_units():
    scores = np.array([[0.1, -5.0, 0.2, 3.0], [1.0, 0.0, 0.0, 0.0]])
    # row 2: unit 0 first, then one slot shared by three tied zeros, two of them relevant
    np.testing.assert_allclose(top_k_precision(scores, [1, 3]), [1.0, (0 + 2 / 3) / 2])
    np.testing.assert_allclose(top_k_precision(np.zeros((1, 8)), [0, 5]), [2 / 8])  # the base rate
    with pytest.raises(DataError):
        top_k_precision(scores, [7])
    order = order_units(np.array([[0.0, 2.0, 2.0, 1.0]]), np.random.default_rng(0))
    assert order[0, 3] == 0 and order[0, 2] == 3 and set(order[0, :2]) == {1, 2}


def test_units_of_each_modality():
    assert unit_index((2, 3, 3), "input", "image")[1, 2, 1].item() == 7  # pixel h*W + w, all channels
    assert unit_index((5, 4), "embedding", "tokens")[3].tolist() == [3, 3, 3, 3]
    assert unit_index((6,), "input", "tabular").tolist() == list(range(6))


def _linear_setup():
    torch.manual_seed(0)
    m = LinearModel(10, 2).eval()
    x = torch.randn(12, 10)
    em = ExplainedModel(m, "logits", explained="probability")
    target = em(x).argmax(1)
    return m, em, x, target


def test_curve_endpoints_follow_the_definition():
    m, em, x, target = _linear_setup()
    f = lambda z, t: em(z).gather(1, t[:, None])[:, 0]  # noqa: E731
    rep = torch.zeros_like(x)
    order = np.stack([np.random.default_rng(i).permutation(10) for i in range(12)])
    dele = perturbation_curves(f, x, target, order, torch.arange(10), rep, mode="deletion", n_steps=5)
    ins = perturbation_curves(f, x, target, order, torch.arange(10), rep, mode="insertion", n_steps=5)
    with torch.no_grad():
        fx, fr = f(x, target).double().numpy(), f(rep, target).double().numpy()
    np.testing.assert_allclose(dele[:, 0], fx, rtol=1e-6)
    np.testing.assert_allclose(dele[:, -1], fr, rtol=1e-6)
    np.testing.assert_allclose(ins[:, 0], fr, rtol=1e-6)
    np.testing.assert_allclose(ins[:, -1], fx, rtol=1e-6)
    # step 2 of 5 removes the first round(2 * 10 / 5) = 4 units of each order
    i = 3
    z = x[i].clone()
    z[torch.as_tensor(order[i, :4])] = 0
    assert dele[i, 2] == pytest.approx(float(f(z[None], target[i : i + 1])[0]), rel=1e-6)
    with pytest.raises(ConfigError):
        perturbation_curves(f, x, target, order, torch.arange(10), rep, mode="both")


@pytest.mark.parametrize("replacement", ["zero", "mean", "sample"])
def test_true_attribution_beats_random_order_on_a_linear_model(replacement):
    """phi = w_target * (x - r) is the exact effect of removing each feature: its deletion
    AUC is below and its insertion AUC above the random-order control, for every replacement."""
    m, em, x, target = _linear_setup()
    f = lambda z, t: em(z).gather(1, t[:, None])[:, 0]  # noqa: E731
    train = torch.randn(200, 10, generator=torch.Generator().manual_seed(1)) + 0.5
    rep = replacement_inputs(replacement, x, train_z=train, modality="tabular", rng=np.random.default_rng(0))
    w = m.linear.weight.detach()
    phi = ((w[target] - w[1 - target]) * (x - rep)).numpy()  # effect on the target's logit margin
    rng = np.random.default_rng(0)
    true_order = order_units(phi, rng)
    rand_order = np.stack([rng.permutation(10) for _ in range(12)])
    units = torch.arange(10)
    d_true = curve_auc(perturbation_curves(f, x, target, true_order, units, rep, mode="deletion"))
    d_rand = curve_auc(perturbation_curves(f, x, target, rand_order, units, rep, mode="deletion"))
    i_true = curve_auc(perturbation_curves(f, x, target, true_order, units, rep, mode="insertion"))
    i_rand = curve_auc(perturbation_curves(f, x, target, rand_order, units, rep, mode="insertion"))
    assert d_true.mean() < d_rand.mean() - 0.05
    assert i_true.mean() > i_rand.mean() + 0.05


def test_blur_replacement_is_a_gaussian_filter_and_image_only():
    from scipy.ndimage import gaussian_filter

    img = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = replacement_inputs("blur", img, train_z=img, modality="image", rng=np.random.default_rng(0))
    np.testing.assert_allclose(out.numpy(), gaussian_filter(img.double().numpy(), (0, 0, 1, 1), mode="nearest"),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="images"):
        replacement_inputs("blur", img.flatten(1), train_z=img.flatten(1), modality="tabular",
                           rng=np.random.default_rng(0))


def test_randomised_copy_leaves_the_original_alone():
    torch.manual_seed(0)
    m = TinyCNN()
    m.train()
    before = ModuleState.capture(m)
    r = randomised_copy(m, seed=1)
    assert before.diff(m) == []
    assert not torch.equal(r.features[0].weight, m.features[0].weight)
    assert not r.training and not any(p.requires_grad for p in r.parameters())
    r2 = randomised_copy(m, seed=1)
    assert torch.equal(r.features[0].weight, r2.features[0].weight)  # seeded


def test_sanity_check_separates_saliency_from_input_x_gradient_on_digits():
    """Adebayo et al.: saliency of a trained and a re-initialised CNN are unrelated (low rank
    correlation, passes), while input x gradient keeps the digit's shape (high, fails)."""
    data = digits_dataset()
    torch.manual_seed(0)
    model = quick_train(TinyCNN(), data, epochs=2, lr=1e-2)
    x = data.test.x[:24]
    rand = randomised_copy(model, seed=5)
    corr = {}
    for method in ("saliency", "input_x_gradient"):
        attrs = []
        for mod in (model, rand):
            em = ExplainedModel(mod, "logits")
            with untouched(mod):
                target = ExplainedModel(model, "logits")(x).argmax(1)
                a = gradient_attribution(method, em, x, target=target, baseline=torch.zeros(1, 1, 8, 8),
                                         modality="image")
            attrs.append(per_unit(a, "input", "image").numpy())
        corr[method] = float(np.nanmean(rank_correlation(attrs[0], attrs[1])))
    assert corr["saliency"] < 0.5 < corr["input_x_gradient"], corr


def test_infidelity_and_sensitivity_vanish_for_the_gradient_of_a_linear_model():
    """For f(x) = w.x + b: f(x) - f(x - I) = w.I, so phi = w has zero infidelity, and the
    gradient never changes under perturbation (zero max-sensitivity)."""
    torch.manual_seed(0)
    m = LinearModel(6, 1).eval()
    em = ExplainedModel(m, "mean")
    x = torch.randn(5, 6)
    w = m.linear.weight.detach()[0].expand_as(x)
    zero = infidelity_scores(em, x, w, None, noise_std=0.5, n_samples=8, seed=0)
    noise = infidelity_scores(em, x, torch.randn(5, 6, generator=torch.Generator().manual_seed(2)), None,
                              noise_std=0.5, n_samples=8, seed=0)
    assert np.all(zero < 1e-8) and np.all(noise > 1e-3)

    def explain(inputs, target=None, baselines=None):
        return gradient_attribution("saliency", em, inputs, target=target, baseline=baselines, modality="tabular")

    with untouched(m):
        sens = max_sensitivity_scores(explain, x, target=None, baselines=torch.zeros(1, 6), radius=0.1,
                                      n_samples=4, seed=0)
    np.testing.assert_allclose(sens, 0.0, atol=1e-7)
