"""Building blocks shared by the attacks (`functional.py`, `blackbox.py`, `hotflip.py`):
parameter checks, attack mode, projections, random starts and the per-sample losses.

Conventions (see `functional.py`): a model maps x (B, ...) to logits (B, K); losses are
per sample (B,) and summed before differentiation, so a sample's gradient does not depend
on the batch it is in. A model bound to per-row data (a token model seen through its
embedding layer, `workbench.embedding.TokenEmbeddingModel`) is restricted with `restrict`
whenever an attack works on a subset of the rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.embedding import restrict
from workbench.errors import ConfigError, DataError, ParameterTypeError, check_number, check_positive_int
from workbench.torch_utils import frozen_eval


Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
LOSSES: tuple[str, ...] = ("ce", "dlr")
Model = Callable[[torch.Tensor], torch.Tensor]
Bounds = tuple[float, float] | None

_TINY = 1e-12


# ----------------------------------------------------------------------------- checks


def _check_norm(norm: object) -> str:
    if not isinstance(norm, str) or norm.lower() not in NORMS:
        raise ConfigError(f"Expected `norm` to be one of {list(NORMS)}, got {norm!r}.")
    return norm.lower()


def _check_eps(eps: object) -> float:
    return check_number("eps", eps, low=0)


def _check_bounds(bounds: object) -> Bounds:
    if bounds is None:
        return None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ConfigError(f"Expected `bounds` to be None or a (low, high) pair, got {bounds!r}.")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo < hi:
        raise ConfigError(f"Expected `bounds` low < high, got {bounds!r}.")
    return (lo, hi)


def _check_xy(x: object, y: object) -> None:
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(
            f"Expected `x` to be a float tensor (B, ...), got {got}; attack token models in "
            "embedding space (see `workbench.embedding.TokenEmbeddingModel`)."
        )
    if x.dim() < 2:
        raise DataError(f"Expected `x` with a batch dimension (B, ...), got shape {tuple(x.shape)}.")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.shape != x.shape[:1]:
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"Expected `y` to be a long tensor of shape ({x.shape[0]},) with the true labels, got {got}.")


def _check_target(target: object, y: torch.Tensor, targeted: bool) -> torch.Tensor | None:
    if not targeted:
        if target is not None:
            raise ConfigError("Got a `target` but `targeted=False`; pass targeted=True to use it.")
        return None
    if not isinstance(target, torch.Tensor) or target.dtype != torch.long or target.shape != y.shape:
        raise DataError(f"Expected `target` to be a long tensor of shape {tuple(y.shape)} when targeted=True, got {target!r}.")
    return target.to(y.device)


def _check_positive_float(name: str, value: object) -> float:
    return check_number(name, value, low=0, low_open=True)


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def attack_mode(model: Model) -> Iterator[None]:
    """Gradients on, and for an `nn.Module`: eval mode + frozen parameters, restored after.
    cuDNN refuses RNN backward in eval mode, so it is switched off for models with an RNN."""
    with contextlib.ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(frozen_eval(model))
            if any(isinstance(m, nn.RNNBase) for m in model.modules()):
                stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        stack.enter_context(torch.enable_grad())
        yield


def logits_of(model: Model, x: torch.Tensor) -> torch.Tensor:
    """model(x), taking the first element of a tuple output. (B, K)"""
    out = model(x)
    if isinstance(out, tuple):
        out = out[0]
    return out


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) broadcastable against `like`."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a perturbation (B, ...) -> (B,)."""
    norm = _check_norm(norm)
    flat = delta.reshape(delta.shape[0], -1).float()
    if flat.shape[1] == 0:
        return torch.zeros(delta.shape[0], device=delta.device)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)


def clip_to_bounds(x: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, bounds: Bounds) -> torch.Tensor:
    """Project x_adv onto {x' : ||x' - x|| <= eps} ∩ bounds (L∞: exact; L2: radial
    scaling then clipping, which can only shrink the norm)."""
    if norm == "linf":
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        n = perturbation_norm(delta, "l2").to(delta.dtype)
        factor = torch.clamp(eps / (n + _TINY), max=1.0)
        x_adv = x + delta * _view(factor, delta)
    return clip_to_bounds(x_adv, bounds)


def _normalise_l2(g: torch.Tensor) -> torch.Tensor:
    n = perturbation_norm(g, "l2").to(g.dtype)
    return g / _view(n + _TINY, g)


def _ascent(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in `norm`."""
    return g.sign() if norm == "linf" else _normalise_l2(g)


def _rand(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor, kind: str = "uniform") -> torch.Tensor:
    t = torch.rand(shape, generator=gen) if kind == "uniform" else torch.randn(shape, generator=gen)
    return t.to(device=like.device, dtype=like.dtype)


def random_in_ball(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A random perturbation inside the eps-ball: uniform per coordinate (L∞); a uniform
    direction with radius eps·U(0,1) (L2). Same shape as x."""
    if norm == "linf":
        return (2 * _rand(tuple(x.shape), gen, x) - 1) * eps
    d = _normalise_l2(_rand(tuple(x.shape), gen, x, "normal"))
    r = _rand((x.shape[0],), gen, x)
    return d * _view(r, x) * eps


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise ParameterTypeError(f"Expected `generator` to be a torch.Generator or None, got {type(generator).__name__}.")
    return generator


def _chunks(n: int, batch_size: int | None) -> list[slice]:
    if batch_size is None:
        return [slice(0, n)]
    check_positive_int("batch_size", batch_size)
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


# ----------------------------------------------------------------------------- losses


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (B,)."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y (B,): > 0 exactly when the sample is misclassified."""
    z = logits.float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - zy


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits ratio (Croce & Hein 2020), untargeted, (B,):
    -(z_y - max_{j≠y} z_j) / (z_π1 - z_π3), invariant to shifting and scaling the logits.
    With K < 3 classes the denominator is z_π1 - z_πK + 1e-12 (K=2: the sign of the margin)."""
    z = logits.float()
    zs = z.sort(dim=1, descending=True).values
    third = zs[:, min(2, z.shape[1] - 1)]
    return margin_loss(z, y) / (zs[:, 0] - third + _TINY)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (B,): -(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2). With K < 4 classes the
    denominator uses the smallest logits available (K=3: z_π1 - z_π3); with K=2 it is the
    plain margin z_t - z_y (for L∞/L2 steps only the gradient direction matters)."""
    z = logits.float()
    k = z.shape[1]
    num = z.gather(1, target[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)
    if k == 2:
        return num
    zs = z.sort(dim=1, descending=True).values
    den = zs[:, 0] - 0.5 * (zs[:, min(2, k - 1)] + zs[:, min(3, k - 1)])
    return num / (den + _TINY)


def _loss_fn(loss: str, targeted: bool) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """Per-sample loss to MAXIMISE: f(logits, y, target)."""
    if loss not in LOSSES:
        raise ConfigError(f"Expected `loss` to be one of {list(LOSSES)}, got {loss!r}.")
    if loss == "ce":
        if targeted:
            return lambda z, y, t: -ce_loss(z, t)
        return lambda z, y, t: ce_loss(z, y)
    if targeted:
        return lambda z, y, t: dlr_targeted_loss(z, y, t)
    return lambda z, y, t: dlr_loss(z, y)


def _success(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool: untargeted: misclassified; targeted: predicted as the target."""
    pred = logits.argmax(dim=1)
    return pred != y if target is None else pred == target


def _loss_and_grad(
    model: Model, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss_fn: Callable
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (B,K), per-sample loss (B,), d loss / d x_adv (B, ...)), all detached."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = logits_of(model, x_adv)
    loss = loss_fn(logits, y, target)
    (grad,) = torch.autograd.grad(loss.sum(), x_adv, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x_adv)
    return logits.detach(), loss.detach(), grad.detach()


def input_gradient(model: Model, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
                   batch_size: int | None = None) -> torch.Tensor:
    """Gradient of the per-sample loss w.r.t. the input (B, ...), detached; model untouched.
    `batch_size` rows per pass (per-sample losses: the chunking does not change the result)."""
    _check_xy(x, y)
    fn = _loss_fn(loss, False)
    with attack_mode(model):
        g = torch.cat([_loss_and_grad(restrict(model, s), x[s], y[s], None, fn)[2]
                       for s in _chunks(x.shape[0], batch_size)])
    return g.to(x.dtype)


def zero_gradient_fraction(model: Model, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
                           batch_size: int | None = None) -> float:
    """Fraction of inputs whose loss gradient w.r.t. the input is exactly zero everywhere
    (a symptom of gradient masking: saturated softmax, quantisation, non-differentiable ops)."""
    g = input_gradient(model, x, y, loss=loss, batch_size=batch_size)
    return float((g.reshape(g.shape[0], -1) == 0).all(dim=1).float().mean())


@torch.no_grad()
def predict_logits(model: Model, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """Logits (B, K) in attack mode (eval, frozen), detached."""
    with attack_mode(model), torch.no_grad():
        return torch.cat([logits_of(restrict(model, s), x[s]).detach() for s in _chunks(x.shape[0], batch_size)])


