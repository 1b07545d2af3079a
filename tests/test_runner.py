"""End-to-end runner tests on a user factory model and a callable dataset (the
'bring your own model and data' path), independent of the built-in models."""

import json
import os
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.config import build_plan
from workbench.errors import ConfigError, ModelError
from workbench.records import MetricRecord, RunRecord
from workbench.registry import SUITES
from workbench.runner import run_plan
from workbench.store import Store
from workbench.suite import Suite


def plan_dict(tmp_path: Path, **model_extra) -> dict:
    model = {"name": "user_mlp", "factory": "tests.helpers:make_tiny_mlp", "dataset": "blobs",
             "train": {"epochs": 5, "lr": 0.01}}
    model.update(model_extra)
    return {
        "run": {"name": "t", "seed": 0, "device": "cpu", "out": str(tmp_path / "reports"), "suites": ["metrics"],
                "progress": False},
        "datasets": {"blobs": {"source": "callable", "function": "tests.helpers:make_blobs"}},
        "models": [model],
        "suites": {"metrics": {"n_boot": 50}},
    }


def test_end_to_end_user_model_and_data(tmp_path):
    plan = build_plan(plan_dict(tmp_path))
    out = run_plan(plan, log=lambda m: None)
    results = json.loads((out.run_dir / "results.json").read_text())
    record = RunRecord.from_dict(results)
    assert record.provenance["seed"] == 0 and "torch" in record.provenance["versions"]
    assert record.provenance["device"] == "cpu" and record.provenance["plan"]["models"][0]["name"] == "user_mlp"
    res = record.results[0]
    assert res.status == "ok", res.reason
    acc = res.metric("accuracy", split="test")
    assert acc.value > 0.9 and acc.n == 48 and acc.ci[0] <= acc.value <= acc.ci[1]
    for name in ("report.html", "summary.md", "junit.xml"):
        assert (out.run_dir / name).exists(), name
    info = Store().run_info(record.run_id)
    assert info["status"] == "complete"


def test_same_seed_same_numbers(tmp_path):
    plan = build_plan(plan_dict(tmp_path))
    a = run_plan(plan, log=lambda m: None).run.results[0]
    b = run_plan(plan, log=lambda m: None).run.results[0]
    assert [m.to_dict() for m in a.metrics] == [m.to_dict() for m in b.metrics]


def test_output_shape_mismatch_reported_before_suites(tmp_path, capsys):
    raw = plan_dict(tmp_path, options={"classes": 5})
    with pytest.raises(ModelError, match=r"expected \(4, 3\)"):
        run_plan(build_plan(raw), log=lambda m: None)
    runs = Store().runs()
    assert runs[0]["status"] == "failed" and Store().results(runs[0]["run_id"]) == []
    plan_file = tmp_path / "p.toml"
    plan_file.write_text(_toml(raw))
    assert main(["run", str(plan_file)]) == 2
    assert "outputs shape" in capsys.readouterr().err


def _toml(raw: dict) -> str:
    import tomli_w

    return tomli_w.dumps(raw)


class _Exploding(Suite):
    name = "exploding"
    description = "raises"

    def run(self, model, data, ctx):
        raise RuntimeError("boom")


class _Nan(Suite):
    name = "nan_suite"
    description = "returns NaN"

    def run(self, model, data, ctx):
        return ctx.result([MetricRecord(name="score", value=float("nan"), higher_is_better=True)])


def test_failing_suite_does_not_lose_other_results(tmp_path, monkeypatch):
    monkeypatch.setitem(SUITES._loaded, "exploding", _Exploding)
    monkeypatch.setitem(SUITES._loaded, "nan_suite", _Nan)
    raw = plan_dict(tmp_path)
    raw["run"]["suites"] = ["exploding", "metrics", "nan_suite"]
    out = run_plan(build_plan(raw), log=lambda m: None)
    by_suite = {r.suite: r for r in out.run.results}
    assert by_suite["exploding"].status == "error" and "boom" in by_suite["exploding"].reason
    assert by_suite["metrics"].status == "ok"
    nan = by_suite["nan_suite"].metrics[0]
    assert nan.value is None and "non-finite" in nan.reason
    assert (out.run_dir / "logs" / "exploding-user_mlp.txt").exists()


def test_resume_skips_finished_jobs(tmp_path, monkeypatch):
    import workbench.runner as runner

    raw = plan_dict(tmp_path)
    raw["run"]["suites"] = ["metrics", "nan_suite"]
    monkeypatch.setitem(SUITES._loaded, "nan_suite", _Nan)
    plan = build_plan(raw)
    first = run_plan(plan, log=lambda m: None)
    run_id = first.run.run_id
    calls = []
    real = runner.execute_job
    monkeypatch.setattr(runner, "execute_job", lambda env, m, s, *a: calls.append((m, s)) or real(env, m, s, *a))
    again = run_plan(plan, resume=run_id, log=lambda m: None)
    assert calls == [] and again.run.run_id == run_id
    assert [r.to_dict() for r in again.run.results] == [r.to_dict() for r in first.run.results]


def test_checkpoint_state_dict_and_pickle_safety(tmp_path):
    from tests.helpers import TinyMLP

    torch.manual_seed(0)
    m = TinyMLP()
    ckpt = tmp_path / "w.pt"
    torch.save(m.state_dict(), ckpt)
    raw = plan_dict(tmp_path, checkpoint=str(ckpt))
    raw["models"][0].pop("train")
    out = run_plan(build_plan(raw), log=lambda m: None)
    assert out.run.results[0].status == "ok"

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, evil)
    raw = plan_dict(tmp_path, checkpoint=str(evil))
    with pytest.raises(ConfigError, match="weights_only"):
        run_plan(build_plan(raw), log=lambda m: None)
    assert not marker.exists()
