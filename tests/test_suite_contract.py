"""The conformance check every registered suite must pass (like scikit-learn's
check_estimator), on every tiny reference model:
- it does not change the model's weights, train/eval flags, buffers, requires_grad or .grad;
- the same seed gives the same numbers;
- every metric is finite or explicitly null with a reason, and declares its direction;
- a suite that does not apply says why (skipped with a reason)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from workbench.config import ModelSpec
from workbench.registry import SUITES
from workbench.runner import build_handle, load_plan_dataset
from workbench.suite import RunContext
from workbench.torch_utils import ModuleState

# (arch, dataset, options, epochs): one tiny model per reference architecture and task.
MODELS = [
    ("cnn", "digits", {}, 2),
    ("mlp", "breast_cancer", {}, 3),
    ("mlp", "synthetic_hetero_regression", {"heteroscedastic": True}, 3),
    ("lstm", "synthetic_tokens", {}, 2),
    ("transformer", "synthetic_tokens", {}, 2),
    ("gpt", "synthetic_markov_lm", {}, 1),
]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def handles(tmp_path_factory):
    from workbench.config import Plan, RunSettings

    cache = tmp_path_factory.mktemp("contract-cache")
    out = {}
    for arch, dataset, options, epochs in MODELS:
        plan = Plan(run=RunSettings(), models=[])
        data = load_plan_dataset(plan, dataset)
        spec = ModelSpec(name=f"{arch}-{dataset}", dataset=dataset, arch=arch, options=options,
                         train={"epochs": epochs})
        out[(arch, dataset)] = (build_handle(spec, data, device=CPU, cache_dir=cache, run_seed=0,
                                             log=lambda m: None), data)
    return out


def _run(suite_name: str, handle, data, run_dir: Path, seed: int = 123):
    suite = SUITES.get(suite_name).from_config({}, profile="quick")
    ctx = RunContext(run_id="contract", run_dir=run_dir, seed=seed, device=CPU, suite=suite_name,
                     model_name=handle.name, dataset_name=data.name, max_samples=32, batch_size=64,
                     log=lambda m: None)
    reason = suite.applicable(handle, data)
    if reason:
        return None, reason
    return suite.run(handle, data, ctx), None


@pytest.mark.slow
@pytest.mark.parametrize("suite_name", SUITES.names())
@pytest.mark.parametrize("key", [(a, d) for a, d, _, _ in MODELS], ids=lambda k: f"{k[0]}-{k[1]}")
def test_suite_contract(suite_name, key, handles, tmp_path):
    handle, data = handles[key]
    for mode in ("eval", "train"):
        handle.module.train(mode == "train")
        before = ModuleState.capture(handle.module)
        first, reason = _run(suite_name, handle, data, tmp_path / f"{mode}1")
        if reason is not None:
            assert isinstance(reason, str) and reason
            handle.module.eval()
            return
        assert before.diff(handle.module) == [], f"{suite_name} changed the model in {mode} mode"
        if mode == "train":
            break  # determinism and metric checks once, on the eval-mode pass below
        second, _ = _run(suite_name, handle, data, tmp_path / f"{mode}2")
        assert before.diff(handle.module) == []
        assert first.status == "ok", first.reason
        assert first.metrics, f"{suite_name} returned no metrics"
        a = [m.to_dict() for m in first.metrics]
        b = [m.to_dict() for m in second.metrics]
        _assert_same(a, b, suite_name)
        for m in first.metrics:
            assert m.value is None or math.isfinite(m.value)
            if m.value is None:
                assert m.reason, f"{m.name} is null without a reason"
        for rel in first.artifacts.values():
            assert (tmp_path / f"{mode}1" / rel).exists(), rel
    handle.module.eval()


# Wall-clock figures (latency, throughput, energy) legitimately differ between runs.
TIMING_UNITS = {"s", "ms", "us", "samples/s", "tokens/s", "FLOP/s", "J", "J/sample", "bytes"}


def _assert_same(a: list[dict], b: list[dict], suite: str) -> None:
    assert [(m["name"], m["tags"]) for m in a] == [(m["name"], m["tags"]) for m in b], suite
    for x, y in zip(a, b):
        if x["unit"] in TIMING_UNITS or x["name"] in {"latency", "throughput", "peak_memory", "energy",
                                                      "energy_per_sample", "metric_per_joule", "tokens_per_second",
                                                      "achieved_flops", "achieved_flops_fraction",
                                                      "generation_throughput", "profiling_overhead"}:
            continue
        assert x == y, f"{suite}: {x['name']} {x['tags']} differs between two runs with the same seed"
