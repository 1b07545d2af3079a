"""Compressed variants of a trained model and the accuracy-vs-cost Pareto frontier.

Every variant is built on a deep copy; the original module is never touched.

- `quantize_dynamic_int8`: `torch.ao.quantization.quantize_dynamic` on nn.Linear and
  nn.LSTM (int8 weights, activations quantised on the fly; CPU only). In torch 2.13 the
  API still works but emits a DeprecationWarning ("torch.ao.quantization is deprecated
  and will be removed in 2.10 ... migrate to torchao") and a UserWarning about quantized
  tensor creation functions; both are captured and returned, not printed.
- `prune_magnitude`: `torch.nn.utils.prune`, made permanent with `prune.remove`.
  Unstructured = global L1 magnitude over every Linear/Conv/LSTM weight; structured =
  L2-norm output channels/neurons (`ln_structured`, dim 0) per Linear/Conv layer except
  the output layer, with the biases of removed rows zeroed too. Weights tied to another
  module (a GPT's lm_head and token embedding) and embeddings are left alone.
- `kd_loss` / `distill`: Hinton et al. knowledge distillation into a smaller student,
  alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).
- `pareto_front`: the non-dominated points for per-axis directions.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from workbench.errors import ConfigError, check_number, check_positive_int

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantize_dynamic_int8(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """An int8 dynamically quantised CPU copy of `module` (Linear and LSTM layers) in eval
    mode, and the warnings torch emitted while building it."""
    from torch.ao.quantization import quantize_dynamic

    clone = copy.deepcopy(module).cpu().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_dynamic(clone, {nn.Linear, nn.LSTM}, dtype=torch.qint8)
    messages = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
    return q, messages


def _shared_weight_ids(module: nn.Module) -> set[int]:
    """ids of parameters reachable from more than one submodule (tied weights)."""
    owners: dict[int, int] = {}
    for m in module.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    return {k for k, v in owners.items() if v > 1}


def prunable_weights(module: nn.Module, *, structured: bool) -> list[tuple[nn.Module, str]]:
    """(submodule, parameter name) pairs magnitude pruning acts on."""
    shared = _shared_weight_ids(module)
    out: list[tuple[nn.Module, str]] = []
    for m in module.modules():
        if isinstance(m, _PRUNABLE) and id(m.weight) not in shared:
            out.append((m, "weight"))
        elif isinstance(m, nn.LSTM) and not structured:
            for name, p in m.named_parameters(recurse=False):
                if name.startswith("weight_") and id(p) not in shared:
                    out.append((m, name))
    if structured and out:
        out = out[:-1]  # keep the output layer whole: its rows are the classes / targets
    return out


def _check_sparsity(sparsity: object) -> float:
    return check_number("sparsity", sparsity, low=0, high=1, high_open=True)


def prune_magnitude(module: nn.Module, sparsity: float, *, structured: bool) -> nn.Module:
    """A pruned deep copy of `module` with the same train/eval flags.

    unstructured: the `sparsity` fraction of smallest-|w| elements over all prunable
      weights together (global) are zeroed.
    structured: in each prunable layer but the last, round(sparsity * rows) output rows
      (neurons / channels) with the smallest L2 norm are zeroed, with their biases.
    """
    sparsity = _check_sparsity(sparsity)
    clone = copy.deepcopy(module)
    targets = prunable_weights(clone, structured=structured)
    if not targets or sparsity == 0.0:
        return clone
    if structured:
        for m, name in targets:
            prune.ln_structured(m, name=name, amount=sparsity, n=2, dim=0)
            prune.remove(m, name)
            w = getattr(m, name)
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor):
                dead = w.detach().flatten(1).abs().sum(dim=1) == 0
                with torch.no_grad():
                    bias[dead] = 0.0
    else:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
        for m, name in targets:
            prune.remove(m, name)
        for m in clone.modules():
            if isinstance(m, nn.LSTM):
                m.flatten_parameters()  # re-packs the new weights for cuDNN; a no-op on CPU
    return clone


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton knowledge-distillation loss, mean over examples.

    student_logits, teacher_logits: (N, K); target: (N,) class indices.
    alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, target).
    The T^2 factor keeps the soft-target gradients on the scale of the hard ones.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(
            f"Expected student and teacher logits of equal shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}."
        )
    if not temperature > 0:
        raise ConfigError(f"Expected `temperature` > 0, got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"Expected `alpha` in [0, 1], got {alpha}.")
    T = float(temperature)
    log_s = F.log_softmax(student_logits / T, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach() / T, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")  # KL(p_t || p_s)
    ce = F.cross_entropy(student_logits, target)
    return alpha * T * T * kl + (1.0 - alpha) * ce


def _flat_logits(out: Any) -> torch.Tensor:
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.reshape(-1, out.shape[-1])  # (B, K) or (B*T, V)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    epochs: int = 10,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | None = None,
) -> nn.Module:
    """Train `student` (in place; returned in eval mode) on (x, y) with `kd_loss` against
    the logits of `teacher` (run in eval mode without grad; its flags are restored).
    Classification logits (B, K) and LM logits (B, T, V) (targets (B, T)) both work.
    Plain Adam loop, shuffled by a generator seeded with `seed`."""
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    device = device or torch.device("cpu")
    training = {n: m.training for n, m in teacher.named_modules()}
    teacher.eval()
    try:
        with torch.no_grad():
            t_logits = torch.cat([
                _flat_logits(teacher(x[i : i + 512].to(device))).float().cpu() for i in range(0, x.shape[0], 512)
            ])
    finally:
        for n, m in teacher.named_modules():
            m.training = training[n]
    per_example = t_logits.shape[0] // x.shape[0]  # 1 for classification, T for LMs
    t_logits = t_logits.reshape(x.shape[0], per_example, -1)
    student.to(device).train()
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            s = _flat_logits(student(x[idx].to(device)))
            t = t_logits[idx].reshape(-1, t_logits.shape[-1]).to(device)
            loss = kd_loss(s, t, y[idx].reshape(-1).to(device).long(), temperature=temperature, alpha=alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return student.eval()


def pareto_front(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Boolean mask (N,) of the non-dominated rows of `points` (N, M).

    directions[j] is "max" or "min" for column j. Row a dominates row b when a is at least
    as good on every column and strictly better on one; equal rows do not dominate each
    other (both stay on the front). Rows with a NaN are never on the front and dominate
    nothing.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ConfigError(f"Expected `points` of shape (N, M), got {p.shape}.")
    if len(directions) != p.shape[1]:
        raise ConfigError(f"Expected {p.shape[1]} directions (one per column), got {len(directions)}.")
    sign = []
    for d in directions:
        if d not in ("max", "min"):
            raise ConfigError(f"Expected each direction in ('max', 'min'), got {d!r}.")
        sign.append(1.0 if d == "max" else -1.0)
    q = p * np.asarray(sign)  # larger is better everywhere
    valid = ~np.isnan(q).any(axis=1)
    front = valid.copy()
    for i in np.flatnonzero(valid):
        others = q[valid]
        dominated = np.any(np.all(others >= q[i], axis=1) & np.any(others > q[i], axis=1))
        front[i] = not dominated
    return front
