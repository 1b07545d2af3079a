"""Plan -> models x suites -> records.

The unit of work is a job (model, suite). Building datasets and models lives in
`workbench.build`; the run set-up both executors share (selection, resume, run row,
models checked before any suite, failure marking, outputs) in `workbench.runsetup`. `execute_job` is a plain function of
(plan, job, run directory): the local executor calls it in-process with shared caches,
a distributed executor can call it in another process. Per-job seeds come from the run
seed and the job key, never from execution order, so every executor gives the same
numbers. Results are committed to the store job by job; `resume` skips finished jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import secrets
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.build import (_import_callable, _state_dict_of, build_handle, load_checkpoint,  # noqa: F401
                             load_plan_dataset, model_factory, validate_model_output)
from workbench.config import Plan
from workbench.records import RunRecord, SuiteResult
from workbench.store import Store


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(plan_name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in plan_name)[:40] or "run"
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=cwd or Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("workbench", "torch", "numpy", "scipy", "scikit-learn", "captum", "shap", "lime",
                "sacrebleu", "rouge-score", "plotly", "streamlit"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        idx = device.index or 0
        info["name"] = torch.cuda.get_device_name(idx)
        info["cuda"] = torch.version.cuda
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(idx)))
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def plan_to_raw(plan: Plan) -> dict[str, Any]:
    """The resolved plan as a TOML-shaped dict (no None values) that `build_plan` accepts."""
    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None and v != {} and not (k == "description" and v == "")}

    return {
        "run": clean(dataclasses.asdict(plan.run)),
        "models": [clean(dataclasses.asdict(m)) for m in plan.models],
        "datasets": plan.datasets,
        "suites": plan.suites,
        "gates": plan.gates,
    }


def _canonical(raw: dict[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, default=str)


@dataclass
class Environment:
    """Per-process caches: datasets and trained models are built once and shared by
    every suite that runs in this process."""

    plan: Plan
    device: Any
    cache_dir: Path | None
    log: Callable[[str], None] = print
    #: progress display inside jobs ("bar" | "log" | "off"); a bool is the plan's `run.progress`
    progress: bool | str = False
    datasets: dict[str, Any] = field(default_factory=dict)
    handles: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from workbench.progress import display_for

        self.progress = display_for(self.progress)

    def dataset(self, name: str) -> Any:
        if name not in self.datasets:
            t0 = time.perf_counter()
            self.datasets[name] = load_plan_dataset(self.plan, name)
            self.timings[f"data:{name}"] = time.perf_counter() - t0
        return self.datasets[name]

    def model(self, name: str) -> Any:
        if name not in self.handles:
            spec = self.plan.model(name)
            data = self.dataset(spec.dataset)
            t0 = time.perf_counter()
            handle = build_handle(spec, data, device=self.device, cache_dir=self.cache_dir,
                                  run_seed=self.plan.run.seed, log=self.log, progress=self.progress)
            validate_model_output(handle, data, device=self.device)
            self.timings[f"model:{name}"] = time.perf_counter() - t0
            self.handles[name] = handle
        return self.handles[name]


def selected_suites(plan: Plan, only: list[str] | None = None) -> list[str]:
    from workbench.registry import SUITES

    names = list(plan.run.suites) if plan.run.suites is not None else SUITES.names()
    names = [n for n in names if plan.suites.get(n, {}).get("enabled", True)]
    if only:
        for s in only:
            if s not in SUITES:
                from workbench.errors import unknown_name

                raise unknown_name("suite", s, SUITES.names())
        names = [n for n in only]
    return names


def _error_result(run_dir: Path, suite: str, model: str, dataset: str, reason: str, config: dict[str, Any],
                  seed: int) -> SuiteResult:
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{suite}-{model}.txt").write_text(traceback.format_exc())
    return SuiteResult(suite=suite, model=model, dataset=dataset, status="error", reason=reason[:2000],
                       config=config, seed=seed)


def execute_job(env: Environment, model_name: str, suite_name: str, run_id: str, run_dir: Path) -> SuiteResult:
    """Run one suite on one model; never raises for a suite's own failure (it becomes an
    'error' result). Checks that the suite left the model as it found it."""
    from workbench.registry import SUITES
    from workbench.suite import RunContext
    from workbench.torch_utils import ModuleState, derive_seed, seed_everything

    plan = env.plan
    spec = plan.model(model_name)
    seed = derive_seed(plan.run.seed, model_name, suite_name)
    t0 = time.perf_counter()
    suite_cls = SUITES.get(suite_name)
    suite = suite_cls.from_config(plan.suites.get(suite_name, {}), profile=plan.run.profile)
    handle = env.model(model_name)
    data = env.dataset(spec.dataset)
    ctx = RunContext(run_id=run_id, run_dir=run_dir, seed=seed, device=env.device, suite=suite_name,
                     model_name=model_name, dataset_name=data.name, max_samples=plan.run.max_samples,
                     batch_size=plan.run.batch_size, profile=plan.run.profile, log=env.log,
                     progress_display=env.progress)
    reason = suite.applicable(handle, data)
    budget_notes: list[str] = []
    if reason:
        res = ctx.skip(reason)
    else:
        from workbench.estimate import apply_budget

        suite, budget_notes = apply_budget(env, suite, model_name)
        before = ModuleState.capture(handle.module)
        seed_everything(seed)
        try:
            res = suite.run(handle, data, ctx)
        except KeyboardInterrupt:
            from workbench.usercode import is_real_interrupt

            if is_real_interrupt():
                raise
            exc_text = "KeyboardInterrupt raised inside the suite or the model's forward (not a Ctrl-C)"
            res = _error_result(run_dir, suite_name, model_name, data.name, exc_text, suite.config(), seed)
        except SystemExit as exc:
            res = _error_result(run_dir, suite_name, model_name, data.name,
                                f"SystemExit({exc.code!r}): sys.exit called inside the suite or the model's forward",
                                suite.config(), seed)
        except Exception as exc:
            res = _error_result(run_dir, suite_name, model_name, data.name, f"{type(exc).__name__}: {exc}",
                                suite.config(), seed)
        changes = before.diff(handle.module)
        if changes:
            before.restore(handle.module)
            res = SuiteResult(suite=suite_name, model=model_name, dataset=data.name, status="error",
                              reason="suite changed the model (restored): " + "; ".join(changes[:5]),
                              metrics=res.metrics, artifacts=res.artifacts, config=res.config, seed=seed)
    if budget_notes:
        res = dataclasses.replace(res, config={**res.config, "budget_reduced": budget_notes})
    return dataclasses.replace(res, duration_s=time.perf_counter() - t0)


@dataclass
class RunOutcome:
    run: RunRecord
    run_dir: Path
    reports: dict[str, Path]
    gate: Any = None


def run_plan(
    plan: Plan,
    *,
    suites: list[str] | None = None,
    models: list[str] | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    store: Store | None = None,
    resume: str | None = None,
    log: Callable[[str], None] = print,
) -> RunOutcome:
    """Run a validated plan locally and write results, reports and the store row. User
    modules import from the plan's folder and the current directory; a failure ends the
    run `failed` with its reason (see `workbench.runsetup`)."""
    from workbench.runsetup import complete_run, fail_run, prepare_run
    from workbench.usercode import import_dirs, signals_as_interrupt

    from workbench.progress import display_for

    display = display_for(plan.run.progress)  # a bar on a terminal, log lines elsewhere (WORKBENCH_PROGRESS)
    show_progress = display == "bar"
    with import_dirs([plan.base_dir, Path.cwd()]), signals_as_interrupt():
        setup = prepare_run(plan, suites=suites, models=models, device=device, out=out, store=store, resume=resume,
                            log=log, progress=display)
        results: dict[tuple[str, str], SuiteResult] = dict(setup.done)
        bar = None
        try:
            if show_progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(setup.jobs), desc="jobs", unit="job")
            _run_jobs(setup, results, bar, log)
            record, reports, gate = complete_run(setup, results, log=log)
        except BaseException as exc:
            fail_run(setup, exc)
            raise
        finally:
            if bar:
                bar.close()
    return RunOutcome(run=record, run_dir=setup.run_dir, reports=reports, gate=gate)


def _run_jobs(setup: Any, results: dict[tuple[str, str], SuiteResult], bar: Any, log: Callable[[str], None]) -> None:
    """Run the unfinished jobs (models were built and checked by `prepare_run`), committing
    each result to the store as it lands."""
    env, store = setup.env, setup.store
    for model_name, suite_name in setup.jobs:
        if (model_name, suite_name) in setup.done:
            if bar:
                bar.update(1)
            continue
        if bar:
            bar.set_description(f"{model_name} · {suite_name}")
        res = execute_job(env, model_name, suite_name, setup.run_id, setup.run_dir)
        results[(model_name, suite_name)] = res
        store.add_result(setup.run_id, res)
        env.timings[f"{suite_name}:{model_name}"] = res.duration_s or 0.0
        status = res.status if res.status == "ok" else f"{res.status}: {res.reason}"
        log(f"  {model_name:<22} {suite_name:<12} {res.duration_s or 0:6.1f} s  {status[:120]}")
        if bar:
            bar.update(1)


def write_outputs(record: RunRecord, run_dir: Path, gates: dict[str, Any] | None,
                  log: Callable[[str], None] = print) -> tuple[dict[str, Path], Any]:
    """results.json always (atomically); the HTML/Markdown/JUnit reports and gate
    verdicts through workbench.reporting and workbench.gates."""
    from workbench.reporting import write_reports

    gate = None
    if gates and gates.get("rules"):
        from workbench.gates import evaluate_gates, parse_gates

        cfg = parse_gates(gates, source="plan [gates]").absolute_only()
        if cfg.rules:  # change-against-baseline rules run in `workbench gate --baseline`
            gate = evaluate_gates(record, cfg, run_dir=run_dir)
    reports = write_reports(record, run_dir, gate_outcome=gate)
    return reports, gate
