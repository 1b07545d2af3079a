"""Transformer encoder classifier for token sequences (N, T) -> logits (B, K).

  token embedding + learned position embedding -> dropout
  -> n_layer pre-LN blocks: x + attn(LN(x)); x + mlp(LN(x))
  -> LN -> mean over positions -> linear head

The attention is written out (explicit query/key/value projections,
softmax(Q K^T / sqrt(d_head)) V), not nn.MultiheadAttention or
F.scaled_dot_product_attention: forward hooks on `attn_probs` see the weights
(B, H, T, S) and FLOP counters see every matmul. `SelfAttention`, `Block` and
`init_weights` are shared with gpt.py (causal=True there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.base import Dataset
from workbench.errors import ConfigError, DataError
from workbench.models import check_data, check_dropout, check_int, make_config

ARCH = "transformer"
MODALITIES = ("tokens",)
TASKS = ("classification",)

KVCache = tuple[torch.Tensor, torch.Tensor]  # (k, v), each (B, H, S, d_head)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections.

    forward(x (B, T, C)) -> y (B, T, C); with extras=True -> (y, att (B, H, T, S), (k, v)),
    where S = past length + T. `past` (k, v) from earlier positions enables a KV cache
    (the queries are then the last T positions of an S-long sequence).
    """

    def __init__(self, d_model: int, n_head: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.d_head = d_model // n_head
        self.causal = causal
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.attn_probs = nn.Identity()  # hook point: its output is the attention (B, H, T, S)

    def forward(
        self, x: torch.Tensor, past: KVCache | None = None, extras: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, KVCache]:
        B, T, C = x.shape
        H, D = self.n_head, self.d_head
        q = self.query(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.key(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = self.value(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, S, D)
            v = torch.cat([past[1], v], dim=2)  # (B, H, S, D)
        S = k.size(2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, S)
        if self.causal:
            # query i sits at absolute position S - T + i and may see keys 0..S - T + i
            allowed = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            att = att.masked_fill(~allowed, float("-inf"))
        att = self.attn_probs(F.softmax(att, dim=-1))  # (B, H, T, S), rows sum to 1
        y = self.attn_dropout(att) @ v  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        y = self.resid_dropout(self.proj(y))
        return (y, att, (k, v)) if extras else y


class Block(nn.Module):
    """Pre-LN transformer block. forward(x) -> x; extras=True -> (x, att, (k, v))."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_head, dropout, causal)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.GELU(),
            nn.Linear(d_ff, d_model),
            nn.Dropout(dropout),
        )

    def forward(
        self, x: torch.Tensor, past: KVCache | None = None, extras: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, KVCache]:
        a, att, kv = self.attn(self.ln1(x), past=past, extras=True)
        x = x + a  # (B, T, C)
        x = x + self.mlp(self.ln2(x))  # (B, T, C)
        return (x, att, kv) if extras else x


def init_weights(module: nn.Module, n_layer: int) -> None:
    """GPT-2 style init: N(0, 0.02) for linear and embedding weights, zero biases, and
    residual output projections scaled by 1/sqrt(2 n_layer)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            std = 0.02
            if name.endswith("attn.proj") or name.endswith("mlp.2"):
                std = 0.02 / math.sqrt(2 * n_layer)
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)


def check_shape_config(arch: str, d_model: int, n_head: int) -> None:
    check_int(arch, "d_model", d_model)
    check_int(arch, "n_head", n_head)
    if d_model % n_head:
        raise ConfigError(f"Model {arch!r}: `d_model` ({d_model}) must be divisible by `n_head` ({n_head}).")


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 64  # from the data
    block_size: int = 32  # from the data (T); may be set larger
    num_classes: int = 2  # from the data
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    d_ff: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_int(ARCH, "vocab_size", self.vocab_size, minimum=2)
        check_int(ARCH, "block_size", self.block_size)
        check_int(ARCH, "num_classes", self.num_classes, minimum=2)
        check_int(ARCH, "n_layer", self.n_layer)
        check_shape_config(ARCH, self.d_model, self.n_head)
        check_int(ARCH, "d_ff", self.d_ff)
        check_dropout(ARCH, "dropout", self.dropout)


CONFIGS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(n_layer=2, n_head=4, d_model=64, d_ff=256, dropout=0.1),
    "base": TransformerConfig(n_layer=4, n_head=8, d_model=256, d_ff=1024, dropout=0.1),
}


class TransformerClassifier(nn.Module):
    output_kind = "logits"

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_head, config.d_ff, config.dropout, causal=False)
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.num_classes)
        init_weights(self, config.n_layer)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings only: (B, T) long -> (B, T, C). A shortcut: suites do not need it
        (or `forward_from_embeddings`); they hook the embedding layer (workbench.embedding)."""
        return self.token_embedding(idx)

    def forward_from_embeddings(
        self, e: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T, C) token embeddings -> logits (B, K) [, attention (B, H, T, T) per layer]."""
        B, T, C = e.shape
        if T > self.config.block_size:
            raise DataError(f"Sequence length {T} exceeds the model's block_size {self.config.block_size}.")
        pos = torch.arange(T, device=e.device)
        x = self.drop(e + self.position_embedding(pos))  # (B, T, C)
        attentions = []
        for block in self.blocks:
            if return_attention:
                x, att, _ = block(x, extras=True)
                attentions.append(att)  # (B, H, T, T)
            else:
                x = block(x)
        x = self.ln_f(x)  # (B, T, C)
        logits = self.head(x.mean(dim=1))  # (B, C) -> (B, K)
        return (logits, attentions) if return_attention else logits

    def forward(
        self, idx: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) token ids -> logits (B, K) [, attention (B, H, T, T) per layer]."""
        return self.forward_from_embeddings(self.embed(idx), return_attention=return_attention)


def token_derived(arch: str, data: Dataset) -> dict[str, int]:
    """vocab_size and block_size (= T) of a token dataset."""
    if data.vocab_size is None:
        raise ConfigError(f"Model {arch!r} needs the dataset's `vocab_size`; dataset {data.name!r} has none.")
    if len(data.input_shape) != 1:
        raise ConfigError(
            f"Model {arch!r} expects token ids (N, T); dataset {data.name!r} has input shape {data.input_shape}."
        )
    return {"vocab_size": int(data.vocab_size), "block_size": int(data.input_shape[0])}


def check_block_size(arch: str, config: object, data: Dataset) -> None:
    T = data.input_shape[0]
    if config.block_size < T:  # type: ignore[attr-defined]
        raise ConfigError(
            f"Model {arch!r}: `block_size` ({config.block_size}) must be >= the dataset's sequence length {T}."  # type: ignore[attr-defined]
        )


def build(data: Dataset, size: str = "tiny", **overrides: object) -> TransformerClassifier:
    """An encoder classifier for `data`: vocab_size, block_size = T and K from the dataset."""
    check_data(ARCH, data, MODALITIES, TASKS)
    derived = {**token_derived(ARCH, data), "num_classes": data.num_classes}
    config = make_config(ARCH, CONFIGS, size, derived, overrides, adjustable=("block_size",))
    check_block_size(ARCH, config, data)
    return TransformerClassifier(config)
