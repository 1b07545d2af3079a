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

Early stop (`early_stop=True`, the default): the worst case needs one success, so an
iterative attack stops spending steps on a sample as soon as an iterate fools it (PGD,
APGD: checked on every iterate, for free, from the logits the gradient step computes) and
keeps that iterate. `early_stop=False` steps every sample to the end and returns the same
points: per sample the first fooling iterate, else the last (PGD) or best (APGD) one. APGD's
step-size schedule is per sample, so the samples still standing follow exactly the same
schedule either way. A sample first fooled at iterate t costs the forwards of iterates 0..t,
the least that returns the same point, and one backward more than the least (t): skipping
it costs more than it saves (`benchmarks/bench_attacks.py` measures both against this
floor). A token model bound to its ids (`TokenEmbeddingModel`) is restricted to the rows an
attack works on (`restrict`).

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
(the last two live in `blackbox.py`; shared building blocks in `attack_utils.py`; the
discrete token attack in `hotflip.py`.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from workbench.embedding import TokenEmbeddingModel, embedding_eps_scale  # noqa: F401  (re-exported)
from workbench.errors import ConfigError, check_positive_int
from workbench.suites.robustness.attack_utils import (  # noqa: F401  (the public names are re-exported)
    LOSSES,
    NORMS,
    _TINY,
    Bounds,
    Model,
    Norm,
    _ascent,
    _check_bounds,
    _check_eps,
    _check_norm,
    _check_positive_float,
    _check_target,
    _check_xy,
    _chunks,
    _default_generator,
    _loss_and_grad,
    _loss_fn,
    _normalise_l2,
    _rand,
    _success,
    _view,
    attack_mode,
    ce_loss,
    clip_to_bounds,
    dlr_loss,
    dlr_targeted_loss,
    input_gradient,
    logits_of,
    margin_loss,
    perturbation_norm,
    predict_logits,
    project,
    random_in_ball,
    restrict,
    zero_gradient_fraction,
)
from workbench.suites.robustness.blackbox import random_noise, random_search  # noqa: F401

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
            _, _, g = _loss_and_grad(restrict(model, s), xs, y[s], None if target is None else target[s], loss_fn)
            out[s] = project(xs + eps * _ascent(g, norm), xs, eps, norm, bounds)
    return out


def _rows(fooled: torch.Tensor, early_stop: bool) -> torch.Tensor:
    """The rows an iterative attack still steps: those not yet fooled (early stop), or all."""
    return (~fooled).nonzero().squeeze(1) if early_stop else torch.arange(fooled.numel(), device=fooled.device)


def _pgd_single(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *, eps: float, norm: str,
    steps: int, alpha: float, random_start: bool, loss_fn: Callable, bounds: Bounds, gen: torch.Generator,
    early_stop: bool, keep_first_success: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One PGD run. Returns (x_adv (B, ...), fooled (B,) bool): per sample the first
    iterate that fools it (checked on iterates 0..steps-1 from the logits of each gradient
    step; `fooled` marks those), else the last iterate, whose success is not known here;
    with `keep_first_success=False` the last iterate of every sample (the plain algorithm,
    `fooled` all False). With early stop the working set (rows, their inputs, labels,
    iterates) is compacted only when samples drop out, so a step costs no extra copies.
    A sample fooled at iterate t costs t+1 forward and t+1 backward rows; t backward rows
    is the floor, but a backward pass costs the same whether or not the fooled rows' loss
    is in it, and re-running the forward on the rest costs more than it saves
    (`benchmarks/bench_attacks.py`)."""
    if random_start:
        x_adv = clip_to_bounds(x + random_in_ball(x, eps, norm, gen), bounds)
    else:
        x_adv = x.clone()
    out = x_adv.clone()
    rows = torch.arange(x.shape[0], device=x.device)  # original row of each working-set entry
    m, xa, x0, ya, ta = model, x_adv, x, y, target
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        logits, _, g = _loss_and_grad(m, xa, ya, ta, loss_fn)
        if keep_first_success:
            new = _success(logits, ya, ta) & ~fooled[rows]
            if bool(new.any()):
                out[rows[new]] = xa[new]
                fooled[rows[new]] = True
        xa = project(xa + alpha * _ascent(g, norm), x0, eps, norm, bounds)
        if early_stop and keep_first_success and bool(new.any()):
            keep = ~new
            if not bool(keep.any()):
                return out, fooled
            xa, x0, ya, g = xa[keep], x0[keep], ya[keep], None
            ta = None if ta is None else ta[keep]
            rows = rows[keep]
            m = restrict(model, rows)
    still = ~fooled[rows]
    out[rows[still]] = xa[still]
    return out, fooled


def _keep_worst(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss_fn: Callable,
    restarts: int,
    run: Callable[[Model, torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Run `run` (-> (x_adv, fooled during the run)) up to `restarts` times on the points
    not yet fooled; per sample keep the first successful example, else the one with the
    highest loss. Only the points the run left standing are re-evaluated (their last
    iterate's success and loss are not known yet); a point it fooled is kept as it is."""
    if restarts == 1:
        return run(model, x, y, target)[0]
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        t = None if target is None else target[idx]
        m = restrict(model, idx)
        xa, succ = run(m, x[idx], y[idx], t)
        loss = torch.full((idx.numel(),), float("inf"), device=x.device)
        rest = (~succ).nonzero().squeeze(1)
        if rest.numel() > 0:
            with torch.no_grad():
                z = logits_of(restrict(m, rest), xa[rest])
                loss[rest] = loss_fn(z, y[idx[rest]], None if t is None else t[rest]).to(loss.dtype)
                succ = succ.clone()
                succ[rest] = _success(z, y[idx[rest]], None if t is None else t[rest])
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
    early_stop: bool = True,
    keep: str = "first_success",
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018). Each step: x ← Π(x + α·sign(∇L))
    (L∞) or Π(x + α·∇L/||∇L||₂) (L2), Π the projection on the eps-ball ∩ bounds; α =
    `step_size` (default 2.5·eps/steps). `random_start` starts uniformly in the ball;
    `restarts` > 1 re-attacks only the points not yet fooled and keeps, per sample, the
    first successful example else the highest-loss one. Per restart it returns the first
    iterate that fools a sample (misclassified; targeted: classified as `target`), else the
    last iterate; `early_stop` (see the module docstring) only saves the steps after that.
    `keep="last"`: the plain algorithm, every sample stepped to the end and its last iterate
    returned (adversarial training wants the high-loss point, not the first success).
    x (B, ...) float, y (B,) true labels -> x_adv (B, ...)."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    _check_xy(x, y)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    target = _check_target(target, y, targeted)
    if restarts > 1 and not random_start:
        raise ConfigError(f"Expected `random_start=True` with restarts={restarts}: restarts without a random start are identical.")
    if eps == 0:
        return x.detach().clone()
    if keep not in ("first_success", "last"):
        raise ConfigError(f"Expected `keep` to be one of ['first_success', 'last'], got {keep!r}.")
    alpha = 2.5 * eps / steps if step_size is None else _check_positive_float("step_size", step_size)
    loss_fn = _loss_fn(loss, targeted)
    gen = _default_generator(generator)
    out = x.detach().clone()
    first = keep == "first_success"

    def run(m: Model, xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor | None) -> torch.Tensor:
        return _pgd_single(m, xs, ys, ts, eps=eps, norm=norm, steps=steps, alpha=alpha, random_start=random_start,
                           loss_fn=loss_fn, bounds=bounds, gen=gen, early_stop=bool(early_stop) and first,
                           keep_first_success=first)

    with attack_mode(model):
        for s in _chunks(x.shape[0], batch_size):
            out[s] = _keep_worst(restrict(model, s), x[s].detach(), y[s], None if target is None else target[s],
                                 loss_fn, restarts, run)
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
    early_stop: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run. Returns (x_adv (B, ...), fooled (B,) bool) where x_adv is the first
    misclassified iterate if one was found, else the highest-loss iterate. All state is per
    sample; with early stop only the samples still standing are stepped (their schedule is
    unchanged: a fooled sample's frozen values never enter another sample's). Every iterate
    0..steps is checked, so `fooled` is the success of the returned point; the last iterate
    needs only a forward (its gradient would never be used)."""
    b = x.shape[0]
    x_adv = clip_to_bounds(x + _random_start_apgd(x, eps, norm, gen), bounds)
    logits, loss, g = _loss_and_grad(model, x_adv, y, target, loss_fn)
    fooled = _success(logits, y, None)  # success is always judged against the true label
    x_fool = x_adv.clone()
    x_best, loss_best, g_best = x_adv.clone(), loss.clone(), g.clone()
    step = torch.full((b,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev = x_adv.clone()
    losses = [loss]  # losses[j] = loss at iterate j (0 = start), (B,)
    checks = set(apgd_checkpoints(steps))
    last_check = -1
    loss_best_at_check = loss_best.clone()
    reduced_at_check = torch.ones(b, dtype=torch.bool, device=x.device)
    for i in range(steps):
        r = _rows(fooled, early_stop)
        if r.numel() == 0:
            break
        a = momentum if i > 0 else 1.0
        t = None if target is None else target[r]
        with torch.no_grad():
            xa, xr = x_adv[r], x[r]
            diff = xa - x_prev[r]
            z = project(xa + _view(step[r], xa) * _ascent(g[r], norm), xr, eps, norm, bounds)
            xn = project(xa + a * (z - xa) + (1 - a) * diff, xr, eps, norm, bounds)
            x_prev[r], x_adv[r] = xa, xn
        if i < steps - 1:
            logits, loss_r, g_r = _loss_and_grad(restrict(model, r), xn, y[r], t, loss_fn)
            g[r] = g_r
        else:  # the last iterate's gradient would never be used: its loss and success need a forward only
            with torch.no_grad():
                logits = logits_of(restrict(model, r), xn).detach()
                loss_r = loss_fn(logits, y[r], t)
        new = _success(logits, y[r], None) & ~fooled[r]
        x_fool[r[new]] = xn[new]
        fooled[r[new]] = True
        loss = losses[-1].clone()
        loss[r] = loss_r
        losses.append(loss)
        better = r[loss_r > loss_best[r]]
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
                x_adv[reduce], g[reduce] = x_best[reduce], g_best[reduce]
    return torch.where(_view(fooled, x), x_fool, x_best), fooled


def _apgd_restarts(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, restarts: int, **kw: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD `restarts` times on the points not yet fooled: per sample the first success,
    else the highest-loss point. -> (x_adv (B, ...), fooled (B,)). Only the points a run
    left standing are re-evaluated (a run's successes are kept whatever their loss)."""
    if restarts == 1:
        return _apgd_single(model, x, y, target, **kw)  # type: ignore[arg-type]
    out = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    loss_fn = kw["loss_fn"]
    for _ in range(restarts):
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        t = None if target is None else target[idx]
        m = restrict(model, idx)
        xa, succ = _apgd_single(m, x[idx], y[idx], t, **kw)  # type: ignore[arg-type]
        loss = torch.full((idx.numel(),), float("inf"), device=x.device)
        rest = (~succ).nonzero().squeeze(1)
        if rest.numel() > 0:
            with torch.no_grad():
                loss[rest] = loss_fn(logits_of(restrict(m, rest), xa[rest]), y[idx[rest]],
                                     None if t is None else t[rest]).to(loss.dtype)
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
    early_stop: bool = True,
) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1), untargeted, with the "ce" or "dlr" loss.
    Starts at a random point of norm eps, step size 2·eps, momentum `momentum`; at each
    checkpoint (`apgd_checkpoints`) the step size of a sample is halved and its iterate
    reset to its best point when fewer than `rho` of the steps since the last checkpoint
    increased its loss, or when its step was not reduced last time and its best loss did
    not improve. Per sample it returns the first misclassified iterate if any, else the
    highest-loss iterate; restarts attack only the points still standing; `early_stop`
    (see the module docstring) only saves the steps after a success."""
    norm, eps, bounds = _check_norm(norm), _check_eps(eps), _check_bounds(bounds)
    _check_xy(x, y)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    if eps == 0:
        return x.detach().clone()
    gen = _default_generator(generator)
    kw = dict(eps=eps, norm=norm, steps=steps, loss_fn=_loss_fn(loss, False), bounds=bounds, gen=gen,
              rho=float(rho), momentum=float(momentum), early_stop=bool(early_stop))
    out = x.detach().clone()
    with attack_mode(model):
        for s in _chunks(x.shape[0], batch_size):
            out[s] = _apgd_restarts(restrict(model, s), x[s].detach(), y[s], None, restarts, **kw)[0]
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
    early_stop: bool = True,
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
              rho=float(rho), momentum=float(momentum), early_stop=bool(early_stop))
    out = x.detach().clone()
    with attack_mode(model):
        for s in _chunks(x.shape[0], batch_size):
            ms, xs, ys = restrict(model, s), x[s].detach(), y[s]
            with torch.no_grad():
                z = logits_of(ms, xs)
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
                mi = restrict(ms, idx)
                xa, succ = _apgd_restarts(mi, xs[idx], ys[idx], t, restarts, **kw)
                # a success is kept whatever its loss: only the points still standing need their CE
                loss = torch.full((idx.numel(),), float("inf"), device=xs.device)
                rest = (~succ).nonzero().squeeze(1)
                if rest.numel() > 0:
                    with torch.no_grad():
                        loss[rest] = ce_loss(logits_of(restrict(mi, rest), xa[rest]), ys[idx[rest]])
                take = succ | (loss > best_loss[idx])
                best[idx[take]] = xa[take]
                best_loss[idx[take]] = loss[take]
                fooled[idx[succ]] = True
            out[s] = best
    return out
