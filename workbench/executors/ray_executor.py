"""Run a plan's jobs as Ray tasks: `workbench run PLAN --executor ray [--address ...]`.

The plan becomes independent jobs, one per (model, suite), and with `shards > 1` the job
of every suite that shards (its `Suite.shards` hook) becomes one task per piece (an
example range, or any unit the suite chooses), combined exactly in the driver by the
suite's `combine` (see `workbench.executors.jobs`). Each task
declares its CPU/GPU needs (`num_cpus`, `num_gpus`) so Ray places it.

What matches the local executor (`workbench.runner.run_plan`) and why:
  * numbers: a job's seed is `derive_seed(run seed, model, suite)`, independent of where
    and when it runs; workers run the same `execute_job`.
  * models: the driver builds (and trains, through the on-disk training cache) every
    model before fanning out, so workers load the trained weights from the cache instead
    of training them again. The cache directory must be reachable from every worker
    (one machine, or a shared filesystem on a cluster).
  * store and run directory: the driver alone writes them, as results arrive; workers
    return their artifact files with their results.
  * failures: a suite's own exception is an 'error' result (as locally). A task that dies
    (worker crash, node loss) is retried `max_retries` times by Ray; a task that still
    fails, or raises outside a suite, becomes an 'error' result with the error, its
    traceback in `logs/SUITE-MODEL.txt`, and every other job still completes.
    Configuration, data and model errors are found in the driver before any task runs
    and fail the run as they do locally.

Ray is an optional extra (`pip install "workbench[ray]"`); importing this module does
not import it. With no `address` and no Ray already initialised, a local cluster is
started for the run and shut down after it.
"""

from __future__ import annotations

import os
import time
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.config import Plan
from workbench.errors import ConfigError, WorkbenchError, check_number
from workbench.records import SuiteResult
from workbench.store import Store

RAY_REQUIREMENT = "ray[default]>=2.9"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "`--executor ray` needs Ray, which is not installed. Install the optional extra: "
            f"pip install \"workbench[ray]\" (or pip install \"{RAY_REQUIREMENT}\")."
        ) from exc
    return ray


def _gpus_per_task(device: str, num_gpus: float | None, cluster: dict[str, float]) -> float:
    if num_gpus is not None:
        check_number("num_gpus", num_gpus, low=0)
        return float(num_gpus)
    if device == "cpu":
        return 0.0
    has_gpu = cluster.get("GPU", 0) > 0
    if device.startswith("cuda") and not has_gpu:
        raise ConfigError(
            f"Device {device!r} was requested but the Ray cluster has no GPU resources ({cluster}); "
            "use --device cpu or add GPU nodes."
        )
    return 1.0 if has_gpu else 0.0


LOG_FLUSH_S = 1.5  # seconds left to Ray's log monitor before shutdown


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on an unreachable HOST:PORT (ray.init itself waits minutes for a GCS)."""
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"Expected a Ray address 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got {address!r}.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"Could not reach a Ray cluster at {address!r} ({exc}). Start one (`ray start --head` on the head "
            "node), pass its HOST:PORT, or leave out --address to start a local cluster."
        ) from exc


def _error_result(model: str, suite: str, dataset: str, reason: str) -> SuiteResult:
    return SuiteResult(suite=suite, model=model, dataset=dataset, status="error", reason=reason[:2000])


def _describe_failure(exc: BaseException, max_retries: int) -> tuple[str, str]:
    """(one-line reason, full text for the log file) of a failed Ray task."""
    name = type(exc).__name__
    cause = getattr(exc, "cause", None)
    if name in ("WorkerCrashedError", "NodeDiedError", "OwnerDiedError", "ObjectLostError"):
        reason = f"{name}: the worker running the job died (after {max_retries} retries)"
    elif cause is not None:
        reason = f"{type(cause).__name__}: {cause}"
    else:
        reason = f"{name}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    return reason, "".join(traceback.format_exception(exc))


def _faults_from_env() -> dict[str, str]:
    """Fault injection for the executor's own tests: $WORKBENCH_RAY_FAULTS as a JSON object."""
    import json

    text = os.environ.get("WORKBENCH_RAY_FAULTS", "").strip()
    if not text:
        return {}
    try:
        faults = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"$WORKBENCH_RAY_FAULTS must be a JSON object, got {text[:80]!r} ({exc}).") from None
    if not isinstance(faults, dict):
        raise ConfigError(f"$WORKBENCH_RAY_FAULTS must be a JSON object, got {type(faults).__name__}.")
    return {str(k): v for k, v in faults.items()}


def run_plan_ray(
    plan: Plan,
    *,
    suites: list[str] | None = None,
    models: list[str] | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    store: Store | None = None,
    address: str | None = None,
    log: Callable[[str], None] = print,
    shards: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    max_retries: int = 2,
    init_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Run a validated plan on Ray and write results, reports and the store row like
    `workbench.runner.run_plan`; returns its `RunOutcome`.

    address: a Ray cluster ("auto", "HOST:PORT", "ray://HOST:10001"); None starts a local
      cluster unless Ray is already initialised in this process (then that one is used).
    shards: example ranges per job for suites that shard (`Suite.shards`; 1 = no sharding).
    num_cpus / num_gpus: resources each task declares (num_gpus None: 1 when the device
      is cuda, or auto with GPUs in the cluster; else 0).
    max_retries: Ray retries of a task whose worker died (system failures only).
    init_kwargs: extra `ray.init` arguments when this call starts Ray.

    Tests of the failure handling inject faults through $WORKBENCH_RAY_FAULTS, a JSON object
    {"MODEL/SUITE" or "MODEL/SUITE#SHARD": "raise" | "crash" | "crash_once"} (never set it in
    a real run), so no test-only argument is part of this signature.
    """
    from workbench.executors import jobs as J
    from workbench.runner import RunOutcome
    from workbench.runsetup import complete_run, fail_run, prepare_run

    check_number("shards", shards, low=1, integer=True)
    check_number("num_cpus", num_cpus, low=0)
    check_number("max_retries", max_retries, low=0, integer=True)
    _faults = _faults_from_env()
    for key, kind in _faults.items():
        if kind not in J.FAULT_KINDS:
            raise ConfigError(f"Expected fault kinds in {J.FAULT_KINDS}, got {kind!r} for {key!r}.")
    ray = _import_ray()

    device_name = device or plan.run.device
    # The run set-up the local executor uses: selection, run row, every model built (and
    # trained, through the on-disk cache the workers read) and checked before any task.
    setup = prepare_run(plan, suites=suites, models=models, device=device, out=out, store=store, log=log,
                        progress=plan.run.progress, executor="ray")
    store, env, run_id, run_dir = setup.store, setup.env, setup.run_id, setup.run_dir.resolve()
    model_names, suite_names, cache_dir, raw = setup.model_names, setup.suite_names, env.cache_dir, setup.provenance["plan"]
    started_here = False
    pending: dict[Any, tuple[str, str, int | None]] = {}
    try:
        if not ray.is_initialized():
            init_opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            init_opts.update(init_kwargs or {})
            _probe(address)
            try:
                ray.init(address=address, **init_opts)
            except ConnectionError as exc:
                raise ConfigError(
                    f"Could not connect to a Ray cluster at {address!r}: {exc}. Start one (`ray start --head` on "
                    "the head node), pass its HOST:PORT, or leave out --address to start a local cluster."
                ) from exc
            started_here = True
        elif address:
            log(f"  ray: already initialised in this process; using that cluster, not {address!r}")
        cluster = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        gpus = _gpus_per_task(device_name, num_gpus, cluster)
        log(f"  ray: cluster {cluster}, each task {num_cpus:g} CPU / {gpus:g} GPU, up to {max_retries} retries")
        spec = J.JobSpec(plan=raw, plan_source=plan.source, run_id=run_id, device=device_name,
                         cache_dir=str(cache_dir), faults=dict(_faults or {}),
                         budgets=dict(getattr(setup.env, "budget_overrides", {})))
        spec_ref = ray.put(spec)
        task_opts = {"num_cpus": num_cpus, "num_gpus": gpus, "max_retries": max_retries, "retry_exceptions": False}
        job_task = ray.remote(J.run_job)
        shard_task = ray.remote(J.run_shard)

        jobs = [(m, s) for m in model_names for s in suite_names]
        shard_plan: dict[tuple[str, str], list[Any]] = {}
        for m, s in jobs:
            pieces = J.plan_shards(env, m, s, shards)  # the suite's own sharding hook
            if pieces:
                shard_plan[(m, s)] = pieces
                for i, piece in enumerate(pieces):
                    ref = shard_task.options(name=f"{m}/{s}#{i}", **task_opts).remote(spec_ref, m, s, piece, i)
                    pending[ref] = (m, s, i)
            else:
                pending[job_task.options(name=f"{m}/{s}", **task_opts).remote(spec_ref, m, s)] = (m, s, None)

        results: dict[tuple[str, str], SuiteResult] = {}
        shard_out: dict[tuple[str, str], list[dict[str, Any]]] = {j: [] for j in shard_plan}
        where: dict[str, Any] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            m, s, shard = pending.pop(ref)
            if (m, s) in results:  # a sibling shard already failed this job
                continue
            dataset = plan.model(m).dataset
            try:
                out_obj = ray.get(ref)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # the task failed after its retries: report it, keep the rest
                reason, text = _describe_failure(exc, max_retries)
                what = f"shard {shard} of the job" if shard is not None else "the job"
                log_dir = run_dir / "logs"
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / f"{s}-{m}.txt").write_text(text)
                res = _error_result(m, s, env.dataset(dataset).name, f"ray task failed ({what}): {reason}")
            else:
                key = f"{m}/{s}" if shard is None else f"{m}/{s}#{shard}"
                where[key] = {**out_obj["where"], "seconds": round(float(out_obj["seconds"]), 3)}
                if shard is None:
                    for rel, blob in out_obj["files"].items():
                        path = run_dir / rel
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(blob)
                    res = SuiteResult.from_dict(out_obj["result"])
                else:
                    shard_out[(m, s)].append(out_obj)
                    if len(shard_out[(m, s)]) < len(shard_plan[(m, s)]):
                        continue
                    try:
                        res = J.combine_shards(env, m, s, shard_out[(m, s)], shard_plan[(m, s)], run_id, run_dir)
                    except WorkbenchError as exc:
                        res = _error_result(m, s, env.dataset(dataset).name, f"combining shards failed: {exc}")
            results[(m, s)] = res
            store.add_result(run_id, res)
            env.timings[f"{s}:{m}"] = res.duration_s or 0.0
            status = res.status if res.status == "ok" else f"{res.status}: {res.reason}"
            n_sh = len(shard_plan.get((m, s), []))
            shards_note = f"  ({n_sh} shards)" if n_sh else ""
            log(f"  {m:<22} {s:<12} {res.duration_s or 0:6.1f} s  {status[:120]}{shards_note}")
    except BaseException as exc:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort; the cluster may be gone
                pass
        fail_run(setup, exc)
        raise
    finally:
        if started_here:
            # Ray ships worker output to the driver from a log monitor that polls the workers'
            # files; shutting down at once loses their last lines (the closing progress lines)
            time.sleep(LOG_FLUSH_S)
            ray.shutdown()

    executor = {
        "kind": "ray", "address": address, "ray_version": getattr(ray, "__version__", None),
        "cluster_resources": cluster, "task_resources": {"num_cpus": num_cpus, "num_gpus": gpus},
        "max_retries": max_retries, "shards": {f"{m}/{s}": [J.describe_piece(piece) for piece in v]
                                               for (m, s), v in shard_plan.items()},
        "tasks": where, "driver_pid": os.getpid(),
    }
    try:
        record, reports, gate = complete_run(setup, results, extra_provenance={"executor": executor}, log=log)
    except BaseException as exc:
        fail_run(setup, exc)
        raise
    return RunOutcome(run=record, run_dir=run_dir, reports=reports, gate=gate)
