"""Attention maps and attention rollout (Abnar & Zuidema 2020).

The Transformer and GPT reference models return `(output, [attn (B, H, T, T) per layer])`
from `forward(x, return_attention=True)`; row i of a map is the distribution of query
position i over key positions (rows sum to 1; GPT's maps are zero above the diagonal).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workbench.errors import ConfigError, DataError, ModelError

HEAD_FUSIONS = ("mean", "max", "min")
POOLINGS = ("mean", "cls", "last")


def supports_attention(module: nn.Module) -> bool:
    """True when `module.forward` accepts `return_attention` (the reference token models)."""
    import inspect

    try:
        return "return_attention" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def attention_maps(module: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> list[torch.Tensor]:
    """Per-layer attention of `module` on token ids x (N, T): a list of L tensors (N, H, T, T)
    on CPU. Runs without grad in the module's current mode (call under `frozen_eval`)."""
    if not supports_attention(module):
        raise ModelError(
            f"Expected a model whose forward accepts `return_attention=True`, got {type(module).__name__}."
        )
    device = next(iter(module.parameters())).device
    per_batch: list[list[torch.Tensor]] = []
    for i in range(0, x.shape[0], batch_size):
        out = module(x[i : i + batch_size].to(device), return_attention=True)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ModelError("Expected forward(x, return_attention=True) to return (output, [attention per layer]).")
        per_batch.append([a.detach().float().cpu() for a in out[1]])
    if not per_batch or not per_batch[0]:
        raise ModelError("forward(x, return_attention=True) returned no attention maps.")
    layers = [torch.cat([b[layer] for b in per_batch]) for layer in range(len(per_batch[0]))]
    for a in layers:
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise ModelError(f"Expected attention maps (B, H, T, T), got {tuple(a.shape)}.")
    return layers


def attention_rollout(
    attentions: Sequence[torch.Tensor] | torch.Tensor,
    *,
    residual: bool = True,
    head_fusion: str = "mean",
    causal: bool = False,
) -> torch.Tensor:
    """Attention rollout: how much each output position draws on each input token.

    attentions: L tensors (B, H, T, T) (or one (L, B, H, T, T)), layer 0 first.
    Per layer: fuse heads (mean by default), with `residual` add the identity for the skip
    connection (A + I) and renormalise rows, then multiply layers: R = A_L ... A_1.
    Returns (B, T, T); rows sum to 1. With `causal`, layers are checked to be
    lower-triangular (a product of lower-triangular matrices stays so).
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ConfigError(f"Expected `head_fusion` in {HEAD_FUSIONS}, got {head_fusion!r}.")
    layers = list(attentions)
    if not layers:
        raise DataError("Expected at least one attention layer, got none.")
    rollout: torch.Tensor | None = None
    for a in layers:
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise DataError(f"Expected attention maps (B, H, T, T), got {tuple(a.shape)}.")
        a = a.double()
        fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[head_fusion]  # (B, T, T)
        if residual:
            fused = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        fused = fused / fused.sum(-1, keepdim=True).clamp_min(1e-300)
        if causal and torch.triu(fused, diagonal=1).abs().max() > 1e-6:
            raise DataError("Expected causal (lower-triangular) attention maps, found weight above the diagonal.")
        rollout = fused if rollout is None else fused @ rollout  # (B, T, T)
    assert rollout is not None
    return rollout.float()


def token_relevance(rollout: torch.Tensor, pooling: str = "mean", real: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token relevance (B, T) from a rollout (B, T, T), matching how the model reads out:
    "mean" (mean-pooled classifier, the reference Transformer), "cls" (row 0), "last"
    (the last position, e.g. GPT's next-token prediction). real (B, T) bool: the non-pad
    positions of padded sequences; the read-out then uses real rows only (the mean over
    real rows, the last real row) and pad columns get 0 (a pad is no token)."""
    if pooling not in POOLINGS:
        raise ConfigError(f"Expected `pooling` in {POOLINGS}, got {pooling!r}.")
    if real is None:
        if pooling == "mean":
            return rollout.mean(1)
        return rollout[:, 0] if pooling == "cls" else rollout[:, -1]
    if real.shape != rollout.shape[:2] or not bool(real.any(1).all()):
        raise DataError(f"Expected a real-token mask {tuple(rollout.shape[:2])} with a real token in every row, got "
                        f"{tuple(real.shape)}.")
    w = real.to(rollout.dtype)  # (B, T)
    if pooling == "mean":
        rel = (rollout * w[:, :, None]).sum(1) / w.sum(1, keepdim=True)
    elif pooling == "cls":
        rel = rollout[:, 0]
    else:
        last = (real.long() * torch.arange(real.shape[1], device=real.device)).argmax(1)  # last real position
        rel = rollout[torch.arange(rollout.shape[0]), last]
    return rel * w


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of each head's rows: (B, H, T, T) -> (B, H)."""
    p = attention.double().clamp_min(0)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)  # (B, H, T)
    return h.mean(-1).float()
