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

Sharding (`run_metrics_shard` + `combine_metrics_shards`): the metrics suite on a
classification task can be split into contiguous row ranges of the evaluated split.
Each shard returns exact counts (its confusion matrix) and its logits; the driver sums
the confusion matrices (accuracy = sum of correct / sum of n, never an average of shard
accuracies) and checks that the suite's report over the concatenated predictions (which
the bootstrap CIs need, in the original row order) agrees with those counts exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import ConfigError, DataError, WorkbenchError

if TYPE_CHECKING:
    import torch

    from workbench.records import SuiteResult
    from workbench.runner import Environment

#: Suites whose jobs `ray_executor` can split into data shards (and on which task).
SHARDABLE: dict[str, frozenset[str]] = {"metrics": frozenset({"classification"})}

#: Fault injection for tests of the executor's failure handling (see `JobSpec.faults`).
FAULT_KINDS = ("raise", "crash", "crash_once")


# ----------------------------------------------------------------- exact counts


def shard_slices(n: int, n_shards: int) -> list[slice]:
    """Contiguous row ranges covering [0, n) exactly once, sizes differing by at most one
    (no padding, no repeats; empty ranges when n < n_shards are dropped)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"Expected `n` to be an int >= 0, got {n!r}.")
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ConfigError(f"Expected `n_shards` to be an int >= 1, got {n_shards!r}.")
    base, extra = divmod(n, n_shards)
    out, start = [], 0
    for i in range(n_shards):
        stop = start + base + (1 if i < extra else 0)
        if stop > start:
            out.append(slice(start, stop))
        start = stop
    return out


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

    def env_key(self) -> str:
        payload = json.dumps([self.plan, self.device, self.cache_dir], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


_ENVS: "OrderedDict[str, Environment]" = OrderedDict()
_MAX_ENVS = 2  # a long-lived worker serving several runs keeps at most this many environments


def worker_environment(spec: JobSpec) -> "Environment":
    """This process's Environment for the spec (built on first use, then reused)."""
    from workbench.config import build_plan
    from workbench.runner import Environment
    from workbench.torch_utils import resolve_device

    key = spec.env_key()
    if key in _ENVS:
        _ENVS.move_to_end(key)
        return _ENVS[key]
    plan = build_plan(spec.plan, source=spec.plan_source)
    env = Environment(plan=plan, device=resolve_device(spec.device),
                      cache_dir=Path(spec.cache_dir) if spec.cache_dir else None,
                      log=lambda m: None, progress=False)
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


def _metrics_suite(plan: Any) -> Any:
    from workbench.registry import SUITES

    return SUITES.get("metrics").from_config(plan.suites.get("metrics", {}), profile=plan.run.profile)


def _evaluated_rows(plan: Any, suite: Any, data: Any) -> int:
    """Rows the metrics suite evaluates: min(split size, run max_samples, max_examples),
    as `RunContext.limit` computes it."""
    n = len(data.split(suite.params.split))
    for cap in (plan.run.max_samples, suite.params.max_examples):
        if cap is not None:
            n = min(n, int(cap))
    return n


def plan_metrics_shards(env: "Environment", model: str, n_shards: int) -> list[slice] | None:
    """The row ranges to shard the metrics job of `model` into, or None when the job does
    not shard (not a classification task, suite not applicable, fewer than 2 shards)."""
    if n_shards < 2:
        return None
    suite = _metrics_suite(env.plan)
    handle = env.model(model)
    data = env.dataset(env.plan.model(model).dataset)
    if data.task not in SHARDABLE["metrics"] or suite.applicable(handle, data):
        return None
    slices = shard_slices(_evaluated_rows(env.plan, suite, data), n_shards)
    return slices if len(slices) > 1 else None


def run_metrics_shard(spec: JobSpec, model: str, start: int, stop: int, index: int) -> dict[str, Any]:
    """Logits and exact counts of the metrics suite's classification on rows
    [start, stop) of the evaluated split, computed the way the suite computes them.

    Returns {"start", "stop", "logits": (n, K) float32, "confusion": (K, K) int64,
    "where", "seconds"}.
    """
    from workbench.suite import RunContext
    from workbench.torch_utils import ModuleState, derive_seed

    t0 = time.perf_counter()
    _maybe_fail(spec, model, "metrics", index)
    env = worker_environment(spec)
    plan = env.plan
    suite = _metrics_suite(plan)
    handle = env.model(model)
    data = env.dataset(plan.model(model).dataset)
    split = data.split(suite.params.split)
    n = _evaluated_rows(plan, suite, data)
    if not 0 <= start < stop <= n:
        raise DataError(f"Expected a shard inside [0, {n}), got [{start}, {stop}).")
    part = split.subset(slice(start, stop))
    seed = derive_seed(plan.run.seed, model, "metrics")
    ctx = RunContext(run_id=spec.run_id, run_dir=Path(tempfile.gettempdir()), seed=seed, device=env.device,
                     suite="metrics", model_name=model, dataset_name=data.name, max_samples=plan.run.max_samples,
                     batch_size=plan.run.batch_size, profile=plan.run.profile, log=env.log)
    before = ModuleState.capture(handle.module)
    logits = suite._outputs(handle.module, part.x, ctx)  # the suite's own forward pass
    changes = before.diff(handle.module)
    if changes:
        before.restore(handle.module)
        raise WorkbenchError("metrics shard changed the model (restored): " + "; ".join(changes[:5]))
    k = int(data.num_classes)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise DataError(f"Expected logits of shape ({stop - start}, {k}), got {tuple(logits.shape)}.")
    counts = class_counts(logits.argmax(dim=1), part.y.long(), k)
    return {"start": start, "stop": stop, "logits": logits.float().numpy(), "confusion": counts.confusion,
            "where": _where(), "seconds": time.perf_counter() - t0}


def _replay_metrics_class() -> type:
    """A MetricsSuite whose forward pass returns logits computed elsewhere (the shards'),
    so the records are built by the suite's own code."""
    from workbench.suites.metrics.suite import MetricsSuite

    class ShardedMetricsSuite(MetricsSuite):
        def __init__(self, params: Any, logits: "torch.Tensor") -> None:
            super().__init__(params)
            self._logits = logits

        def _outputs(self, module: Any, x: "torch.Tensor", ctx: Any) -> "torch.Tensor":
            if x.shape[0] != self._logits.shape[0]:
                raise DataError(f"Shards cover {self._logits.shape[0]} rows, the suite evaluates {x.shape[0]}.")
            return self._logits

    return ShardedMetricsSuite


def combine_metrics_shards(env: "Environment", model: str, shards: list[dict[str, Any]], run_id: str,
                           run_dir: Path) -> "SuiteResult":
    """The metrics result of `model` from its shards (see module docstring), with the
    suite's artifacts written under `run_dir`. Raises WorkbenchError when the shards do
    not tile the evaluated rows exactly or when the suite's report disagrees with the
    summed counts."""
    import torch

    from workbench.suite import RunContext
    from workbench.torch_utils import derive_seed

    t0 = time.perf_counter()
    plan = env.plan
    base = _metrics_suite(plan)
    handle = env.model(model)
    data = env.dataset(plan.model(model).dataset)
    n = _evaluated_rows(plan, base, data)
    shards = sorted(shards, key=lambda s: s["start"])
    edges = [(s["start"], s["stop"]) for s in shards]
    expected_start = 0
    for lo, hi in edges:
        if lo != expected_start or hi <= lo:
            raise WorkbenchError(f"Shards of {model}/metrics do not tile [0, {n}): {edges}.")
        expected_start = hi
    if expected_start != n:
        raise WorkbenchError(f"Shards of {model}/metrics cover [0, {expected_start}), expected [0, {n}).")
    counts = combine_counts([ClassCounts(s["confusion"]) for s in shards])
    logits = torch.from_numpy(np.concatenate([s["logits"] for s in shards]))
    seed = derive_seed(plan.run.seed, model, "metrics")
    ctx = RunContext(run_id=run_id, run_dir=run_dir, seed=seed, device=env.device, suite="metrics",
                     model_name=model, dataset_name=data.name, max_samples=plan.run.max_samples,
                     batch_size=plan.run.batch_size, profile=plan.run.profile, log=env.log)
    suite = _replay_metrics_class()(base.params, logits)
    res = suite.run(handle, data, ctx)
    if res.status == "ok":
        split_tag = base.params.split
        acc = res.metric("accuracy", split=split_tag)
        if acc.n != counts.n or acc.value != counts.correct / counts.n:
            raise WorkbenchError(
                f"{model}/metrics: the combined report (accuracy {acc.value}, n {acc.n}) disagrees with the summed "
                f"shard counts ({counts.correct}/{counts.n})."
            )
        y = data.split(split_tag).y[:n].long()
        if not np.array_equal(class_counts(logits.argmax(dim=1), y, counts.confusion.shape[0]).confusion,
                              counts.confusion):
            raise WorkbenchError(f"{model}/metrics: shard confusion matrices do not sum to the whole-set matrix.")
    compute = sum(float(s.get("seconds", 0.0)) for s in shards)
    return dataclasses.replace(res, duration_s=compute + time.perf_counter() - t0)
