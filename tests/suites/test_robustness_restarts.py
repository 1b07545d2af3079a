"""Spread of random-start attacks over restarts: the records against numpy on a known
(restarts x examples) table, and through the suite on a small unbounded MLP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from workbench.suite import ModelHandle, RunContext
from workbench.suites.robustness.restarts import restart_records
from workbench.suites.robustness.suite import RobustnessSuite
from workbench.suites.robustness.testing import tabular_dataset, train_plain

torch.set_num_threads(1)


def test_restart_records_against_numpy():
    table = np.array([[1, 1, 0, 1, 0, 1], [1, 0, 0, 1, 1, 1], [1, 1, 0, 0, 1, 1]], dtype=bool)  # (R=3, N=6)
    records, summary = restart_records(table, {"attack": "pgd", "eps": 0.1}, restarts=3)
    spread, worst = records
    acc = table.mean(1)  # 4/6 in every run: no spread; a table with spread follows
    assert spread.name == "restart_spread" and spread.value == pytest.approx(np.std(acc, ddof=1)) and spread.n == 3
    k = int(table.all(0).sum())  # examples 0 and 5 survive every run
    assert k == 2 and worst.value == pytest.approx(2 / 6)
    ref = binomtest(2, 6).proportion_ci(0.95, method="exact")
    assert worst.ci == pytest.approx((ref.low, ref.high)) and worst.tags["ci_method"] == "clopper_pearson"
    table[1, :] = True
    records, summary = restart_records(table, {"attack": "pgd"}, restarts=3)
    assert records[0].value == pytest.approx(np.std(table.mean(1), ddof=1)) and records[0].value > 0
    assert summary["min"] == pytest.approx(4 / 6) and summary["max"] == 1.0
    (null,), s = restart_records(None, {"attack": "pgd"}, restarts=1)
    assert null.value is None and "restarts = 1" in null.reason and "not measured" in s["reason"]


def _ctx(tmp: Path) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp, seed=0, device=torch.device("cpu"), suite="robustness",
                      model_name="m", dataset_name="d", batch_size=64, log=lambda m: None)


@pytest.mark.parametrize("restarts", [1, 3])
def test_suite_reports_spread_and_worst_case_over_restarts(tmp_path, restarts):
    data = tabular_dataset()
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 3))
    train_plain(mlp, data, epochs=30)
    suite = RobustnessSuite.from_config({"n_samples": 60, "eps": [0.5], "attacks": ["fgsm", "pgd"], "pgd_steps": 5,
                                         "restarts": restarts, "n_examples": 0, "masking_checks": False},
                                        profile="quick")
    res = suite.run(ModelHandle(name="m", module=mlp, arch="mlp", task="classification", output="logits"), data,
                    _ctx(tmp_path))
    spread = res.metric("restart_spread", attack="pgd", eps=0.5)
    assert not [m for m in res.metrics if m.name == "restart_spread" and m.tags.get("attack") == "fgsm"]
    if restarts == 1:
        assert spread.value is None and "restarts = 1" in spread.reason
        return
    summary = json.loads((tmp_path / res.artifacts["robustness_summary"]).read_text())
    (row,) = summary["variants"]["standard"]["restarts"]
    runs = np.array(row["accuracy_per_run"])
    assert runs.shape == (3,) and spread.n == 3 and spread.value == pytest.approx(np.std(runs, ddof=1))
    worst = res.metric("restart_worst_case_accuracy", attack="pgd", eps=0.5)
    assert worst.value <= runs.min() + 1e-12 and worst.value == pytest.approx(row["worst_of_independent"])
    # the suite's own robust accuracy keeps the worst case over its restarts: at most one run's
    assert res.metric("robust_accuracy", attack="pgd", eps=0.5).value <= runs.max() + 1e-12
