"""Faults: a run killed at any moment (SIGINT, SIGTERM, SIGKILL) leaves the store
consistent and resumes to the numbers of an uninterrupted run; two runs at once against one
store both land; a suite that raises or returns NaN for one model loses nothing else; suites
respect the run's sample limit and batch size; CUDA out-of-memory back-off (simulated on CPU).

The killed runs are real `python -m workbench run` processes on a three-model plan whose
model sleeps in its suite-time forwards (WB_SLOW_S), so a signal can be sent at a known
point: as soon as the run's store row appears, or after the k-th result row appears. They
start from a copy of the reference run's training cache, so they spend their time in jobs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.config import build_plan
from workbench.errors import ConfigError, ParameterTypeError
from workbench.oom import (
    BackoffResult,
    OutOfMemoryBackoffError,
    is_oom_error,
    predict_with_backoff,
    run_with_oom_backoff,
)
from workbench.records import MetricRecord
from workbench.registry import SUITES
from workbench.runner import run_plan
from workbench.store import Store
from workbench.suite import Suite
from workbench.torch_utils import predict

REPO = Path(__file__).resolve().parent.parent

SLOW_MODULE = '''
import os, time
from torch import nn


class SlowMLP(nn.Module):
    """A tiny classifier that sleeps WB_SLOW_S seconds in every eval-mode forward on more
    than 4 rows (so not in the runner's 4-row output check)."""

    output_kind = "logits"

    def __init__(self, features=4, classes=3, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        if not self.training and x.shape[0] > 4:
            time.sleep(float(os.environ.get("WB_SLOW_S", "0")))
        return self.net(x)


def make_model(hidden: int = 16):
    return SlowMLP(hidden=hidden)
'''

MODELS = ("m1", "m2", "m3")


def _plan_text(root: Path, name: str = "faults") -> str:
    models = "".join(
        f'[[models]]\nname = "{m}"\nfactory = "slowmods:make_model"\ndataset = "blobs"\n'
        f"options = {{hidden = {h}}}\ntrain = {{epochs = 3, lr = 0.01}}\n"
        for m, h in zip(MODELS, (16, 8, 12))
    )
    return (
        f'[run]\nname = "{name}"\nseed = 0\ndevice = "cpu"\nout = "{root / "reports"}"\n'
        f'store = "{root / "store.sqlite"}"\ncache = "{root / "cache"}"\nsuites = ["metrics"]\nprogress = false\n'
        '[datasets.blobs]\nsource = "callable"\nfunction = "tests.helpers:make_blobs"\n'
        f"{models}[suites.metrics]\nn_boot = 50\n"
    )


def _setup(root: Path, name: str = "faults") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "slowmods.py").write_text(SLOW_MODULE)
    plan = root / "plan.toml"
    plan.write_text(_plan_text(root, name))
    return plan


def _env(root: Path, slow: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(root), str(REPO)]), WB_SLOW_S=str(slow), PYTHONUNBUFFERED="1")
    env.pop("WORKBENCH_STORE", None)  # the plan names its store
    return env


def _spawn(plan: Path, root: Path, slow: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "run", str(plan)], cwd=root, env=_env(root, slow),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return []


def _wait_for(proc: subprocess.Popen, db: Path, results: int, timeout: float = 90.0) -> tuple[str, int]:
    """Poll the store until the run row exists and has at least `results` result rows."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rows = _query(db, "SELECT run_id FROM runs")
        if rows:
            n = _query(db, "SELECT count(*) FROM results WHERE run_id=?", (rows[0][0],))[0][0]
            if n >= results:
                return rows[0][0], n
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run ended (rc {proc.returncode}) before {results} results:\n{out}\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no store row with {results} results within {timeout} s")


def _check_consistent(db: Path, run_id: str) -> tuple[str, int]:
    """Every result row is whole (its metrics rows all there, payload parses), no metrics
    row lacks its result row. Returns (status, number of result rows)."""
    from workbench.records import SuiteResult

    (status,) = _query(db, "SELECT status FROM runs WHERE run_id=?", (run_id,))[0]
    rows = _query(db, "SELECT suite, model, payload FROM results WHERE run_id=?", (run_id,))
    for suite, model, payload in rows:
        res = SuiteResult.from_dict(json.loads(payload))
        n = _query(db, "SELECT count(*) FROM metrics WHERE run_id=? AND suite=? AND model=?", (run_id, suite, model))
        assert n[0][0] == len(res.metrics) > 0, (suite, model)
    orphans = _query(db, "SELECT count(*) FROM metrics m WHERE run_id=? AND NOT EXISTS (SELECT 1 FROM results r "
                         "WHERE r.run_id=m.run_id AND r.suite=m.suite AND r.model=m.model)", (run_id,))
    assert orphans[0][0] == 0
    return status, len(rows)


def _metrics_by_job(results) -> dict[tuple[str, str], list[dict]]:
    return {(r.model, r.suite): [m.to_dict() for m in r.metrics] for r in results}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[tuple[str, str], list[dict]], Path]:
    """The metrics of an uninterrupted in-process run of the same plan, and its training cache."""
    root = tmp_path_factory.mktemp("reference")
    plan = _setup(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        mp.setenv("WB_SLOW_S", "0")
        from workbench.config import load_plan

        out = run_plan(load_plan(plan), log=lambda m: None)
    assert [r.status for r in out.run.results] == ["ok"] * 3
    return _metrics_by_job(out.run.results), root / "cache"


@pytest.fixture
def reference(reference_run) -> dict[tuple[str, str], list[dict]]:
    return reference_run[0]


# (signal, result rows to wait for before sending it): 0 = as soon as the run row exists,
# while models are still being trained and checked.
KILLS = [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGKILL, 2), (signal.SIGKILL, 0)]


@pytest.mark.parametrize("sig, after", KILLS, ids=[f"{s.name}-after-{k}" for s, k in KILLS])
def test_killed_run_is_consistent_and_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys, reference_run, sig,
                                                                  after):
    reference, cache = reference_run
    plan = _setup(tmp_path)
    shutil.copytree(cache, tmp_path / "cache")
    db = tmp_path / "store.sqlite"
    proc = _spawn(plan, tmp_path, slow=0.7)
    run_id, _ = _wait_for(proc, db, after)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)

    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # SIGTERM is handled like Ctrl-C: a clean "interrupted" exit, no traceback
        assert proc.returncode == 130, (out, err)
        assert "interrupted" in err and "Traceback" not in err, err
    status, kept = _check_consistent(db, run_id)
    assert status == ("running" if sig == signal.SIGKILL else "interrupted")
    assert after <= kept <= len(MODELS)  # == only if the last job beat the signal (then reports were being written)
    run_dir = Path(_query(db, "SELECT run_dir FROM runs WHERE run_id=?", (run_id,))[0][0])
    if kept < len(MODELS):
        assert not (run_dir / "results.json").exists() and not (run_dir / "report.html").exists()
    elif (run_dir / "results.json").exists():  # written atomically: whole or absent
        json.loads((run_dir / "results.json").read_text())

    # An unfinished run is shown as such and cannot be reported as if complete.
    monkeypatch.chdir(tmp_path)
    assert main(["--store", str(db), "report", run_id]) == 2
    assert f"is {status}, not complete" in capsys.readouterr().err

    # Resume (in-process, with the plan file: it names user code) without the slow sleeps.
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WB_SLOW_S", "0")
    assert main(["run", str(plan), "--resume", run_id]) == 0
    log = capsys.readouterr().out
    assert f"resuming run {run_id}: {kept} finished jobs kept" in log
    executed = re.findall(r"^  (m\d)\s+metrics\s+\d+\.\d s  ", log, re.M)  # result lines, not the estimate's
    assert len(executed) == len(MODELS) - kept  # finished jobs are not recomputed
    status, n = _check_consistent(db, run_id)
    assert (status, n) == ("complete", len(MODELS))
    record = Store(db).load_run(run_id)
    assert _metrics_by_job(record.results) == reference
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert {(r["model"], r["suite"]): r["metrics"] for r in on_disk["results"]} == reference


def test_two_concurrent_cli_runs_against_one_store_both_land(tmp_path, reference_run):
    reference, cache = reference_run
    plan = _setup(tmp_path)
    shutil.copytree(cache, tmp_path / "cache")
    db = tmp_path / "store.sqlite"
    procs = [_spawn(plan, tmp_path, slow=0.0) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    store = Store(db)
    runs = store.runs()
    assert len(runs) == 2 and {r["status"] for r in runs} == {"complete"}
    for r in runs:
        assert _check_consistent(db, r["run_id"]) == ("complete", len(MODELS))
        assert _metrics_by_job(store.load_run(r["run_id"]).results) == reference


def test_cache_write_does_not_collide_with_another_writers_temp_file(tmp_path):
    """A second process training the same model writes its own temporary file: a stale
    fixed-name `.tmp` in the way (another writer's) does not break or corrupt the entry."""
    from tests.helpers import TinyMLP, blobs
    from workbench.train import TrainConfig, cache_key, train_cached

    data = blobs()
    cfg = TrainConfig(epochs=1, seed=0)
    spec = {"factory": "tests.helpers:make_tiny_mlp", "options": {}, "overrides": {}}
    path = tmp_path / f"model-{cache_key(spec, data, cfg)}.pt"
    path.with_suffix(".tmp").mkdir(parents=True)  # what a fixed temporary name would collide with
    res = train_cached(TinyMLP, spec, data, cfg, device=torch.device("cpu"), cache_dir=tmp_path)
    again = train_cached(TinyMLP, spec, data, cfg, device=torch.device("cpu"), cache_dir=tmp_path)
    assert not res.cache_hit and again.cache_hit
    for k, v in res.module.state_dict().items():
        assert torch.equal(v, again.module.state_dict()[k])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [path.name]


# --------------------------------------------------------------------------- failing suites


class _RaisesForM2(Suite):
    name = "raises_for_m2"
    description = "raises for model m2 only"

    def run(self, model, data, ctx):
        if model.name == "m2":
            raise RuntimeError("boom on m2")
        return ctx.result([MetricRecord(name="score", value=1.0, higher_is_better=True, n=1)])


class _InfForM1(Suite):
    name = "inf_for_m1"
    description = "inf and NaN for model m1 only"

    def run(self, model, data, ctx):
        bad = model.name == "m1"
        return ctx.result([
            MetricRecord(name="score", value=float("inf") if bad else 0.5, higher_is_better=True, n=1),
            MetricRecord(name="loss", value=float("nan") if bad else 0.25, higher_is_better=False, n=1,
                         ci=(float("nan"), 1.0)),
        ])


def test_suite_errors_and_non_finite_values_through_the_cli(tmp_path, monkeypatch, capsys, reference):
    monkeypatch.setitem(SUITES._loaded, "raises_for_m2", _RaisesForM2)
    monkeypatch.setitem(SUITES._loaded, "inf_for_m1", _InfForM1)
    plan = _setup(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WB_SLOW_S", "0")
    code = main(["run", str(plan), "--suite", "raises_for_m2", "--suite", "metrics", "--suite", "inf_for_m1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "8 ok, 1 errors, 0 skipped" in out
    store = Store(tmp_path / "store.sqlite")
    (run,) = store.runs()
    assert run["status"] == "complete"
    results = {(r.model, r.suite): r for r in store.load_run(run["run_id"]).results}
    assert len(results) == 9
    err = results[("m2", "raises_for_m2")]
    assert err.status == "error" and "RuntimeError: boom on m2" in err.reason
    assert (Path(run["run_dir"]) / "logs" / "raises_for_m2-m2.txt").read_text().count("boom on m2") >= 1
    inf = results[("m1", "inf_for_m1")]
    assert inf.status == "ok"
    assert [(m.name, m.value, m.reason, m.ci) for m in inf.metrics] == [
        ("score", None, "non-finite value (inf)", None), ("loss", None, "non-finite value (nan)", None)]
    assert results[("m2", "inf_for_m1")].metrics[0].value == 0.5
    # Every other result survived, with the numbers of the run without the faulty suites.
    assert {k: [m.to_dict() for m in r.metrics] for k, r in results.items() if k[1] == "metrics"} == reference
    data = json.loads((Path(run["run_dir"]) / "results.json").read_text())  # strict JSON: no NaN/Infinity
    assert len(data["results"]) == 9
    summary = (Path(run["run_dir"]) / "summary.md").read_text()
    assert "boom on m2" in summary  # the summary names the failed job; every metric is in report.html
    assert "non-finite value" in (Path(run["run_dir"]) / "report.html").read_text()


# --------------------------------------------------------------------------- sample limit and batch size


class _Recorder(torch.nn.Module):
    """Records the batch size of every eval-mode forward while armed."""

    output_kind = "logits"
    seen: list[int] = []
    armed = False

    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(features, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _Recorder.armed and not self.training:
            _Recorder.seen.append(int(x.shape[0]))
        return self.net(x)


def make_recorder() -> torch.nn.Module:
    return _Recorder()


def make_big_blobs(seed: int = 0):
    from tests.helpers import blobs

    return blobs(n=400, seed=seed)


LIGHT = {
    "metrics": {"n_boot": 20},
    "uncertainty": {"methods": ["single", "mc_dropout"], "mc_samples": 3, "n_boot": 20, "n_calibrated_sims": 20},
    "robustness": {"eps": [0.1], "attacks": ["fgsm", "pgd"], "pgd_steps": 2, "masking_checks": False},
    "corruptions": {"severities": [1]},  # (the drift suite never calls the model)
    "explain": {"methods": ["saliency", "shapley"], "shap_budget": 64,
                "quality": ["completeness"]},
    "efficiency": {"batch_sizes": [1, 8], "repeats": 2, "warmup": 1, "compression": False, "energy": False,
                   "n_boot": 20},
}
MAX_SAMPLES, BATCH = 16, 8
# Reported to the lead: the uncertainty suite's MC-dropout and ensemble predictions use
# their own max_rows=8192 rows per forward instead of ctx.batch_size.
KNOWN_BATCH_GAPS: dict[str, str] = {}  # every suite respects [run] batch_size
LIMIT_CASES = [pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BATCH_GAPS[s]))
               if s in KNOWN_BATCH_GAPS else s for s in sorted(LIGHT)]


@pytest.mark.parametrize("suite", LIMIT_CASES)
def test_suites_respect_run_sample_limit_and_batch_size(tmp_path, monkeypatch, shared_cache, suite):
    """With [run] max_samples = 16 and batch_size = 8 on a 80-example test split, a suite
    evaluates at most 16 examples per metric (OOD metrics: 16 in- + 16 out-of-distribution)
    and never calls the model on more than 8 rows at once outside training."""
    import workbench.runner as runner
    import workbench.train as train

    if suite not in SUITES:
        pytest.skip(f"suite {suite!r} not registered")
    real_job, real_train = runner.execute_job, train.train_model

    def armed_job(*a, **k):
        _Recorder.armed = True
        try:
            return real_job(*a, **k)
        finally:
            _Recorder.armed = False

    def unarmed_train(*a, **k):  # ensembles and students train with their own batch size
        before, _Recorder.armed = _Recorder.armed, False
        try:
            return real_train(*a, **k)
        finally:
            _Recorder.armed = before

    monkeypatch.setattr(runner, "execute_job", armed_job)
    monkeypatch.setattr(train, "train_model", unarmed_train)
    _Recorder.seen = []
    raw = {"run": {"name": "limits", "seed": 0, "device": "cpu", "out": str(tmp_path), "suites": [suite],
                   "progress": False, "max_samples": MAX_SAMPLES, "batch_size": BATCH, "cache": str(shared_cache)},
           "datasets": {"blobs": {"source": "callable", "function": f"{__name__}:make_big_blobs"}},
           "models": [{"name": "m", "factory": f"{__name__}:make_recorder", "dataset": "blobs", "train": {"epochs": 2}}],
           "suites": {suite: LIGHT[suite]}}
    (res,) = run_plan(build_plan(raw), log=lambda m: None).run.results
    assert res.status == "ok", res.reason
    assert _Recorder.seen and max(_Recorder.seen) <= BATCH, sorted(set(_Recorder.seen))
    for m in res.metrics:
        cap = 2 * MAX_SAMPLES if "ood" in m.tags else MAX_SAMPLES
        assert m.n is None or m.n <= cap, m


# --------------------------------------------------------------------------- OOM back-off


def _oom(b: int) -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {b} MiB (simulated)")


def test_oom_backoff_halves_until_it_fits_and_records_the_retries(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    calls = []

    def fn(b: int) -> int:
        calls.append(b)
        if b > 30:
            raise _oom(b)
        return b * 10

    res = run_with_oom_backoff(fn, 100)
    assert isinstance(res, BackoffResult) and (res.value, res.batch_size) == (250, 25)
    assert calls == [100, 50, 25]
    assert [r.batch_size for r in res.retries] == [100, 50]
    assert res.retries[0].error.startswith("OutOfMemoryError: CUDA out of memory")
    assert len(emptied) == 2  # the cache is emptied after every OOM
    # No OOM: one call, nothing recorded.
    assert run_with_oom_backoff(lambda b: b, 7).retries == ()


def test_oom_backoff_treats_out_of_memory_runtime_errors_alike_and_nothing_else():
    assert is_oom_error(RuntimeError("CUDA error: out of memory"))
    assert is_oom_error(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_oom_error(_oom(1))
    assert not is_oom_error(RuntimeError("shape mismatch"))
    assert not is_oom_error(MemoryError())  # host RAM: halving a batch is no fix for a leak
    assert not is_oom_error(ValueError("out of memory"))

    calls = []

    def shape_bug(b: int) -> None:
        calls.append(b)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_with_oom_backoff(shape_bug, 64)
    assert calls == [64]  # a real bug is not retried

    sizes = []

    def legacy(b: int) -> int:
        sizes.append(b)
        if b > 3:
            raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported asynchronously")
        return b

    res = run_with_oom_backoff(legacy, 13, min_batch=2)
    assert sizes == [13, 6, 3] and res.batch_size == 3
    assert res.retries[0].error == "RuntimeError: CUDA error: out of memory"


def test_oom_backoff_gives_a_clear_error_when_even_min_batch_fails():
    sizes = []

    def always(b: int) -> None:
        sizes.append(b)
        raise _oom(b)

    with pytest.raises(OutOfMemoryBackoffError) as info:
        run_with_oom_backoff(always, 40, min_batch=4)
    assert sizes == [40, 20, 10, 5, 4]  # halves, then stops exactly at min_batch
    msg = str(info.value)
    assert "even at batch size 4" in msg and "tried 40, 20, 10, 5, 4" in msg and "batch_size" in msg
    assert [r.batch_size for r in info.value.retries] == sizes
    assert isinstance(info.value, RuntimeError)


def test_oom_backoff_frees_the_failed_attempts_tensors_before_retrying():
    refs: list[weakref.ref] = []

    def fn(b: int) -> int:
        if refs:  # the previous attempt's activations must already be collectable
            assert all(r() is None for r in refs), "a failed attempt's tensor is still alive"
        activations = torch.empty(b, 1000)
        refs.append(weakref.ref(activations))
        if b > 8:
            raise _oom(b)
        return b

    assert run_with_oom_backoff(fn, 64).batch_size == 8 and len(refs) == 4


def test_oom_backoff_argument_checks():
    with pytest.raises(ConfigError, match="`batch_size` to be an int >= 1, got 0"):
        run_with_oom_backoff(lambda b: b, 0)
    with pytest.raises(ConfigError, match="min_batch=9 > batch_size=8"):
        run_with_oom_backoff(lambda b: b, 8, min_batch=9)
    with pytest.raises(ParameterTypeError, match="got float 2.5"):
        run_with_oom_backoff(lambda b: b, 2.5)
    with pytest.raises(ParameterTypeError):
        run_with_oom_backoff(lambda b: b, True)


def test_predict_with_backoff_matches_predict_at_any_batch():
    from tests.helpers import TinyMLP

    torch.manual_seed(0)
    module = TinyMLP().eval()
    x = torch.randn(37, 4)
    full = predict(module, x, batch_size=512)
    real_forward = module.forward
    sizes = []

    def flaky_forward(xb):
        sizes.append(xb.shape[0])
        if xb.shape[0] > 5:
            raise _oom(xb.shape[0])
        return real_forward(xb)

    module.forward = flaky_forward
    out, info = predict_with_backoff(module, x, batch_size=64)
    assert info.batch_size == 4 and [r.batch_size for r in info.retries] == [64, 32, 16, 8]
    torch.testing.assert_close(out, full, rtol=1e-6, atol=1e-6)
    assert out.shape == (37, 3)
