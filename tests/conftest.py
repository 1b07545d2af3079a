"""Shared fixtures: every test gets its own store and training cache under tmp_path,
so nothing leaks between tests or into the working tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


import torch  # noqa: E402

# The tests' models are tiny: one intra-op thread is as fast on an idle machine and many
# times faster on a busy one (measured 45 s vs 1.7 s for one tiny training under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "store.sqlite"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training cache shared by the tests of one session (models train once)."""
    return tmp_path_factory.mktemp("train-cache")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA; this machine has no GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
