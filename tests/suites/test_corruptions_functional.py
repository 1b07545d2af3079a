"""Corruptions against independent references (scipy.ndimage for blur and shift) and the
properties each must have (noise level, contrast factor, imputation, token edits)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from workbench.suites.corruptions import functional as C
from workbench.errors import ConfigError, DataError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def images():
    return torch.rand(6, 2, 8, 8, generator=_gen(1))


@pytest.mark.parametrize("name", C.BY_MODALITY["image"])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_image_corruptions_keep_shape_bounds_input_and_are_seeded(images, name, severity):
    before = images.clone()
    out = C.corrupt(images, name, severity, generator=_gen(3), bounds=(0.0, 1.0))
    assert torch.equal(images, before)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, images)
    assert torch.equal(out, C.corrupt(images, name, severity, generator=_gen(3), bounds=(0.0, 1.0)))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_blur_equals_scipy_gaussian_filter(images, severity):
    sigma = C.SEVERITIES["blur"][severity - 1]
    radius = max(1, math.ceil(2 * sigma))
    out = C.blur(images, severity, generator=_gen())
    for i in range(images.shape[0]):
        for c in range(images.shape[1]):
            # torch's "reflect" padding is scipy's "mirror"; truncate so scipy uses the same radius
            ref = ndimage.gaussian_filter(images[i, c].double().numpy(), sigma, mode="mirror", truncate=radius / sigma)
            np.testing.assert_allclose(out[i, c].numpy(), ref, atol=1e-6)


def test_shift_equals_scipy_bilinear_translation(images):
    severity = 3
    d = C.SEVERITIES["shift"][severity - 1]
    out = C.shift(images, severity, generator=_gen(5), bounds=(0.0, 1.0))
    angle = torch.rand(images.shape[0], generator=_gen(5), dtype=torch.float64) * 2 * math.pi  # the draws shift() makes
    for i in range(images.shape[0]):
        dx, dy = float(torch.cos(angle[i]) * d), float(torch.sin(angle[i]) * d)
        for c in range(images.shape[1]):
            ref = ndimage.shift(images[i, c].double().numpy(), (dy, dx), order=1, mode="grid-constant", cval=0.0)
            np.testing.assert_allclose(out[i, c].numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("severity", [1, 5])
def test_rotation_equals_scipy_rotate(images, severity):
    a = C.SEVERITIES["rotation"][severity - 1]
    out = C.rotation(images, severity, generator=_gen(4), bounds=(0.0, 1.0))
    sign = (torch.rand(images.shape[0], generator=_gen(4)) < 0.5).double() * 2 - 1  # the draws rotation() makes
    for i in range(images.shape[0]):
        for c in range(images.shape[1]):
            ref = ndimage.rotate(images[i, c].double().numpy(), float(sign[i]) * a, reshape=False, order=1,
                                 mode="grid-constant", cval=0.0)
            np.testing.assert_allclose(out[i, c].numpy(), ref, atol=1e-5)


def test_gaussian_noise_level_and_contrast_factor():
    x = torch.full((200, 1, 8, 8), 0.5)
    out = C.gaussian_noise(x, 2, generator=_gen())
    assert float((out - x).std()) == pytest.approx(0.08, rel=0.05)
    img = 0.3 + 0.4 * torch.rand(5, 1, 8, 8, generator=_gen(2))
    c = C.contrast(img, 3, generator=_gen())
    factor = C.SEVERITIES["contrast"][2]
    torch.testing.assert_close(c.mean(dim=(1, 2, 3)), img.mean(dim=(1, 2, 3)))
    torch.testing.assert_close(c.std(dim=(1, 2, 3)), factor * img.std(dim=(1, 2, 3)))


def test_tabular_corruptions():
    x = torch.randn(2000, 4, generator=_gen())
    noisy = C.feature_noise(x, 3, generator=_gen(1))
    assert float((noisy - x).std()) == pytest.approx(0.5, rel=0.05)
    scaled = C.scaling(x, 5, generator=_gen(2))
    ratio = scaled / x
    assert torch.allclose(ratio, ratio[0:1].expand_as(ratio), rtol=1e-5)  # one factor per feature
    assert float(ratio[0].log().abs().max()) <= 0.7
    fill = torch.tensor([1.0, 2.0, 3.0, 4.0])
    miss = C.missing_values(x, 4, generator=_gen(3), fill=fill)
    changed = miss != x
    assert float(changed.float().mean()) == pytest.approx(0.35, abs=0.02)
    assert torch.equal(miss[changed], fill.expand_as(x)[changed])
    with pytest.raises(DataError, match="fill"):
        C.missing_values(x, 1, generator=_gen(), fill=torch.zeros(3))


def test_token_corruptions():
    x = torch.randint(1, 20, (500, 16), generator=_gen())
    sub = C.substitution(x, 5, generator=_gen(1), vocab_size=20)
    # replaced with prob 0.5 by a uniform token (equal to the old one with prob 1/20)
    assert float((sub != x).float().mean()) == pytest.approx(0.5 * 19 / 20, abs=0.02)
    assert int(sub.max()) < 20 and int(sub.min()) >= 0
    dele = C.deletion(x, 3, generator=_gen(2), vocab_size=20, pad_id=0)
    for i in range(50):
        kept = dele[i][dele[i] != 0]
        # survivors are a subsequence of the original, in order, followed only by padding
        it = iter(x[i].tolist())
        assert all(any(t == u for u in it) for t in kept.tolist())
        assert torch.all(dele[i][len(kept):] == 0)
    assert float((dele == 0).float().mean()) == pytest.approx(0.2, abs=0.02)


def test_errors_and_lookup():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="Did you mean 'blur'"):
        C.corrupt(x, "blurr", 1, generator=_gen())
    with pytest.raises(ConfigError, match="severity"):
        C.corrupt(x, "blur", 6, generator=_gen())
    with pytest.raises(DataError, match="images"):
        C.blur(torch.rand(3, 4), 1, generator=_gen())
    with pytest.raises(ConfigError, match="vocab_size"):
        C.substitution(torch.zeros(2, 3, dtype=torch.long), 1, generator=_gen())
    assert C.corruptions_for("tokens") == ("substitution", "deletion")
    with pytest.raises(ConfigError):
        C.corruptions_for("lm")
