"""The run set-up the local and Ray executors share, and how every run ends.

`prepare_run` turns a validated plan and the command line's selection into a `RunSetup`:
device, store, selection (models x suites), the run id and directory (a bad `--out` is a
clear error before the store is touched), `--resume` checks, the `running` row, and every
model with work built and checked against its data before any suite runs. Problems of all
models are reported together. From the moment the row exists, the run ends in exactly one
of three ways: `complete_run` (complete), `fail_run` (failed, with the reason in the
store and the details in `logs/run.txt`), or interrupted (Ctrl-C/SIGTERM). Nothing is
left `running` except by SIGKILL.

Provenance gains what the user must know about the numbers: each dataset's split and
transforms, models evaluated untrained, warnings (test rows that may overlap a
checkpoint's training data), and gate rules not run because their suite was not selected.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import Plan
from workbench.errors import ConfigError, ProblemsError, UserCodeError, WorkbenchError
from workbench.records import RunRecord, SuiteResult
from workbench.runner import (Environment, _canonical, device_info, git_sha, new_run_id, now_iso, plan_to_raw,
                              selected_suites, versions)
from workbench.store import Store

OVERLAP_WARNING = ("model {model!r} was loaded from a checkpoint and dataset {dataset!r} has no split of yours: the "
                   "workbench's test rows may overlap the rows the model was trained on, which inflates every score. "
                   "Give the split (split_column, split_files or a path table per split).")


@dataclass
class RunSetup:
    """Everything a run needs once set up; `jobs` are (model, suite) in report order."""

    plan: Plan
    store: Store
    env: Environment
    run_id: str
    run_dir: Path
    created_at: str
    provenance: dict[str, Any]
    model_names: list[str]
    suite_names: list[str]
    jobs: list[tuple[str, str]]
    done: dict[tuple[str, str], SuiteResult] = field(default_factory=dict)
    t_start: float = field(default_factory=time.perf_counter)


def _selection(plan: Plan, suites: list[str] | None, models: list[str] | None) -> tuple[list[str], list[str]]:
    from workbench.registry import SUITES

    model_names = [m.name for m in plan.models]
    if models:
        for m in models:
            plan.model(m)  # raises with did-you-mean
        model_names = [m for m in model_names if m in models]
    suite_names = selected_suites(plan, suites)
    for s in suite_names:  # bad suite parameters fail here, before anything runs
        SUITES.get(s).from_config(plan.suites.get(s, {}), profile=plan.run.profile)
    return model_names, suite_names


def _run_dir(out: str | Path, run_id: str) -> Path:
    """out/run_id, created; an unusable --out is a ConfigError (the store is not touched yet)."""
    base = Path(out)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"--out / [run] out {str(base)!r} is a file; expected a directory for the run's reports.")
    try:
        run_dir = base / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the run directory under --out / [run] out {str(base)!r}: "
                          f"{exc.strerror or exc}.") from None
    return run_dir


def prepare_run(plan: Plan, *, suites: list[str] | None = None, models: list[str] | None = None,
                device: str | None = None, out: str | Path | None = None, store: Store | None = None,
                resume: str | None = None, log: Callable[[str], None] = print, progress: bool = False,
                executor: str = "local") -> RunSetup:
    """Set a run up (see the module docstring); raises before the store is touched for a bad
    selection, `--resume` or `--out`, and marks the run failed for data and model problems."""
    import torch

    from workbench.torch_utils import resolve_device

    dev = resolve_device(device or plan.run.device)
    if plan.run.threads and dev.type == "cpu":
        torch.set_num_threads(plan.run.threads)
    store = store or Store(plan.run.store)
    cache_dir = Path(plan.run.cache or os.environ.get("WORKBENCH_CACHE", ".workbench/cache")).resolve()
    done: dict[tuple[str, str], SuiteResult] = {}
    model_names, suite_names = _selection(plan, suites, models)  # unknown names fail first
    if resume:
        run_id = store.resolve_run_id(resume)
        info = store.run_info(run_id)
        prov = info["provenance"] or {}
        stored = prov.get("plan")
        if stored is not None and _canonical(stored) != _canonical(plan_to_raw(plan)):
            raise ConfigError(
                f"Run {run_id} was made from a different plan than the one given; resuming would mix "
                "results of two plans. Resume with the same plan (and --set values), or start a new run."
            )
        model_names, suite_names = _selection(plan, prov.get("suites"), prov.get("models"))
        for flag, given, own in (("--suite", suites, suite_names), ("--model", models, model_names)):
            if given and set(given) != set(own):
                raise ConfigError(
                    f"--resume {run_id} continues that run's own selection ({flag} {' '.join(own)}); a different "
                    f"{flag} would leave it partial. Drop {flag}, or start a new run with it."
                )
        run_dir = Path(info["run_dir"])
        created_at = info["created_at"]
        for r in store.results(run_id):
            if r.status != "error":
                done[(r.model, r.suite)] = r
        log(f"resuming run {run_id}: {len(done)} finished jobs kept")
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_id = new_run_id(plan.run.name)
        run_dir = _run_dir(out or plan.run.out, run_id)
        created_at = now_iso()
    provenance: dict[str, Any] = {
        "git_sha": git_sha(), "versions": versions(), "device": str(dev), "device_info": device_info(dev),
        "seed": plan.run.seed, "plan": plan_to_raw(plan), "plan_source": plan.source, "plan_dir": plan.base_dir,
        "suites": suite_names, "models": model_names, "profile": plan.run.profile,
        "argv": sys.argv[1:], "store": str(store.path), "executor": {"kind": executor},
    }
    store.begin_run(run_id, created_at, provenance, run_dir)
    env = Environment(plan=plan, device=dev, cache_dir=cache_dir, log=log, progress=progress)
    jobs = [(m, s) for m in model_names for s in suite_names]
    setup = RunSetup(plan=plan, store=store, env=env, run_id=run_id, run_dir=run_dir, created_at=created_at,
                     provenance=provenance, model_names=model_names, suite_names=suite_names, jobs=jobs, done=done)
    try:
        build_models(setup, [m for m in dict.fromkeys(m for m, s in jobs if (m, s) not in done)])
    except BaseException as exc:
        fail_run(setup, exc)
        raise
    from workbench.estimate import announce

    try:
        announce(setup)
    except Exception as exc:  # the estimate is a guide; a model that cannot be timed must not stop the run
        log(f"estimate unavailable: {type(exc).__name__}: {exc}")
    return setup


def build_models(setup: RunSetup, names: list[str]) -> None:
    """Build and check every named model (and its dataset), collecting the problems of all
    of them; then record what the user must know about the data and weights."""
    errors: list[WorkbenchError] = []
    details: list[str] = []
    for name in names:
        try:
            setup.env.model(name)
        except WorkbenchError as exc:
            if str(exc) not in map(str, errors):  # a broken dataset shared by several models is named once
                errors.append(exc)
                details.append(getattr(exc, "details", "") or traceback.format_exc())
    if len(errors) == 1:
        raise errors[0]
    if errors:
        err = ProblemsError([str(e) for e in errors])
        err.details = "\n\n".join(details)  # type: ignore[attr-defined]
        raise err
    record_data_notes(setup, names)


def record_data_notes(setup: RunSetup, names: list[str]) -> None:
    """provenance: data (split, transforms, label mapping per dataset), untrained models,
    warnings; and `notes`, the same in words for the reports. Warnings are also logged."""
    prov = setup.provenance
    data_info = prov.setdefault("data", {})
    notes: list[str] = prov.setdefault("notes", [])
    warnings_: list[str] = prov.setdefault("warnings", [])
    untrained: list[str] = prov.setdefault("untrained_models", [])
    for name in names:
        spec = setup.plan.model(name)
        ds = setup.env.dataset(spec.dataset)
        info = getattr(ds, "provenance", None) or {}
        if spec.dataset not in data_info:
            data_info[spec.dataset] = {"name": ds.name, "source": ds.source, **info}
            if info.get("transforms"):
                notes.append(f"dataset {spec.dataset!r}: " + "; ".join(info["transforms"]))
            elif ds.source.startswith(("user", "python function")):
                notes.append(f"dataset {spec.dataset!r}: values as given (no transform)")
            if info.get("split"):
                notes.append(f"dataset {spec.dataset!r} split: {info['split']}")
        if spec.untrained and name not in untrained:
            untrained.append(name)
            notes.append(f"model {name!r} is UNTRAINED (untrained = true): its scores are those of random initial weights")
        if spec.checkpoint and not info.get("user_split", False):
            text = OVERLAP_WARNING.format(model=name, dataset=spec.dataset)
            if text not in warnings_:
                warnings_.append(text)
                notes.append("WARNING: " + text)
                print(f"workbench: warning: {text}", file=sys.stderr, flush=True)


def fail_run(setup: RunSetup, exc: BaseException) -> None:
    """Mark the run failed (or interrupted, for a real Ctrl-C/SIGTERM) with a one-line
    reason, write the details to logs/run.txt and point the error message at them."""
    from workbench.usercode import is_real_interrupt

    if isinstance(exc, KeyboardInterrupt) and is_real_interrupt():
        setup.store.finish_run(setup.run_id, "interrupted", now_iso(), reason="interrupted (Ctrl-C or SIGTERM)")
        return
    if isinstance(exc, WorkbenchError):
        reason = str(exc)
    elif isinstance(exc, SystemExit):
        reason = f"exited with SystemExit({exc.code!r})"
    else:
        reason = f"internal error: {type(exc).__name__}: {exc}"
    log_path = setup.run_dir / "logs" / "run.txt"
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        details = getattr(exc, "details", "") or "".join(traceback.format_exception(exc))
        log_path.write_text(f"{reason}\n\n{details}")
        if isinstance(exc, UserCodeError) or getattr(exc, "details", ""):
            exc.args = (f"{exc.args[0] if exc.args else reason} (details: {log_path})", *exc.args[1:])
    except OSError:
        pass
    one_line = " ".join(reason.split())[:2000]
    setup.store.finish_run(setup.run_id, "failed", now_iso(), provenance=setup.provenance, reason=one_line)


def complete_run(setup: RunSetup, results: dict[tuple[str, str], SuiteResult], *,
                 extra_provenance: dict[str, Any] | None = None,
                 log: Callable[[str], None] = print) -> tuple[RunRecord, dict[str, Path], Any]:
    """Write results.json and the reports, evaluate the plan's absolute gate rules (those on
    a deselected suite or model are "not run"), and mark the run complete."""
    from workbench.runner import write_outputs

    prov = setup.provenance
    setup.env.timings["total"] = time.perf_counter() - setup.t_start
    prov["timings_s"] = {k: round(v, 3) for k, v in setup.env.timings.items()}
    prov.update(extra_provenance or {})
    ordered = [results[j] for j in setup.jobs if j in results]
    record = RunRecord(run_id=setup.run_id, created_at=setup.created_at, provenance=prov, results=tuple(ordered))
    gates, not_run = gates_for_selection(setup, record)
    if not_run:
        prov["gates_not_run"] = not_run
        prov.setdefault("notes", []).extend(f"gate rule not run ({r['reason']}): {r['rule']}" for r in not_run)
        for r in not_run:
            log(f"  gate rule not run ({r['reason']}): {r['rule']}")
        record = dataclasses.replace(record, provenance=prov)
    reports, gate = write_outputs(record, setup.run_dir, gates, log=log)
    gate_status = None if gate is None else getattr(gate, "status", None)
    setup.store.finish_run(setup.run_id, "complete", now_iso(), provenance=prov, gate_status=gate_status)
    return record, reports, gate


def gates_for_selection(setup: RunSetup, record: RunRecord) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The plan's [gates] without the rules that name a suite or model this run did not
    select (`--suite`, `--model`), and those rules with the reason. A rule that names no
    suite but matches no metric of a run with deselected suites counts as not selected too:
    its metric may come from one of them."""
    gates = setup.plan.gates
    if not gates or not gates.get("rules"):
        return gates, []
    from workbench.gates import find_metrics, parse_gates

    plan = setup.plan
    all_suites = set(selected_suites(plan, None))
    off_suites = all_suites - set(setup.suite_names)
    off_models = {m.name for m in plan.models} - set(setup.model_names)
    if not off_suites and not off_models:
        return gates, []
    cfg = parse_gates(gates, source="plan [gates]")
    run = record.to_dict()
    keep: list[Any] = []
    not_run: list[dict[str, str]] = []
    raw_rules = list(gates["rules"])
    for raw_rule, rule in zip(raw_rules, cfg.rules):
        sel = dict(rule.selectors)
        reason = None
        if str(sel.get("suite")) in off_suites:
            reason = "suite not selected"
        elif str(sel.get("model")) in off_models:
            reason = "model not selected"
        elif rule.kind == "absolute" and not find_metrics(run, rule.metric, rule.selectors) and (
                off_suites and "suite" not in sel or off_models and "model" not in sel):
            reason = "suite not selected" if off_suites else "model not selected"
        if reason:
            not_run.append({"rule": rule.text, "reason": reason})
        else:
            keep.append(raw_rule)
    return {**gates, "rules": keep}, not_run
