"""Natural corruptions per modality at severities 1-5, as pure seeded functions.

Every corruption is `fn(x, severity, *, generator, **context) -> x'` with x' the same
shape and dtype as x, never modifying x. Severity s in 1..5 picks the s-th value of the
corruption's table below (so s=1 is mild, s=5 strong); randomness comes from the CPU
`generator` only.

Images x (N, C, H, W) float in `bounds` (lo, hi); r = hi - lo; outputs clipped to bounds
(without bounds: r = 1, no clipping, the outside of shifted/rotated images = the minimum):
  gaussian_noise  additive N(0, σ²), σ/r        = .04 .08 .12 .18 .26
  blur            Gaussian blur, σ (pixels)     = .5 .75 1.0 1.25 1.5   (reflect padding)
  shift           translation by d pixels in a random direction per image,
                  d                             = .5 1.0 1.5 2.0 2.5    (bilinear; outside filled with lo)
  rotation        rotation about the centre by ±a degrees (random sign per image),
                  a                             = 5 10 15 22.5 30       (bilinear; outside filled with lo)
  contrast        (x - per-image mean)·c + mean, c = .75 .6 .45 .3 .2
Tabular x (N, F) standardised with train statistics (so 1 = one train standard deviation):
  feature_noise   additive N(0, σ²), σ          = .1 .25 .5 .75 1.0
  scaling         each feature multiplied by exp(u), u ~ U(-a, a) per feature (a unit
                  change or miscalibrated sensor), a = .1 .2 .35 .5 .7
  missing_values  a fraction p of entries missing, imputed with the train mean of the
                  feature (`fill`, default 0 = the mean of standardised features),
                  p                             = .05 .1 .2 .35 .5
Tokens x (N, T) long ids in [0, vocab_size):
  substitution    each token replaced with prob. p by a uniformly random token,
                  p                             = .05 .1 .2 .3 .5
  deletion        each token deleted with prob. p, the rest shifted left and the end
                  padded with `pad_id` (dataset ground_truth["pad_id"], else 0),
                  p                             = .05 .1 .2 .3 .5
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from workbench.errors import ConfigError, DataError, did_you_mean

SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
    "blur": (0.5, 0.75, 1.0, 1.25, 1.5),
    "shift": (0.5, 1.0, 1.5, 2.0, 2.5),
    "rotation": (5.0, 10.0, 15.0, 22.5, 30.0),
    "contrast": (0.75, 0.6, 0.45, 0.3, 0.2),
    "feature_noise": (0.1, 0.25, 0.5, 0.75, 1.0),
    "scaling": (0.1, 0.2, 0.35, 0.5, 0.7),
    "missing_values": (0.05, 0.1, 0.2, 0.35, 0.5),
    "substitution": (0.05, 0.1, 0.2, 0.3, 0.5),
    "deletion": (0.05, 0.1, 0.2, 0.3, 0.5),
}

BY_MODALITY: dict[str, tuple[str, ...]] = {
    "image": ("gaussian_noise", "blur", "shift", "rotation", "contrast"),
    "tabular": ("feature_noise", "scaling", "missing_values"),
    "tokens": ("substitution", "deletion"),
}


def _level(name: str, severity: int) -> float:
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ConfigError(f"Expected `severity` to be an int in 1..5, got {severity!r}.")
    return SEVERITIES[name][severity - 1]


def _clip(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(float(bounds[0]), float(bounds[1]))


def _width(bounds: tuple[float, float] | None) -> float:
    """The input range r the noise level is relative to (1 when the data declares no bounds)."""
    return 1.0 if bounds is None else float(bounds[1]) - float(bounds[0])


def _check_image(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x) or x.dim() != 4:
        raise DataError(f"Expected images as a float tensor (N, C, H, W), got {x.dtype} {tuple(x.shape)}.")


def _check_tabular(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x) or x.dim() != 2:
        raise DataError(f"Expected tabular inputs as a float tensor (N, F), got {x.dtype} {tuple(x.shape)}.")


def _check_tokens(x: torch.Tensor, vocab_size: int | None) -> int:
    if x.dtype != torch.long or x.dim() != 2:
        raise DataError(f"Expected token ids as a long tensor (N, T), got {x.dtype} {tuple(x.shape)}.")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ConfigError(f"Expected `vocab_size` to be an int > 0 for token corruptions, got {vocab_size!r}.")
    return vocab_size


def gaussian_noise(x: torch.Tensor, severity: int, *, generator: torch.Generator,
                   bounds: tuple[float, float] | None = None, **_: object) -> torch.Tensor:
    """Images (N, C, H, W): additive Gaussian noise, clipped to bounds."""
    _check_image(x)
    sigma = _level("gaussian_noise", severity) * _width(bounds)
    noise = torch.randn(tuple(x.shape), generator=generator).to(x)
    return _clip(x + sigma * noise, bounds)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def blur(x: torch.Tensor, severity: int, *, generator: torch.Generator,
         bounds: tuple[float, float] | None = None, **_: object) -> torch.Tensor:
    """Images: separable Gaussian blur per channel with reflect padding."""
    _check_image(x)
    sigma = _level("blur", severity)
    k = _gaussian_kernel(sigma).to(x)
    r = (k.numel() - 1) // 2
    n, c, h, w = x.shape
    if r >= min(h, w):
        raise DataError(f"Image {h}x{w} is too small for a blur of radius {r}.")
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return _clip(y.reshape(n, c, h, w), bounds)


def _affine(x: torch.Tensor, theta: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Resample images with affine maps theta (N, 2, 3) in normalised coordinates; the
    outside is filled with the lower bound (the smallest input value without bounds)."""
    lo = float(bounds[0]) if bounds is not None else float(x.min())
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    # grid_sample pads with zeros: shift by lo so the padding means "lo"
    out = F.grid_sample(x - lo, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + lo
    return _clip(out, bounds)


def shift(x: torch.Tensor, severity: int, *, generator: torch.Generator,
          bounds: tuple[float, float] | None = None, **_: object) -> torch.Tensor:
    """Images: translate each image by d pixels in a uniformly random direction."""
    _check_image(x)
    d = _level("shift", severity)
    n, _, h, w = x.shape
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # a shift of d pixels is 2d/W in normalised [-1, 1] coordinates; the grid samples x at (u - t)
    theta[:, 0, 2] = -torch.cos(angle) * d * 2 / w
    theta[:, 1, 2] = -torch.sin(angle) * d * 2 / h
    return _affine(x, theta, bounds)


def rotation(x: torch.Tensor, severity: int, *, generator: torch.Generator,
             bounds: tuple[float, float] | None = None, **_: object) -> torch.Tensor:
    """Images: rotate each image about its centre by ±a degrees."""
    _check_image(x)
    a = math.radians(_level("rotation", severity))
    n = x.shape[0]
    sign = (torch.rand(n, generator=generator) < 0.5).double() * 2 - 1
    phi = sign * a
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(phi), -torch.sin(phi)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(phi), torch.cos(phi)
    return _affine(x, theta, bounds)


def contrast(x: torch.Tensor, severity: int, *, generator: torch.Generator,
             bounds: tuple[float, float] | None = None, **_: object) -> torch.Tensor:
    """Images: shrink each image's contrast around its own mean."""
    _check_image(x)
    c = _level("contrast", severity)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return _clip((x - mean) * c + mean, bounds)


def feature_noise(x: torch.Tensor, severity: int, *, generator: torch.Generator, **_: object) -> torch.Tensor:
    """Tabular (N, F) standardised: additive Gaussian noise in train-std units."""
    _check_tabular(x)
    sigma = _level("feature_noise", severity)
    return x + sigma * torch.randn(tuple(x.shape), generator=generator).to(x)


def scaling(x: torch.Tensor, severity: int, *, generator: torch.Generator, **_: object) -> torch.Tensor:
    """Tabular: each feature multiplied by a random factor exp(U(-a, a)) (one per feature)."""
    _check_tabular(x)
    a = _level("scaling", severity)
    u = (torch.rand(x.shape[1], generator=generator) * 2 - 1) * a
    return x * torch.exp(u).to(x)[None, :]


def missing_values(x: torch.Tensor, severity: int, *, generator: torch.Generator,
                   fill: torch.Tensor | None = None, **_: object) -> torch.Tensor:
    """Tabular: a fraction p of entries goes missing and is imputed with `fill` (F,), the
    train mean per feature (default 0: the train mean of standardised features)."""
    _check_tabular(x)
    p = _level("missing_values", severity)
    fill_t = torch.zeros(x.shape[1]) if fill is None else torch.as_tensor(fill).float().reshape(-1)
    if fill_t.numel() != x.shape[1]:
        raise DataError(f"Expected `fill` with {x.shape[1]} values (one per feature), got {fill_t.numel()}.")
    miss = (torch.rand(tuple(x.shape), generator=generator) < p).to(x.device)
    return torch.where(miss, fill_t.to(x)[None, :].expand_as(x), x)


def substitution(x: torch.Tensor, severity: int, *, generator: torch.Generator,
                 vocab_size: int | None = None, **_: object) -> torch.Tensor:
    """Tokens (N, T): each token replaced with probability p by a uniform random token."""
    v = _check_tokens(x, vocab_size)
    p = _level("substitution", severity)
    sub = torch.rand(tuple(x.shape), generator=generator) < p
    rnd = torch.randint(0, v, tuple(x.shape), generator=generator)
    return torch.where(sub.to(x.device), rnd.to(x.device), x)


def deletion(x: torch.Tensor, severity: int, *, generator: torch.Generator,
             vocab_size: int | None = None, pad_id: int = 0, **_: object) -> torch.Tensor:
    """Tokens (N, T): each token deleted with probability p; survivors shift left (order
    kept) and the freed positions at the end take `pad_id`."""
    _check_tokens(x, vocab_size)
    p = _level("deletion", severity)
    keep = (torch.rand(tuple(x.shape), generator=generator) >= p).to(x.device)  # (N, T)
    # stable sort puts kept tokens first in their original order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    out = torch.gather(x, 1, order)
    n_keep = keep.sum(dim=1, keepdim=True)
    pos = torch.arange(x.shape[1], device=x.device)[None, :]
    return torch.where(pos < n_keep, out, torch.full_like(out, int(pad_id)))


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "blur": blur,
    "shift": shift,
    "rotation": rotation,
    "contrast": contrast,
    "feature_noise": feature_noise,
    "scaling": scaling,
    "missing_values": missing_values,
    "substitution": substitution,
    "deletion": deletion,
}


def corruptions_for(modality: str) -> tuple[str, ...]:
    """The corruption names that apply to a modality ("image", "tabular", "tokens")."""
    if modality not in BY_MODALITY:
        raise ConfigError(
            f"No corruptions for modality {modality!r}; expected one of {sorted(BY_MODALITY)}."
        )
    return BY_MODALITY[modality]


def corrupt(x: torch.Tensor, name: str, severity: int, *, generator: torch.Generator, **context: object) -> torch.Tensor:
    """Apply corruption `name` at `severity` (1..5). `context` passes `bounds` (images),
    `fill` (tabular), `vocab_size` and `pad_id` (tokens)."""
    if name not in CORRUPTIONS:
        raise ConfigError(
            f"Unknown corruption {name!r}.{did_you_mean(name, CORRUPTIONS)} Valid corruptions: {', '.join(CORRUPTIONS)}."
        )
    return CORRUPTIONS[name](x, severity, generator=generator, **context)
