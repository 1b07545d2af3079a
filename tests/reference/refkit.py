"""Helpers of the reference tests (see conftest.py for what tests/reference/ is)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from workbench.suite import ModelHandle, RunContext


def ctx(tmp: Path, suite: str, seed: int = 0) -> RunContext:
    return RunContext(run_id="ref", run_dir=tmp, seed=seed, device=torch.device("cpu"), suite=suite,
                      model_name="m", dataset_name="d", batch_size=64, log=lambda m: None)


def handle(module: nn.Module, task: str = "classification", output: str = "logits") -> ModelHandle:
    return ModelHandle(name="m", module=module, arch="test", task=task, output=output)


def headline(result, suite_cls) -> list:
    """The result's records its suite marks as headline (the figures the report leads with)."""
    return [m for m in result.metrics if suite_cls.is_headline(m.to_dict())]
