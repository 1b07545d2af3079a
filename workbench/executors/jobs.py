"""Job functions that run in other processes (Ray workers), and the exact-count helpers
that combine data shards.

They live in the installed package because a Ray worker imports a task function by
module name: a function defined in a script or a test file is not importable there.
Nothing here imports Ray; `ray_executor` wraps these functions with `ray.remote`.

A job is (model, suite), run by `workbench.runner.execute_job` exactly as the local
executor runs it: the per-job seed is `derive_seed(run seed, model, suite)`, so where a
job runs and in which order never changes its numbers. A worker rebuilds the plan from
its TOML-shaped dict (`plan_to_raw` -> `build_plan`) and keeps one `Environment` per
(plan, device, cache) for the tasks it runs, so datasets load and models come out of the
on-disk training cache once per worker process.

Workers never write into the run directory: each job writes into a private temporary
directory and returns the files it wrote (artifacts, logs) with its result; the driver
writes them under the run directory. So the driver is the only writer of the run
directory and the store, and no shared filesystem is needed between nodes.

Sharding goes through the suite's own hooks (`Suite.shards`, `run_shard`, `combine`; see
`workbench.suite`), so this module names no suite: `plan_shards` asks the suite for its
example ranges, `run_shard` computes one range in a worker (returning plain data, never
model state) and `combine_shards` rebuilds in the driver the result the unsharded job
gives, with its artifacts written under the run directory. The exact-count helpers below
(`ClassCounts`) are what a classification suite sums across shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import ConfigError, DataError, WorkbenchError
from workbench.suite import shard_slices  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.records import SuiteResult
    from workbench.runner import Environment
    from workbench.suite import ModelHandle, RunContext, Suite

#: Fault injection for tests of the executor's failure handling (see `JobSpec.faults`).
FAULT_KINDS = ("raise", "crash", "crash_once")


# ----------------------------------------------------------------- exact counts


@dataclass(frozen=True)
class ClassCounts:
    """Exact classification counts of one shard (or of several, summed).

    confusion: (K, K) int64, entry [i, j] = examples of true class i predicted as j.
    Counts add; accuracy and per-class scores are computed from the summed matrix.
    """

    confusion: np.ndarray

    def __post_init__(self) -> None:
        cm = np.asarray(self.confusion)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or not np.issubdtype(cm.dtype, np.integer):
            raise DataError(f"Expected a square integer confusion matrix, got {cm.dtype} of shape {cm.shape}.")
        if (cm < 0).any():
            raise DataError("Expected non-negative counts in the confusion matrix.")
        object.__setattr__(self, "confusion", cm.astype(np.int64))

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        """correct / n of the counts (NaN for no examples)."""
        return self.correct / self.n if self.n else float("nan")

    def __add__(self, other: "ClassCounts") -> "ClassCounts":
        if self.confusion.shape != other.confusion.shape:
            raise DataError(
                f"Cannot add counts over {self.confusion.shape[0]} and {other.confusion.shape[0]} classes."
            )
        return ClassCounts(self.confusion + other.confusion)


def class_counts(pred: Any, target: Any, num_classes: int) -> ClassCounts:
    """Counts of predicted vs true class ids. pred, target: (N,) ints in [0, num_classes)."""
    p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred).reshape(-1)
    t = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target).reshape(-1)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"Expected `num_classes` to be an int >= 1, got {num_classes!r}.")
    if p.shape != t.shape:
        raise DataError(f"Expected `pred` and `target` of equal length, got {p.shape[0]} and {t.shape[0]}.")
    for name, a in (("pred", p), ("target", t)):
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= num_classes):
            raise DataError(f"Expected `{name}` to hold class ids in [0, {num_classes}), got {a.dtype} "
                            f"in [{a.min()}, {a.max()}].")
    k = num_classes
    cm = np.bincount(t.astype(np.int64) * k + p.astype(np.int64), minlength=k * k).reshape(k, k)
    return ClassCounts(cm)


def combine_counts(parts: list[ClassCounts]) -> ClassCounts:
    """The sum of shard counts: the counts of the whole set."""
    if not parts:
        raise DataError("Expected at least one shard's counts, got none.")
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


# ----------------------------------------------------------------- job spec


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to rebuild the run: the resolved plan (TOML-shaped dict from
    `plan_to_raw`), the device name it resolves itself ("auto", "cpu", "cuda"), and the
    training cache directory (absolute) the driver filled before fanning out.

    faults: {"MODEL/SUITE": kind} for tests of failure handling only: "raise" raises in
    the job, "crash" kills the worker process (a system failure Ray retries),
    "crash_once" kills it on the first attempt only (a marker file under the system
    temp directory remembers the attempt).
    """

    plan: dict[str, Any]
    plan_source: str
    run_id: str
    device: str
    cache_dir: str | None
    faults: dict[str, str] = dataclasses.field(default_factory=dict)
    # (model, suite) -> (changed parameters, notes): the budgets the driver fitted to the time
    # limit (`workbench.estimate.announce`), applied in workers exactly as locally
    budgets: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = dataclasses.field(default_factory=dict)

    def env_key(self) -> str:
        payload = json.dumps([self.plan, self.device, self.cache_dir, sorted(map(repr, self.budgets.items()))],
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


_ENVS: "OrderedDict[str, Environment]" = OrderedDict()
_MAX_ENVS = 2  # a long-lived worker serving several runs keeps at most this many environments


def _worker_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def worker_environment(spec: JobSpec) -> "Environment":
    """This process's Environment for the spec (built on first use, then reused)."""
    from workbench.config import build_plan
    from workbench.runner import Environment
    from workbench.torch_utils import resolve_device

    key = spec.env_key()
    if key in _ENVS:
        _ENVS.move_to_end(key)
        return _ENVS[key]
    from workbench.progress import display_for

    plan = build_plan(spec.plan, source=spec.plan_source)
    # A worker's stderr is a file Ray forwards to the driver (ray.init(log_to_driver=True)):
    # its messages and progress go there as lines, never as a bar.
    display = display_for(plan.run.progress)
    env = Environment(plan=plan, device=resolve_device(spec.device),
                      cache_dir=Path(spec.cache_dir) if spec.cache_dir else None,
                      log=_worker_log, progress="log" if display == "bar" else display)
    env.budget_overrides = dict(spec.budgets)
    _ENVS[key] = env
    while len(_ENVS) > _MAX_ENVS:
        _ENVS.popitem(last=False)
    return env


def _where() -> dict[str, Any]:
    """Process, host and (inside Ray) node of the caller."""
    info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    try:  # only inside a Ray worker
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            info["node_id"] = ctx.get_node_id()
            info["worker_id"] = ctx.get_worker_id()
            gpus = ray.get_gpu_ids()
            if gpus:
                info["gpu_ids"] = [str(g) for g in gpus]
    except Exception:  # noqa: BLE001 - provenance only
        pass
    return info


def _maybe_fail(spec: JobSpec, model: str, suite: str, shard: int | None = None) -> None:
    key = f"{model}/{suite}" if shard is None else f"{model}/{suite}#{shard}"
    kind = spec.faults.get(key)
    if kind is None:
        return
    if kind == "raise":
        raise RuntimeError(f"injected failure in job {key}")
    marker = Path(tempfile.gettempdir()) / "workbench-faults" / f"{spec.run_id}-{key.replace('/', '-')}"
    if kind == "crash" or (kind == "crash_once" and not marker.exists()):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os._exit(1)  # a dead worker: Ray reports a system failure and retries the task


def _collect_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------- jobs


def run_job(spec: JobSpec, model: str, suite: str) -> dict[str, Any]:
    """Run one (model, suite) job in this process.

    Returns {"result": SuiteResult.to_dict(), "files": {path relative to the run
    directory: bytes}, "where": {pid, host, node_id...}, "seconds": wall time}.
    A suite's own exception is already an 'error' result (see `execute_job`); what
    escapes here is a failure of the job itself, which the executor reports.
    """
    from workbench.runner import execute_job

    t0 = time.perf_counter()
    _maybe_fail(spec, model, suite)
    env = worker_environment(spec)
    tmp = Path(tempfile.mkdtemp(prefix="wb-job-"))
    try:
        res = execute_job(env, model, suite, spec.run_id, tmp)
        files = _collect_files(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"result": res.to_dict(), "files": files, "where": _where(), "seconds": time.perf_counter() - t0}


def job_context(env: "Environment", model: str, suite_name: str, run_id: str, run_dir: Path
                ) -> tuple["Suite", "ModelHandle", "Dataset", "RunContext"]:
    """The suite, model, data and context of one (model, suite) job, built as the local
    executor builds them (same parameters, same per-job seed), for its shards."""
    from workbench.registry import SUITES
    from workbench.suite import RunContext
    from workbench.torch_utils import derive_seed

    plan = env.plan
    suite = SUITES.get(suite_name).from_config(plan.suites.get(suite_name, {}), profile=plan.run.profile)
    handle = env.model(model)
    data = env.dataset(plan.model(model).dataset)
    ctx = RunContext(run_id=run_id, run_dir=run_dir, seed=derive_seed(plan.run.seed, model, suite_name),
                     device=env.device, suite=suite_name, model_name=model, dataset_name=data.name,
                     max_samples=plan.run.max_samples, batch_size=plan.run.batch_size, profile=plan.run.profile,
                     log=env.log, progress_display=env.progress)
    from workbench.estimate import apply_budget

    suite, _ = apply_budget(env, suite, model)  # the budget the driver fitted, as in `execute_job`
    return suite, handle, data, ctx


def plan_shards(env: "Environment", model: str, suite_name: str, n_shards: int) -> list[Any] | None:
    """The pieces the (model, suite) job splits into, from the suite's `shards` hook, or
    None when it does not shard (fewer than 2 shards asked or given, suite not applicable,
    or a suite that does not shard)."""
    if n_shards < 2:
        return None
    suite, handle, data, ctx = job_context(env, model, suite_name, "plan", Path(tempfile.gettempdir()))
    if suite.applicable(handle, data):
        return None
    pieces = suite.shards(handle, data, ctx, n_shards)
    if not pieces or len(pieces) < 2:
        return None
    return list(pieces)


def run_shard(spec: JobSpec, model: str, suite_name: str, shard: Any, index: int) -> dict[str, Any]:
    """Piece `index` (`shard`, as `plan_shards` gave it) of a (model, suite) job, through
    the suite's `run_shard` hook with the job's own seed. Returns {"index", "shard",
    "part" (the suite's plain data), "where", "seconds"}. Anything the suite writes goes to
    a temporary directory that is removed."""
    from workbench.torch_utils import ModuleState, seed_everything

    t0 = time.perf_counter()
    _maybe_fail(spec, model, suite_name, index)
    env = worker_environment(spec)
    tmp = Path(tempfile.mkdtemp(prefix="wb-shard-"))
    try:
        suite, handle, data, ctx = job_context(env, model, suite_name, spec.run_id, tmp)
        before = ModuleState.capture(handle.module)
        seed_everything(ctx.seed)
        part = suite.run_shard(handle, data, ctx, shard)
        changes = before.diff(handle.module)
        if changes:
            before.restore(handle.module)
            raise WorkbenchError(f"{suite_name} shard changed the model (restored): " + "; ".join(changes[:5]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"index": index, "shard": shard, "part": part, "where": _where(), "seconds": time.perf_counter() - t0}


def combine_shards(env: "Environment", model: str, suite_name: str, shards: list[dict[str, Any]],
                   pieces: list[Any], run_id: str, run_dir: Path) -> "SuiteResult":
    """The (model, suite) result from the outputs of `run_shard` (any arrival order) for
    `pieces` (what `plan_shards` gave), through the suite's `combine` hook, with its
    artifacts written under `run_dir`. Raises WorkbenchError unless every piece came back
    exactly once, or when the suite finds the parts inconsistent."""
    from workbench.torch_utils import ModuleState, seed_everything

    t0 = time.perf_counter()
    what = f"{model}/{suite_name}"
    got = sorted(int(s["index"]) for s in shards)
    if got != list(range(len(pieces))):
        raise WorkbenchError(f"Shards of {what}: expected pieces 0..{len(pieces) - 1} once each, got {got}.")
    by_index = {int(s["index"]): s for s in shards}
    for i, piece in enumerate(pieces):
        if not _same_piece(by_index[i]["shard"], piece):
            raise WorkbenchError(f"Shard {i} of {what} is {by_index[i]['shard']!r}, expected {piece!r}.")
    parts = [(piece, by_index[i]["part"]) for i, piece in enumerate(pieces)]
    suite, handle, data, ctx = job_context(env, model, suite_name, run_id, run_dir)
    before = ModuleState.capture(handle.module)
    seed_everything(ctx.seed)
    res = suite.combine(handle, data, ctx, parts)
    changes = before.diff(handle.module)
    if changes:
        before.restore(handle.module)
        raise WorkbenchError(f"{suite_name} combine changed the model (restored): " + "; ".join(changes[:5]))
    compute = sum(float(s.get("seconds", 0.0)) for s in shards)
    return dataclasses.replace(res, duration_s=compute + time.perf_counter() - t0)


def _same_piece(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - e.g. arrays: compare their text
        return repr(a) == repr(b)


def describe_piece(piece: Any) -> Any:
    """A JSON-able description of a piece for the run's provenance."""
    if isinstance(piece, slice):
        return [piece.start, piece.stop]
    if isinstance(piece, (str, int, float)) or piece is None:
        return piece
    if isinstance(piece, (tuple, list)):
        return [describe_piece(p) for p in piece]
    return repr(piece)
