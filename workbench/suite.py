"""The Suite protocol, the model handle and the run context.

A suite is small: a frozen keyword-only `Params` dataclass, `applicable(model, data)`
returning a reason to skip (or None), and `run(model, data, ctx) -> SuiteResult`.
It must not change the model's weights, train/eval flags or buffers, must be
deterministic for `ctx.seed`, and reports `n` and a CI where one makes sense.
`tests/test_suite_contract.py` checks this for every registered suite.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.errors import ConfigError, ParameterTypeError, did_you_mean
from workbench.records import MetricRecord, SuiteResult

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from workbench.data.base import Dataset
    from workbench.estimate import Work
    from workbench.progress import Progress


@dataclass
class ModelHandle:
    """A trained model plus what suites need to know about it.

    output: what `module(x)` returns:
      "logits"       classification, (B, K)
      "mean"         regression, (B,)
      "mean_logvar"  heteroscedastic regression, (B, 2): [:, 0] mean, [:, 1] log-variance
      "lm_logits"    language model, (B, T, V)
    trainer: `trainer(seed=..., recipe=..., epochs=..., **model_overrides) -> nn.Module`
      trains a sibling of this model through the training cache (ensembles, adversarial
      training, students); None for user models that cannot be retrained.
    """

    name: str
    module: "nn.Module"
    arch: str
    task: str
    output: str
    config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    trainer: Callable[..., "nn.Module"] | None = None
    train_seconds: float | None = None
    source: str = "reference"  # "reference" | "factory" | "checkpoint"
    #: token models: the module path of the embedding layer named in the plan (`embedding =
    #: "..."`); None: found automatically (workbench.embedding.find_embedding_layer)
    embedding: str | None = None


@dataclass
class RunContext:
    """Where a suite writes, which seed and device it uses, and run-wide limits."""

    run_id: str
    run_dir: Path
    seed: int
    device: "torch.device"
    suite: str = ""
    model_name: str = ""
    dataset_name: str = ""
    max_samples: int | None = None
    batch_size: int = 256
    profile: str = "quick"  # "quick" (CPU budget) | "full"
    log: Callable[[str], None] = print
    #: "bar" | "log" | "off" for `progress()` (the run's `Environment.progress`); None: by terminal
    progress_display: str | None = None
    _artifacts: dict[str, str] = field(default_factory=dict)

    def generator(self, offset: int = 0) -> "torch.Generator":
        """A CPU torch.Generator seeded from the run seed (+ offset)."""
        import torch

        return torch.Generator().manual_seed(int(self.seed) + offset)

    def sample_rows(self, n_rows: int, n: int, offset: int) -> "torch.Tensor":
        """Indices of `n` of `n_rows` rows drawn without replacement by the run seed (+ offset),
        in ascending order: the same rows for the same seed and offset, in every executor."""
        import torch

        return torch.randperm(int(n_rows), generator=self.generator(offset))[: int(n)].sort().values

    def rng(self, offset: int = 0) -> "np.random.Generator":
        import numpy as np

        return np.random.default_rng(int(self.seed) + offset)

    def progress(self, total: int, what: str, *, unit: str = "", work_total: float | None = None) -> "Progress":
        """A progress reporter for one long loop of this suite (a bar on a terminal, a log
        line at most every 30 s elsewhere, `WORKBENCH_PROGRESS_INTERVAL` to change it); use as
        a context manager and `update(n, note=...)`. `work_total`: units of unequal cost,
        opened with `stage(units, work_per_unit)` (see `workbench.progress.Progress`)."""
        from workbench.progress import Progress

        return Progress(total, f"{self.suite} {what} ({self.model_name})", unit=unit, log=self.log,
                        display=self.progress_display, work_total=work_total)

    def limit(self, n: int, cap: int | None = None) -> int:
        """How many examples to use: min(n, run max_samples, suite cap)."""
        out = n
        for c in (self.max_samples, cap):
            if c is not None:
                out = min(out, int(c))
        return out

    @property
    def artifact_dir(self) -> Path:
        d = self.run_dir / "artifacts" / self.suite / self.model_name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def save_artifact(self, name: str, data: Any) -> str:
        """Save arrays (dict of array-likes -> .npz) or JSON-able data (-> .json) under the
        run directory; returns and remembers the path relative to `run_dir`."""
        import numpy as np

        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        if isinstance(data, dict) and data and all(_is_array(v) for v in data.values()):
            path = self.artifact_dir / f"{safe}.npz"
            np.savez_compressed(path, **{k: _to_numpy(v) for k, v in data.items()})
        else:
            path = self.artifact_dir / f"{safe}.json"
            path.write_text(json.dumps(data, default=_json_default))
        rel = str(path.relative_to(self.run_dir))
        self._artifacts[name] = rel
        return rel

    def result(
        self,
        metrics: Sequence[MetricRecord],
        *,
        config: dict[str, Any] | None = None,
        artifacts: dict[str, str] | None = None,
    ) -> SuiteResult:
        """An "ok" SuiteResult for this suite/model/dataset with the saved artifacts."""
        arts = dict(self._artifacts)
        arts.update(artifacts or {})
        return SuiteResult(
            suite=self.suite, model=self.model_name, dataset=self.dataset_name, status="ok",
            metrics=tuple(metrics), artifacts=arts, config=config or {}, seed=self.seed,
        )

    def skip(self, reason: str) -> SuiteResult:
        return SuiteResult(
            suite=self.suite, model=self.model_name, dataset=self.dataset_name,
            status="skipped", reason=reason, seed=self.seed,
        )


def load_artifact(result: dict[str, Any], run_dir: Path | str, name: str, suffix: str | None = None) -> Any:
    """Read one artifact of a result (its `to_dict()` form): a dict of arrays for `.npz`
    (never unpickled), the parsed JSON for `.json`; None when the result has no such
    artifact, the file is missing, its suffix is not `suffix` (when given), or its path
    leaves the run directory. Shared by every suite's `figures`."""
    import numpy as np

    rel = (result.get("artifacts") or {}).get(name)
    if not rel or (suffix is not None and not str(rel).endswith(suffix)):
        return None
    root = Path(run_dir).resolve()
    path = (root / rel).resolve()
    if root not in path.parents or not path.is_file():
        return None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return json.loads(path.read_text())


def _is_array(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype")


def _to_numpy(v: Any) -> "np.ndarray":
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            v = v.float()
        return v.numpy()
    return v


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return _to_numpy(o).tolist() if hasattr(o, "detach") else o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


class Suite:
    """Base class for suites. Subclasses set `name`, `description`, `tasks`, and a
    frozen keyword-only dataclass `Params`; they implement `run` (and may refine
    `applicable`). Constructors only store parameters."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression", "lm"})
    modalities: ClassVar[frozenset[str] | None] = None

    @dataclass(frozen=True, kw_only=True)
    class Params:
        pass

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, *, profile: str = "quick") -> "Suite":
        """Build from a plan's `[suites.NAME]` table: unknown keys and wrong types raise
        ConfigError naming the key and the valid ones. `profile` selects defaults from
        `Params.profiles` (e.g. heavier settings for "full") when the suite defines them."""
        config = dict(config or {})
        config.pop("enabled", None)
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        for key in config:
            if key not in fields:
                raise ConfigError(
                    f"Unknown parameter {key!r} for suite {cls.name!r}.{did_you_mean(key, fields)} "
                    f"Valid parameters: {', '.join(sorted(fields)) or '(none)'}."
                )
        defaults = dict(getattr(cls, "profiles", {}).get(profile, {}))
        defaults.update(config)
        for key, value in defaults.items():
            _check_type(cls.name, key, value, fields[key])
            _check_sane(cls.name, key, value)
        try:
            params = cls.Params(**defaults)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Suite {cls.name!r}: {exc}") from exc
        return cls(params)

    def applicable(self, model: ModelHandle, data: "Dataset") -> str | None:
        """None if this suite applies, else the reason it is skipped."""
        if data.task not in self.tasks:
            return f"suite {self.name!r} applies to tasks {sorted(self.tasks)}, not {data.task!r}"
        if self.modalities is not None and data.modality not in self.modalities:
            return f"suite {self.name!r} applies to modalities {sorted(self.modalities)}, not {data.modality!r}"
        return None

    def run(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    # ------------------------------------------------------------------ hooks
    # The core (reports, gates, executors, dashboard) calls these and never names a suite
    # or its metrics. A third-party suite that overrides them gets headline rows, paired
    # significance tests, sharding and dashboard figures with no edit to the core.

    #: Headline metric names in display order. A row of one of these names is headline
    #: material when `is_headline` also accepts its tags. Every name listed must be one the
    #: suite emits (tests/test_suite_contract.py checks it on the tiny reference models).
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    #: metric name -> the tag the headline takes the worst case over (e.g. one row per eps
    #: for robust accuracy, the worst over `attack`). Direction comes from the metric. When
    #: the suite computes the worst case itself (per example), it reports it as a row whose
    #: tag has the value "worst_case"; those rows are then shown as they are.
    headline_worst_case: ClassVar[dict[str, str]] = {}
    #: Tags that say how a row was measured rather than what (attack steps, restarts...):
    #: the worst case over `headline_worst_case` ignores them when grouping rows.
    headline_detail_tags: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        """Whether one metric row (its `to_dict()` form) belongs in the headline table.
        Default: its name is in `headline_metrics` and it is not a per-class row."""
        return metric.get("name") in cls.headline_metrics and "class" not in (metric.get("tags") or {})

    @classmethod
    def per_example(cls, result: dict[str, Any], run_dir: Path) -> dict[str, "np.ndarray"]:
        """Per-example values of one result for paired significance tests (gate rules with
        `significant`, the Compare page): metric name -> (N,) float array whose mean is the
        reported metric, plus optionally "example_id" (N,) to check that two runs saw the same
        examples. Read with `load_artifact`; {} when the suite has none. Never raises for a
        missing or unreadable file."""
        return {}

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        """Plotly figures for one result (its `to_dict()` form) whose artifacts live under
        `run_dir`, as (title, figure) pairs. Shared by the HTML report and the dashboard;
        must not recompute anything heavy. Suites override this."""
        return []

    # Cost (`workbench validate`, the start of `workbench run`, budgets that fit the device).

    def cost(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> "list[Work] | None":
        """The model passes this job will make: a list of `workbench.estimate.Work` (examples
        forward or forward+backward, the batch per call, the parameter that drives the count),
        from the parameters and the data size alone, without running anything. None (the
        default) when unknown: the estimate then says "unknown", never zero."""
        return None

    #: Parameters that may be scaled down (in this order, each to no less than the floor) when
    #: the estimate says a profile's default would not fit the time limit on this device:
    #: (parameter, floor). Values the plan sets explicitly are never touched.
    budget_parameters: ClassVar[tuple[tuple[str, int], ...]] = ()

    # Sharding (the Ray executor): a suite whose work splits into independent pieces (example
    # ranges, or units such as one attack at one eps) describes them (`shards`), runs each
    # piece anywhere (`run_shard`, in a worker, with the job's own seed) and rebuilds in the
    # driver exactly the result `run` gives (`combine`). "Exactly" is checked for every
    # registered suite by tests/test_suite_contract.py.

    def shards(self, model: ModelHandle, data: "Dataset", ctx: RunContext, n_shards: int) -> list[Any] | None:
        """The pieces this job splits into, about `n_shards` of them, as picklable
        descriptions (`slice`s of examples from `shard_slices`, tuples, strings), or None
        when it does not shard (the default). Same arguments, same answer: the driver asks
        again to check what came back."""
        return None

    def run_shard(self, model: ModelHandle, data: "Dataset", ctx: RunContext, shard: Any) -> Any:
        """The partial result of one piece: plain picklable data (numpy arrays, numbers,
        strings), never model state. Must not change the model (as `run`)."""
        raise NotImplementedError(f"suite {self.name!r} does not shard (its `shards` returns None)")

    def combine(self, model: ModelHandle, data: "Dataset", ctx: RunContext,
                parts: Sequence[tuple[Any, Any]]) -> SuiteResult:
        """The result of the whole job from its (piece, partial) pairs, in the order
        `shards` gave the pieces: the same metrics `run` reports (exact counts are summed,
        never shard averages averaged; a worst case stays per example), with its artifacts
        saved through `ctx` in the run directory."""
        raise NotImplementedError(f"suite {self.name!r} does not shard (its `shards` returns None)")


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


def check_tiling(parts: Sequence[tuple[slice, Any]], n: int, what: str) -> None:
    """Raise DataError unless the ranges of `parts` tile [0, n) in order."""
    from workbench.errors import DataError

    edges = [(int(rows.start), int(rows.stop)) for rows, _ in parts]
    expected = 0
    for lo, hi in edges:
        if lo != expected or hi <= lo:
            raise DataError(f"Shards of {what} do not tile [0, {n}) in order: {edges}.")
        expected = hi
    if expected != n:
        raise DataError(f"Shards of {what} cover [0, {expected}), expected [0, {n}).")


_TYPE_NAMES = {"int": int, "float": (int, float), "str": str, "bool": bool}

# No suite parameter (a count of steps, samples, resamples, repeats...) is meaningful past
# this: a plan asking for 10**12 would never finish, so it is refused up front.
MAX_PARAMETER_VALUE = 10_000_000


def _check_sane(suite: str, key: str, value: Any) -> None:
    """Reject NaN/inf and absurdly large numbers in any suite parameter (lists too)."""
    import math

    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"Suite {suite!r} parameter `{key}`: expected a finite number, got {v}.")
        if abs(v) > MAX_PARAMETER_VALUE:
            raise ConfigError(
                f"Suite {suite!r} parameter `{key}`: {v} is beyond any sensible setting "
                f"(|value| <= {MAX_PARAMETER_VALUE:,}); did you mean a smaller number?"
            )


def _check_type(suite: str, key: str, value: Any, f: dataclasses.Field) -> None:
    """Light type check of TOML values against the annotation of a Params field."""
    ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    base = ann.replace(" ", "").split("|")
    want: list[type] = []
    for b in base:
        if b in _TYPE_NAMES:
            t = _TYPE_NAMES[b]
            want.extend(t if isinstance(t, tuple) else [t])
        elif b.startswith(("tuple", "list", "Sequence")):
            want.extend([list, tuple])
        elif b == "None":
            if value is None:
                return
        else:
            return  # unknown annotation: let __post_init__ validate
    if not want:
        return
    if isinstance(value, bool) and bool not in want:
        raise ParameterTypeError(f"Suite {suite!r} parameter `{key}`: expected {ann}, got bool {value!r}.")
    if not isinstance(value, tuple(want)):
        raise ParameterTypeError(
            f"Suite {suite!r} parameter `{key}`: expected {ann}, got {type(value).__name__} {value!r}."
        )


def timed(fn: Callable[..., SuiteResult]) -> Callable[..., SuiteResult]:
    """Decorator used by the runner to stamp `duration_s` on a result."""

    def wrapper(*a: Any, **k: Any) -> SuiteResult:
        t0 = time.perf_counter()
        res = fn(*a, **k)
        return dataclasses.replace(res, duration_s=time.perf_counter() - t0)

    return wrapper
