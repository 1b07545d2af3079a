"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) as pure functions.

The smoothed classifier of a base classifier f is

    g(x) = argmax_c P(f(x + ε) = c),   ε ~ N(0, σ² I).

If the top class A has probability p_A ≥ p_A_lower > 1/2 under the noise, g returns A at
every x' with ‖x' − x‖₂ < R = σ · Φ⁻¹(p_A_lower) (Cohen et al., Theorem 1 with the
runner-up bounded by 1 − p_A_lower). The probabilities are unknown, so CERTIFY estimates
them by Monte Carlo: n0 "selection" samples pick the candidate class A, n fresh
"estimation" samples give the one-sided Clopper–Pearson lower bound p_A_lower at level
1 − α; below 1/2 it abstains. With probability at least 1 − α (over the noise), a returned
class with radius R is right about g. PREDICT returns g(x) or abstains: a two-sided exact
binomial test of the top two counts; it returns a wrong class with probability ≤ α.

Where the noise goes (`NoiseSpace`): added to the input itself for float inputs (images,
tabular rows), or to the output of the token-embedding layer through a forward hook for
token models (`embedding_space`). In embedding space σ and radii are RELATIVE: the absolute
standard deviation is σ · `scale`, with `scale` the root-mean-square coordinate of the
token embeddings on a reference set (a model can grow its embeddings to drown fixed noise;
relative noise is invariant to that). Radii are then in the same relative units.

Every function evaluates the model as given: the caller puts it in eval mode (the suite
does, through `frozen_eval`). Randomness comes only from `generator` (a torch.Generator,
ideally on the model's device: noise is drawn there); results are deterministic for a
seed, a batch size and a device (`smoothed_pgd` draws each step's noise in one call, so its δ
does not depend on the batch size at all).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.errors import (ConfigError, DataError, ModelError, ParameterTypeError, check_number,
                             check_positive_int)

Model = Callable[[torch.Tensor], torch.Tensor]
ABSTAIN = -1
_TINY = 1e-12


# ----------------------------------------------------------------------------- checks


def _check_sigma(sigma: object) -> float:
    return check_number("sigma", sigma, low=0, low_open=True)


def _check_alpha(alpha: object, name: str = "alpha") -> float:
    return check_number(name, alpha, low=0, high=0.5, low_open=True, high_open=True)


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ParameterTypeError(
            f"Expected `generator` to be a torch.Generator (seeded, on the model's device), got {type(generator).__name__}."
        )
    return generator


def _counts_array(k: object, n: object) -> tuple[np.ndarray, np.ndarray]:
    k_arr = np.asarray(k, dtype=np.int64)
    n_arr = np.asarray(n, dtype=np.int64)
    if np.any(n_arr < 1) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ConfigError(f"Expected counts 0 <= k <= n with n >= 1, got k={k!r}, n={n!r}.")
    return k_arr, n_arr


# ----------------------------------------------------------------------------- statistics


def lower_confidence_bound(k: object, n: object, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson lower bound of a binomial proportion at level 1 − alpha:
    the largest p with P(Bin(n, p) >= k) <= alpha, i.e. Beta(alpha; k, n − k + 1); 0 when
    k = 0. Vectorised over k and n (arrays of counts); float64 array of their shape. Equals
    `scipy.stats.binomtest(k, n).proportion_ci(1 − 2·alpha, "exact").low` (Cohen et al.
    call statsmodels' proportion_confint(k, n, alpha=2·alpha, method="beta")[0])."""
    from scipy.special import betaincinv  # the Beta quantile, without scipy.stats' per-call overhead

    alpha = _check_alpha(alpha)
    k_arr, n_arr = _counts_array(k, n)
    safe_k = np.maximum(k_arr, 1)  # Beta(0, ·) is undefined; the bound is 0 there
    out = np.where(k_arr == 0, 0.0, betaincinv(safe_k, n_arr - k_arr + 1, alpha))
    return np.asarray(out, dtype=np.float64)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper–Pearson) interval of k successes in n at `level`, through
    scipy's binomtest. (nan, nan) when n = 0."""
    from scipy.stats import binomtest

    check_number("level", level, low=0, high=1, low_open=True, high_open=True)
    if n == 0:
        return (float("nan"), float("nan"))
    _counts_array(k, n)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=float(level), method="exact")
    return float(ci.low), float(ci.high)


def radius_from_bound(p_lower: object, sigma: float) -> np.ndarray:
    """R = σ · Φ⁻¹(p_A_lower) (B,) float64; meaningful where p_A_lower >= 1/2 (CERTIFY
    abstains below that and this returns a negative number there)."""
    from scipy.special import ndtri  # Φ⁻¹

    sigma = _check_sigma(sigma)
    p = np.minimum(np.maximum(np.asarray(p_lower, dtype=np.float64), 0.0), 1.0)
    return sigma * ndtri(p)


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with n estimation samples: all n samples in
    class A give p_A_lower = alpha^(1/n), so R_max = σ · Φ⁻¹(alpha^(1/n)). No example is
    certified beyond it, whatever the model: a limit of n, not of the model."""
    check_positive_int("n", n)
    return float(radius_from_bound(lower_confidence_bound(n, n, alpha), sigma))


def probability_lower_bound_at(radius: object, sigma: float, r: float) -> np.ndarray:
    """Lower bound of P(f(x' + ε) = A) at any ‖x' − x‖ <= r that a certificate of radius R
    = σ·Φ⁻¹(p_A_lower) promises (Neyman–Pearson, Cohen et al. Lemma 3):
    Φ(Φ⁻¹(p_A_lower) − r/σ) = Φ((R − r)/σ); above 1/2 for r < R. Written with the REPORTED
    radius, so a certifier that over-states R promises more than the model holds and an
    attack can catch it."""
    from scipy.special import ndtr  # Φ

    sigma = _check_sigma(sigma)
    return ndtr((np.asarray(radius, dtype=np.float64) - float(r)) / sigma)


def predict_from_counts(counts: torch.Tensor, alpha: float) -> torch.Tensor:
    """PREDICT's decision from noise counts (B, K): the top class when a two-sided exact
    binomial test (p = 1/2) of the top count n_A against the runner-up's n_B rejects at
    `alpha`, else ABSTAIN (-1). Ties go to the lower class index. (B,) long. The p-value
    is min(1, 2·P(Bin(n_A + n_B, 1/2) >= n_A)), 1 on a tie: what scipy's `binomtest` gives
    for p = 1/2 (the null is symmetric), computed for all rows at once."""
    from scipy.stats import binom

    alpha = _check_alpha(alpha)
    if counts.dim() != 2 or counts.shape[1] < 2:
        raise DataError(f"Expected counts of shape (B, K) with K >= 2, got {tuple(counts.shape)}.")
    counts = counts.detach().cpu().long()
    out = counts.argmax(dim=1)
    top2 = counts.sort(dim=1, descending=True).values[:, :2].numpy()
    na, total = top2[:, 0], top2.sum(axis=1)
    pvalue = np.where(2 * na == total, 1.0, np.minimum(1.0, 2 * binom.sf(na - 1, total, 0.5)))
    out[torch.from_numpy(pvalue > alpha)] = ABSTAIN
    return out


# ----------------------------------------------------------------------------- where noise goes


@dataclass(frozen=True, eq=False)
class NoiseSpace:
    """Where the noise is added.

    kind: "input" (x + noise; x float (B, ...)) or "embedding" (noise added to the output of
      `layer`, the token-embedding layer, through `workbench.embedding.forward_with_offset`,
      a forward hook; x long token ids (B, T)).
    shape: per-example shape of the noise: x.shape[1:] or the layer's (T, C).
    scale: absolute standard deviation per unit of σ (1 for inputs; the RMS embedding
      coordinate for embeddings), so radii are reported in units of `scale`.
    """

    kind: str
    shape: tuple[int, ...]
    scale: float = 1.0
    layer: nn.Module | None = None
    layer_name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("input", "embedding"):
            raise ConfigError(f"Expected NoiseSpace kind in ('input', 'embedding'), got {self.kind!r}.")
        if self.kind == "embedding" and not isinstance(self.layer, nn.Module):
            raise ConfigError("An embedding NoiseSpace needs the model's embedding layer.")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"Expected a finite scale > 0, got {self.scale!r}.")


def input_space(x: torch.Tensor) -> NoiseSpace:
    """Noise on the input itself: x float (B, ...)."""
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise DataError("Expected a float input tensor for input-space smoothing; use `embedding_space` for token ids.")
    return NoiseSpace(kind="input", shape=tuple(x.shape[1:]))


@torch.no_grad()
def embedding_space(module: nn.Module, reference_ids: torch.Tensor, *, path: str | None = None) -> NoiseSpace:
    """Noise on the output of the token-embedding layer of `module` (the one named by
    `path`, else found by `workbench.embedding.find_embedding_layer`); `scale` is the RMS
    coordinate of the layer's output on `reference_ids` (N, T) long (e.g. a training
    sample), fixed for the run so that g is one fixed function."""
    from workbench import embedding as E

    if not isinstance(reference_ids, torch.Tensor) or reference_ids.dtype != torch.long or reference_ids.dim() != 2:
        raise DataError(f"Expected token ids (N, T) long, got {getattr(reference_ids, 'dtype', type(reference_ids))}.")
    name, layer = E.find_embedding_layer(module, reference_ids[:8], path=path)
    e = E.embeddings(module, layer, reference_ids)  # (N, T, C)
    scale = E.embedding_eps_scale(e, "linf")  # the RMS coordinate
    if not (math.isfinite(scale) and scale > 0):
        raise ModelError(f"The token embeddings have RMS {scale}; cannot scale relative noise.")
    return NoiseSpace(kind="embedding", shape=tuple(e.shape[1:]), scale=scale, layer=layer, layer_name=name)


def logits_of(model: Model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def perturbed_logits(model: Model, x: torch.Tensor, delta: torch.Tensor, space: NoiseSpace) -> torch.Tensor:
    """f's logits (R, K) at x (R, ...) moved by delta (R, *space.shape) in `space` (absolute
    units). Differentiable in delta."""
    from workbench import embedding as E

    if space.kind == "input":
        return logits_of(model, x + delta)
    out = E.forward_with_offset(model, space.layer, delta, x)
    return out[0] if isinstance(out, tuple) else out


@contextlib.contextmanager
def gradient_mode(model: Model) -> Iterator[None]:
    """Gradients on for an attack on the inputs; for an nn.Module also every submodule in
    eval mode with frozen parameters (restored after), and cuDNN off when it has an RNN
    (cuDNN refuses the RNN backward pass in eval mode)."""
    from workbench.torch_utils import frozen_eval

    with contextlib.ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(frozen_eval(model))
            if any(isinstance(m, nn.RNNBase) for m in model.modules()):
                stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        stack.enter_context(torch.enable_grad())
        yield


def _layer_like(space: NoiseSpace, x: torch.Tensor) -> torch.Tensor:
    """An empty tensor with the dtype of the embedding layer's output and x's device."""
    p = next(space.layer.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.empty(0, dtype=dtype, device=x.device)


def _rows(x: torch.Tensor, start: int, stop: int, num: int) -> torch.Tensor:
    """Example index of rows start..stop when each example is repeated `num` times."""
    return torch.arange(start, stop, device=x.device) // num


def _noise(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


#: numbers of noise drawn per call of the generator in `sample_noise` (a page of rows)
PAGE_NUMBERS = 1 << 16


class _NoisePages:
    """The noise of `total` rows of `shape`, drawn in pages of a fixed number of rows
    (PAGE_NUMBERS // numel, at least 1) and handed out in any cut (`take`). The sequence of
    generator calls depends on `total` and `shape` only, never on how the rows are cut into
    forward passes, so the noise (and the counts) do not depend on the batch size: torch's
    CPU normal sampler is cut-invariant only for pieces of a multiple of 16 numbers, and
    CUDA's generator not at all. Memory: one page plus the rows taken."""

    def __init__(self, total: int, shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> None:
        numel = max(1, math.prod(shape))
        self.page, self.left, self.shape = max(1, PAGE_NUMBERS // numel), total, shape
        self.generator, self.like = generator, like
        self.buf: torch.Tensor | None = None
        self.pos = 0

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k:
            if self.buf is None or self.pos == self.buf.shape[0]:
                rows = min(self.page, self.left)
                self.buf, self.pos, self.left = _noise((rows, *self.shape), self.generator, self.like), 0, self.left - rows
            t = min(k, self.buf.shape[0] - self.pos)
            parts.append(self.buf[self.pos:self.pos + t])
            self.pos, k = self.pos + t, k - t
        return parts[0] if len(parts) == 1 else torch.cat(parts)


# ----------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_noise(
    model: Model,
    x: torch.Tensor,
    *,
    num: int,
    sigma: float,
    batch_size: int,
    generator: torch.Generator,
    space: NoiseSpace | None = None,
    offset: torch.Tensor | None = None,
    num_classes: int | None = None,
    progress: Any = None,
) -> torch.Tensor:
    """Counts (B, K) long: how often f's top class is each class over `num` noisy copies of
    each example x[i], noise σ·scale·N(0, I) in `space` (default: the input). The B·num
    copies are cut into forward passes of `batch_size` rows, so one example with num = 1,000
    and batch_size 250 costs 4 forwards; several examples share batches. The noise is drawn
    in fixed pages (`_NoisePages`), so the counts do not depend on `batch_size`. `offset` (B,
    *space.shape), absolute units, moves every copy of x[i] (an attacked point x + δ).
    `progress` (a `workbench.progress.Progress`, optional) counts the noisy copies done."""
    sigma = _check_sigma(sigma)
    check_positive_int("num", num)
    check_positive_int("batch_size", batch_size)
    generator = _check_generator(generator)
    space = space if space is not None else input_space(x)
    if offset is not None and tuple(offset.shape) != (x.shape[0], *space.shape):
        raise DataError(f"Expected `offset` of shape {(x.shape[0], *space.shape)}, got {tuple(offset.shape)}.")
    like = x if space.kind == "input" else _layer_like(space, x)
    std = sigma * space.scale
    b = x.shape[0]
    counts = None if num_classes is None else torch.zeros(b, num_classes, dtype=torch.long, device=x.device)
    pages = _NoisePages(b * num, tuple(space.shape), generator, like)
    for start in range(0, b * num, batch_size):
        stop = min(start + batch_size, b * num)
        idx = _rows(x, start, stop, num)
        delta = pages.take(stop - start) * std
        if offset is not None:
            delta = delta + offset[idx].to(delta.dtype)
        logits = perturbed_logits(model, x[idx], delta, space)  # (rows, K)
        pred = logits.argmax(dim=1)
        if counts is None:
            counts = torch.zeros(b, logits.shape[1], dtype=torch.long, device=x.device)
        counts.index_put_((idx, pred), torch.ones_like(pred), accumulate=True)
        if progress is not None:
            progress.update(stop - start)
    return counts


# ----------------------------------------------------------------------------- certify / predict


@dataclass(frozen=True)
class Certificates:
    """CERTIFY's output for B examples.

    prediction (B,) long: class A, or ABSTAIN (-1) when p_A_lower < 1/2.
    radius (B,) float64: σ·Φ⁻¹(p_A_lower) in the space's units (0 where abstaining, as in
      Cohen et al.'s code).
    p_lower (B,) float64: the Clopper–Pearson lower bound of p_A at level 1 − alpha.
    counts_selection (B, K), counts_estimation (B, K) long: the n0 and n sample counts.
    """

    prediction: torch.Tensor
    radius: np.ndarray
    p_lower: np.ndarray
    counts_selection: torch.Tensor
    counts_estimation: torch.Tensor
    sigma: float
    n0: int
    n: int
    alpha: float


def certify(
    model: Model,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
    space: NoiseSpace | None = None,
    num_classes: int | None = None,
    progress: Any = None,
) -> Certificates:
    """CERTIFY (Cohen et al., Algorithm: n0 selection samples choose A; n separate
    estimation samples bound p_A from below at level 1 − alpha; abstain below 1/2).
    `progress` (optional) counts the B·(n0 + n) noisy copies."""
    alpha = _check_alpha(alpha)
    check_positive_int("n0", n0)
    check_positive_int("n", n)
    common = dict(sigma=sigma, batch_size=batch_size, generator=generator, space=space, num_classes=num_classes,
                  progress=progress)
    c0 = sample_noise(model, x, num=n0, **common)
    c = sample_noise(model, x, num=n, num_classes=c0.shape[1],
                     **{k: v for k, v in common.items() if k != "num_classes"})
    cand = c0.argmax(dim=1)
    n_a = c.gather(1, cand[:, None]).squeeze(1).cpu().numpy()
    p_lower = lower_confidence_bound(n_a, n, alpha)
    abstain = p_lower < 0.5
    radius = np.where(abstain, 0.0, radius_from_bound(p_lower, sigma))
    prediction = cand.cpu().clone()
    prediction[torch.from_numpy(abstain)] = ABSTAIN
    return Certificates(prediction=prediction, radius=radius, p_lower=p_lower, counts_selection=c0.cpu(),
                        counts_estimation=c.cpu(), sigma=float(sigma), n0=n0, n=n, alpha=alpha)


def predict(
    model: Model,
    x: torch.Tensor,
    *,
    sigma: float,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
    space: NoiseSpace | None = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """PREDICT (Cohen et al.): g(x) from n noise samples, or ABSTAIN (-1) when the top two
    counts are not significantly different at `alpha`. (B,) long."""
    counts = sample_noise(model, x, num=n, sigma=sigma, batch_size=batch_size, generator=generator, space=space,
                          num_classes=num_classes)
    return predict_from_counts(counts, alpha)


# ----------------------------------------------------------------------------- attack on g


def smoothed_pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    sigma: float,
    steps: int,
    noise_samples: int,
    batch_size: int,
    generator: torch.Generator,
    space: NoiseSpace | None = None,
    bounds: tuple[float, float] | None = None,
    step_size: float | None = None,
) -> torch.Tensor:
    """L2 PGD against the smoothed classifier with expectation over the noise (Salman et
    al. 2019, "SmoothAdv"): maximise −log( mean_j softmax(f(x + δ + ε_j))_y ) over
    ‖δ‖₂ <= eps with `noise_samples` fresh draws ε_j per step, `steps` normalised-gradient
    steps of `step_size` (default 2.5·eps/steps), projection on the ball (and, in input
    space with `bounds`, on the valid input box). eps, δ: the space's units (multiplied by
    `scale`). Returns δ (B, *space.shape) in ABSOLUTE units, detached; feed it to
    `sample_noise(..., offset=δ)` to evaluate g at the attacked point.

    `batch_size` is a speed setting only: each step draws the noise of all B·m copies
    (m = `noise_samples`) in ONE call, example-major (the m draws of x[0], then x[1], ...),
    so the noise each example sees depends on the generator and B alone; the copies are
    then cut into forwards of at most `batch_size` rows (an example's draws may span
    several forwards; a batch smaller than m just means more forwards). The gradient of
    L_i = −log(p̄_i + tiny), p̄_i = mean_j s_ij, s_ij = softmax(f(x_i + δ_i + ε_ij))_y, is
    ∇L_i = −(Σ_j ∇s_ij) / (m·(p̄_i + tiny)), assembled from per-copy gradients summed per
    example in draw order (never in forward order). Memory: one step's noise for the B
    examples (B·m·prod(space.shape) values, reused in place for the per-copy gradients)
    plus one forward and backward of at most `batch_size` rows."""
    import torch.nn.functional as F

    sigma = _check_sigma(sigma)
    check_positive_int("steps", steps)
    check_positive_int("noise_samples", noise_samples)
    check_positive_int("batch_size", batch_size)
    generator = _check_generator(generator)
    space = space if space is not None else input_space(x)
    like = x if space.kind == "input" else _layer_like(space, x)
    eps_abs = float(eps) * space.scale
    b, m = x.shape[0], noise_samples
    out = torch.zeros((b, *space.shape), dtype=like.dtype, device=x.device)
    if eps_abs <= 0 or b == 0:
        return out
    alpha = 2.5 * eps_abs / steps if step_size is None else float(step_size) * space.scale
    y = y.to(x.device)
    ones = [1] * len(space.shape)
    total = b * m
    delta = out
    with gradient_mode(model):
        for _ in range(steps):
            buf = _noise((total, *space.shape), generator, like) * (sigma * space.scale)  # (B·m, ...): ε, then ∇s
            hit = torch.empty(total, dtype=torch.float32, device=x.device)  # s_ij, example-major
            for lo in range(0, total, batch_size):
                hi = min(lo + batch_size, total)
                idx = _rows(x, lo, hi, m)
                d = (delta[idx] + buf[lo:hi]).requires_grad_(True)  # (rows, ...) one copy per row
                z = perturbed_logits(model, x[idx], d, space).float()
                s = F.softmax(z, dim=1).gather(1, y[idx][:, None]).squeeze(1)  # (rows,)
                (gd,) = torch.autograd.grad(s.sum(), d)  # row r's gradient depends on row r only
                with torch.no_grad():
                    buf[lo:hi] = gd.to(buf.dtype)
                    hit[lo:hi] = s.detach()
            with torch.no_grad():
                mean = hit.view(b, m).mean(dim=1)  # p̄ (B,)
                g = -buf.view(b, m, *space.shape).sum(dim=1) / (m * (mean + _TINY)).to(buf.dtype).view(-1, *ones)
                gn = g.reshape(b, -1).norm(dim=1).clamp_min(_TINY).view(-1, *ones)
                delta = delta + alpha * g / gn
                dn = delta.reshape(b, -1).norm(dim=1).view(-1, *ones)
                delta = delta * torch.clamp(eps_abs / (dn + _TINY), max=1.0)
                if space.kind == "input" and bounds is not None:
                    delta = (x + delta).clamp(bounds[0], bounds[1]) - x
    return delta.detach()


def consistency_pvalues(
    radius: np.ndarray, sigma: float, r: float, counts_true_class: np.ndarray, m: int
) -> np.ndarray:
    """One-sided exact binomial p-values of H0 "P(f(x' + ε) = A) >= Φ((R − r)/σ)" at
    attacked points x' (‖x' − x‖ <= r) of examples certified with radius R >= r, from
    `counts_true_class` (B,) hits of A in m samples: P(Bin(m, p_min) <= k). A small p-value
    means the certificate and the attack contradict each other beyond Monte Carlo error."""
    from scipy.stats import binom

    check_positive_int("m", m)
    p_min = probability_lower_bound_at(radius, sigma, r)
    return np.asarray(binom.cdf(np.asarray(counts_true_class), m, p_min), dtype=np.float64)
