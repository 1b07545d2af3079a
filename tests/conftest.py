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


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """plans/quickstart.toml run once per test session (real models, every suite that
    applies): {"store", "run_id", "run_dir", "models"}. For the dashboard and report tests
    that must see real runs, not only demo data. $WORKBENCH_TEST_QUICKSTART_STORE reuses the
    newest run of an existing store instead (to iterate on those tests)."""
    import json
    import subprocess
    import sys

    from workbench.store import Store

    reuse = os.environ.get("WORKBENCH_TEST_QUICKSTART_STORE")
    if reuse:
        store = Path(reuse)
    else:
        root = tmp_path_factory.mktemp("quickstart")
        store = root / "store.sqlite"
        env = {**os.environ, "WORKBENCH_STORE": str(store), "WORKBENCH_CACHE": str(root / "cache")}
        repo = Path(__file__).resolve().parent.parent
        proc = subprocess.run([sys.executable, "-m", "workbench", "run", str(repo / "plans" / "quickstart.toml"),
                               "--out", str(root / "reports"), "--quiet"], env=env, cwd=root, capture_output=True,
                              text=True, timeout=1200)
        if proc.returncode not in (0, 1):  # 1: a gate failed, the run itself is complete
            pytest.fail(f"the quickstart run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    info = Store(str(store)).runs(limit=1)[0]
    run_dir = Path(Store(str(store)).run_info(info["run_id"])["run_dir"])
    results = json.loads((run_dir / "results.json").read_text())["results"]
    return {"store": store, "run_id": info["run_id"], "run_dir": run_dir,
            "models": list(dict.fromkeys(r["model"] for r in results))}
