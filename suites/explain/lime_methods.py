"""LIME (the `lime` package) for tabular rows, small images and token sequences.

All three explain the same scalar as the other methods (the target logit or probability,
or the regression mean), so LIME runs in lime's regression mode (a scalar per sample)
rather than on a probability vector.

- tabular: `LimeTabularExplainer` built on the training split (quartile discretisation,
  lime's default), all features kept (`feature_selection="none"`).
- image: `LimeImageExplainer` with a SLIC segmentation that suits tiny images (lime's
  default quickshift gives 2 segments on an 8x8 digit, which makes R^2 meaningless);
  absent superpixels take the baseline value (`hide_color`, 0 by default).
- tokens: `lime_base.LimeBase` over token presence, sampled like `LimeTextExplainer`
  (remove 1..T-1 random tokens, cosine distance x 100, kernel width 25); an absent token's
  embedding is replaced by the baseline embedding. Padding is no token: the players of a
  padded sequence are its T_i real tokens (the caller keeps the pads in every sample).

Fidelity: `r2` is lime's `score` (weighted R^2 of the surrogate on its samples) and
`local_error` = |surrogate(x) - f(x)|. Low fidelity (r2 < min_r2) is flagged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from unittest import mock

import numpy as np
import torch

from workbench.errors import DataError, check_positive_int

from .shapley import _blas_one_thread

NumpyFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LimeResult:
    """attributions: (N, *S) per input element (a superpixel's or token's weight spread over
    its elements); unit_weights: per example, the surrogate weight of each interpretable
    feature; r2, local_error: (N,); segments: (N, H, W) superpixel labels for images;
    unexplained: {example: why} for examples LIME cannot explain (their attributions, r2
    and local_error are NaN)."""

    attributions: np.ndarray
    unit_weights: list[np.ndarray]
    r2: np.ndarray
    local_error: np.ndarray
    segments: np.ndarray | None = None
    unexplained: dict[int, str] = field(default_factory=dict)


def lime_version() -> str:
    from importlib.metadata import version

    return version("lime")


def slic_segments(image: np.ndarray, n_segments: int = 16, compactness: float = 0.1) -> np.ndarray:
    """SLIC superpixels of one image (C, H, W) -> (H, W) int labels 0..M-1 (contiguous).

    On 8x8 digits in [0, 1], n_segments=16 and compactness=0.1 give about 12 segments
    (9-17) that follow the strokes; compactness >= 1 collapses to a regular grid.
    """
    from skimage.segmentation import slic

    check_positive_int("n_segments", n_segments)
    if image.ndim != 3:
        raise DataError(f"Expected one image (C, H, W), got shape {image.shape}.")
    img = np.asarray(image, dtype=np.float64)
    if img.shape[0] == 1:
        labels = slic(img[0], n_segments=n_segments, compactness=compactness, channel_axis=None, start_label=0)
    else:
        labels = slic(np.moveaxis(img, 0, -1), n_segments=n_segments, compactness=compactness,
                      channel_axis=-1, start_label=0)
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int64)


def _quiet_lime_image():  # noqa: ANN202 - a context manager
    """lime_image wraps its sampling loop in tqdm; silence that progress bar."""
    from lime import lime_image

    if hasattr(lime_image, "tqdm"):
        return mock.patch.object(lime_image, "tqdm", lambda it, **_: it)
    return contextlib.nullcontext()


def lime_tabular(
    fs: list[NumpyFn],
    x: np.ndarray,
    train_x: np.ndarray,
    *,
    num_samples: int,
    seed: int,
    feature_names: tuple[str, ...] | None = None,
) -> LimeResult:
    """LIME for rows x (N, F) with one scalar function per row (the row's target class)."""
    from lime.lime_tabular import LimeTabularExplainer

    check_positive_int("num_samples", num_samples)
    x = np.asarray(x, dtype=np.float64)
    n, n_feat = x.shape
    explainer = LimeTabularExplainer(np.asarray(train_x, dtype=np.float64), mode="regression",
                                     feature_names=list(feature_names) if feature_names else None,
                                     feature_selection="none", random_state=seed)
    attr = np.zeros((n, n_feat))
    r2 = np.zeros(n)
    err = np.zeros(n)
    for i in range(n):
        fx = float(fs[i](x[i : i + 1])[0])
        with _blas_one_thread():
            exp = explainer.explain_instance(x[i], fs[i], num_features=n_feat, num_samples=num_samples)
        # lime's regression mode stores the fitted weights under label 1 (label 0 is negated)
        for j, w in exp.local_exp[1]:
            attr[i, j] = w
        r2[i] = float(exp.score)
        err[i] = abs(float(np.ravel(exp.local_pred)[0]) - fx)
    return LimeResult(attr, [a.copy() for a in attr], r2, err)


def lime_image(
    fs: list[NumpyFn],
    images: np.ndarray,
    segments: np.ndarray,
    *,
    num_samples: int,
    seed: int,
    hide_value: float = 0.0,
) -> LimeResult:
    """LIME for images (N, C, H, W), C in {1, 3}, with given superpixels (N, H, W).

    fs[i] maps a batch of images (n, C, H, W) to the explained scalar (n,) for example i.
    """
    from lime.lime_image import LimeImageExplainer

    check_positive_int("num_samples", num_samples)
    images = np.asarray(images, dtype=np.float64)
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise DataError(f"LIME images need 1 or 3 channels, got {c}.")
    attr = np.zeros_like(images)
    r2 = np.zeros(n)
    err = np.zeros(n)
    weights: list[np.ndarray] = []
    for i in range(n):
        seg = segments[i]
        m = int(seg.max()) + 1
        img = images[i, 0] if c == 1 else np.moveaxis(images[i], 0, -1)

        def classifier(batch: np.ndarray, _i: int = i) -> np.ndarray:
            b = batch[..., :1] if c == 1 else batch  # lime turns grey into (n, H, W, 3)
            return np.asarray(fs[_i](np.moveaxis(b, -1, 1)), dtype=np.float64)[:, None]  # (n, 1)

        explainer = LimeImageExplainer(feature_selection="none", random_state=seed)
        with _quiet_lime_image(), _blas_one_thread():
            exp = explainer.explain_instance(img, classifier, labels=(0,), top_labels=None, hide_color=hide_value,
                                             num_features=m, num_samples=num_samples, batch_size=num_samples,
                                             segmentation_fn=lambda _img, _s=seg: _s, random_seed=seed)
        wv = np.zeros(m)
        for j, wt in exp.local_exp[0]:
            wv[j] = wt
        weights.append(wv)
        attr[i] = wv[seg][None]  # every pixel carries its superpixel's weight, on each channel
        r2[i] = float(exp.score)
        fx = float(classifier(np.repeat(img[..., None], 3, -1)[None] if c == 1 else img[None])[0, 0])
        err[i] = abs(float(np.ravel(exp.local_pred)[0]) - fx)
    return LimeResult(attr, weights, r2, err, segments=np.asarray(segments))


def lime_tokens(
    fs: list[Callable[[np.ndarray], np.ndarray]],
    n_tokens: int | Sequence[int],
    n_examples: int,
    *,
    num_samples: int,
    seed: int,
    kernel_width: float = 25.0,
) -> LimeResult:
    """LIME over token presence for `n_examples` sequences of `n_tokens` tokens (one
    count for all, or one per example: the players of a padded sequence are its real tokens).

    fs[i] maps presence masks (n, T_i) in {0, 1} to the explained scalar (n,) of example i
    (the caller replaces absent tokens, and keeps anything that is no player). Sampling
    follows LimeTextExplainer: row 0 keeps every token; each other row removes
    k ~ U{1..T_i-1} random tokens.
    Returns attributions (N, max T_i) = the surrogate's weight of each token (0 beyond T_i);
    unit_weights[i] (T_i,). An example with fewer than 2 tokens has no sample to fit (removing
    1..T_i-1 tokens is impossible): its weights, r2 and local_error are NaN and
    `unexplained[i]` says why, while the others are explained as if alone (example i draws
    with seed + i). Raises DataError when no example has 2 tokens.
    """
    from lime.lime_base import LimeBase
    from sklearn.metrics.pairwise import cosine_distances

    check_positive_int("num_samples", num_samples)
    counts = [int(n_tokens)] * n_examples if isinstance(n_tokens, (int, np.integer)) else [int(t) for t in n_tokens]
    if len(counts) != n_examples:
        raise DataError(f"Expected one token count per example ({n_examples}), got {len(counts)}.")
    unexplained = {i: f"LIME over tokens needs at least 2 tokens (players), this example has {c}"
                   for i, c in enumerate(counts) if c < 2}
    if n_examples and len(unexplained) == n_examples:
        raise DataError(f"LIME over tokens needs at least 2 tokens (players) per example; none of the {n_examples} "
                        f"examples has 2 (token counts {sorted(set(counts))}).")
    attr = np.zeros((n_examples, max(counts, default=0)))
    r2 = np.zeros(n_examples)
    err = np.zeros(n_examples)
    for i in range(n_examples):
        n_tokens = counts[i]
        if i in unexplained:
            attr[i, :n_tokens] = r2[i] = err[i] = np.nan
            continue
        rng = np.random.RandomState(seed + i)
        k = rng.randint(1, n_tokens, num_samples - 1)  # tokens removed per sample
        ranks = np.argsort(rng.rand(num_samples - 1, n_tokens), axis=1).argsort(axis=1)
        data = np.ones((num_samples, n_tokens))
        data[1:][ranks < k[:, None]] = 0.0
        labels = np.asarray(fs[i](data), dtype=np.float64)[:, None]  # (n, 1)
        distances = cosine_distances(data, data[:1]).ravel() * 100

        def kernel(d: np.ndarray) -> np.ndarray:
            return np.sqrt(np.exp(-(d**2) / kernel_width**2))

        base = LimeBase(kernel, random_state=np.random.RandomState(seed))
        with _blas_one_thread():
            _, exp, score, local_pred = base.explain_instance_with_data(
                data, labels, distances, 0, n_tokens, feature_selection="none")
        for j, wt in exp:
            attr[i, j] = wt
        r2[i] = float(score)
        err[i] = abs(float(np.ravel(local_pred)[0]) - float(labels[0, 0]))
    return LimeResult(attr, [a[:c].copy() for a, c in zip(attr, counts)], r2, err, unexplained=unexplained)


def numpy_fn(f: Callable[[torch.Tensor], torch.Tensor], device: torch.device, dtype: torch.dtype = torch.float32,
             batch_size: int = 1024) -> NumpyFn:
    """Wrap a torch scalar function for numpy callers (lime, shap), batched, without grad."""

    def g(a: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.asarray(a), dtype=dtype)
        outs = []
        with torch.no_grad():
            for s in range(0, t.shape[0], batch_size):
                outs.append(f(t[s : s + batch_size].to(device)).double().cpu())
        return torch.cat(outs).numpy()

    return g
