"""LSTM sequence classifier: (B, T) token ids -> logits (B, K).

  token embedding -> dropout -> LSTM (optionally bidirectional, stacked)
  -> pool over time ("mean" | "max" | "last" state) -> dropout -> linear head

An LSTM has no position embedding: `forward_from_embeddings(e)` runs everything after
the token embedding, so `forward(idx) == forward_from_embeddings(embed(idx))`. Both are
shortcuts: suites work on any token model by hooking its embedding layer
(workbench.embedding), and tests check the hook gives the same function.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from workbench.data.base import Dataset
from workbench.errors import ConfigError
from workbench.models import check_bool, check_data, check_dropout, check_int, check_options, make_config

ARCH = "lstm"
MODALITIES = ("tokens",)
TASKS = ("classification",)


@dataclass(frozen=True)
class LSTMConfig:
    vocab_size: int = 64  # from the data
    num_classes: int = 2  # from the data
    d_embed: int = 32
    hidden: int = 64  # per direction
    n_layer: int = 1
    bidirectional: bool = False
    pool: str = "mean"  # "mean" | "max" | "last"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_int(ARCH, "vocab_size", self.vocab_size, minimum=2)
        check_int(ARCH, "num_classes", self.num_classes, minimum=2)
        check_int(ARCH, "d_embed", self.d_embed)
        check_int(ARCH, "hidden", self.hidden)
        check_int(ARCH, "n_layer", self.n_layer)
        check_bool(ARCH, "bidirectional", self.bidirectional)
        check_options(ARCH, "pool", self.pool, ("mean", "max", "last"))
        check_dropout(ARCH, "dropout", self.dropout)


CONFIGS: dict[str, LSTMConfig] = {
    "tiny": LSTMConfig(d_embed=32, hidden=64, n_layer=1, bidirectional=False, pool="mean", dropout=0.1),
    "base": LSTMConfig(d_embed=256, hidden=256, n_layer=2, bidirectional=True, pool="mean", dropout=0.2),
}


@contextlib.contextmanager
def _no_cudnn() -> Iterator[None]:
    """Turn cuDNN off, leaving every other cuDNN flag as it is."""
    keep = {name: None for name in inspect.signature(torch.backends.cudnn.flags).parameters if name != "enabled"}
    with torch.backends.cudnn.flags(enabled=False, **keep):
        yield


class LSTMClassifier(nn.Module):
    output_kind = "logits"

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_embed)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.d_embed,
            config.hidden,
            num_layers=config.n_layer,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.n_layer > 1 else 0.0,  # between stacked layers only
        )
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(directions * config.hidden, config.num_classes)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings only: (B, T) long -> (B, T, E)."""
        return self.token_embedding(idx)

    def forward_from_embeddings(self, e: torch.Tensor) -> torch.Tensor:
        """(B, T, E) token embeddings -> logits (B, K)."""
        x = self.drop(e)  # (B, T, E)
        # cuDNN refuses the RNN backward pass in eval mode, which is exactly what gradient
        # attacks and attributions on an eval-mode model need; the native kernel allows it.
        guard = x.is_cuda and torch.is_grad_enabled() and not self.training
        with _no_cudnn() if guard else contextlib.nullcontext():
            out, _ = self.lstm(x)  # (B, T, D * H), D = 1 or 2 directions
        if self.config.pool == "mean":
            pooled = out.mean(dim=1)  # (B, D * H)
        elif self.config.pool == "max":
            pooled = out.amax(dim=1)  # (B, D * H)
        else:
            H = self.config.hidden
            # forward direction ends at T-1; the backward direction ends at position 0
            pooled = out[:, -1, :H] if not self.config.bidirectional else torch.cat([out[:, -1, :H], out[:, 0, H:]], dim=1)
        return self.head(self.drop(pooled))  # (B, K)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> logits (B, K)."""
        return self.forward_from_embeddings(self.embed(idx))


def build(data: Dataset, size: str = "tiny", **overrides: object) -> LSTMClassifier:
    """An LSTM classifier for `data`: vocab_size and K from the dataset (any length T)."""
    check_data(ARCH, data, MODALITIES, TASKS)
    if data.vocab_size is None:
        raise ConfigError(f"Model {ARCH!r} needs the dataset's `vocab_size`; dataset {data.name!r} has none.")
    derived = {"vocab_size": int(data.vocab_size), "num_classes": data.num_classes}
    config = make_config(ARCH, CONFIGS, size, derived, overrides)
    return LSTMClassifier(config)
