"""Pure functions of the efficiency suite: model size, parameter counts and the task
metric a compressed variant is judged by. Torch in, plain numbers out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.stats import bootstrap_mean_ci, bootstrap_ratio_ci, proportion_ci


def count_parameters(module: nn.Module) -> dict[str, int]:
    """{"total": all parameter elements, "trainable": those with requires_grad}.
    Shared (tied) parameters count once, as `module.parameters()` yields them once."""
    total = trainable = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return {"total": int(total), "trainable": int(trainable)}


def _walk_tensors(obj: Any, out: list[torch.Tensor], depth: int = 0) -> None:
    """Collect tensors from a state_dict value: tensors, tuples/lists, and packed
    quantised parameters (TorchScript objects with `unpack` or `__getstate__`)."""
    if depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            _walk_tensors(o, out, depth + 1)
    elif isinstance(obj, torch.ScriptObject):
        methods = set(obj._method_names())
        if "unpack" in methods:
            _walk_tensors(obj.unpack(), out, depth + 1)
        elif "__getstate__" in methods:
            _walk_tensors(obj.__getstate__(), out, depth + 1)


def _storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
        ptr = id(t)
    return (ptr, t.storage_offset(), tuple(t.shape), t.dtype)


def model_size_bytes(module: nn.Module) -> dict[str, int]:
    """Bytes held by parameters and buffers (the state_dict, packed int8 weights included),
    by dtype, plus "total". Tensors sharing storage (tied weights) count once."""
    tensors: list[torch.Tensor] = []
    for v in module.state_dict(keep_vars=True).values():
        _walk_tensors(v, tensors)
    seen: set[tuple[Any, ...]] = set()
    by_dtype: dict[str, int] = {}
    for t in tensors:
        key = _storage_key(t)
        if key in seen:
            continue
        seen.add(key)
        name = str(t.dtype).replace("torch.", "")
        by_dtype[name] = by_dtype.get(name, 0) + int(t.numel() * t.element_size())
    by_dtype["total"] = sum(by_dtype.values())
    return by_dtype


def weight_density(module: nn.Module, params: Sequence[torch.Tensor] | None = None) -> float:
    """Fraction of non-zero elements of `params` (default: every floating-point parameter
    with dim >= 2, i.e. weights, not biases or norm scales); 1.0 when there are none."""
    nz = total = 0
    if params is None:
        params = [p for p in module.parameters() if p.dim() >= 2 and p.is_floating_point()]
    for p in params:
        if p.is_floating_point():
            nz += int(torch.count_nonzero(p.detach()))
            total += p.numel()
    return nz / total if total else 1.0


@dataclass(frozen=True)
class TaskScore:
    """The task metric of a model on a split.

    name: "accuracy" (classification), "rmse" (regression), "perplexity" (lm)
    ci: Wilson interval (accuracy) or seeded bootstrap over examples / sequences
    """

    name: str
    value: float
    higher_is_better: bool
    n: int
    ci: tuple[float, float] | None
    unit: str


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def task_score(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: str,
    output: str,
    batch_size: int = 256,
    device: torch.device | None = None,
    seed: int = 0,
    n_boot: int = 1000,
) -> TaskScore:
    """Accuracy (classification), RMSE (regression) or perplexity (lm) of `module` on (x, y),
    with a 95% CI (Wilson for accuracy, seeded bootstrap otherwise). The module is run as it
    is (callers put it in eval mode)."""
    if x.shape[0] == 0:
        raise ConfigError("task_score() got an empty split.")
    device = device or torch.device("cpu")
    outs = [_first(module(x[i : i + batch_size].to(device))).float().cpu() for i in range(0, x.shape[0], batch_size)]
    out = torch.cat(outs)
    n = int(x.shape[0])
    if task == "classification":
        correct = (out.argmax(dim=-1) == y.cpu()).numpy().astype(np.float64)
        k = int(correct.sum())
        return TaskScore("accuracy", k / n, True, n, proportion_ci(k, n), "fraction")
    if task == "regression":
        mean = out[:, 0] if output == "mean_logvar" else out.reshape(n, -1)[:, 0]
        se = ((mean - y.cpu().float().reshape(n)) ** 2).numpy().astype(np.float64)
        lo, hi = bootstrap_mean_ci(se, n_boot=n_boot, seed=seed)
        return TaskScore("rmse", math.sqrt(se.mean()), False, n, (math.sqrt(max(lo, 0.0)), math.sqrt(max(hi, 0.0))), "target units")
    if task == "lm":
        logp = torch.log_softmax(out, dim=-1)  # (N, T, V)
        nll = -logp.gather(-1, y.cpu().long().unsqueeze(-1)).squeeze(-1)  # (N, T)
        per_seq = nll.sum(dim=1).numpy().astype(np.float64)
        tokens = np.full(n, nll.shape[1], dtype=np.float64)
        ci = bootstrap_ratio_ci(per_seq, tokens, transform=np.exp, n_boot=n_boot, seed=seed)
        return TaskScore("perplexity", float(math.exp(per_seq.sum() / tokens.sum())), False, n, ci, "perplexity")
    raise ConfigError(f"Expected task in ('classification', 'regression', 'lm'), got {task!r}.")
