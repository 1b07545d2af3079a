"""The cost estimate: passes add up exactly for known step times, the budget fit halves
only what a profile set, and the measured step times come from real calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from workbench.estimate import (
    JobEstimate,
    StepTimes,
    Work,
    estimate_job,
    fit_budget,
    fit_line,
    job_limits,
    format_estimate,
    measure_step_times,
    passes,
    recipe_passes,
    training_work,
)
from workbench.suite import Suite

TIMES = StepTimes(forward_per_call=1e-3, forward_per_example=1e-5, backward_per_call=2e-3, backward_per_example=3e-5)


def test_work_counts_calls_and_refuses_nonsense() -> None:
    w = Work("forward", 1000, 256)
    assert w.calls == 4
    assert passes("forward", 0, 32) == []
    assert passes("backward", 10, 32)[0].batch == 10  # a batch never exceeds the examples
    with pytest.raises(ValueError, match="Did you mean 'forward'"):
        Work("forwrd", 1, 1)
    with pytest.raises(ValueError, match="examples"):
        Work("forward", float("nan"), 1)


def test_seconds_are_calls_times_overhead_plus_examples_times_rate() -> None:
    works = passes("forward", 1000, 100, "n_examples") + passes("backward", 50, 10, "ig_steps")
    job = estimate_job("m", "explain", works, TIMES)
    fwd = 10 * 1e-3 + 1000 * 1e-5
    bwd = 5 * 2e-3 + 50 * 3e-5
    assert job.seconds == pytest.approx(fwd + bwd)
    assert job.drivers == pytest.approx({"n_examples": fwd, "ig_steps": bwd})
    assert (job.forward, job.backward) == (1000, 50)


def test_unknown_is_never_zero() -> None:
    job = estimate_job("m", "x", None, TIMES)
    assert job.seconds is None and "no cost estimate" in job.note
    lines = format_estimate([job, estimate_job("m", "y", passes("forward", 10, 10), TIMES)], device="cpu")
    assert "unknown" in lines[1] and "at least" in lines[-2] and "not model" in lines[-1]


def test_a_tiny_job_is_not_shown_as_zero_seconds() -> None:
    tiny = estimate_job("m", "x", passes("forward", 10, 10), StepTimes(1e-5, 1e-7, 2e-5, 2e-7))
    lines = format_estimate([tiny], device="cpu")
    assert "< 0.1 s" in lines[1] and "~0.0" not in "".join(lines)
    assert "dominates" in lines[-1]  # the suites' own work is named as what the run will spend
    big = estimate_job("m", "x", passes("forward", 1e6, 10), StepTimes(1e-3, 1e-4, 2e-3, 2e-4))
    assert "dominates" not in "".join(format_estimate([big], device="cpu"))


def test_fit_line_recovers_overhead_and_rate() -> None:
    a, c = fit_line(t1=0.01 + 0.001, tb=0.01 + 0.001 * 100, b=100)  # per_call 10 ms, 1 ms per example
    assert a == pytest.approx(0.01) and c == pytest.approx(0.001)
    assert fit_line(0.5, 0.4, 32) == (0.5, 0.0)  # noise never makes a rate negative


def test_warning_names_the_dominating_parameter() -> None:
    big = estimate_job("digits_cnn", "explain", passes("forward", 2e8, 256, "shap_budget"), TIMES)
    lines = format_estimate([big], device="cpu", limit_s=60)
    assert "WARNING" in lines[-1] and "shap_budget" in lines[-1] and "digits_cnn/explain" in lines[-1]
    assert "WARNING" not in "".join(format_estimate([big], device="cpu", limit_s=1e9))


def test_training_passes_follow_the_recipe() -> None:
    assert recipe_passes("standard") == 1 and recipe_passes("pgd_at", {"steps": 10}) == 11
    w = training_work(100, 20, {"epochs": 3, "batch_size": 10, "recipe": "fgsm_rs"})
    assert [(x.kind, x.examples) for x in w] == [("backward", 600.0), ("forward", 60.0)]


class Costly(Suite):
    name: ClassVar[str] = "costly"
    budget_parameters: ClassVar[tuple[tuple[str, int], ...]] = (("budget", 16), ("n", 2))

    @dataclass(frozen=True, kw_only=True)
    class Params:
        budget: int = 1024
        n: int = 8

    def cost(self, model: Any, data: Any, ctx: Any) -> list[Work]:
        return passes("forward", self.params.budget * self.params.n, 1, "budget")


class Ctx:
    device = torch.device("cpu")


def test_fit_budget_halves_profile_settings_until_it_fits() -> None:
    times = StepTimes(forward_per_call=1e-3, forward_per_example=0.0, backward_per_call=0.0, backward_per_example=0.0)
    suite = Costly()  # 1024 * 8 calls of 1 ms = 8.19 s
    same, notes = fit_budget(suite, None, None, Ctx(), times, limit_s=10.0)
    assert same is suite and notes == []
    fitted, notes = fit_budget(suite, None, None, Ctx(), times, limit_s=1.0)
    assert fitted.params.budget == 64 and fitted.params.n == 8  # 64 * 8 ms = 0.51 s <= 1 s, 128 would be 1.02 s
    assert notes == ["budget reduced from 1024 to 64 to fit 1.0 s on cpu (estimate 8.2 s -> 0.5 s)"]
    # the budget floor reached, the next parameter goes down; an explicit setting is never touched
    fitted, notes = fit_budget(suite, None, None, Ctx(), times, limit_s=0.05)
    assert (fitted.params.budget, fitted.params.n) == (16, 2)
    kept, notes = fit_budget(suite, None, None, Ctx(), times, limit_s=1.0, explicit={"budget"})
    assert kept.params.budget == 1024 and kept.params.n == 2 and len(notes) == 1


def test_measured_step_times_are_real_and_leave_the_model_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 10)).train()
    times = measure_step_times(model, torch.randn(128, 64), device=torch.device("cpu"), repeats=2)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert times.forward_per_call + times.forward_per_example > 0
    assert times.backward_per_call + 128 * times.backward_per_example >= times.forward_per_call


def test_job_estimate_round_trips() -> None:
    j = JobEstimate("m", "s", 1.5, 10, 2, {"x": 1.5}, "")
    assert j.to_dict()["drivers"] == {"x": 1.5}


def test_job_limits_share_what_fixed_jobs_leave() -> None:
    jobs = [JobEstimate("a", "costly", 900.0), JobEstimate("b", "costly", 300.0), JobEstimate("a", "metrics", 600.0)]
    suites = {"costly": Costly, "metrics": Suite}
    assert job_limits(jobs, suites, limit_s=2000.0) == {}  # 1800 s fits
    limits = job_limits(jobs, suites, limit_s=1200.0)  # metrics keeps 600 s; the rest share 600 s as 3:1
    assert limits == pytest.approx({("a", "costly"): 450.0, ("b", "costly"): 150.0})
    assert sum(job_limits(jobs, suites, limit_s=500.0).values()) == pytest.approx(50.0)  # a tenth at least


def test_run_start_fits_the_budget_once_for_every_executor(tmp_path: Any) -> None:
    """A plan that cannot fit its time limit: the run's start scales the explain suite's
    profile budget (not the values the plan set), logs it, records it in the provenance; the
    local job and a Ray worker's job context apply the same decision."""
    import dataclasses

    from workbench.config import build_plan
    from workbench.estimate import apply_budget
    from workbench.executors.jobs import JobSpec, job_context, worker_environment
    from workbench.runsetup import prepare_run
    from workbench.store import Store

    raw = {"run": {"name": "budget", "seed": 0, "device": "cpu", "profile": "full", "time_limit_minutes": 1,
                   "suites": ["explain"], "progress": False, "out": str(tmp_path / "out")},
           "models": [{"name": "m", "arch": "mlp", "dataset": "synthetic_tabular", "train": {"epochs": 1}}],
           "suites": {"explain": {"methods": ["shapley"], "quality": ["completeness"], "n_examples": 4,
                                  "shap_budget": 4096, "shap_value_function": "background"}}}
    plan = build_plan(raw)
    lines: list[str] = []
    setup = prepare_run(plan, store=Store(tmp_path / "store.sqlite"), log=lines.append)
    env = setup.env
    # make the model look 1000x slower than it is, then fit again (the real one may fit)
    env.step_times = {"m": StepTimes(1e-2, 1e-2, 1e-2, 1e-2)}
    from workbench.estimate import fit_budget, suite_for
    from workbench.estimate import job_context as est_ctx

    suite = suite_for(plan, "explain")
    handle, data = env.model("m"), env.dataset(plan.model("m").dataset)
    fitted, notes = fit_budget(suite, handle, data, est_ctx(plan, "m", "explain", data, env.device),
                               env.step_times["m"], 60.0, explicit=raw["suites"]["explain"])
    assert fitted.params.shap_budget == 4096  # set by the plan: never touched
    assert fitted.params.shap_background < suite.params.shap_background  # the profile's 16 went down
    assert notes and notes[0].startswith("shap_background reduced from 16 to ") and "1 min 00 s on cpu" in notes[0]
    changed = {"shap_background": fitted.params.shap_background}
    env.budget_overrides = {("m", "explain"): (changed, notes)}
    local, local_notes = apply_budget(env, suite, "m")
    assert local.params.shap_background == fitted.params.shap_background and local_notes == notes
    spec = JobSpec(plan=setup.provenance["plan"], plan_source="t", run_id="r", device="cpu",
                   cache_dir=str(env.cache_dir), budgets=env.budget_overrides)
    worker = worker_environment(spec)
    remote, *_ = job_context(worker, "m", "explain", "r", tmp_path)
    assert dataclasses.asdict(remote.params) == dataclasses.asdict(local.params)
    assert any(line.startswith("estimated cost on cpu") for line in lines)
    assert "estimate" in setup.provenance


@pytest.mark.slow
def test_estimate_is_within_a_factor_of_two_of_the_quickstart(quickstart_run: dict) -> None:
    """The estimate the quickstart printed at its start against the time its jobs then took:
    every job has an estimate (no suite without a cost), and the total of the suites' jobs is
    within a factor of two of their measured durations."""
    import json

    d = json.loads((quickstart_run["run_dir"] / "results.json").read_text())
    jobs = d["provenance"]["estimate"]["jobs"]
    assert jobs and all(j["seconds"] is not None for j in jobs), [j for j in jobs if j["seconds"] is None]
    estimated = {(j["model"], j["suite"]): j["seconds"] for j in jobs if j["suite"] != "train"}
    actual = {(r["model"], r["suite"]): r["duration_s"] for r in d["results"] if r["status"] == "ok"}
    both = sorted(set(estimated) & set(actual))
    assert len(both) >= 20
    ratio = sum(estimated[k] for k in both) / sum(actual[k] for k in both)
    assert 0.5 <= ratio <= 2.0, (ratio, {f"{m}/{s}": (round(estimated[m, s], 1), round(actual[m, s], 1))
                                         for m, s in both})


def test_validate_counts_the_same_passes_as_the_run_for_a_user_checkpoint(tmp_path: Any) -> None:
    """A factory + checkpoint model (examples/byo) can be retrained (ensemble siblings), so
    `workbench validate` must count that training as the run's start does; it once counted
    an ensemble only for models the plan trains."""
    from pathlib import Path

    from workbench.config import load_plan
    from workbench.estimate import estimate_plan
    from workbench.runsetup import prepare_run
    from workbench.store import Store
    from workbench.usercode import import_dirs

    plan_file = Path(__file__).resolve().parent.parent / "examples" / "byo" / "plan.toml"
    plan = load_plan(plan_file, ['run.suites=["uncertainty"]', f'run.cache="{tmp_path / "cache"}"',
                                 f'run.out="{tmp_path / "out"}"'])
    with import_dirs([plan.base_dir]):  # as the CLI does: `mymodel` sits beside the plan
        before = {(j.model, j.suite): (j.forward, j.backward) for j in estimate_plan(plan).jobs}
        setup = prepare_run(plan, store=Store(tmp_path / "store.sqlite"), log=lambda _: None)
    at_run = {(j["model"], j["suite"]): (j["forward"], j["backward"]) for j in setup.provenance["estimate"]["jobs"]}
    assert before == at_run and before[("loan_model", "uncertainty")][1] > 0  # the siblings' training
