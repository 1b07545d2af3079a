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
    assert "unknown" in lines[1] and "at least" in lines[-1]


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
