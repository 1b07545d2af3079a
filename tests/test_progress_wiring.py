"""Progress inside long jobs reaches a log: suites' loops and training write done/total
lines (rate-limited; here the interval is made tiny through WORKBENCH_PROGRESS_INTERVAL),
and nothing at all when the plan says `progress = false` or the loop is short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.helpers import TinyMLP, blobs
from workbench.config import build_plan
from workbench.runner import run_plan
from workbench.train import TrainConfig, train_model

CPU = torch.device("cpu")
LINE = re.compile(r"^(?P<what>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>.*?) \(\d+%(?: of the work)?\), .* elapsed")


def _plan(tmp_path: Path, suites: list[str], *, progress: bool = True, params: dict | None = None) -> dict:
    return {
        "run": {"name": "progress", "seed": 0, "device": "cpu", "out": str(tmp_path / "reports"), "suites": suites,
                "progress": progress},
        "datasets": {"blobs": {"source": "callable", "function": "tests.helpers:make_blobs"}},
        "models": [{"name": "mlp", "factory": "tests.helpers:make_tiny_mlp", "dataset": "blobs",
                    "train": {"epochs": 3, "lr": 0.01, "patience": None}}],
        "suites": params or {},
    }


ROBUSTNESS = {"robustness": {"n_samples": 16, "eps": [0.1, 0.2, 0.3], "attacks": ["fgsm", "pgd"], "pgd_steps": 2,
                             "masking_checks": False, "n_examples": 0}}


def _run(tmp_path: Path, raw: dict) -> list[str]:
    lines: list[str] = []
    out = run_plan(build_plan(raw), log=lines.append)
    assert all(r.status in ("ok", "skipped") for r in out.run.results), [r.reason for r in out.run.results]
    return lines


def test_robustness_attack_loop_and_training_write_progress_lines(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_PROGRESS", raising=False)  # not a terminal: log lines
    monkeypatch.setenv("WORKBENCH_PROGRESS_INTERVAL", "1e-9")
    lines = _run(tmp_path, _plan(tmp_path, ["robustness"], params=ROBUSTNESS))
    attack = [ln for ln in lines if ln.startswith("robustness attacks standard (mlp): ")]
    # 3 eps x 2 attacks, eps outer: one line per unit before the last, then the closing line
    assert [LINE.match(ln)["done"] for ln in attack] == ["1", "2", "3", "4", "5", "6"], attack
    assert attack[2].startswith("robustness attacks standard (mlp): 3/6 (eps, attack) (50%), ")
    assert attack[2].endswith("[fgsm eps=0.2]") and "ETA" in attack[2]
    assert attack[-1].endswith(", done [pgd eps=0.3]")
    train = [ln for ln in lines if ln.startswith("train TinyMLP: ")]
    assert [LINE.match(ln)["done"] for ln in train] == ["1", "2", "3"] and "epochs" in train[0]
    assert re.search(r"\[loss \d\.\d{3}, val \d\.\d{3}\]$", train[0])
    # the job line still follows each job
    assert any(re.match(r"^  mlp\s+robustness\s+[\d.]+ s  ok$", ln) for ln in lines), lines


def test_no_progress_lines_when_the_plan_turns_progress_off(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_PROGRESS", raising=False)
    monkeypatch.setenv("WORKBENCH_PROGRESS_INTERVAL", "1e-9")
    lines = _run(tmp_path, _plan(tmp_path, ["robustness"], progress=False, params=ROBUSTNESS))
    assert not [ln for ln in lines if LINE.match(ln)], lines
    assert any(ln.startswith("  mlp ") for ln in lines)  # the run itself still talks


def test_default_interval_keeps_a_short_run_silent(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_PROGRESS", raising=False)
    monkeypatch.delenv("WORKBENCH_PROGRESS_INTERVAL", raising=False)  # 30 s: a seconds-long run writes none
    lines = _run(tmp_path, _plan(tmp_path, ["robustness"], params=ROBUSTNESS))
    assert not [ln for ln in lines if LINE.match(ln)], lines


def test_uncertainty_explain_certify_loops_write_progress_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROGRESS", "log")
    monkeypatch.setenv("WORKBENCH_PROGRESS_INTERVAL", "1e-9")
    params = {
        "uncertainty": {"mc_samples": 4, "ensemble_size": 3, "n_boot": 20, "n_calibrated_sims": 20, "max_test": 40},
        "explain": {"methods": ["saliency", "shapley"], "n_examples": 3, "shap_budget": 64, "shap_background": 4,
                    "quality": ["completeness"]},
        "certify": {"n_samples": 5, "n0": 8, "n": 40, "sigmas": [0.25], "noise_training": False,
                    "consistency_check": False},
    }
    lines = _run(tmp_path, _plan(tmp_path, ["uncertainty", "explain", "certify"], params=params))
    seen = {LINE.match(ln)["what"]: ln for ln in lines if LINE.match(ln)}
    # ensemble: 2 siblings trained (member 0 is the handed model); MC dropout: 4 samples x every input
    assert seen["uncertainty ensemble (mlp)"].startswith("uncertainty ensemble (mlp): 2/2 members trained (100%)")
    mc = [ln for ln in lines if ln.startswith("uncertainty MC dropout (mlp): ")]
    assert mc and mc[-1].endswith("done") and int(LINE.match(mc[-1])["total"]) % 4 == 0
    # explain: 2 methods x 3 examples, Shapley ticking per example
    ex = [ln for ln in lines if ln.startswith("explain methods x examples (mlp): ")]
    assert [LINE.match(ln)["done"] for ln in ex][-4:] == ["3", "4", "5", "6"], ex
    assert ex[-2].endswith("[shapley]")
    # certify: 5 examples x (8 + 40) noisy copies
    cert = [ln for ln in lines if ln.startswith("certify standard sigma=0.25 (mlp): ")]
    assert cert and cert[-1].startswith("certify standard sigma=0.25 (mlp): 240/240 noisy copies (100%)")


def test_explain_weighs_methods_and_reports_its_quality_checks(tmp_path, monkeypatch):
    """The explain job's two loops in a log: methods x examples, its ETA weighted by each
    method's model passes (saliency 3 per example, Shapley shap_budget), then the quality
    checks (curves, sanity reruns, stability reruns) as steps x examples: never silent."""
    monkeypatch.setenv("WORKBENCH_PROGRESS", "log")
    monkeypatch.setenv("WORKBENCH_PROGRESS_INTERVAL", "1e-9")
    params = {"explain": {"methods": ["saliency", "shapley"], "n_examples": 3, "shap_budget": 64,
                          "shap_background": 4, "quality": ["deletion", "sanity", "stability"],
                          "replacements": ["zero"], "sanity_sampling": True, "random_orders": 2}}
    lines = _run(tmp_path, _plan(tmp_path, ["explain"], params=params))
    ex = [ln for ln in lines if ln.startswith("explain methods x examples (mlp): ")]
    # saliency: 3 forward equivalents per example (one forward+backward); exact Shapley on 4
    # features with the baseline value function: 2^4 = 16 forwards. Saliency done: 3/19 = 16%
    assert ex[0].startswith("explain methods x examples (mlp): 3/6 explanations (16% of the work), "), ex
    assert ex[-1].startswith("explain methods x examples (mlp): 6/6 explanations (100% of the work)")
    q = [ln for ln in lines if ln.startswith("explain quality checks (mlp): ")]
    # 6 steps x 3 examples: deletion of saliency, shapley and random; sanity of both; stability
    # of shapley (exact here, so skipped at once)
    total = {LINE.match(ln)["total"] for ln in q}
    assert total == {"18"} and q[-1].endswith("done [stability shapley]"), q
    assert any("[sanity shapley]" in ln for ln in q) and all("of the work" in ln for ln in q)


def test_training_writes_epoch_lines_in_log_mode(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROGRESS_INTERVAL", "1e-9")
    lines: list[str] = []
    cfg = TrainConfig(epochs=4, lr=1e-2, patience=None)
    train_model(TinyMLP(), blobs(), cfg, device=CPU, progress="log", log=lines.append)
    assert [LINE.match(ln)["done"] for ln in lines] == ["1", "2", "3", "4"], lines
    assert lines[0].startswith("train TinyMLP: 1/4 epochs (25%), ") and "ETA" in lines[0]
    assert ", done [loss " in lines[-1]
    quiet: list[str] = []
    train_model(TinyMLP(), blobs(), cfg, device=CPU, progress=False, log=quiet.append)
    assert quiet == []


def test_ray_workers_report_in_log_mode_to_their_stderr(monkeypatch, capsys, tmp_path):
    """A worker's stderr is what Ray forwards to the driver (log_to_driver=True): its
    environment uses log lines, never a bar, even when the driver forced one."""
    from workbench.executors import jobs as J

    monkeypatch.setenv("WORKBENCH_PROGRESS", "bar")
    spec = J.JobSpec(plan=_plan(tmp_path, ["metrics"]), plan_source="test", run_id="r", device="cpu", cache_dir=None)
    env = J.worker_environment(spec)
    assert env.progress == "log"
    env.log("robustness attacks standard (mlp): 1/6 (eps, attack)")
    assert "1/6 (eps, attack)" in capsys.readouterr().err
    monkeypatch.setenv("WORKBENCH_PROGRESS", "off")
    spec_off = J.JobSpec(plan=_plan(tmp_path, ["metrics"], progress=False), plan_source="t", run_id="r2",
                         device="cpu", cache_dir=None)
    assert J.worker_environment(spec_off).progress == "off"


_RAY_SCRIPT = """
import json, os, sys, tempfile
from workbench.config import build_plan
from workbench.executors.ray_executor import run_plan_ray
raw = json.loads(sys.argv[1])
out = run_plan_ray(build_plan(raw), init_kwargs={
    "num_cpus": 1, "object_store_memory": 80 * 2**20, "_temp_dir": tempfile.mkdtemp(prefix="r", dir="/tmp"),
    "runtime_env": {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}}}, log=lambda m: print(m, flush=True))
print("STATUS", [r.status for r in out.run.results], flush=True)
"""


@pytest.mark.ray
@pytest.mark.slow
def test_ray_forwards_worker_progress_lines_to_the_driver(tmp_path):
    """A real local Ray cluster (its own process, log_to_driver as the executor sets it):
    the attack loop's lines, written in the worker, appear in the driver's output."""
    pytest.importorskip("ray")
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "WORKBENCH_PROGRESS_INTERVAL": "1e-9", "PYTHONPATH": str(root),
           "WORKBENCH_STORE": str(tmp_path / "store.sqlite"), "WORKBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("WORKBENCH_PROGRESS", None)
    raw = _plan(tmp_path, ["robustness"], params=ROBUSTNESS)
    proc = subprocess.run([sys.executable, "-c", _RAY_SCRIPT, json.dumps(raw)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "STATUS ['ok']" in out, out[-3000:]
    worker = [ln for ln in out.splitlines() if "robustness attacks standard (mlp): " in ln]
    # Ray prefixes each forwarded line with the task and the worker's pid
    assert any(re.search(r"\(mlp/robustness pid=\d+\).*: 3/6 \(eps, attack\) \(50%\)", ln) for ln in worker), out[-3000:]
    # the closing line too: the executor leaves Ray's log monitor time to ship it before shutdown
    counts = [int(m.group(1)) for ln in worker if (m := re.search(r": (\d)/6 \(eps, attack\)", ln))]
    assert counts == sorted(counts), worker
    assert any(ln.rstrip().endswith("done [pgd eps=0.3]") for ln in worker), worker
