"""LIME wrappers: segmentation of tiny images, recovery of additive models (where the
surrogate is exact), fidelity numbers that drop on a non-additive model, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.suites.explain.lime_methods import lime_image, lime_tabular, lime_tokens, slic_segments
from workbench.suites.explain.testing import digits_dataset
from workbench.errors import DataError


def test_slic_gives_a_sensible_number_of_segments_on_digits():
    """lime's default quickshift yields ~2 segments on 8x8 digits; SLIC-16 follows the strokes."""
    images = digits_dataset().test.x[:30].numpy()
    counts = []
    for img in images:
        seg = slic_segments(img, n_segments=16)
        assert seg.shape == (8, 8)
        assert sorted(np.unique(seg)) == list(range(seg.max() + 1))  # contiguous labels 0..M-1
        counts.append(seg.max() + 1)
    assert 8 <= np.mean(counts) <= 16 and min(counts) >= 5
    with pytest.raises(DataError):
        slic_segments(images[0, 0])


def test_tokens_additive_model_is_recovered_with_perfect_fidelity():
    """f(mask) = c . mask: the surrogate is exact (R^2 ~ 1, local error ~ 0) and its weights
    are c up to Ridge's small shrinkage."""
    c = np.array([0.5, -2.0, 0.0, 3.0, 1.0, 0.0, -0.7])
    fs = [lambda mask, c=c: mask @ c + 1.0] * 2
    res = lime_tokens(fs, n_tokens=7, n_examples=2, num_samples=400, seed=0)
    assert res.attributions.shape == (2, 7)
    assert (res.r2 > 0.999).all() and (res.local_error < 0.05).all()
    for a in res.attributions:
        assert np.corrcoef(a, c)[0, 1] > 0.999
        np.testing.assert_allclose(a, c, atol=0.1)
    again = lime_tokens(fs, n_tokens=7, n_examples=2, num_samples=400, seed=0)
    np.testing.assert_array_equal(again.attributions, res.attributions)


def test_low_fidelity_on_a_non_additive_model():
    """f = token 0 XOR token 1 present: no linear surrogate can fit it."""
    fs = [lambda mask: ((mask[:, 0] + mask[:, 1]) % 2).astype(float)]
    res = lime_tokens(fs, n_tokens=10, n_examples=1, num_samples=400, seed=0)
    assert res.r2[0] < 0.5
    assert res.local_error[0] > 0.05


def test_image_linear_model_segment_weights_follow_segment_contributions():
    """f(img) = sum(w * img), absent superpixels set to 0: a superpixel's effect is the sum of
    w * x over it, exactly linear in presence."""
    data = digits_dataset()
    rng = np.random.default_rng(0)
    w = rng.normal(size=(1, 8, 8))
    images = data.test.x[:2].numpy().astype(np.float64)
    segments = np.stack([slic_segments(img) for img in images])
    fs = [lambda batch: (batch * w).reshape(len(batch), -1).sum(1)] * 2
    res = lime_image(fs, images, segments, num_samples=300, seed=0, hide_value=0.0)
    assert res.attributions.shape == images.shape
    for i in range(2):
        want = np.array([(w[0] * images[i, 0])[segments[i] == k].sum() for k in range(segments[i].max() + 1)])
        assert np.corrcoef(res.unit_weights[i], want)[0, 1] > 0.99
        assert res.r2[i] > 0.99
        assert res.local_error[i] < 0.05 * np.abs(want).sum()


def test_tabular_recovers_the_relevant_features():
    """Only features 1 and 4 matter: they carry the two largest |weights| (quartile-
    discretised LIME, all features kept)."""
    rng = np.random.default_rng(1)
    train = rng.normal(size=(300, 6))
    x = rng.normal(size=(3, 6)) * 2.0

    def f(a: np.ndarray) -> np.ndarray:
        return 2.0 * a[:, 1] - 3.0 * a[:, 4]

    res = lime_tabular([f] * 3, x, train, num_samples=500, seed=0)
    assert res.attributions.shape == (3, 6)
    for a in res.attributions:
        assert set(np.argsort(-np.abs(a))[:2]) == {1, 4}
    assert np.isfinite(res.r2).all() and (res.local_error >= 0).all()
