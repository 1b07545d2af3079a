"""Small convolutional classifier for images (N, C, H, W), e.g. digits 1x8x8.

  [conv3x3 -> BatchNorm -> ReLU] x convs_per_stage -> pool 2x2    (one stage per entry of `channels`)
  flatten -> dropout -> linear -> ReLU -> dropout -> linear       -> logits (B, K)

`pool="avg"` swaps MaxPool for AvgPool (DeepLift's rules are exact through AvgPool but
not through MaxPool). `cam_layer` is the last ReLU, the usual Grad-CAM target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workbench.data.base import Dataset
from workbench.errors import ConfigError
from workbench.models import check_data, check_dropout, check_int, check_options, make_config

ARCH = "cnn"
MODALITIES = ("image",)
TASKS = ("classification",)


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int = 1  # from the data
    image_size: tuple[int, int] = (8, 8)  # from the data: (H, W)
    num_classes: int = 10  # from the data
    channels: tuple[int, ...] = (16, 32)  # output channels of each stage
    convs_per_stage: int = 1
    hidden: int = 64
    dropout: float = 0.1
    pool: str = "max"  # "max" | "avg"

    def __post_init__(self) -> None:
        check_int(ARCH, "in_channels", self.in_channels)
        check_int(ARCH, "num_classes", self.num_classes, minimum=2)
        if not isinstance(self.channels, tuple) or not self.channels:
            raise ConfigError(f"Model {ARCH!r}: expected `channels` to be a non-empty tuple of ints, got {self.channels!r}.")
        for i, c in enumerate(self.channels):
            check_int(ARCH, f"channels[{i}]", c)
        check_int(ARCH, "convs_per_stage", self.convs_per_stage)
        check_int(ARCH, "hidden", self.hidden)
        check_dropout(ARCH, "dropout", self.dropout)
        check_options(ARCH, "pool", self.pool, ("max", "avg"))
        h, w = self.feature_size
        if h < 1 or w < 1:
            raise ConfigError(
                f"Model {ARCH!r}: a {self.image_size[0]}x{self.image_size[1]} image is too small for "
                f"{len(self.channels)} pooling stages (each halves H and W); use fewer `channels`."
            )

    @property
    def feature_size(self) -> tuple[int, int]:
        """(H, W) after the last pooling stage."""
        h, w = self.image_size
        for _ in self.channels:
            h, w = h // 2, w // 2
        return h, w


CONFIGS: dict[str, CNNConfig] = {
    "tiny": CNNConfig(channels=(16, 32), convs_per_stage=1, hidden=64, dropout=0.1),
    "base": CNNConfig(channels=(64, 128, 256), convs_per_stage=2, hidden=256, dropout=0.25),
}


class CNN(nn.Module):
    output_kind = "logits"

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for c in config.channels:
            for _ in range(config.convs_per_stage):
                # no conv bias: the BatchNorm shift that follows makes it redundant
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
                c_in = c
            layers.append(nn.MaxPool2d(2) if config.pool == "max" else nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        h, w = config.feature_size
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(c_in * h * w, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    @property
    def cam_layer(self) -> nn.Module:
        """The last ReLU of the feature extractor (output (B, C_last, H', W') before the last pool)."""
        return [m for m in self.features if isinstance(m, nn.ReLU)][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, C, H, W) -> (B, C_last, H', W')
        return self.classifier(f)  # (B, K)


def build(data: Dataset, size: str = "tiny", **overrides: object) -> CNN:
    """A CNN sized for `data`: in_channels and (H, W) from input_shape, K = data.num_classes."""
    check_data(ARCH, data, MODALITIES, TASKS)
    if len(data.input_shape) != 3:
        raise ConfigError(
            f"Model {ARCH!r} expects images (N, C, H, W); dataset {data.name!r} has input shape {data.input_shape}."
        )
    c, h, w = data.input_shape
    derived = {"in_channels": int(c), "image_size": (int(h), int(w)), "num_classes": data.num_classes}
    config = make_config(ARCH, CONFIGS, size, derived, overrides)
    return CNN(config)
