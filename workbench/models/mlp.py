"""Multilayer perceptron for flat inputs (tabular features; images are flattened).

Outputs, by task:
  classification                 logits (B, K)                         output_kind "logits"
  regression                     mean (B,)                             output_kind "mean"
  regression, heteroscedastic    (B, 2): [:, 0] mean, [:, 1] log-var   output_kind "mean_logvar"

Each hidden layer is Linear -> ReLU -> Dropout with its own module instances, so
MC dropout can switch the Dropout layers on and hook-based attributions see every ReLU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from workbench.data.base import Dataset
from workbench.errors import ConfigError
from workbench.models import check_bool, check_data, check_dropout, check_int, check_options, make_config

ARCH = "mlp"
MODALITIES = ("tabular", "image")
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 64  # from the data: prod(input_shape)
    task: str = "classification"  # from the data
    num_classes: int | None = 10  # from the data; None for regression
    hidden: tuple[int, ...] = (64, 64)  # widths of the hidden layers; () is a linear model
    dropout: float = 0.1
    heteroscedastic: bool = False  # regression only: predict a log-variance too
    logvar_min: float = -10.0  # the log-variance is softly squashed into [logvar_min, logvar_max]
    logvar_max: float = 10.0

    def __post_init__(self) -> None:
        check_int(ARCH, "in_features", self.in_features)
        check_options(ARCH, "task", self.task, TASKS)
        if self.task == "classification":
            check_int(ARCH, "num_classes", self.num_classes, minimum=2)
        if not isinstance(self.hidden, tuple):
            raise ConfigError(f"Model {ARCH!r}: expected `hidden` to be a tuple of ints, got {self.hidden!r}.")
        for i, width in enumerate(self.hidden):
            check_int(ARCH, f"hidden[{i}]", width)
        check_dropout(ARCH, "dropout", self.dropout)
        check_bool(ARCH, "heteroscedastic", self.heteroscedastic)
        if self.heteroscedastic and self.task != "regression":
            raise ConfigError(
                f"Model {ARCH!r}: `heteroscedastic=True` needs a regression dataset, got task {self.task!r}."
            )
        if not float(self.logvar_min) < float(self.logvar_max):
            raise ConfigError(
                f"Model {ARCH!r}: expected logvar_min < logvar_max, got {self.logvar_min} >= {self.logvar_max}."
            )

    @property
    def output_kind(self) -> str:
        if self.task == "classification":
            return "logits"
        return "mean_logvar" if self.heteroscedastic else "mean"


CONFIGS: dict[str, MLPConfig] = {
    "tiny": MLPConfig(hidden=(64, 64), dropout=0.1),
    "base": MLPConfig(hidden=(512, 512, 256), dropout=0.1),
}


def soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Squash `x` smoothly and monotonically into [low, high] (the open interval until tanh
    saturates in floating point); slope 1 at the midpoint. Unlike `clamp`, a value just past
    a bound still has a gradient."""
    mid, half = (high + low) / 2, (high - low) / 2
    return mid + half * torch.tanh((x - mid) / half)


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.output_kind = config.output_kind
        layers: list[nn.Module] = []
        width = config.in_features
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(config.dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        if config.task == "classification":
            n_out = int(config.num_classes)  # type: ignore[arg-type]
        else:
            n_out = 2 if config.heteroscedastic else 1
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x.flatten(1))  # (B, F) -> (B, H)
        out = self.head(h)  # (B, K) | (B, 1) | (B, 2)
        if self.output_kind == "mean":
            return out.squeeze(-1)  # (B,)
        if self.output_kind == "mean_logvar":
            logvar = soft_clamp(out[:, 1], self.config.logvar_min, self.config.logvar_max)
            return torch.stack([out[:, 0], logvar], dim=1)  # (B, 2)
        return out


def build(data: Dataset, size: str = "tiny", **overrides: object) -> MLP:
    """An MLP sized for `data`: in_features = prod(input_shape), K = data.num_classes
    (classification) or a scalar / mean+log-variance head (regression)."""
    check_data(ARCH, data, MODALITIES, TASKS)
    derived = {
        "in_features": int(math.prod(data.input_shape)),
        "task": data.task,
        "num_classes": data.num_classes if data.task == "classification" else None,
    }
    config = make_config(ARCH, CONFIGS, size, derived, overrides)
    return MLP(config)
