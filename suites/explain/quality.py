"""Quality checks that sit next to every explanation.

All functions take torch/numpy arrays of N explained examples and return per-example
numbers (N,) so the suite can report a mean or median with a bootstrap CI.

- completeness_gap: |sum(phi) - (f(x) - f(ref))| / |f(x) - f(ref)| (IG, DeepLift: ref =
  baseline; SHAP: ref = E[f(background)]).
- perturbation_curves / curve_auc: deletion (remove the most relevant units first; a
  faithful attribution makes the target probability fall fast: lower AUC is better) and
  insertion (start from the replacement and add the most relevant units first: higher
  AUC is better), against a random order, for several replacement values.
- rank_correlation + randomised_copy: the model-parameter randomisation test (Adebayo et
  al. 2018). High correlation between explanations of the trained and a re-initialised
  model means the method does not depend on what the model learned (it fails the check).
- top_k_precision: overlap of the k most relevant units with known relevant units.
- infidelity / max_sensitivity: captum.metrics (Yeh et al. 2019).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.errors import ConfigError, DataError, check_positive_int

REPLACEMENTS = ("zero", "mean", "blur", "sample")


def completeness_gap(total: np.ndarray, f_x: np.ndarray, f_ref: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Relative summation error per example: |total - (f_x - f_ref)| / max(|f_x - f_ref|, eps).
    All arguments (N,)."""
    total, f_x, f_ref = (np.asarray(a, dtype=np.float64).ravel() for a in (total, f_x, f_ref))
    if not (total.shape == f_x.shape == f_ref.shape):
        raise DataError(f"Expected equal shapes, got {total.shape}, {f_x.shape}, {f_ref.shape}.")
    delta = f_x - f_ref
    return np.abs(total - delta) / np.maximum(np.abs(delta), eps)


def unit_index(shape: tuple[int, ...], space: str, modality: str) -> torch.Tensor:
    """Unit of every element of one input of `shape` (the thing deletion removes at once):
    image (C, H, W) -> pixel h*W + w (all channels together); tabular (F,) -> feature;
    embeddings (T, C) -> token t."""
    if space == "embedding":
        t, c = shape
        return torch.arange(t)[:, None].expand(t, c).contiguous()
    if modality == "image":
        c, h, w = shape
        return torch.arange(h * w).reshape(1, h, w).expand(c, h, w).contiguous()
    return torch.arange(int(np.prod(shape))).reshape(shape)


def replacement_inputs(
    kind: str, z: torch.Tensor, *, train_z: torch.Tensor, modality: str, rng: np.random.Generator,
    blur_sigma: float = 1.0, train_pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """What a removed unit becomes, (N, *S) for inputs z (N, *S):
    zero; mean (the training mean of each element); blur (images: Gaussian blur of the
    image itself, sigma in pixels); sample (the same element of a random training input).

    train_pad (R, T) bool, True at the padding of the training token sequences train_z
    (R, T, C): `mean` and `sample` then use real (non-pad) training tokens only, since a pad
    put in a real token's place deletes the token instead of replacing it by a typical one.
    `mean` at position t averages the training tokens that are real at t; `sample` keeps
    the drawn training input's token at t where it is real and otherwise draws one among
    the training tokens real at t. A position at which no training sequence is real (a test
    text longer than every training text) gets the mean of (a draw among) all real training
    tokens. Without train_pad, or with no pad in it, the result is the unpadded one, bitwise.
    """
    if train_pad is not None and not bool(train_pad.any()):
        train_pad = None
    if train_pad is not None and (modality != "tokens" or train_pad.shape != train_z.shape[:2]):
        raise DataError(f"Expected `train_pad` (R, T) = {tuple(train_z.shape[:2])} for token embeddings, got "
                        f"{tuple(train_pad.shape)} on {modality!r} data.")
    if kind == "zero":
        return torch.zeros_like(z)
    if kind == "mean":
        if train_pad is None:
            return train_z.float().mean(0, keepdim=True).to(z).expand_as(z).contiguous()
        return _real_token_mean(train_z, train_pad)[None].to(z).expand_as(z).contiguous()
    if kind == "blur":
        if modality != "image":
            raise ConfigError(f"Replacement 'blur' applies to images, not {modality!r}.")
        from scipy.ndimage import gaussian_filter

        arr = z.detach().cpu().double().numpy()
        out = gaussian_filter(arr, sigma=(0, 0, blur_sigma, blur_sigma), mode="nearest")
        return torch.as_tensor(out, dtype=z.dtype, device=z.device)
    if kind == "sample":
        idx = rng.integers(0, train_z.shape[0], size=z.shape[0])
        if train_pad is None:
            return train_z[torch.as_tensor(idx)].to(z)
        return _real_token_sample(train_z, train_pad, idx, rng).to(z)
    raise ConfigError(f"Expected a replacement in {REPLACEMENTS}, got {kind!r}.")


def _real_training_tokens(train_pad: torch.Tensor) -> np.ndarray:
    """(K, 2) (sequence, position) of every real training token; raises when there is none."""
    real = np.argwhere(~train_pad.cpu().numpy())
    if real.size == 0:
        raise DataError("Expected the training sequences to hold at least one real (non-pad) token for the "
                        "`mean` / `sample` replacements, got only padding.")
    return real


def _real_token_mean(train_z: torch.Tensor, train_pad: torch.Tensor) -> torch.Tensor:
    """(T, C) float64: per position, the mean over the training tokens real there (the mean of
    all real training tokens where none is)."""
    _real_training_tokens(train_pad)  # raises without any real token
    real = (~train_pad).to(train_z.device, torch.float64)  # (R, T)
    sums = (train_z.double() * real[..., None]).sum(0)  # (T, C)
    counts = real.sum(0)  # (T,)
    pooled = sums.sum(0) / counts.sum()  # (C,)
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], pooled[None])


def _real_token_sample(train_z: torch.Tensor, train_pad: torch.Tensor, idx: np.ndarray,
                       rng: np.random.Generator) -> torch.Tensor:
    """(N, T, C): training sequence idx[i] for example i, with each of its pads redrawn among
    the training tokens real at that position (among all real ones where none is)."""
    pad = train_pad.cpu().numpy()
    return redraw_pads(train_z[torch.as_tensor(idx)], pad[idx], train_z, train_pad, rng)


def redraw_pads(rows: torch.Tensor, rows_pad: torch.Tensor | np.ndarray, train: torch.Tensor,
                train_pad: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A copy of the token sequences rows (B, T, ...) (ids, or embeddings with a trailing C)
    whose padding rows_pad (B, T) bool is replaced by real training tokens: at position t,
    the token at t of a training sequence drawn uniformly among those real at t (train
    (R, T, ...), its padding train_pad (R, T)); where no training sequence is real at t, a
    token drawn uniformly among all real training tokens. Real tokens of rows are kept as
    they are; without a pad in rows_pad nothing is drawn and rows come back unchanged."""
    holes = np.asarray(rows_pad.cpu() if isinstance(rows_pad, torch.Tensor) else rows_pad, dtype=bool)
    if holes.shape != tuple(rows.shape[:2]) or tuple(train_pad.shape) != tuple(train.shape[:2]) \
            or rows.shape[1] != train.shape[1]:
        raise DataError(f"Expected rows (B, T) = {tuple(rows.shape[:2])} with their padding mask of that shape and "
                        f"training sequences of the same width with theirs, got masks {holes.shape}, "
                        f"{tuple(train_pad.shape)} for training sequences {tuple(train.shape[:2])}.")
    pad = train_pad.cpu().numpy()
    out = rows.clone()
    everywhere = None
    for t in np.flatnonzero(holes.any(0)):
        at = np.flatnonzero(holes[:, t])
        at_t = np.flatnonzero(~pad[:, t])
        if at_t.size:
            out[torch.as_tensor(at), t] = train[torch.as_tensor(rng.choice(at_t, size=at.size)), t].to(out)
        else:
            everywhere = _real_training_tokens(train_pad) if everywhere is None else everywhere
            pick = everywhere[rng.integers(0, len(everywhere), size=at.size)]
            out[torch.as_tensor(at), t] = train[torch.as_tensor(pick[:, 0]), torch.as_tensor(pick[:, 1])].to(out)
    return out


def order_units(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, U) indices from most to least relevant (largest score first), ties broken at random."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n, u = scores.shape
    perm = rng.permuted(np.tile(np.arange(u), (n, 1)), axis=1)  # random order within ties
    shuffled = np.take_along_axis(scores, perm, axis=1)
    return np.take_along_axis(perm, np.argsort(-shuffled, axis=1, kind="stable"), axis=1)


@torch.no_grad()
def perturbation_curves(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    target: torch.Tensor,
    order: np.ndarray,
    units: torch.Tensor,
    replacement: torch.Tensor,
    *,
    mode: str = "deletion",
    n_steps: int = 16,
    batch_size: int = 1024,
    n_players: np.ndarray | None = None,
) -> np.ndarray:
    """Deletion or insertion curves, (N, n_steps + 1).

    f(inputs (B, *S), target (B,)) -> (B,) the tracked score (e.g. target probability);
    z (N, *S) inputs; order (N, U) unit indices, most relevant first; units (*S) unit of
    each element; replacement (N, *S). Step j acts on the first round(j U / n_steps) units:
    deletion replaces them, insertion starts from the replacement and restores them.
    n_players (N,): only the first n_players[i] units of order[i] are players (the real
    tokens of a padded sequence); step j then acts on round(j n_i / n_steps) of them, and
    the other units (padding) keep the input's value throughout, in insertion too. So
    the x-axis is the fraction of players removed (inserted).
    """
    if mode not in ("deletion", "insertion"):
        raise ConfigError(f"Expected `mode` in ('deletion', 'insertion'), got {mode!r}.")
    check_positive_int("n_steps", n_steps)
    n, u = order.shape
    device = z.device
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(u)[None].repeat(n, 0), axis=1)  # rank of each unit
    if n_players is None:
        counts = np.round(np.linspace(0, u, n_steps + 1)).astype(np.int64)  # (S+1,)
        chosen = torch.as_tensor(rank[:, None, :] < counts[None, :, None], device=device)  # (N, S+1, U)
    else:
        players = np.asarray(n_players, dtype=np.int64).ravel()
        if players.shape != (n,) or players.min(initial=0) < 0 or players.max(initial=0) > u:
            raise DataError(f"Expected `n_players` to be {n} counts in 0..{u}, got {np.asarray(n_players).tolist()}.")
        counts = np.round(np.stack([np.linspace(0, k, n_steps + 1) for k in players])).astype(np.int64)  # (N, S+1)
        acted = rank[:, None, :] < counts[:, :, None]  # (N, S+1, U)
        if mode == "insertion":  # non-players are never replaced: restored from the start
            acted = acted | (rank >= players[:, None])[:, None, :]
        chosen = torch.as_tensor(acted, device=device)
    elem = chosen[:, :, units.to(device).reshape(-1)]  # (N, S+1, D)
    flat_z = z.reshape(n, 1, -1)
    flat_r = replacement.to(device).reshape(n, 1, -1)
    if mode == "deletion":
        inputs = torch.where(elem, flat_r, flat_z)
    else:
        inputs = torch.where(elem, flat_z, flat_r)
    inputs = inputs.reshape(n * (n_steps + 1), *z.shape[1:])
    tgt = target.to(device).repeat_interleave(n_steps + 1)
    outs = [f(inputs[i : i + batch_size], tgt[i : i + batch_size]).double().cpu()
            for i in range(0, inputs.shape[0], batch_size)]
    return torch.cat(outs).reshape(n, n_steps + 1).numpy()


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under curves (N, S+1) sampled at evenly spaced fractions of [0, 1] (trapezoid)."""
    curves = np.asarray(curves, dtype=np.float64)
    return np.trapezoid(curves, dx=1.0 / (curves.shape[-1] - 1), axis=-1)


def rank_correlation(a: np.ndarray, b: np.ndarray, *, absolute: bool = True,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """Spearman rank correlation per row of a, b (N, D) (of |values| when `absolute`, as in
    Adebayo et al.'s absolute-value comparison). Constant rows give NaN. mask (N, D) bool:
    correlate row i over its True entries only (the real tokens of a padded sequence, so
    tied zeros at pads do not count); fewer than 2 give NaN."""
    from scipy.stats import rankdata

    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise DataError(f"Expected equal shapes, got {a.shape} and {b.shape}.")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(len(mask), -1)
        if mask.shape != a.shape:
            raise DataError(f"Expected a mask of shape {a.shape}, got {mask.shape}.")
        return np.array([rank_correlation(a[i][mask[i]][None], b[i][mask[i]][None], absolute=absolute)[0]
                         if mask[i].sum() >= 2 else np.nan for i in range(len(a))])
    if absolute:
        a, b = np.abs(a), np.abs(b)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def randomised_copy(module: nn.Module, seed: int) -> nn.Module:
    """A deep copy with every submodule that has `reset_parameters` re-initialised (seeded).
    The original is never touched. Returns the copy in eval mode with frozen parameters."""
    clone = copy.deepcopy(module)
    devices = [p.device.index or 0 for p in clone.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            for m in clone.modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset):
                    reset()
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
        p.grad = None
    return clone


def top_k_precision(scores: np.ndarray, relevant: Sequence[int], k: int | None = None,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Fraction of the k units with the largest |score| that are in `relevant` (N,);
    k defaults to len(relevant). scores (N, U). Ties at the k-th place share the remaining
    slots (the expected precision under random tie-breaking), so an all-zero attribution
    scores the base rate, not whatever a sort happens to put first. mask (N, U) bool: the
    units that may be chosen (real tokens); the others rank below every real unit. A row
    with a NaN among its choosable scores (an example the method did not explain) gives NaN."""
    scores = np.abs(np.asarray(scores, dtype=np.float64))
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    unexplained = np.isnan(scores).any(1)
    scores = np.where(np.isnan(scores), 0.0, scores)
    rel = {int(r) for r in relevant}
    if not rel:
        raise DataError("Expected at least one relevant unit, got none.")
    u = scores.shape[1]
    if max(rel) >= u or min(rel) < 0:
        raise DataError(f"Relevant units {sorted(rel)} are outside 0..{u - 1}.")
    k = len(rel) if k is None else check_positive_int("k", k)
    is_rel = np.zeros(u, dtype=bool)
    is_rel[list(rel)] = True
    kth = -np.sort(-scores, axis=1)[:, k - 1 : k]  # (N, 1) the k-th largest |score|
    above = scores > kth
    tied = scores == kth
    slots = k - above.sum(1)
    hits = (above & is_rel).sum(1) + slots * (tied & is_rel).sum(1) / tied.sum(1)
    return np.where(unexplained, np.nan, hits / k)


def _noise_mask(mask: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor | float:
    """`mask` (N, ...) for captum's expanded inputs (N * k, ...): each example repeated k
    times in a row (captum's repeat_interleave); 1.0 without a mask."""
    if mask is None:
        return 1.0
    k = inputs.shape[0] // mask.shape[0]
    return mask.to(inputs.device, inputs.dtype).repeat_interleave(k, 0)


def infidelity_scores(
    model: nn.Module, z: torch.Tensor, attributions: torch.Tensor, target: torch.Tensor | None, *,
    noise_std: float, n_samples: int, seed: int, mask: torch.Tensor | None = None,
) -> np.ndarray:
    """captum.metrics.infidelity with Gaussian perturbations I ~ N(0, noise_std^2) and
    normalised attributions (Yeh et al. 2019, optimal scaling), (N,). Lower is better.
    mask (N, *S) or broadcastable (1 = may be perturbed): padding is never perturbed."""
    from captum.metrics import infidelity

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * noise_std * _noise_mask(mask, inputs)
        return noise, inputs - noise

    devices = [z.device.index or 0] if z.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = infidelity(model, perturb, z.detach(), attributions.to(z), target=target,
                         n_perturb_samples=n_samples, normalize=True)
    return out.double().cpu().numpy()


def max_sensitivity_scores(
    explain: Callable[..., torch.Tensor], z: torch.Tensor, *, target: torch.Tensor | None,
    baselines: torch.Tensor, radius: float, n_samples: int, seed: int, mask: torch.Tensor | None = None,
) -> np.ndarray:
    """captum.metrics.sensitivity_max: the largest relative change of the explanation
    (Frobenius norm) under uniform input noise in [-radius, radius], (N,). Lower is better.
    `explain(inputs, target=..., baselines=...)` re-runs the attribution method. mask as
    in `infidelity_scores` (padding is never perturbed)."""
    from captum.metrics import sensitivity_max

    def perturb(inputs: torch.Tensor, r: float) -> torch.Tensor:
        return inputs + (torch.rand_like(inputs) * 2 - 1) * r * _noise_mask(mask, inputs)

    def _unwrap(inputs: Any, **kwargs: Any) -> tuple[torch.Tensor]:  # captum works on 1-tuples of tensors
        kwargs = {k: (v[0] if isinstance(v, tuple) and len(v) == 1 else v) for k, v in kwargs.items()}
        return (explain(inputs[0] if isinstance(inputs, tuple) else inputs, **kwargs),)

    devices = [z.device.index or 0] if z.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = sensitivity_max(_unwrap, z.detach(), perturb_func=perturb, perturb_radius=radius,
                              n_perturb_samples=n_samples, target=target,
                              baselines=baselines.expand_as(z).contiguous())
    return out.double().cpu().numpy()
