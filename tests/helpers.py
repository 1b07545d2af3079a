"""Tiny seeded datasets and models for core tests (independent of the built-ins)."""

from __future__ import annotations

import torch
from torch import nn

from workbench.data.base import Dataset, Split


def blobs(n: int = 240, features: int = 4, classes: int = 3, seed: int = 0) -> Dataset:
    """Well-separated Gaussian blobs: any reasonable classifier reaches ~100%."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 4
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, features, generator=g)
    parts = [slice(0, n * 6 // 10), slice(n * 6 // 10, n * 8 // 10), slice(n * 8 // 10, n)]
    splits = [Split(x[p].float(), y[p].long()) for p in parts]
    return Dataset(name="blobs", modality="tabular", task="classification", train=splits[0], val=splits[1],
                   test=splits[2], num_classes=classes, class_names=tuple(f"c{i}" for i in range(classes)),
                   seed=seed)


class TinyMLP(nn.Module):
    output_kind = "logits"

    def __init__(self, features: int = 4, classes: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, K)
        return self.net(x)


def make_tiny_mlp(features: int = 4, classes: int = 3) -> nn.Module:
    """A user factory as a plan would name it: tests.helpers:make_tiny_mlp."""
    return TinyMLP(features, classes)


def make_blobs(seed: int = 0) -> Dataset:
    return blobs(seed=seed)


# Real-browser tests: Debian's chromium driven by Python playwright (never `playwright install`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def sync_playwright_or_skip():  # type: ignore[no-untyped-def]
    """playwright's `sync_playwright`, or a pytest skip saying what is missing."""
    import shutil
    from pathlib import Path

    import pytest

    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} not found: run `make browser` (apt-get install -y chromium fonts-liberation)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python package `playwright` not installed: `pip install playwright` (no `playwright install`)")
    return sync_playwright
