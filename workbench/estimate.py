"""What a plan will cost before it runs: model passes per job, and seconds on this device.

Every suite says, through its `cost` hook, how many examples it will pass forward (no
gradient) and forward+backward (a gradient w.r.t. the input or the weights), at which batch
size, and which of its parameters drive that count. The estimator times one forward and one
forward+backward of each model on the chosen device at batch 1 and at the run's batch size,
fits t(b) = per_call + per_example * b for each, and adds it up:

    digits_cnn   explain      1.9e5 fwd  2.1e4 bwd   ~ 41 s   (shap_budget 71%, lime_samples 18%)

It is a model of the passes, not of everything a suite does (bootstraps, report figures and
Python overhead are left out, and early stopping can end training sooner), so it is an
order-of-magnitude guide: tests check it against the measured time of the quickstart within
a factor of two. Work with no cost hook is "unknown", never zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import check_choice, check_positive_int

KINDS = ("forward", "backward")
DEFAULT_LIMIT_S = 30 * 60.0
# Step times are measured at batch 1 and at this batch (or the run's, if smaller) and
# extrapolated linearly: large enough to see the per-example cost, small enough to be quick
# and light for a base-size language model.
MEASURE_BATCH = 32
# Below this many seconds of model passes, the suites' own work (not modelled) dominates a
# run, and the estimate says so instead of letting "~0.1 s" read as the run's length.
SMALL_S = 60.0


@dataclass(frozen=True)
class Work:
    """`examples` examples passed through the model at `batch` per call.

    kind: "forward" (no gradient) or "backward" (forward + backward, as in an attack step,
      a gradient attribution or a training step).
    driver: the suite parameter that sets this count (e.g. "shap_budget"), named when the
      job is too slow; "" for work no parameter drives.
    """

    kind: str
    examples: float
    batch: int = 1
    driver: str = ""

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_positive_int("batch", self.batch)
        if not (self.examples >= 0 and math.isfinite(self.examples)):
            raise ValueError(f"Expected `examples` to be a finite count >= 0, got {self.examples!r}.")

    @property
    def calls(self) -> int:
        return math.ceil(self.examples / self.batch) if self.examples else 0


def passes(kind: str, examples: float, batch: int, driver: str = "") -> list[Work]:
    """A list with one Work (none when there is nothing to do); batch is clamped to >= 1."""
    if examples <= 0:
        return []
    return [Work(kind, float(examples), max(1, min(int(batch), int(math.ceil(examples)))), driver)]


@dataclass(frozen=True)
class StepTimes:
    """Seconds per call of one model on one device: t(b) = per_call + per_example * b."""

    forward_per_call: float
    forward_per_example: float
    backward_per_call: float
    backward_per_example: float

    def seconds(self, work: Work) -> float:
        if work.kind == "forward":
            a, c = self.forward_per_call, self.forward_per_example
        else:
            a, c = self.backward_per_call, self.backward_per_example
        return work.calls * a + work.examples * c


def fit_line(t1: float, tb: float, b: int) -> tuple[float, float]:
    """(per_call, per_example) from the time of a call at batch 1 and at batch b; never
    negative (timing noise can make tb < t1 on tiny models)."""
    if b <= 1:
        return 0.0, max(t1, 0.0)
    per_example = max((tb - t1) / (b - 1), 0.0)
    return max(t1 - per_example, 0.0), per_example


def measure_step_times(module: Any, x: Any, *, device: Any, repeats: int = 3,
                       clock: Callable[[], float] = time.perf_counter) -> StepTimes:
    """Time forward (eval, no_grad) and forward+backward (train-free: gradients of the
    summed output w.r.t. the weights) of `module` on inputs `x` (B, ...) and on x[:1]; the
    median of `repeats` calls after one warm-up. The module's mode and gradients are
    restored."""
    import statistics

    import torch

    from workbench.torch_utils import ModuleState

    def sync() -> None:
        if getattr(device, "type", str(device)).startswith("cuda"):
            torch.cuda.synchronize()

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        sync()
        out = []
        for _ in range(repeats):
            t0 = clock()
            fn()
            sync()
            out.append(clock() - t0)
        return statistics.median(out)

    state = ModuleState.capture(module)
    x = x.to(device)
    b = int(x.shape[0])
    params = [p for p in module.parameters() if p.requires_grad]

    def forward(inp: Any) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return module(inp)
        return run

    def backward(inp: Any) -> Callable[[], Any]:
        def run() -> Any:
            out = module(inp)
            out = out[0] if isinstance(out, (tuple, list)) else out
            if params and out.requires_grad:
                torch.autograd.grad(out.float().sum(), params, allow_unused=True)
        return run

    try:
        module.eval()
        f1, fb = timed(forward(x[:1])), timed(forward(x))
        g1, gb = timed(backward(x[:1])), timed(backward(x))
    finally:
        state.restore(module)
    fa, fc = fit_line(f1, fb, b)
    ga, gc = fit_line(g1, gb, b)
    return StepTimes(fa, fc, max(ga, fa), max(gc, fc))


@dataclass
class JobEstimate:
    """The estimate of one (model, suite) job, or of one model's training (suite "train")."""

    model: str
    suite: str
    seconds: float | None
    forward: float = 0.0
    backward: float = 0.0
    drivers: dict[str, float] = field(default_factory=dict)  # parameter -> seconds it drives
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "suite": self.suite, "seconds": self.seconds, "forward": self.forward,
                "backward": self.backward, "drivers": dict(self.drivers), "note": self.note}


def estimate_job(model: str, suite: str, works: Sequence[Work] | None, times: StepTimes | None,
                 note: str = "") -> JobEstimate:
    """Seconds for a list of Work on one model; None (with the reason in `note`) when the
    suite gives no cost or the model could not be timed."""
    if works is None:
        return JobEstimate(model, suite, None, note=note or "this suite gives no cost estimate")
    fwd = sum(w.examples for w in works if w.kind == "forward")
    bwd = sum(w.examples for w in works if w.kind == "backward")
    if times is None:
        return JobEstimate(model, suite, None, fwd, bwd, note=note or "the model could not be timed")
    drivers: dict[str, float] = {}
    total = 0.0
    for w in works:
        s = times.seconds(w)
        total += s
        if w.driver:
            drivers[w.driver] = drivers.get(w.driver, 0.0) + s
    return JobEstimate(model, suite, total, fwd, bwd, drivers, note)


def total_seconds(jobs: Iterable[JobEstimate]) -> float | None:
    """The sum, or None when any job is unknown (an unknown is never counted as zero)."""
    s = 0.0
    for j in jobs:
        if j.seconds is None:
            return None
        s += j.seconds
    return s


def format_estimate(jobs: Sequence[JobEstimate], *, device: str, limit_s: float = DEFAULT_LIMIT_S) -> list[str]:
    """Lines for `workbench validate` and the start of `workbench run`: one per job, the
    total, and a warning naming the dominating parameters when the plan exceeds `limit_s`."""
    from workbench.progress import format_duration

    lines = [f"estimated cost on {device} (model passes only; a guide within about 2x):"]
    wm = max([len(j.model) for j in jobs] + [5])
    ws = max([len(j.suite) for j in jobs] + [5])
    for j in jobs:
        secs = "unknown" if j.seconds is None else ("< 0.1 s" if j.seconds < 0.05 else "~" + format_duration(j.seconds))
        passes_txt = f"{j.forward:9.3g} fwd {j.backward:9.3g} bwd"
        extra = ""
        if j.drivers and j.seconds:
            top = sorted(j.drivers.items(), key=lambda kv: -kv[1])[:2]
            extra = "  (" + ", ".join(f"{k} {100 * v / j.seconds:.0f}%" for k, v in top) + ")"
        if j.note and j.seconds is None:
            extra = f"  ({j.note})"
        lines.append(f"  {j.model:<{wm}} {j.suite:<{ws}} {passes_txt}  {secs:>12}{extra}")
    tot = total_seconds(jobs)
    known = sum(j.seconds for j in jobs if j.seconds is not None)
    if tot is None:
        lines.append(f"  total: at least ~{format_duration(known)} (some jobs unknown)")
    else:
        lines.append(f"  total: {'< 0.1 s' if tot < 0.05 else '~' + format_duration(tot)}")
    if known < SMALL_S:
        lines.append("  note: the model passes are cheap here; a suite's own work (statistics, attack bookkeeping, "
                     "explainer fits), which this does not model, takes seconds per job and dominates such a run")
    if known > limit_s:
        worst = sorted((j for j in jobs if j.seconds), key=lambda j: -(j.seconds or 0))[:3]
        named = []
        for j in worst:
            top = max(j.drivers.items(), key=lambda kv: kv[1])[0] if j.drivers else "(no single parameter)"
            named.append(f"{j.model}/{j.suite} ~{format_duration(j.seconds or 0)} driven by {top}")
        lines.append(f"  WARNING: expected to exceed {format_duration(limit_s)} on {device}; "
                     f"dominated by: {'; '.join(named)}. Lower those parameters or use profile \"quick\".")
    return lines


# Forward+backward passes per training example, by recipe: the standard step is one; an
# adversarial recipe adds its attack's steps (FGSM-RS 1, PGD-AT `steps`, TRADES `steps` + 1
# forward of the clean logits, counted as one more).
def recipe_passes(recipe: str, recipe_params: dict[str, Any] | None = None) -> float:
    params = recipe_params or {}
    if recipe in ("fgsm_rs",):
        return 2.0
    if recipe in ("pgd_at",):
        return 1.0 + float(params.get("steps", 7))
    if recipe in ("trades",):
        return 2.0 + float(params.get("steps", 7))
    return 1.0


def training_work(n_train: int, n_val: int, train_config: dict[str, Any], *, driver: str = "train.epochs",
                  repeats: int = 1) -> list[Work]:
    """The passes of `repeats` trainings with `train_config` (a TrainConfig as a dict): every
    epoch a forward+backward of each training example (times the recipe's attack steps) and
    a forward of the validation split. Early stopping may end sooner: this is the upper end."""
    epochs = int(train_config.get("epochs", 10)) * repeats
    batch = int(train_config.get("batch_size", 64))
    per = recipe_passes(str(train_config.get("recipe", "standard")), train_config.get("recipe_params"))
    return (passes("backward", epochs * n_train * per, batch, driver)
            + passes("forward", epochs * n_val, max(batch, 256), driver))


# ----------------------------------------------------------------------------- a plan


@dataclass
class PlanEstimate:
    device: str
    jobs: list[JobEstimate]
    times: dict[str, StepTimes | None]  # model -> its measured step times (None: not timed, see notes)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return total_seconds(self.jobs)

    def lines(self, limit_s: float = DEFAULT_LIMIT_S) -> list[str]:
        return format_estimate(self.jobs, device=self.device, limit_s=limit_s)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "seconds": self.seconds, "jobs": [j.to_dict() for j in self.jobs],
                "notes": dict(self.notes)}


def sample_inputs(data: Any, batch: int) -> Any:
    """Up to `batch` test inputs (training inputs when the test split is empty)."""
    split = data.test if len(data.test) else data.train
    return split.x[: max(1, min(batch, len(split)))]


def suite_for(plan: Any, name: str) -> Any:
    from workbench.registry import SUITES

    return SUITES.get(name).from_config(plan.suites.get(name, {}), profile=plan.run.profile)


def job_context(plan: Any, model: str, suite: str, data: Any, device: Any) -> Any:
    """A RunContext for cost hooks (it never writes: no run directory is made)."""
    from pathlib import Path

    from workbench.suite import RunContext

    return RunContext(run_id="estimate", run_dir=Path("."), seed=int(plan.run.seed), device=device, suite=suite,
                      model_name=model, dataset_name=data.name, max_samples=plan.run.max_samples,
                      batch_size=plan.run.batch_size, profile=plan.run.profile, log=lambda m: None)


def estimate_jobs(plan: Any, handles: dict[str, Any], datasets: dict[str, Any], suites: Sequence[str], *,
                  device: Any, training: dict[str, list[Work]] | None = None) -> PlanEstimate:
    """The estimate of every (model, suite) job of `plan` over built model handles
    (`workbench.suite.ModelHandle`, trained or not: only their speed matters), plus the
    training each model still needs (`training`: model -> its Work; none once trained)."""
    times: dict[str, StepTimes | None] = {}
    notes: dict[str, str] = {}
    jobs: list[JobEstimate] = []
    for name, handle in handles.items():
        data = datasets[name]
        try:
            times[name] = measure_step_times(handle.module, sample_inputs(data, min(plan.run.batch_size, MEASURE_BATCH)),
                                             device=device)
        except Exception as exc:  # a model that cannot be timed is "unknown", never zero
            times[name] = None
            notes[name] = f"could not time the model: {type(exc).__name__}: {exc}"
        if training and training.get(name):
            jobs.append(estimate_job(name, "train", training[name], times[name], notes.get(name, "")))
        for sname in suites:
            suite = suite_for(plan, sname)
            if suite.applicable(handle, data) is not None:
                continue
            ctx = job_context(plan, name, sname, data, device)
            try:
                works = suite.cost(handle, data, ctx)
            except Exception as exc:
                jobs.append(JobEstimate(name, sname, None, note=f"cost hook failed: {type(exc).__name__}: {exc}"))
                continue
            jobs.append(estimate_job(name, sname, works, times[name], notes.get(name, "")))
    return PlanEstimate(device=str(device), jobs=jobs, times=times, notes=notes)


def fit_budget(suite: Any, handle: Any, data: Any, ctx: Any, times: StepTimes | None, limit_s: float,
               explicit: Iterable[str] = ()) -> tuple[Any, list[str]]:
    """Scale the suite's `budget_parameters` down (halving each in turn, never below its
    floor, never one the plan set explicitly) until its estimate fits `limit_s`. Returns
    the suite to run and one note per parameter changed ("budget reduced from X to Y to fit
    Z on DEVICE"); the suite unchanged and no notes when it fits or cannot be estimated."""
    import dataclasses

    from workbench.progress import format_duration

    if times is None or not suite.budget_parameters:
        return suite, []

    def seconds(s: Any) -> float | None:
        works = s.cost(handle, data, ctx)
        return None if works is None else estimate_job("", "", works, times).seconds

    before = seconds(suite)
    if before is None or before <= limit_s:
        return suite, []
    explicit = set(explicit)
    original = dict(dataclasses.asdict(suite.params))
    current = suite
    for param, floor in suite.budget_parameters:
        if param in explicit:
            continue
        while True:
            value = getattr(current.params, param)
            if not isinstance(value, int) or value <= floor:
                break
            trial = type(current)(dataclasses.replace(current.params, **{param: max(floor, value // 2)}))
            current = trial
            est = seconds(current)
            if est is None or est <= limit_s:
                break
        est = seconds(current)
        if est is not None and est <= limit_s:
            break
    after = seconds(current)
    where = f"{format_duration(limit_s)} on {getattr(ctx.device, 'type', ctx.device)}"
    notes = [f"{k} reduced from {original[k]} to {v} to fit {where} (estimate {format_duration(before)} -> "
             f"{format_duration(after or 0.0)})"
             for k, v in dataclasses.asdict(current.params).items() if v != original[k]]
    return current, notes


def estimate_plan(plan: Any, *, suites: Sequence[str] | None = None, models: Sequence[str] | None = None,
                  device: str | None = None) -> PlanEstimate:
    """The estimate of a plan before anything trains: each model is built with its initial
    weights (only its speed matters) and timed on the device; training that the cache does
    not already hold is counted too. Used by `workbench validate`."""
    import dataclasses
    import os
    from pathlib import Path

    from workbench.build import load_plan_dataset, model_factory
    from workbench.runner import selected_suites
    from workbench.suite import ModelHandle
    from workbench.torch_utils import resolve_device
    from workbench.train import TrainConfig, cache_key, output_kind_for

    import torch

    dev = resolve_device(device or plan.run.device)
    if plan.run.threads and dev.type == "cpu":  # timed as the run will run
        torch.set_num_threads(plan.run.threads)
    cache_dir = Path(plan.run.cache or os.environ.get("WORKBENCH_CACHE", ".workbench/cache"))
    names = list(models) if models else [m.name for m in plan.models]
    handles, datasets, training = {}, {}, {}
    for name in names:
        spec = plan.model(name)
        data = load_plan_dataset(plan, spec.dataset)
        train_dict = dict(spec.train)
        train_dict.setdefault("seed", plan.run.seed)
        cfg = TrainConfig.from_dict(train_dict)
        make, base_spec, _ = model_factory(spec, data)
        module = make().to(dev)
        trains = bool(spec.arch or spec.train) and not spec.checkpoint and not getattr(spec, "untrained", False)
        if trains:
            key = cache_key({**base_spec, "overrides": {}}, data, cfg)
            if not (cache_dir / f"{base_spec.get('arch', 'model')}-{key}.pt").exists():
                training[name] = training_work(len(data.train), len(data.val), dataclasses.asdict(cfg))
        # whether the run's handle will have a trainer (workbench.build.build_model): every
        # model the workbench can build can be retrained (ensemble siblings, noise-trained
        # variants), except a checkpoint holding a whole module and a pretrained HF model
        # with its own head (only a linear probe retrains)
        # (in build_model's order: a checkpoint first, then a pretrained HF model)
        if spec.checkpoint:
            retrainable = bool(spec.arch or spec.factory)
        elif spec.arch == "hf":
            retrainable = getattr(getattr(module, "config", None), "kind", None) == "linear_probe"
        else:
            retrainable = True
        handles[name] = ModelHandle(name=name, module=module, arch=spec.arch or "custom", task=data.task,
                                    output=output_kind_for(module, data), train_config=dataclasses.asdict(cfg),
                                    trainer=(lambda **_: None) if retrainable else None)
        datasets[name] = data
    return estimate_jobs(plan, handles, datasets, list(suites) if suites else selected_suites(plan),
                         device=dev, training=training)


def announce(setup: Any) -> None:
    """At the start of `workbench run` (local or Ray), after the models are built: log the
    estimate of the jobs still to run, keep it in the provenance, and keep each model's step
    times, and fit the budget parameters of the jobs that would not fit the time limit
    (`budget_overrides`, applied by `apply_budget` in every executor)."""
    plan, env = setup.plan, setup.env
    todo = [(m, s) for m, s in setup.jobs if (m, s) not in setup.done]
    if not todo:
        return
    names = list(dict.fromkeys(m for m, _ in todo))
    handles = {n: env.model(n) for n in names}
    datasets = {n: env.dataset(plan.model(n).dataset) for n in names}
    suites = list(dict.fromkeys(s for _, s in todo))
    est = estimate_jobs(plan, handles, datasets, suites, device=env.device)
    est.jobs = [j for j in est.jobs if (j.model, j.suite) in set(todo)]
    limit_s = 60.0 * plan.run.time_limit_minutes
    for line in est.lines(limit_s=limit_s):
        env.log(line)
    setup.provenance["estimate"] = est.to_dict()
    env.step_times = est.times
    env.budget_overrides = {}
    if not plan.run.fit_budget:
        return
    for (model, sname), seconds in job_limits(est.jobs, {s: suite_for(plan, s) for s in suites}, limit_s).items():
        suite, data = suite_for(plan, sname), datasets[model]
        ctx = job_context(plan, model, sname, data, env.device)
        fitted, notes = fit_budget(suite, handles[model], data, ctx, est.times.get(model), seconds,
                                   explicit=plan.suites.get(sname, {}))
        if notes:
            import dataclasses

            before = dataclasses.asdict(suite.params)
            changed = {k: v for k, v in dataclasses.asdict(fitted.params).items() if v != before[k]}
            env.budget_overrides[(model, sname)] = (changed, notes)
            for note in notes:
                env.log(f"  {model}/{sname}: {note}")
    setup.provenance["budget_reduced"] = {f"{m}/{s}": notes for (m, s), (_, notes) in env.budget_overrides.items()}


def job_limits(jobs: Sequence[JobEstimate], suites: dict[str, Any], limit_s: float) -> dict[tuple[str, str], float]:
    """The seconds each scalable job may take so that the plan fits `limit_s`: nothing when
    it fits already; else the jobs whose suite has budget parameters share what the other
    jobs leave (at least a tenth of the limit), in proportion to their estimates."""
    scalable = [j for j in jobs if j.seconds is not None and getattr(suites.get(j.suite), "budget_parameters", ())]
    fixed = sum(j.seconds for j in jobs if j.seconds is not None and j not in scalable)
    scal = sum(j.seconds for j in scalable)
    if not scalable or fixed + scal <= limit_s:
        return {}
    factor = max(limit_s - fixed, 0.1 * limit_s) / scal
    return {(j.model, j.suite): j.seconds * factor for j in scalable}


def apply_budget(env: Any, suite: Any, model: str) -> tuple[Any, list[str]]:
    """The suite with the budget the run's start decided for this job (`announce`, in the
    driver; the Ray executor hands the same decisions to its workers), and the notes saying
    so; the suite unchanged and no notes otherwise."""
    import dataclasses

    changed, notes = getattr(env, "budget_overrides", {}).get((model, suite.name), ({}, []))
    if not changed:
        return suite, []
    return type(suite)(dataclasses.replace(suite.params, **changed)), list(notes)
