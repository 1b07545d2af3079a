"""The conformance check every registered suite must pass (like scikit-learn's
check_estimator), on every tiny reference model. Parametrized over the registry itself, so
a new suite (built-in or plug-in) is checked for free:
- it does not change the model's weights, train/eval flags, buffers, requires_grad or .grad
  (run once in eval mode and once in train mode);
- the same seed gives the same numbers;
- every metric is finite or explicitly null with a reason; declares a unit; declares its
  direction (higher_is_better True/False, or None) the same way on every row and model; a
  fraction lies in [0, 1]; n is an int >= 0; a CI is ordered;
- a suite that does not apply says why, and the test is then skipped (not passed);
- its hooks work on its own result: `figures` gives (title, plotly figure) pairs that
  serialise, `per_example` gives (N,) arrays that average to a metric it reported,
  `is_headline` answers, and every headline metric it declares is emitted on some model;
- when it shards (`Suite.shards`), the combined shards give exactly the unsharded result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
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
KEYS = [(a, d) for a, d, _, _ in MODELS]
CPU = torch.device("cpu")
SEED = 123

# Wall-clock figures (latency, throughput, energy) legitimately differ between runs.
TIMING_UNITS = {"s", "ms", "us", "samples/s", "tokens/s", "FLOP/s", "J", "J/sample", "bytes"}
TIMING_NAMES = {"latency", "throughput", "peak_memory", "energy", "energy_per_sample", "metric_per_joule",
                "tokens_per_second", "achieved_flops", "achieved_flops_fraction", "generation_throughput",
                "profiling_overhead", "training_time"}


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


def _ctx(suite_name: str, handle, data, run_dir: Path, seed: int = SEED) -> RunContext:
    return RunContext(run_id="contract", run_dir=run_dir, seed=seed, device=CPU, suite=suite_name,
                      model_name=handle.name, dataset_name=data.name, max_samples=32, batch_size=64,
                      log=lambda m: None)


def _suite(suite_name: str):
    return SUITES.get(suite_name).from_config({}, profile="quick")


class _Runs:
    """Each (suite, model) run once in eval mode and shared by the tests of this module."""

    def __init__(self, handles, root: Path) -> None:
        self.handles, self.root, self.done = handles, root, {}

    def get(self, suite_name: str, key: tuple[str, str]):
        """(result, run_dir) of the eval-mode run, or (None, reason) when it does not apply."""
        if (suite_name, key) not in self.done:
            handle, data = self.handles[key]
            handle.module.eval()
            reason = _suite(suite_name).applicable(handle, data)
            if reason:
                self.done[(suite_name, key)] = (None, reason)
            else:
                run_dir = self.root / f"{suite_name}-{key[0]}-{key[1]}"
                before = ModuleState.capture(handle.module)
                res = _suite(suite_name).run(handle, data, _ctx(suite_name, handle, data, run_dir))
                assert before.diff(handle.module) == [], f"{suite_name} changed the model in eval mode"
                self.done[(suite_name, key)] = (res, run_dir)
        return self.done[(suite_name, key)]


@pytest.fixture(scope="module")
def runs(handles, tmp_path_factory):
    return _Runs(handles, tmp_path_factory.mktemp("contract-runs"))


def _applicable_or_skip(runs, suite_name, key):
    res, where = runs.get(suite_name, key)
    if res is None:
        assert isinstance(where, str) and where.strip(), f"{suite_name} skipped without a reason"
        pytest.skip(f"{suite_name} does not apply to {key}: {where}")
    return res, where


@pytest.mark.slow
@pytest.mark.parametrize("suite_name", SUITES.names())
@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"{k[0]}-{k[1]}")
def test_suite_contract(suite_name, key, handles, runs, tmp_path):
    first, run_dir = _applicable_or_skip(runs, suite_name, key)
    handle, data = handles[key]
    assert first.status == "ok", first.reason
    assert first.metrics, f"{suite_name} returned no metrics"

    # train mode: the suite still leaves the model exactly as it found it (flags included)
    handle.module.train(True)
    try:
        before = ModuleState.capture(handle.module)
        _suite(suite_name).run(handle, data, _ctx(suite_name, handle, data, tmp_path / "train"))
        assert before.diff(handle.module) == [], f"{suite_name} changed the model in train mode"
    finally:
        handle.module.eval()

    second = _suite(suite_name).run(handle, data, _ctx(suite_name, handle, data, tmp_path / "again"))
    _assert_same([m.to_dict() for m in first.metrics], [m.to_dict() for m in second.metrics], suite_name)

    for m in first.metrics:
        what = f"{suite_name}: {m.name} {dict(m.tags)}"
        assert m.value is None or math.isfinite(m.value), what
        if m.value is None:
            assert m.reason, f"{what} is null without a reason"
        assert isinstance(m.unit, str) and m.unit.strip(), f"{what} declares no unit"
        assert m.higher_is_better in (True, False, None), what
        assert m.n is None or (isinstance(m.n, int) and not isinstance(m.n, bool) and m.n >= 0), what
        if m.unit == "fraction" and m.value is not None:  # a fraction, or a change of one
            assert -1 - 1e-12 <= m.value <= 1 + 1e-12, f"{what} = {m.value} is a fraction outside [-1, 1]"
        if m.ci is not None:
            assert m.ci[0] <= m.ci[1], f"{what}: CI {m.ci} is not ordered"
    directions: dict[str, set] = {}
    for m in first.metrics:
        directions.setdefault(m.name, set()).add(m.higher_is_better)
    mixed = {k: v for k, v in directions.items() if len(v) > 1}
    assert not mixed, f"{suite_name}: one metric name, several directions: {mixed}"
    for rel in first.artifacts.values():
        assert (run_dir / rel).exists(), rel

    _check_hooks(suite_name, first, run_dir)
    _check_sharding(suite_name, first, run_dir, handle, data, tmp_path)


def _check_hooks(suite_name, result, run_dir: Path) -> None:
    import plotly.io as pio

    cls = SUITES.get(suite_name)
    d = json.loads(json.dumps(result.to_dict(), default=str))  # as results.json holds it
    figs = cls.figures(d, run_dir)
    assert isinstance(figs, list), f"{suite_name}.figures returned {type(figs).__name__}, not a list"
    for title, fig in figs:
        assert isinstance(title, str) and title.strip()
        json.loads(pio.to_json(fig, validate=True))  # a real plotly figure that serialises

    for m in d["metrics"]:
        assert isinstance(cls.is_headline(m), bool)
        if cls.is_headline(m):
            assert m["name"] in cls.headline_metrics

    per = cls.per_example(d, run_dir)
    assert isinstance(per, dict)
    sizes = {np.asarray(v).shape for v in per.values()}
    assert len(sizes) <= 1 and all(len(s) == 1 for s in sizes), f"{suite_name}.per_example shapes {sizes}"
    for name, values in per.items():
        if name in ("y_true", "example_id"):
            continue
        reported = [m["value"] for m in d["metrics"] if m["name"] == name and m["value"] is not None]
        mean = float(np.mean(values))
        assert any(math.isclose(mean, v, rel_tol=1e-6, abs_tol=1e-9) for v in reported), (
            f"{suite_name}.per_example[{name!r}] averages to {mean}, no reported {name} has that value")


def _check_sharding(suite_name, result, run_dir: Path, handle, data, tmp_path: Path) -> None:
    suite = _suite(suite_name)
    ctx = _ctx(suite_name, handle, data, tmp_path / "shards")
    pieces = suite.shards(handle, data, ctx, 3)
    if pieces is None:
        return
    assert len(pieces) >= 2 and suite.shards(handle, data, ctx, 3) == pieces  # same question, same answer
    if all(isinstance(p, slice) for p in pieces):  # example ranges tile the examples in order
        assert [i for s in pieces for i in range(s.start, s.stop)] == list(range(pieces[-1].stop))
    parts = []
    for piece in reversed(pieces):  # pieces are independent: any order, a fresh context each
        before = ModuleState.capture(handle.module)
        part = suite.run_shard(handle, data, _ctx(suite_name, handle, data, tmp_path / "worker"), piece)
        assert before.diff(handle.module) == []
        parts.insert(0, (piece, part))
    combined = suite.combine(handle, data, ctx, parts)
    a = json.loads(json.dumps(combined.to_dict(), default=str))
    b = json.loads(json.dumps(result.to_dict(), default=str))
    for x in (a, b):
        x.pop("duration_s", None)
    assert a == b, f"{suite_name}: combining {len(pieces)} shards does not give the unsharded result"
    for name, rel in result.artifacts.items():
        if rel.endswith(".npz"):
            with np.load(ctx.run_dir / rel) as za, np.load(run_dir / rel) as zb:
                assert set(za.files) == set(zb.files)
                for k in za.files:
                    # Records are compared exactly above. A forward pass over other batch
                    # boundaries may round float32 outputs differently in the last bit.
                    if za[k].dtype.kind == "f":
                        np.testing.assert_allclose(za[k], zb[k], rtol=1e-6, atol=1e-7,
                                                   err_msg=f"{suite_name} artifact {name}/{k}")
                    else:
                        np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{suite_name} artifact {name}/{k}")


@pytest.mark.slow
@pytest.mark.parametrize("suite_name", SUITES.names())
def test_every_headline_metric_is_emitted(suite_name, runs):
    """A headline metric a suite declares but never emits would silently never reach the
    headline table (this happened: `brier_score` vs the emitted `brier`)."""
    cls = SUITES.get(suite_name)
    emitted: set[str] = set()
    accepted: set[str] = set()
    applied = False
    for key in KEYS:
        res, _ = runs.get(suite_name, key)
        if res is None or res.status != "ok":
            continue
        applied = True
        for m in res.metrics:
            emitted.add(m.name)
            if cls.is_headline(m.to_dict()):
                accepted.add(m.name)
    if not applied:
        pytest.skip(f"{suite_name} applies to none of the tiny reference models")
    declared = set(cls.headline_metrics)
    assert declared <= emitted, f"{suite_name} declares headline metrics it never emits: {declared - emitted}"
    assert declared <= accepted, f"{suite_name}: is_headline rejects every row of {declared - accepted}"


def _assert_same(a: list[dict], b: list[dict], suite: str) -> None:
    assert [(m["name"], m["tags"]) for m in a] == [(m["name"], m["tags"]) for m in b], suite
    for x, y in zip(a, b):
        if x["unit"] in TIMING_UNITS or x["name"] in TIMING_NAMES:
            continue
        assert x == y, f"{suite}: {x['name']} {x['tags']} differs between two runs with the same seed"
