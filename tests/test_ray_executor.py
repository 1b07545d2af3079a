"""The Ray executor and its job functions (workbench.executors).

Pure parts (shard ranges, exact counts, the job functions run in this process) always
run. The Ray tests (marked `ray`) start one local cluster for the module
(`num_cpus=2`, a small object store, its temp dir under pytest's tmp) and skip when
Ray is not installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion

from workbench.config import build_plan
from workbench.errors import ConfigError, DataError, WorkbenchError
from workbench.executors import jobs as J
from workbench.records import RunRecord
from workbench.runner import Environment, plan_to_raw, run_plan
from workbench.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins"))
from example_plugin import NAME as PLUGIN, installed  # noqa: E402
from test_suite_contract import TIMING_NAMES, TIMING_UNITS  # noqa: E402

QUIET = lambda m: None  # noqa: E731


# ----------------------------------------------------------------- exact counts


@pytest.mark.parametrize("n,k", [(10, 3), (7, 7), (2, 5), (0, 3), (359, 2)])
def test_shard_slices_tile_exactly(n, k):
    sl = J.shard_slices(n, k)
    rows = [i for s in sl for i in range(s.start, s.stop)]
    assert rows == list(range(n))
    sizes = [s.stop - s.start for s in sl]
    assert all(sizes) and (not sizes or max(sizes) - min(sizes) <= 1)
    assert len(sl) == min(n, k)


def test_shard_slices_reject_bad_arguments():
    with pytest.raises(ConfigError, match="n_shards"):
        J.shard_slices(5, 0)
    with pytest.raises(ConfigError, match="`n`"):
        J.shard_slices(-1, 2)


def test_counts_combine_exactly_not_as_average_of_averages():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=101)
    pred = np.where(rng.random(101) < 0.7, y, rng.integers(0, 4, size=101))
    whole = J.class_counts(pred, y, 4)
    assert np.array_equal(whole.confusion, sk_confusion(y, pred, labels=[0, 1, 2, 3]))
    parts = [J.class_counts(pred[s], y[s], 4) for s in (slice(0, 3), slice(3, 60), slice(60, 101))]
    total = J.combine_counts(parts)
    assert np.array_equal(total.confusion, whole.confusion)
    assert total.n == 101 and total.accuracy == float(np.mean(pred == y))
    # the naive combination is wrong on uneven shards, so the test above can fail
    assert abs(np.mean([p.accuracy for p in parts]) - whole.accuracy) > 1e-3


def test_class_counts_check_their_input():
    with pytest.raises(DataError, match="class ids in \\[0, 3\\)"):
        J.class_counts([0, 3], [0, 1], 3)
    with pytest.raises(DataError, match="equal length"):
        J.class_counts([0, 1], [0], 3)
    with pytest.raises(DataError, match="classes"):
        J.class_counts([0], [0], 2) + J.class_counts([0], [0], 3)


# ----------------------------------------------------------------- a small plan


# Every built-in suite and the example plug-in (tests/plugins): Ray must give the local numbers
# for each of them, sharded where the suite shards (metrics, the plug-in).
SUITES_UNDER_TEST = ("metrics", "robustness", "uncertainty", "efficiency", "explain", "certify", PLUGIN)


def _plan_raw(root: Path, suites=SUITES_UNDER_TEST) -> dict:
    return {
        "run": {"name": "scale", "seed": 3, "device": "cpu", "out": str(root / "reports"), "progress": False,
                "cache": str(root / "cache"), "store": str(root / "store.sqlite"), "suites": list(suites)},
        "models": [
            {"name": "wine_mlp", "arch": "mlp", "dataset": "wine", "train": {"epochs": 2}},
            {"name": "cancer_mlp", "arch": "mlp", "dataset": "breast_cancer", "train": {"epochs": 2}},
        ],
        "suites": {
            "metrics": {"n_boot": 100},
            "robustness": {"n_samples": 24, "eps": [0.1], "attacks": ["fgsm", "pgd"], "pgd_steps": 3,
                           "masking_checks": False, "n_examples": 2},
            "uncertainty": {"methods": ["single"], "n_boot": 50, "n_calibrated_sims": 50, "max_test": 40},
            "efficiency": {"batch_sizes": [1], "repeats": 3, "warmup": 1, "memory": False, "energy": False,
                           "generation": False, "compression": False},
            "explain": {"methods": ["saliency", "integrated_gradients"], "n_examples": 4, "ig_steps": 8,
                        "quality": ["completeness"]},
            "certify": {"n_samples": 40, "sigmas": [0.25], "n0": 20, "n": 200, "radii": [0.0, 0.25],
                        "noise_training": False, "consistency_check": False},
            PLUGIN: {"n_samples": 30, "n_boot": 50},
        },
    }


def _comparable(res) -> dict:
    """A result as results.json holds it (tuples become lists), without its wall time and
    without wall-clock measurements (latency, throughput...), which differ between any two runs."""
    d = json.loads(json.dumps(res.to_dict(), default=str))
    d.pop("duration_s")
    d["metrics"] = [m for m in d["metrics"] if m["unit"] not in TIMING_UNITS and m["name"] not in TIMING_NAMES]
    return d


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The example plug-in installed by entry point, here and (PYTHONPATH) for Ray's workers."""
    with installed(tmp_path_factory.mktemp("plugin")) as env, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", env["PYTHONPATH"])
        yield env


@pytest.fixture(scope="module")
def local_run(plugin_env, tmp_path_factory):
    """The plan run by the local executor: the reference every other executor must match."""
    root = tmp_path_factory.mktemp("scale")
    plan = build_plan(_plan_raw(root))
    out = run_plan(plan, store=Store(root / "store.sqlite"), log=QUIET)
    assert all(r.status == "ok" for r in out.run.results), [(r.suite, r.model, r.reason) for r in out.run.results]
    return root, plan, out


def test_job_functions_in_process_equal_local_executor(local_run, tmp_path):
    """run_job / run_shard + combine_shards (the suites' sharding hooks), called directly:
    the same results as the local executor, with uneven shards."""
    root, plan, out = local_run
    local = {(r.model, r.suite): r for r in out.run.results}
    spec = J.JobSpec(plan=plan_to_raw(plan), plan_source=plan.source, run_id="r", device="cpu",
                     cache_dir=str(root / "cache"))
    got = J.run_job(spec, "cancer_mlp", "robustness")
    assert got["where"]["pid"] == os.getpid()
    res = type(out.run.results[0]).from_dict(got["result"])
    assert _comparable(res) == _comparable(local[("cancer_mlp", "robustness")])
    assert set(got["files"]) == set(res.artifacts.values())

    env = Environment(plan=plan, device=torch.device("cpu"), cache_dir=root / "cache", log=QUIET)
    assert J.plan_shards(env, "wine_mlp", "efficiency", 3) is None  # a suite that does not shard
    assert J.plan_shards(env, "wine_mlp", "metrics", 1) is None
    slices = J.plan_shards(env, "wine_mlp", "metrics", 3)
    n_test = len(env.dataset("wine").test)
    assert len(slices) == 3 and slices[-1].stop == n_test and n_test % 3 != 0  # uneven shards
    shards = [J.run_shard(spec, "wine_mlp", "metrics", s, i) for i, s in enumerate(slices)]
    combined = J.combine_shards(env, "wine_mlp", "metrics", shards[::-1], slices, "r", tmp_path)  # any arrival order
    assert _comparable(combined) == _comparable(local[("wine_mlp", "metrics")])
    assert sum(int(np.trace(s["part"]["confusion"])) for s in shards) == round(
        combined.metric("accuracy").value * combined.metric("accuracy").n)
    with pytest.raises(WorkbenchError, match=r"expected pieces 0\.\.2 once each, got \[0, 1\]"):
        J.combine_shards(env, "wine_mlp", "metrics", shards[:2], slices, "r", tmp_path)  # a shard missing
    with pytest.raises(WorkbenchError, match=r"got \[0, 0, 1, 2\]"):
        J.combine_shards(env, "wine_mlp", "metrics", [shards[0], *shards], slices, "r", tmp_path)  # one twice
    with pytest.raises(WorkbenchError, match="Shard 1 of wine_mlp/metrics is"):
        J.combine_shards(env, "wine_mlp", "metrics", [shards[0], {**shards[1], "shard": slices[2]}, shards[2]],
                         slices, "r", tmp_path)  # a piece that is not the one planned
    # the suite itself refuses parts that do not tile its examples
    with pytest.raises(WorkbenchError, match=r"cover \[0, \d+\), expected \[0, 35\)"):
        J.combine_shards(env, "wine_mlp", "metrics", shards[:2], slices[:2], "r", tmp_path)


def test_missing_ray_is_a_config_error_with_the_install_hint(local_run, monkeypatch):
    from workbench.executors.ray_executor import run_plan_ray

    _, plan, _ = local_run
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "workbench\[ray\]"'):
        run_plan_ray(plan, log=QUIET)


def test_unreachable_or_malformed_address_fails_fast():
    """ray.init waits minutes for an absent GCS; the executor probes the port first."""
    import socket
    import time

    from workbench.executors.ray_executor import _probe

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="Could not reach a Ray cluster"):
        _probe(f"127.0.0.1:{port}", timeout=2.0)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(ConfigError, match="HOST:PORT"):
        _probe("no-port-here")
    _probe("auto")  # resolved by Ray itself


# ----------------------------------------------------------------- on a local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster(plugin_env, tmp_path_factory):
    ray = pytest.importorskip("ray")
    temp = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths must stay < 108 bytes
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, _temp_dir=str(temp), include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_run_equals_local_and_runs_elsewhere(ray_cluster, local_run):
    from workbench.executors.ray_executor import run_plan_ray

    root, plan, out = local_run
    store = Store(root / "store.sqlite")
    ray_out = run_plan_ray(plan, store=store, log=QUIET, shards=2)
    local = {(r.model, r.suite): _comparable(r) for r in out.run.results}
    remote = {(r.model, r.suite): _comparable(r) for r in ray_out.run.results}
    assert remote == local

    ex = ray_out.run.provenance["executor"]
    assert ex["kind"] == "ray" and ex["driver_pid"] == os.getpid()
    sharded = ("metrics", "robustness", "explain", "certify", PLUGIN)
    assert set(ex["shards"]) == {f"{m}/{s}" for m in ("wine_mlp", "cancer_mlp") for s in sharded}
    for key, pieces in ex["shards"].items():
        assert len(pieces) == 2
        if key.endswith("/robustness"):  # one attack at eps 0.1 per piece
            assert sorted(p[0][1] for p in pieces) == ["fgsm", "pgd"], pieces
        elif key.endswith("/explain"):  # one attribution method per piece
            assert sorted(pieces) == [["integrated_gradients"], ["saliency"]], pieces
        elif key.endswith("/certify"):  # whole blocks of examples (each with its own noise seeds)
            assert pieces[0][0] == 0 and pieces[0][1] == pieces[1][0] < pieces[1][1] <= 40, pieces
        else:  # example ranges
            assert pieces[0][0] == 0 and pieces[0][1] == pieces[1][0]
    pids = {t["pid"] for t in ex["tasks"].values()}
    n_whole = 2 * (len(SUITES_UNDER_TEST) - len(sharded))  # per model: every suite that does not shard ...
    assert len(ex["tasks"]) == n_whole + 2 * 2 * len(sharded) and os.getpid() not in pids  # ... + 2 shards each

    # the driver wrote the store and the run directory as a local run does
    assert store.run_info(ray_out.run.run_id)["status"] == "complete"
    assert {(r.model, r.suite) for r in store.results(ray_out.run.run_id)} == set(local)
    record = RunRecord.from_dict(json.loads((ray_out.run_dir / "results.json").read_text()))
    assert {(r.model, r.suite): _comparable(r) for r in record.results} == local
    for res in ray_out.run.results:
        for rel in res.artifacts.values():
            assert (ray_out.run_dir / rel).is_file(), rel
    a = np.load(out.run_dir / "artifacts/metrics/wine_mlp/predictions.npz")
    b = np.load(ray_out.run_dir / "artifacts/metrics/wine_mlp/predictions.npz")
    assert np.array_equal(a["y_pred"], b["y_pred"]) and np.array_equal(a["y_true"], b["y_true"])


@pytest.mark.ray
@pytest.mark.slow
def test_ray_failures_are_retried_or_reported_and_the_rest_completes(ray_cluster, local_run, monkeypatch):
    from workbench.executors.ray_executor import run_plan_ray

    root, plan, out = local_run
    store = Store(root / "store.sqlite")
    faults = {
        "wine_mlp/efficiency": "raise",  # an exception outside any suite: reported
        "cancer_mlp/efficiency": "crash_once",  # the worker dies once: Ray retries it
        "cancer_mlp/metrics#1": "crash",  # a shard's worker dies every time: reported
        "wine_mlp/robustness#0": "raise",  # a shard raises: the job is reported, the rest completes
        "cancer_mlp/robustness#1": "crash_once",  # a shard's worker dies once: retried, exact result
    }
    monkeypatch.setenv("WORKBENCH_RAY_FAULTS", json.dumps(faults))  # fault injection, not a public argument
    ray_out = run_plan_ray(plan, suites=["metrics", "robustness", "efficiency"], store=store, log=QUIET, shards=2,
                           max_retries=1)
    local = {(r.model, r.suite): _comparable(r) for r in out.run.results}
    got = {(r.model, r.suite): r for r in ray_out.run.results}
    assert len(got) == 6

    bad = got[("wine_mlp", "efficiency")]
    assert bad.status == "error" and "injected failure in job wine_mlp/efficiency" in bad.reason
    assert (ray_out.run_dir / "logs" / "efficiency-wine_mlp.txt").is_file()
    bad = got[("wine_mlp", "robustness")]
    assert bad.status == "error" and "shard 0" in bad.reason and "injected failure" in bad.reason
    died = got[("cancer_mlp", "metrics")]
    assert died.status == "error" and "shard 1" in died.reason and "died" in died.reason
    assert _comparable(got[("cancer_mlp", "efficiency")]) == local[("cancer_mlp", "efficiency")]  # retried
    assert _comparable(got[("cancer_mlp", "robustness")]) == local[("cancer_mlp", "robustness")]  # retried shard
    assert _comparable(got[("wine_mlp", "metrics")]) == local[("wine_mlp", "metrics")]

    assert store.run_info(ray_out.run.run_id)["status"] == "complete"
    stored = {(r.model, r.suite): r.status for r in store.results(ray_out.run.run_id)}
    assert sorted(stored.values()) == ["error"] * 3 + ["ok"] * 3
