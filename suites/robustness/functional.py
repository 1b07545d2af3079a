"""Adversarial attacks as pure functions: torch in, torch out.

Every attack takes a differentiable classifier `model(x) -> logits (B, K)` (an `nn.Module`
or any callable), clean inputs `x (B, ...)` and TRUE labels `y (B,)` long, and returns
adversarial inputs `(B, ...)`: detached, on x's device and dtype, with
`perturbation_norm(x_adv - x, norm) <= eps` (up to float rounding, 1e-6) and, when
`bounds=(lo, hi)` is given, `lo <= x_adv <= hi`. `bounds=None` means unbounded inputs
(standardised tabular features, embeddings).

Side effects: none. An `nn.Module` is evaluated inside `frozen_eval` (every submodule in
eval mode, parameters with requires_grad=False) and comes back exactly as found: weights,
each submodule's train/eval flag, BatchNorm statistics, requires_grad flags and parameter
`.grad` (gradients are taken w.r.t. the input only, with `torch.autograd.grad`). The input
tensor is never modified. Randomness comes only from `generator` (a CPU torch.Generator;
default: seeded with 0), so an attack is deterministic for a seed.

Losses are per-sample and summed over the batch before differentiation, so a sample's
gradient does not depend on the batch it is in.

Attacks:
  fgsm            one signed-gradient (L∞) or normalised-gradient (L2) step of size eps.
  pgd             projected gradient descent (Madry et al. 2018): random start, `steps`
                  steps of `step_size`, restarts keeping the per-sample worst case.
  apgd            Auto-PGD (Croce & Hein 2020) with the CE or DLR loss: step size 2·eps
                  halved at checkpoints when progress stalls, momentum 0.75, best point kept.
  apgd_targeted   APGD with the targeted DLR loss against the `n_targets` most likely
                  wrong classes, each run only on the points still standing.
  random_search   a gradient-free black-box attack (Square-attack-style random search on
                  the margin loss): the reference that white-box attacks must beat.
  random_noise    random corners of the L∞ ball / random directions on the L2 sphere.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import ConfigError, DataError, ParameterTypeError, check_positive_int
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
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ParameterTypeError(f"Expected `eps` to be a float >= 0, got {type(eps).__name__} {eps!r}.")
    if not math.isfinite(float(eps)) or eps < 0:
        raise ConfigError(f"Expected `eps` to be a finite float >= 0, got {eps!r}.")
    return float(eps)


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
            "embedding space (see `EmbeddingSpace`)."
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"Expected `{name}` to be a float > 0, got {value!r}.")
    return float(value)


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


def input_gradient(model: Model, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce") -> torch.Tensor:
    """Gradient of the per-sample loss w.r.t. the input (B, ...), detached; model untouched."""
    _check_xy(x, y)
    with attack_mode(model):
        _, _, g = _loss_and_grad(model, x, y, None, _loss_fn(loss, False))
    return g.to(x.dtype)


def zero_gradient_fraction(model: Model, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce") -> float:
    """Fraction of inputs whose loss gradient w.r.t. the input is exactly zero everywhere
    (a symptom of gradient masking: saturated softmax, quantisation, non-differentiable ops)."""
    g = input_gradient(model, x, y, loss=loss)
    return float((g.reshape(g.shape[0], -1) == 0).all(dim=1).float().mean())


@torch.no_grad()
def predict_logits(model: Model, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """Logits (B, K) in attack mode (eval, frozen), detached."""
    with attack_mode(model), torch.no_grad():
        return torch.cat([logits_of(model, x[s]).detach() for s in _chunks(x.shape[0], batch_size)])


# ----------------------------------------------------------------------------- attacks


def fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    bounds: Bounds = (0.0, 1.0),
    targeted: bool = False,
    target: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Fast gradient (sign) method (Goodfellow et al. 2015): one step of size eps along the
    L∞ (sign) or L2 (normalised) gradient of the cross-entropy; targeted: towards `target`.
    x (B, ...) float, y (B,) true labels -> x_adv (B, ...)."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    _check_xy(x, y)
    target = _check_target(target, y, targeted)
    if eps == 0:
        return x.detach().clone()
    loss_fn = _loss_fn("ce", targeted)
    out = x.detach().clone()
    with attack_mode(model):
        for s in _chunks(x.shape[0], batch_size):
            xs = x[s].detach()
            _, _, g = _loss_and_grad(model, xs, y[s], None if target is None else target[s], loss_fn)
            out[s] = project(xs + eps * _ascent(g, norm), xs, eps, norm, bounds)
    return out


def _pgd_single(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *, eps: float, norm: str,
    steps: int, alpha: float, random_start: bool, loss_fn: Callable, bounds: Bounds, gen: torch.Generator,
) -> torch.Tensor:
    if random_start:
        x_adv = clip_to_bounds(x + random_in_ball(x, eps, norm, gen), bounds)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        _, _, g = _loss_and_grad(model, x_adv, y, target, loss_fn)
        x_adv = project(x_adv + alpha * _ascent(g, norm), x, eps, norm, bounds)
    return x_adv


def _keep_worst(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss_fn: Callable,
    restarts: int, run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
) -> torch.Tensor:
    """Run `run` up to `restarts` times on the points not yet fooled; per sample keep the
    first successful example, else the one with the highest loss."""
    if restarts == 1:
        return run(x, y, target)
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        t = None if target is None else target[idx]
        xa = run(x[idx], y[idx], t)
        with torch.no_grad():
            z = logits_of(model, xa)
            loss = loss_fn(z, y[idx], t)
            succ = _success(z, y[idx], t)
        take = succ | (loss > best_loss[idx])
        best[idx[take]] = xa[take]
        best_loss[idx[take]] = loss[take]
        fooled[idx[succ]] = True
    return best


def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    loss: str = "ce",
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018). Each step: x ← Π(x + α·sign(∇L))
    (L∞) or Π(x + α·∇L/||∇L||₂) (L2), Π the projection on the eps-ball ∩ bounds; α =
    `step_size` (default 2.5·eps/steps). `random_start` starts uniformly in the ball;
    `restarts` > 1 re-attacks only the points not yet fooled and keeps, per sample, the
    first successful example else the highest-loss one. Returns the last iterate per
    restart (the plain algorithm). x (B, ...) float, y (B,) true labels -> x_adv (B, ...)."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    _check_xy(x, y)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    target = _check_target(target, y, targeted)
    if restarts > 1 and not random_start:
        raise ConfigError(f"Expected `random_start=True` with restarts={restarts}: restarts without a random start are identical.")
    if eps == 0:
        return x.detach().clone()
    alpha = 2.5 * eps / steps if step_size is None else _check_positive_float("step_size", step_size)
    loss_fn = _loss_fn(loss, targeted)
    gen = _default_generator(generator)
    out = x.detach().clone()
    with attack_mode(model):
        for s in _chunks(x.shape[0], batch_size):
            def run(xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor | None) -> torch.Tensor:
                return _pgd_single(model, xs, ys, ts, eps=eps, norm=norm, steps=steps, alpha=alpha,
                                   random_start=random_start, loss_fn=loss_fn, bounds=bounds, gen=gen)
            out[s] = _keep_worst(model, x[s].detach(), y[s], None if target is None else target[s], loss_fn, restarts, run)
    return out


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations (0-based, after which the step size is checked) of APGD's schedule:
    first after ⌊0.22·N⌋ steps, then intervals shrinking by ⌊0.03·N⌋ down to ⌊0.06·N⌋
    (each at least 1), as in Croce & Hein (2020) and their reference code."""
    k, k_min, k_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, i = [], k - 1
    while i < steps:
        out.append(i)
        k = max(k - k_decr, k_min)
        i += k
    return out


def _random_start_apgd(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """APGD's start: a random direction scaled so its L∞ (resp. L2) norm is exactly eps."""
    if norm == "linf":
        t = 2 * _rand(tuple(x.shape), gen, x) - 1
        return t / _view(perturbation_norm(t, "linf").to(t.dtype) + _TINY, t) * eps
    return _normalise_l2(_rand(tuple(x.shape), gen, x, "normal")) * eps


def _apgd_single(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *, eps: float, norm: str,
    steps: int, loss_fn: Callable, bounds: Bounds, gen: torch.Generator, rho: float, momentum: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run. Returns (x_adv (B, ...), fooled (B,) bool) where x_adv is a
    misclassified iterate if one was found, else the highest-loss iterate."""
    b = x.shape[0]
    x_adv = clip_to_bounds(x + _random_start_apgd(x, eps, norm, gen), bounds)
    logits, loss, g = _loss_and_grad(model, x_adv, y, target, loss_fn)
    fooled = _success(logits, y, None)  # success is always judged against the true label
    x_fool = x_adv.clone()
    x_best, loss_best, g_best = x_adv.clone(), loss.clone(), g.clone()
    step = torch.full((b,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev = x_adv.clone()
    losses = [loss]  # losses[j] = loss at iterate j (0 = start)
    checks = set(apgd_checkpoints(steps))
    last_check = -1
    loss_best_at_check = loss_best.clone()
    reduced_at_check = torch.ones(b, dtype=torch.bool, device=x.device)
    for i in range(steps):
        a = momentum if i > 0 else 1.0
        with torch.no_grad():
            diff = x_adv - x_prev
            x_prev = x_adv
            z = project(x_adv + _view(step, x) * _ascent(g, norm), x, eps, norm, bounds)
            x_adv = project(x_adv + a * (z - x_adv) + (1 - a) * diff, x, eps, norm, bounds)
        logits, loss, g = _loss_and_grad(model, x_adv, y, target, loss_fn)
        succ = _success(logits, y, None)
        x_fool[succ] = x_adv[succ]
        fooled |= succ
        losses.append(loss)
        better = loss > loss_best
        x_best[better], g_best[better], loss_best[better] = x_adv[better], g[better], loss[better]
        if i in checks:
            # condition 1: at most rho·k of the last k steps increased the loss;
            # condition 2: the step size was not reduced at the last checkpoint and the best loss did not improve.
            k = i - last_check
            window = torch.stack(losses[-(k + 1):])  # (k+1, B)
            n_increase = (window[1:] > window[:-1]).sum(dim=0)
            osc = n_increase <= k * rho
            stalled = ~reduced_at_check & (loss_best_at_check >= loss_best)
            reduce = osc | stalled
            reduced_at_check, loss_best_at_check, last_check = reduce, loss_best.clone(), i
            if reduce.any():
                step[reduce] /= 2.0
                x_adv = x_adv.clone()
                x_adv[reduce], g[reduce] = x_best[reduce], g_best[reduce]
    return torch.where(_view(fooled, x), x_fool, x_best), fooled


def _apgd_restarts(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, restarts: int, **kw: object
) -> tuple[torch.Tensor, torch.Tensor]:
    out = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    loss_fn = kw["loss_fn"]
    for _ in range(restarts):
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        t = None if target is None else target[idx]
        xa, succ = _apgd_single(model, x[idx], y[idx], t, **kw)  # type: ignore[arg-type]
        with torch.no_grad():
            loss = loss_fn(logits_of(model, xa), y[idx], t)
        take = succ | (loss > best_loss[idx])
        out[idx[take]] = xa[take]
        best_loss[idx[take]] = loss[take]
        fooled[idx[succ]] = True
    return out, fooled


def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    rho: float = 0.75,
    momentum: float = 0.75,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1), untargeted, with the "ce" or "dlr" loss.
    Starts at a random point of norm eps, step size 2·eps, momentum `momentum`; at each
    checkpoint (`apgd_checkpoints`) the step size of a sample is halved and its iterate
    reset to its best point when fewer than `rho` of the steps since the last checkpoint
    increased its loss, or when its step was not reduced last time and its best loss did
    not improve. Per sample it returns a misclassified iterate if any, else the
    highest-loss iterate; restarts attack only the points still standing."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    _check_xy(x, y)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    if eps == 0:
        return x.detach().clone()
    gen = _default_generator(generator)
    kw = dict(eps=eps, norm=norm, steps=steps, loss_fn=_loss_fn(loss, False), bounds=bounds, gen=gen,
              rho=float(rho), momentum=float(momentum))
    out = x.detach().clone()
    with attack_mode(model):
        for s in _chunks(x.shape[0], batch_size):
            out[s] = _apgd_restarts(model, x[s].detach(), y[s], None, restarts, **kw)[0]
    return out


def apgd_targeted(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    steps: int = 100,
    n_targets: int = 9,
    restarts: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """APGD-T (Croce & Hein 2020): APGD with the targeted DLR loss, once per target class
    — the 2nd, 3rd, ... most likely classes of the clean input, `n_targets` of them (at
    most K-1) — each run only on the points still correctly classified. Success is
    misclassification w.r.t. the true label `y`."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    _check_xy(x, y)
    check_positive_int("steps", steps)
    check_positive_int("n_targets", n_targets)
    check_positive_int("restarts", restarts)
    if eps == 0:
        return x.detach().clone()
    gen = _default_generator(generator)
    kw = dict(eps=eps, norm=norm, steps=steps, loss_fn=_loss_fn("dlr", True), bounds=bounds, gen=gen,
              rho=float(rho), momentum=float(momentum))
    out = x.detach().clone()
    with attack_mode(model):
        for s in _chunks(x.shape[0], batch_size):
            xs, ys = x[s].detach(), y[s]
            with torch.no_grad():
                z = logits_of(model, xs)
            order = z.argsort(dim=1, descending=True)
            k = z.shape[1]
            fooled = z.argmax(dim=1) != ys
            best = xs.clone()
            best_loss = torch.full((xs.shape[0],), float("-inf"), device=xs.device)
            for rank in range(1, min(n_targets, k - 1) + 1):
                idx = (~fooled).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                t = order[idx, rank]
                # the true class may be ranked below `rank` on a misranked point: target the top class then
                t = torch.where(t == ys[idx], order[idx, 0], t)
                xa, succ = _apgd_restarts(model, xs[idx], ys[idx], t, restarts, **kw)
                with torch.no_grad():
                    loss = ce_loss(logits_of(model, xa), ys[idx])
                take = succ | (loss > best_loss[idx])
                best[idx[take]] = xa[take]
                best_loss[idx[take]] = loss[take]
                fooled[idx[succ]] = True
            out[s] = best
    return out


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
            out[s] = _random_search_chunk(model, x[s].detach(), y[s], eps, norm, queries, p_init, bounds, gen)
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
        m_new = -margin_loss(logits_of(model, cand), y[idx])
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


# ----------------------------------------------------------------------------- token models


class EmbeddingSpace(nn.Module):
    """Adapter: a token model as a function of its token embeddings, `e (B, T, C) -> logits`,
    via the reference models' `forward_from_embeddings`. Attack this with bounds=None;
    `EmbeddingSpace.embed(idx)` gives the clean embeddings (detached)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for attr in ("embed", "forward_from_embeddings"):
            if not callable(getattr(module, attr, None)):
                raise ConfigError(
                    f"Expected a token model with `.embed(idx)` and `.forward_from_embeddings(e)` to attack in "
                    f"embedding space; {type(module).__name__} has no `{attr}`."
                )
        self.module = module

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return logits_of(self.module.forward_from_embeddings, e)

    @torch.no_grad()
    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, C), detached."""
        return self.module.embed(idx).detach()


def embedding_eps_scale(e: torch.Tensor, norm: str) -> float:
    """Scale that turns a relative eps into an absolute one in embedding space: the
    root-mean-square embedding coordinate (L∞) or the mean L2 norm of a whole embedded
    sequence (L2), measured on the clean embeddings e (B, T, C)."""
    norm = _check_norm(norm)
    e = e.detach().float()
    if norm == "linf":
        return float(e.pow(2).mean().sqrt())
    return float(e.reshape(e.shape[0], -1).norm(dim=1).mean())
