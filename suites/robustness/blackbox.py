"""Attacks that need no gradient: random noise in the eps-ball and a Square-attack-style
random search on the margin loss (the black-box reference white-box attacks must beat).
Same conventions as `functional.py`."""

from __future__ import annotations

import math

import torch

from workbench.errors import DataError, check_positive_int
from workbench.suites.robustness.attack_utils import (
    Bounds,
    Model,
    Norm,
    _check_bounds,
    _check_eps,
    _check_norm,
    _check_xy,
    _chunks,
    _default_generator,
    _normalise_l2,
    _rand,
    attack_mode,
    logits_of,
    margin_loss,
    project,
    restrict,
)


def random_noise(
    x: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random noise of size eps: a uniformly random corner of the L∞ ball (every
    coordinate ±eps) or a uniformly random direction on the L2 sphere of radius eps."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise DataError("Expected `x` to be a float tensor (B, ...).")
    gen = _default_generator(generator)
    if norm == "linf":
        delta = (_rand(tuple(x.shape), gen, x) < 0.5).to(x.dtype) * 2 - 1
        delta = delta * eps
    else:
        delta = _normalise_l2(_rand(tuple(x.shape), gen, x, "normal")) * eps
    return project(x.detach() + delta, x.detach(), eps, norm, bounds)


def _square_schedule(i: int, queries: int, p_init: float) -> float:
    """Square attack's fraction of changed coordinates, halved at fixed fractions of a
    10,000-query budget (rescaled to `queries`)."""
    it = int(i / queries * 10000)
    p = p_init
    for cut in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000):
        if it > cut:
            p /= 2
    return p


def random_search(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    queries: int = 200,
    p_init: float = 0.3,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Gradient-free black-box attack: random search on the margin loss in the style of
    the Square attack (Andriushchenko et al. 2020). Images (B, C, H, W) change one random
    square window per step (side √(p·H·W)), other inputs a random fraction p of their
    coordinates; L∞ proposals set the window to random ±eps vertices, L2 proposals add
    Gaussian noise to the window and rescale onto the eps-sphere. A proposal is kept per
    sample when it lowers z_y − max_{j≠y} z_j; fooled points stop. `queries` forward passes."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    _check_xy(x, y)
    check_positive_int("queries", queries)
    if eps == 0:
        return x.detach().clone()
    gen = _default_generator(generator)
    out = x.detach().clone()
    with attack_mode(model), torch.no_grad():
        for s in _chunks(x.shape[0], batch_size):
            out[s] = _random_search_chunk(restrict(model, s), x[s].detach(), y[s], eps, norm, queries, p_init, bounds, gen)
    return out


def _random_search_chunk(
    model: Model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, queries: int, p_init: float,
    bounds: Bounds, gen: torch.Generator,
) -> torch.Tensor:
    b = x.shape[0]
    image = x.dim() == 4
    if norm == "linf":
        if image:  # vertical stripes of ±eps, as in the Square attack's initialisation
            stripes = (_rand((b, x.shape[1], 1, x.shape[3]), gen, x) < 0.5).to(x.dtype) * 2 - 1
            delta = stripes.expand_as(x) * eps
        else:
            delta = ((_rand(tuple(x.shape), gen, x) < 0.5).to(x.dtype) * 2 - 1) * eps
    else:
        delta = _normalise_l2(_rand(tuple(x.shape), gen, x, "normal")) * eps
    x_best = project(x + delta, x, eps, norm, bounds)
    margin = -margin_loss(logits_of(model, x_best), y)  # > 0: still correct; minimise
    for i in range(queries):
        idx = (margin > 0).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        p = _square_schedule(i, queries, p_init)
        xi, cur = x[idx], x_best[idx]
        mask = _window_mask(xi, p, gen)
        if norm == "linf":
            vert = ((_rand(tuple(xi.shape), gen, xi) < 0.5).to(xi.dtype) * 2 - 1) * eps
            if image:  # one value per channel inside the window, as in the Square attack
                vert = vert[:, :, :1, :1].expand_as(xi)
            cand = torch.where(mask, xi + vert, cur)
        else:
            noise = _rand(tuple(xi.shape), gen, xi, "normal") * mask
            d = cur - xi + noise * (eps * math.sqrt(p))
            cand = xi + _normalise_l2(d) * eps
        cand = project(cand, xi, eps, norm, bounds)
        m_new = -margin_loss(logits_of(restrict(model, idx), cand), y[idx])
        better = m_new < margin[idx]
        x_best[idx[better]] = cand[better]
        margin[idx[better]] = m_new[better]
    return x_best


def _window_mask(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """(B, ...) bool: one random square window per image (all channels), or a random
    fraction p of the coordinates for other inputs."""
    b = x.shape[0]
    if x.dim() == 4:
        h, w = x.shape[2], x.shape[3]
        side = int(min(max(round(math.sqrt(p * h * w)), 1), h, w))
        r = (torch.rand(b, generator=gen) * (h - side + 1)).long()
        c = (torch.rand(b, generator=gen) * (w - side + 1)).long()
        rows = torch.arange(h)[None, :]
        cols = torch.arange(w)[None, :]
        mr = (rows >= r[:, None]) & (rows < (r + side)[:, None])  # (B, H)
        mc = (cols >= c[:, None]) & (cols < (c + side)[:, None])  # (B, W)
        m = (mr[:, :, None] & mc[:, None, :])[:, None].expand(b, x.shape[1], h, w)
        return m.to(x.device)
    m = torch.rand(tuple(x.shape), generator=gen) < max(p, 1.0 / x[0].numel())
    return m.to(x.device)

