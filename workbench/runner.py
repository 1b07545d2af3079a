"""Plan -> models x suites -> records.

The unit of work is a job (model, suite). `execute_job` is a plain function of
(plan, job, run directory): the local executor calls it in-process with shared caches,
a distributed executor can call it in another process. Per-job seeds come from the run
seed and the job key, never from execution order, so every executor gives the same
numbers. Results are committed to the store job by job; `resume` skips finished jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import inspect
import json
import os
import platform
import secrets
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import Plan, build_plan
from workbench.errors import ConfigError, DataError, ModelError, WorkbenchError
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
    progress: bool = False
    datasets: dict[str, Any] = field(default_factory=dict)
    handles: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

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


def load_plan_dataset(plan: Plan, name: str) -> Any:
    """A dataset by plan name: a `[datasets.NAME]` table with a `source`, a built-in
    with options from its table, or a plain built-in name. Validated before use."""
    from workbench.data import loaders
    from workbench.registry import DATASETS

    table = dict(plan.datasets.get(name, {}))
    if "source" in table:
        table.setdefault("name", name)
        data = loaders.load_dataset(table, seed=int(table.pop("seed", 0)) if "seed" in table else 0)
    else:
        fn = DATASETS.get(name)
        try:
            data = fn(**table)
        except TypeError as exc:
            raise ConfigError(f"[datasets.{name}]: {exc}") from exc
    loaders.validate_dataset(data)
    return data


def _import_callable(ref: str) -> Callable[..., Any]:
    import importlib

    module, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"Cannot import module {module!r} for {ref!r}: {exc}") from exc
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ConfigError(f"Module {module!r} has no attribute {attr!r} (from {ref!r}).")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"{ref!r} is not callable.")
    return fn


def load_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> Any:
    """Load a checkpoint safely: `weights_only=True` unless the plan opts into pickles
    (`allow_pickle = true`), which prints a warning because a pickle can run code."""
    import torch

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"Checkpoint not found: {p}")
    if allow_pickle:
        warnings.warn(f"Loading {p} with weights_only=False: a pickle can execute arbitrary code. "
                      "Only do this for files you trust.", stacklevel=2)
        print(f"WARNING: loading {p} as a full pickle (allow_pickle=true); it can execute code.", file=sys.stderr)
        return torch.load(p, map_location="cpu", weights_only=False)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"Checkpoint {p} could not be loaded with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Save a state_dict, or set allow_pickle = true "
            "for this model if you trust the file."
        ) from exc


def _state_dict_of(blob: Any) -> dict[str, Any]:
    if isinstance(blob, dict) and "state_dict" in blob and isinstance(blob["state_dict"], dict):
        return blob["state_dict"]
    if isinstance(blob, dict):
        return blob
    raise ConfigError(f"Expected a state_dict (a dict of tensors) in the checkpoint, got {type(blob).__name__}.")


def model_factory(spec: Any, data: Any) -> tuple[Callable[..., Any], dict[str, Any], str]:
    """(make(**overrides) -> nn.Module, cache spec, source) for one model of a plan: a
    reference architecture, a user factory ("module:function", given `data=` when it takes
    it), or a checkpoint-only model (whose `make` raises: it cannot be rebuilt)."""
    from torch import nn

    from workbench.registry import MODELS

    if spec.arch:
        builder = MODELS.get(spec.arch)

        def make(**overrides: Any) -> nn.Module:
            return builder(data, size=spec.size, **{**spec.options, **overrides})

        return make, {"arch": spec.arch, "size": spec.size, "options": spec.options}, "reference"
    factory = _import_callable(spec.factory) if spec.factory else None

    def make(**overrides: Any) -> nn.Module:  # noqa: F811 (one of two builders)
        if factory is None:
            raise ConfigError(f"Model {spec.name!r} comes from a checkpoint only and cannot be rebuilt.")
        kwargs = {**spec.options, **overrides}
        params = inspect.signature(factory).parameters
        for key in ("data", "dataset"):
            if key in params and key not in kwargs:
                kwargs[key] = data
        module = factory(**kwargs)
        if not isinstance(module, nn.Module):
            raise ModelError(f"{spec.factory!r} returned {type(module).__name__}, expected a torch.nn.Module.")
        return module

    return make, {"factory": spec.factory, "options": spec.options}, "factory" if spec.factory else "checkpoint"


def build_handle(spec: Any, data: Any, *, device: Any, cache_dir: Path | None, run_seed: int,
                 log: Callable[[str], None] = print, progress: bool = False) -> Any:
    """Build (and train through the cache, where the plan says so) one model of a plan."""
    from torch import nn

    from workbench.suite import ModelHandle
    from workbench.train import TrainConfig, output_kind_for, train_cached

    train_dict = dict(spec.train)
    train_dict.setdefault("seed", run_seed)
    base_cfg = TrainConfig.from_dict(train_dict)

    make, base_spec, source = model_factory(spec, data)

    def trainer(seed: int | None = None, recipe: str | None = None, recipe_params: dict | None = None,
                epochs: int | None = None, **model_overrides: Any) -> nn.Module:
        cfg = dataclasses.replace(
            base_cfg,
            seed=base_cfg.seed if seed is None else int(seed),
            recipe=recipe or base_cfg.recipe,
            recipe_params=dict(recipe_params if recipe_params is not None else base_cfg.recipe_params),
            epochs=epochs or base_cfg.epochs,
        )
        s = {**base_spec, "overrides": model_overrides}
        res = train_cached(lambda: make(**model_overrides), s, data, cfg, device=device, cache_dir=cache_dir, log=log)
        res.module.train_seconds = res.seconds  # the original training time, also on a cache hit
        return res.module

    train_seconds = None
    if spec.checkpoint and not spec.arch and not spec.factory:
        blob = load_checkpoint(spec.checkpoint, allow_pickle=spec.allow_pickle)
        if not isinstance(blob, nn.Module):
            raise ConfigError(
                f"Checkpoint {spec.checkpoint} holds a {type(blob).__name__}, not a whole module; "
                "give `arch` or `factory` so the workbench can build the module and load this state_dict."
            )
        module = blob
        handle_trainer = None
    elif spec.checkpoint:
        module = make()
        state = _state_dict_of(load_checkpoint(spec.checkpoint, allow_pickle=spec.allow_pickle))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"Checkpoint {spec.checkpoint} does not fit model {spec.name!r}: {str(exc)[:400]}") from exc
        handle_trainer = trainer
    elif spec.arch or spec.train:
        res = train_cached(make, {**base_spec, "overrides": {}}, data, base_cfg, device=device,
                           cache_dir=cache_dir, progress=progress, log=log)
        module, train_seconds = res.module, res.seconds
        log(f"  {spec.name}: {'loaded from cache' if res.cache_hit else 'trained'} "
            f"(best epoch {res.best_epoch}, {res.seconds:.1f} s training)")
        handle_trainer = trainer
    else:
        module = make()
        handle_trainer = trainer
    module.to(device).eval()
    output = output_kind_for(module, data)
    cfg = getattr(module, "config", None)
    cfg_dict = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}
    return ModelHandle(
        name=spec.name, module=module, arch=spec.arch or "custom", task=data.task, output=output,
        config=cfg_dict, train_config=dataclasses.asdict(base_cfg), trainer=handle_trainer,
        train_seconds=train_seconds, source=source,
    )


def validate_model_output(handle: Any, data: Any, *, device: Any) -> None:
    """Check before any suite runs that the model's output fits the dataset."""
    import torch

    x = data.test.x[:4].to(device)
    module = handle.module
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:
        raise ModelError(
            f"Model {handle.name!r} failed on a batch of {data.name!r} with input shape {tuple(x.shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(out, tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"Model {handle.name!r} returned {type(out).__name__}, expected a tensor.")
    b = x.shape[0]
    expected: tuple[int | None, ...]
    kind = handle.output
    if kind == "logits":
        expected = (b, data.num_classes)
    elif kind == "mean":
        expected = (b,) if out.dim() == 1 else (b, 1)
    elif kind == "mean_logvar":
        expected = (b, 2)
    elif kind == "lm_logits":
        expected = (b, x.shape[1], data.vocab_size)
    else:
        raise ModelError(f"Model {handle.name!r} declares unknown output kind {kind!r}.")
    if tuple(out.shape) != expected:
        what = {"logits": f"{data.num_classes} classes", "lm_logits": f"vocab {data.vocab_size}"}.get(kind, kind)
        raise ModelError(
            f"Model {handle.name!r} outputs shape {tuple(out.shape)} on {data.name!r}, expected {expected} "
            f"({what}, output kind {kind!r})."
        )
    if not torch.isfinite(out).all():
        raise ModelError(f"Model {handle.name!r} produced non-finite outputs on {data.name!r}.")


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
                     batch_size=plan.run.batch_size, profile=plan.run.profile, log=env.log)
    reason = suite.applicable(handle, data)
    if reason:
        res = ctx.skip(reason)
    else:
        before = ModuleState.capture(handle.module)
        seed_everything(seed)
        try:
            res = suite.run(handle, data, ctx)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            log_dir = run_dir / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / f"{suite_name}-{model_name}.txt").write_text(traceback.format_exc())
            res = SuiteResult(suite=suite_name, model=model_name, dataset=data.name, status="error",
                              reason=f"{type(exc).__name__}: {exc}"[:2000], config=suite.config(), seed=seed)
        changes = before.diff(handle.module)
        if changes:
            before.restore(handle.module)
            res = SuiteResult(suite=suite_name, model=model_name, dataset=data.name, status="error",
                              reason="suite changed the model (restored): " + "; ".join(changes[:5]),
                              metrics=res.metrics, artifacts=res.artifacts, config=res.config, seed=seed)
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
    """Run a validated plan locally and write results, reports and the store row."""
    import torch

    from workbench.torch_utils import resolve_device

    dev = resolve_device(device or plan.run.device)
    if plan.run.threads and dev.type == "cpu":
        torch.set_num_threads(plan.run.threads)
    store = store or Store(plan.run.store)
    cache_dir = Path(plan.run.cache or os.environ.get("WORKBENCH_CACHE", ".workbench/cache"))
    model_names = [m.name for m in plan.models]
    if models:
        for m in models:
            plan.model(m)  # raises with did-you-mean
        model_names = [m for m in model_names if m in models]
    suite_names = selected_suites(plan, suites)

    done: dict[tuple[str, str], SuiteResult] = {}
    if resume:
        run_id = store.resolve_run_id(resume)
        info = store.run_info(run_id)
        stored = (info["provenance"] or {}).get("plan")
        if stored is not None and _canonical(stored) != _canonical(plan_to_raw(plan)):
            raise ConfigError(
                f"Run {run_id} was made from a different plan than the one given; resuming would mix "
                "results of two plans. Resume with the same plan (and --set values), or start a new run."
            )
        run_dir = Path(info["run_dir"])
        created_at = info["created_at"]
        for r in store.results(run_id):
            if r.status != "error":
                done[(r.model, r.suite)] = r
        log(f"resuming run {run_id}: {len(done)} finished jobs kept")
    else:
        run_id = new_run_id(plan.run.name)
        run_dir = Path(out or plan.run.out) / run_id
        created_at = now_iso()
    run_dir.mkdir(parents=True, exist_ok=True)
    provenance = {
        "git_sha": git_sha(), "versions": versions(), "device": str(dev), "device_info": device_info(dev),
        "seed": plan.run.seed, "plan": plan_to_raw(plan), "plan_source": plan.source,
        "suites": suite_names, "models": model_names, "profile": plan.run.profile,
        "argv": sys.argv[1:], "store": str(store.path),
    }
    store.begin_run(run_id, created_at, provenance, run_dir)
    show_progress = (plan.run.progress and sys.stderr.isatty()) or os.environ.get("WORKBENCH_PROGRESS") == "1"
    env = Environment(plan=plan, device=dev, cache_dir=cache_dir, log=log, progress=show_progress)
    jobs = [(m, s) for m in model_names for s in suite_names]
    results: dict[tuple[str, str], SuiteResult] = dict(done)
    t_run = time.perf_counter()
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="jobs", unit="job")
    try:
        with _sigterm_as_interrupt():
            _run_jobs(env, store, jobs, done, results, run_id, run_dir, bar, log)
            env.timings["total"] = time.perf_counter() - t_run
            provenance["timings_s"] = {k: round(v, 3) for k, v in env.timings.items()}
            ordered = [results[j] for j in jobs if j in results]
            record = RunRecord(run_id=run_id, created_at=created_at, provenance=provenance, results=tuple(ordered))
            reports, gate = write_outputs(record, run_dir, plan.gates, log=log)
            gate_status = None if gate is None else getattr(gate, "status", None)
            store.finish_run(run_id, "complete", now_iso(), provenance=provenance, gate_status=gate_status)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see _sigterm_as_interrupt): never shown as complete
        store.finish_run(run_id, "interrupted", now_iso())
        raise
    finally:
        if bar:
            bar.close()
    return RunOutcome(run=record, run_dir=run_dir, reports=reports, gate=gate)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (a scheduler, `kill`, a CI timeout) like Ctrl-C for the duration, so a
    terminated run is marked `interrupted` in the store instead of staying `running`."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_jobs(env: Environment, store: Store, jobs: list[tuple[str, str]], done: dict[tuple[str, str], SuiteResult],
              results: dict[tuple[str, str], SuiteResult], run_id: str, run_dir: Path, bar: Any,
              log: Callable[[str], None]) -> None:
    """Build and check every model that still has work (so a model whose output does not fit
    its data, or a dataset that fails validation, stops the run before any suite runs), then
    run the unfinished jobs, committing each result to the store as it lands."""
    try:
        for model_name in dict.fromkeys(m for m, s in jobs if (m, s) not in done):
            env.model(model_name)
    except (ConfigError, DataError, ModelError):
        store.finish_run(run_id, "failed", now_iso())
        raise
    for model_name, suite_name in jobs:
        if (model_name, suite_name) in done:
            if bar:
                bar.update(1)
            continue
        if bar:
            bar.set_description(f"{model_name} · {suite_name}")
        try:
            res = execute_job(env, model_name, suite_name, run_id, run_dir)
        except (ConfigError, DataError, ModelError):
            store.finish_run(run_id, "failed", now_iso())
            raise
        results[(model_name, suite_name)] = res
        store.add_result(run_id, res)
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
