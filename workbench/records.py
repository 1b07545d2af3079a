"""The results contract: frozen records and their JSON form.

`results.json` (schema_version 2) is read by the report, the gate, the dashboard and
external tools; see README "Results contract". Records are immutable; build them with
keyword arguments and serialise with `to_dict` / `from_dict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 2  # 2: suites split (corruptions, drift, certify), ci_method tags, provenance data/notes/estimate

Status = Literal["ok", "skipped", "error"]
TagValue = str | int | float


def _clean_tags(tags: dict[str, Any]) -> dict[str, TagValue]:
    out: dict[str, TagValue] = {}
    for k, v in tags.items():
        if not isinstance(k, str):
            raise TypeError(f"Expected metric tag keys to be str, got {type(k).__name__} {k!r}.")
        if isinstance(v, bool):
            v = str(v).lower()
        elif not isinstance(v, (str, int, float)):
            v = str(v)
        out[k] = v
    return out


@dataclass(frozen=True, kw_only=True)
class MetricRecord:
    """One number with its meaning.

    `value` is None only together with a `reason` (e.g. "no RAPL access on this machine").
    A non-finite value is never stored: it becomes None with the reason "non-finite value".
    `ci` is a (low, high) 95% interval unless `tags["ci_level"]` says otherwise.
    Variants (split, attack, eps, class...) go in `tags`, never in `name`.
    """

    name: str
    value: float | None
    reason: str | None = None
    higher_is_better: bool | None = None
    unit: str | None = None
    n: int | None = None
    ci: tuple[float, float] | None = None
    tags: dict[str, TagValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Expected metric `name` to be a non-empty str, got {self.name!r}.")
        object.__setattr__(self, "tags", _clean_tags(dict(self.tags)))
        value = self.value
        if value is not None:
            try:
                value = float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"Metric {self.name!r}: expected a float value, got {value!r}.") from exc
            if not math.isfinite(value):
                object.__setattr__(self, "reason", self.reason or f"non-finite value ({value})")
                value = None
        object.__setattr__(self, "value", value)
        if value is None and not self.reason:
            raise ValueError(f"Metric {self.name!r} has value None but no `reason`; say why it is unavailable.")
        if self.ci is not None:
            lo, hi = (float(self.ci[0]), float(self.ci[1]))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                object.__setattr__(self, "ci", None)
            else:
                object.__setattr__(self, "ci", (lo, hi))
        if self.n is not None:
            object.__setattr__(self, "n", int(self.n))

    @classmethod
    def unavailable(cls, name: str, reason: str, **kwargs: Any) -> "MetricRecord":
        """A metric that could not be measured, with the reason."""
        return cls(name=name, value=None, reason=reason, **kwargs)

    def key(self) -> tuple[str, tuple[tuple[str, TagValue], ...]]:
        """Identity of the metric within one (suite, model, dataset) result."""
        return self.name, tuple(sorted(self.tags.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "reason": self.reason,
            "higher_is_better": self.higher_is_better,
            "unit": self.unit,
            "n": self.n,
            "ci": list(self.ci) if self.ci is not None else None,
            "tags": dict(self.tags),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricRecord":
        ci = d.get("ci")
        return cls(
            name=d["name"],
            value=d.get("value"),
            reason=d.get("reason"),
            higher_is_better=d.get("higher_is_better"),
            unit=d.get("unit"),
            n=d.get("n"),
            ci=tuple(ci) if ci is not None else None,
            tags=d.get("tags") or {},
        )


@dataclass(frozen=True, kw_only=True)
class SuiteResult:
    """Everything one suite produced for one model on one dataset.

    `artifacts` maps a name to a path relative to the run directory (npz/json files).
    `config` holds the suite's resolved parameters, `seed` the seed it ran with,
    `duration_s` its wall time.
    """

    suite: str
    model: str
    dataset: str
    status: Status
    reason: str | None = None
    metrics: tuple[MetricRecord, ...] = ()
    artifacts: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.status not in ("ok", "skipped", "error"):
            raise ValueError(f"Expected status in ('ok', 'skipped', 'error'), got {self.status!r}.")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"A {self.status!r} result needs a `reason`.")
        object.__setattr__(self, "metrics", tuple(self.metrics))

    def metric(self, name: str, **tags: TagValue) -> MetricRecord:
        """The unique metric with this name whose tags include `tags`."""
        hits = [m for m in self.metrics if m.name == name and all(m.tags.get(k) == v for k, v in tags.items())]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} metrics match {name!r} {tags} in {self.suite}/{self.model}.")
        return hits[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "model": self.model,
            "dataset": self.dataset,
            "status": self.status,
            "reason": self.reason,
            "metrics": [m.to_dict() for m in self.metrics],
            "artifacts": dict(self.artifacts),
            "config": self.config,
            "seed": self.seed,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SuiteResult":
        return cls(
            suite=d["suite"],
            model=d["model"],
            dataset=d["dataset"],
            status=d["status"],
            reason=d.get("reason"),
            metrics=tuple(MetricRecord.from_dict(m) for m in d.get("metrics", [])),
            artifacts=d.get("artifacts") or {},
            config=d.get("config") or {},
            seed=d.get("seed"),
            duration_s=d.get("duration_s"),
        )


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A whole run: provenance plus every suite result. Serialises to results.json."""

    run_id: str
    created_at: str
    provenance: dict[str, Any]
    results: tuple[SuiteResult, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "provenance": self.provenance,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"Expected results schema_version {SCHEMA_VERSION}, got {version!r}; "
                "this file was written by an incompatible workbench."
            )
        return cls(
            run_id=d["run_id"],
            created_at=d["created_at"],
            provenance=d.get("provenance") or {},
            results=tuple(SuiteResult.from_dict(r) for r in d.get("results", [])),
        )
