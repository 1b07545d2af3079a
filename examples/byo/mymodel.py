"""The user's own model, as a newcomer would write it: plain PyTorch, nothing from the
workbench. It normalises its raw inputs itself (buffers saved in the checkpoint), so it
must see the CSV's values exactly as they are in the file."""

import torch
from torch import nn


class LoanModel(nn.Module):
    def __init__(self, n_features: int = 4, n_classes: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))  # set from the training rows
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, F) raw values -> logits (B, C)
        return self.net((x - self.mean) / self.std)


def build() -> nn.Module:
    """The factory the plan names: `factory = "mymodel:build"`."""
    return LoanModel()
