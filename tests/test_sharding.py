"""Sharding through the suites' hooks, beyond the contract test's "combined = unsharded":
the combined result really is built from the shards' work (tampering with a shard's
output changes it), and a piece that did not come back is an error, not a silent rerun.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_suite_contract as C  # noqa: E402

from workbench.config import ModelSpec, Plan, RunSettings  # noqa: E402
from workbench.errors import DataError  # noqa: E402
from workbench.runner import build_handle, load_plan_dataset  # noqa: E402


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    data = load_plan_dataset(Plan(run=RunSettings(), models=[]), "breast_cancer")
    spec = ModelSpec(name="cancer_mlp", dataset="breast_cancer", arch="mlp", options={}, train={"epochs": 3})
    handle = build_handle(spec, data, device=torch.device("cpu"), cache_dir=tmp_path_factory.mktemp("cache"),
                          run_seed=0, log=lambda m: None)
    return handle, data


def _records(res):
    return [m.to_dict() for m in res.metrics if m.name not in C.TIMING_NAMES]


@pytest.mark.slow
def test_robustness_replays_the_shards_attacks(cancer, tmp_path):
    handle, data = cancer
    suite = C._suite("robustness")
    ctx = lambda d: C._ctx("robustness", handle, data, tmp_path / d)  # noqa: E731
    pieces = suite.shards(handle, data, ctx("plan"), 3)
    units = [u for piece in pieces for u in piece]
    p = suite.params
    assert len(pieces) == 3 and len(units) == len(set(units)) == len(p.eps) * len(p.attacks)
    parts = [(piece, suite.run_shard(handle, data, ctx(f"w{i}"), piece)) for i, piece in enumerate(pieces)]
    whole = suite.run(handle, data, ctx("whole"))
    assert _records(suite.combine(handle, data, ctx("c1"), parts)) == _records(whole)

    # one attack's points replaced by zeros: the records change, so combine used the shards' points
    (eps, attack) = pieces[0][0]
    key = next(k for k in parts[0][1]["adv"] if k[0] == attack)
    parts[0][1]["adv"][key] = parts[0][1]["adv"][key] * 0.0
    tampered = suite.combine(handle, data, ctx("c2"), parts)
    assert _records(tampered) != _records(whole)

    with pytest.raises(DataError, match="cover"):
        suite.combine(handle, data, ctx("c3"), parts[:2])  # a piece missing


@pytest.mark.slow
def test_explain_replays_the_shards_methods(cancer, tmp_path):
    handle, data = cancer
    suite = C._suite("explain")
    ctx = lambda d: C._ctx("explain", handle, data, tmp_path / d)  # noqa: E731
    pieces = suite.shards(handle, data, ctx("plan"), 2)
    assert sorted(m for piece in pieces for m in piece) == sorted(m for m in suite.params.methods
                                                                   if m not in ("attention", "rollout"))
    parts = [(piece, suite.run_shard(handle, data, ctx(f"w{i}"), piece)) for i, piece in enumerate(pieces)]
    whole = suite.run(handle, data, ctx("whole"))
    assert _records(suite.combine(handle, data, ctx("c1"), parts)) == _records(whole)
    # one method's attributions negated: its quality scores change, so combine used them
    method = next(m for m in ("integrated_gradients", "saliency", "input_x_gradient") if m in parts[0][1]["outputs"]
                  or m in parts[1][1]["outputs"])
    part = next(p for _, p in parts if method in p["outputs"])
    part["outputs"][method].attr = -part["outputs"][method].attr
    assert _records(suite.combine(handle, data, ctx("c2"), parts)) != _records(whole)
    with pytest.raises(DataError, match="cover methods"):
        suite.combine(handle, data, ctx("c3"), parts[:1])
