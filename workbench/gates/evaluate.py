"""Gate evaluation: find the metric a rule names, compare it with its bound or its
baseline, and (with `significant`) test the drop on per-example data that the result's
suite hands over through its `per_example` hook.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.records import RunRecord

from workbench.gates.rules import (EQ_TOL, EXIT_FAIL, EXIT_PASS, EXIT_UNEVALUATED, EXIT_USAGE,
                                   SELECTORS, GateConfig, GateRule, Status, TagValue, parse_rule)

# --------------------------------------------------------------------------- matching


def _tag_equal(have: Any, want: Any) -> bool:
    if isinstance(have, bool):
        have = str(have).lower()
    if isinstance(want, bool):
        want = str(want).lower()
    hn, wn = _as_number(have), _as_number(want)
    if hn is not None and wn is not None and not (isinstance(have, str) and isinstance(want, str)):
        return math.isclose(hn, wn, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(have, str) and isinstance(want, str):
        return have == want
    return str(have) == str(want)


def _as_number(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


def _selector_match(result: Mapping[str, Any], metric: Mapping[str, Any],
                    selectors: Sequence[tuple[str, TagValue]]) -> bool:
    tags = metric.get("tags") or {}
    for key, want in selectors:
        if key in SELECTORS:
            if not _tag_equal(result.get(key), want):
                return False
        elif key not in tags or not _tag_equal(tags[key], want):
            return False
    return True


def find_metrics(run: Mapping[str, Any], metric: str,
                 selectors: Sequence[tuple[str, TagValue]] = ()) -> list[tuple[dict, dict]]:
    """Every (result, metric) pair of the run (results.json form) with this metric name
    whose result fields and tags satisfy `selectors`."""
    hits = []
    for res in run.get("results", []):
        for m in res.get("metrics", []):
            if m.get("name") == metric and _selector_match(res, m, selectors):
                hits.append((res, m))
    return hits


def _describe(res: Mapping[str, Any], m: Mapping[str, Any]) -> str:
    tags = ",".join(f"{k}={v}" for k, v in sorted((m.get("tags") or {}).items()))
    return f"{m.get('name')}{{suite={res.get('suite')},model={res.get('model')},dataset={res.get('dataset')}" + \
        (f",{tags}" if tags else "") + "}"


def _missing_message(run: Mapping[str, Any], rule: GateRule) -> str:
    what = rule.metric + ("{" + ",".join(f"{k}={v}" for k, v in rule.selectors) + "}" if rule.selectors else "")
    msg = f"metric {what} is not in run {run.get('run_id')!r}"
    same_name = find_metrics(run, rule.metric)
    if same_name:
        shown = "; ".join(_describe(r, m) for r, m in same_name[:8])
        more = f" (and {len(same_name) - 8} more)" if len(same_name) > 8 else ""
        msg += f"; {len(same_name)} {rule.metric!r} metric(s) exist but none matches the tags: {shown}{more}"
    else:
        names = sorted({m.get("name") for r in run.get("results", []) for m in r.get("metrics", [])})
        hint = did_you_mean(rule.metric, names).strip()
        if hint:
            msg += f" ({hint})"
    sel = [(k, v) for k, v in rule.selectors if k in SELECTORS]
    blocked = [r for r in run.get("results", []) if r.get("status") != "ok"
               and all(_tag_equal(r.get(k), v) for k, v in sel)]
    if blocked:
        msg += "; results that did not run: " + "; ".join(
            f"{r.get('suite')}/{r.get('model')} {r.get('status')}: {r.get('reason')}" for r in blocked[:5])
    return msg


# --------------------------------------------------------------------------- per-example data


def load_per_example(result: Mapping[str, Any], run_dir: str | Path | None, suites: Any = None) -> dict[str, Any]:
    """Per-example arrays (N,) of one result (results.json form), keyed by the metric they
    average to, plus optionally "example_id" / "y_true" to check that two runs saw the same
    examples: what the result's suite class returns from `per_example(result, run_dir)`.
    {} when there is no run directory, the suite is not installed, or its hook fails (the
    gate then reports "could not evaluate"); never raises."""
    from workbench.registry import suite_class

    if run_dir is None:
        return {}
    cls = suite_class(suites, result.get("suite"))
    if cls is None or not hasattr(cls, "per_example"):
        return {}
    try:
        out = cls.per_example(dict(result), Path(run_dir))
    except Exception:  # a broken plug-in only loses its significance tests
        return {}
    return dict(out or {})


class _PerExampleCache:
    """Per-example data read once per (run, result) during one gate evaluation."""

    def __init__(self, suites: Any) -> None:
        self.suites = suites
        self._data: dict[tuple[int, int], dict[str, Any]] = {}
        self._classes: dict[Any, Any] = {}

    def suite_class(self, name: Any) -> Any:
        from workbench.registry import suite_class

        if name not in self._classes:
            self._classes[name] = suite_class(self.suites, name)
        return self._classes[name]

    def load(self, run: Mapping[str, Any], res: Mapping[str, Any], run_dir: Any) -> dict[str, Any]:
        key = (id(run), id(res))
        if key not in self._data:
            self._data[key] = load_per_example(res, run_dir, self.suites)
        return self._data[key]


# --------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class RuleOutcome:
    """The verdict on one rule. `error_kind` is "config" (the rule is unusable as written,
    exit 2) or "evaluate" (the run lacks what the rule needs, exit 3) when status is "error"."""

    rule: str
    status: Status
    message: str
    observed: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    p_value: float | None = None
    drop: float | None = None
    ci: tuple[float, float] | None = None
    test: str | None = None
    error_kind: str | None = None
    target: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "status": self.status, "observed": self.observed, "threshold": self.threshold,
            "baseline": self.baseline, "p_value": self.p_value, "message": self.message, "drop": self.drop,
            "ci": list(self.ci) if self.ci is not None else None, "test": self.test,
            "error_kind": self.error_kind, "target": self.target, "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RuleOutcome":
        ci = d.get("ci")
        return cls(rule=d["rule"], status=d["status"], message=d.get("message", ""), observed=d.get("observed"),
                   threshold=d.get("threshold"), baseline=d.get("baseline"), p_value=d.get("p_value"),
                   drop=d.get("drop"), ci=tuple(ci) if ci is not None else None, test=d.get("test"),
                   error_kind=d.get("error_kind"), target=d.get("target"), seconds=d.get("seconds", 0.0))


@dataclass(frozen=True)
class GateOutcome:
    """Every rule's verdict for one run (and its baseline, if any)."""

    results: tuple[RuleOutcome, ...]
    run_id: str | None = None
    baseline_run_id: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """"pass", "fail" or "error" (same precedence as the exit code)."""
        return {EXIT_PASS: "pass", EXIT_FAIL: "fail"}.get(gate_exit_code(self), "error")

    @property
    def exit_code(self) -> int:
        return gate_exit_code(self)

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "error")}

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "baseline_run_id": self.baseline_run_id, "status": self.status,
                "exit_code": self.exit_code, "counts": self.counts(), "seconds": self.seconds,
                "rules": [r.to_dict() for r in self.results], **({"extra": self.extra} if self.extra else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GateOutcome":
        return cls(results=tuple(RuleOutcome.from_dict(r) for r in d.get("rules", [])), run_id=d.get("run_id"),
                   baseline_run_id=d.get("baseline_run_id"), seconds=d.get("seconds", 0.0),
                   extra=dict(d.get("extra") or {}))


def gate_exit_code(outcome: GateOutcome | Mapping[str, Any]) -> int:
    """0 all pass; 2 a rule is unusable as written; else 1 a rule failed; else 3 a rule
    could not be evaluated."""
    rules = outcome.results if isinstance(outcome, GateOutcome) else [
        RuleOutcome.from_dict(r) for r in outcome.get("rules", [])]
    if any(r.status == "error" and r.error_kind == "config" for r in rules):
        return EXIT_USAGE
    if any(r.status == "fail" for r in rules):
        return EXIT_FAIL
    if any(r.status == "error" for r in rules):
        return EXIT_UNEVALUATED
    return EXIT_PASS


class _RuleError(Exception):
    def __init__(self, kind: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.kind, self.message, self.fields = kind, message, fields


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


# --------------------------------------------------------------------------- evaluation


def evaluate_gates(
    run: RunRecord | Mapping[str, Any],
    rules: GateConfig | Sequence[GateRule | str | Mapping[str, Any]],
    *,
    baseline: RunRecord | Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
    baseline_dir: str | Path | None = None,
    seed: int | None = None,
    suites: Any = None,
) -> GateOutcome:
    """Evaluate every rule on `run` (and `baseline` for drop rules). Per-example data for
    significance tests come from each result's suite (`Suite.per_example`, reading the
    artifacts under `run_dir` / `baseline_dir`); `suites` maps suite names to classes
    (default: the SUITES registry). Never raises for a rule that cannot be evaluated: that
    rule gets status "error" with the reason. Unparseable rules raise ConfigError."""
    t0 = time.perf_counter()
    if isinstance(rules, GateConfig):
        cfg = rules
    else:
        cfg = GateConfig(rules=tuple(r if isinstance(r, GateRule) else parse_rule(r) for r in rules))
    seed = cfg.seed if seed is None else seed
    cand = run.to_dict() if isinstance(run, RunRecord) else run
    base = baseline.to_dict() if isinstance(baseline, RunRecord) else baseline
    cache = _PerExampleCache(suites)
    out = []
    for rule in cfg.rules:
        t1 = time.perf_counter()
        try:
            res = _evaluate_rule(rule, cand, base, run_dir, baseline_dir, seed, cache)
        except _RuleError as exc:
            fields = {"threshold": rule.threshold, **exc.fields, "rule": rule.text}
            res = RuleOutcome(status="error", message=exc.message, error_kind=exc.kind, **fields)
        except ConfigError as exc:
            res = RuleOutcome(rule=rule.text, status="error", message=str(exc), error_kind="config",
                              threshold=rule.threshold)
        except DataError as exc:
            res = RuleOutcome(rule=rule.text, status="error", message=str(exc), error_kind="evaluate",
                              threshold=rule.threshold)
        except Exception as exc:  # a gate reports every rule; one broken rule must not hide the others
            res = RuleOutcome(rule=rule.text, status="error", error_kind="evaluate", threshold=rule.threshold,
                              message=f"internal error while evaluating: {type(exc).__name__}: {exc}")
        out.append(replace(res, seconds=time.perf_counter() - t1))
    return GateOutcome(results=tuple(out), run_id=cand.get("run_id"),
                       baseline_run_id=base.get("run_id") if base else None, seconds=time.perf_counter() - t0)


def _unique(run: Mapping[str, Any], rule: GateRule, which: str) -> tuple[dict, dict]:
    hits = find_metrics(run, rule.metric, rule.selectors)
    if not hits:
        raise _RuleError("evaluate", ("baseline: " if which == "baseline" else "") + _missing_message(run, rule))
    if len(hits) > 1:
        shown = "; ".join(_describe(r, m) for r, m in hits[:10])
        more = f" (and {len(hits) - 10} more)" if len(hits) > 10 else ""
        raise _RuleError(
            "config",
            f"{len(hits)} metrics in the {which} run match; add tags (model=, suite=, dataset= or metric tags) "
            f"so exactly one matches: {shown}{more}",
        )
    return hits[0]


def _target(res: Mapping[str, Any], m: Mapping[str, Any]) -> dict[str, Any]:
    return {"suite": res.get("suite"), "model": res.get("model"), "dataset": res.get("dataset"),
            "metric": m.get("name"), "tags": dict(m.get("tags") or {})}


def _evaluate_rule(rule: GateRule, cand: Mapping[str, Any], base: Mapping[str, Any] | None,
                   run_dir: Any, baseline_dir: Any, seed: int, cache: "_PerExampleCache") -> RuleOutcome:
    res, m = _unique(cand, rule, "candidate")
    target = _target(res, m)
    value = m.get("value")
    if value is None:
        raise _RuleError("evaluate", f"{_describe(res, m)} has no value: {m.get('reason') or 'no reason given'}",
                         target=target)
    value = float(value)
    unit = f" {m['unit']}" if m.get("unit") and m["unit"] not in ("fraction", "dimensionless", "ratio", "1") else ""
    ci = m.get("ci")
    ci_txt = f" (95% CI {ci[0]:.4g}–{ci[1]:.4g})" if ci else ""
    if rule.kind == "absolute":
        ok = {
            ">=": value >= rule.threshold, "<=": value <= rule.threshold, ">": value > rule.threshold,
            "<": value < rule.threshold,
            "==": math.isclose(value, rule.threshold, rel_tol=EQ_TOL, abs_tol=EQ_TOL),
        }[rule.op]
        verb = rule.op if ok else f"is not {rule.op}"
        return RuleOutcome(rule=rule.text, status="pass" if ok else "fail", observed=value, threshold=rule.threshold,
                           message=f"{rule.metric} = {value:.6g}{unit}{ci_txt} {verb} {rule.threshold:g}",
                           target=target)
    # Baseline rule.
    if base is None:
        raise _RuleError("config", f"`{rule.op}` compares with a baseline run, and none was given "
                                   "(pass --baseline RUN_ID|results.json or set [gates] baseline).",
                         observed=value, target=target)
    hib = m.get("higher_is_better")
    if hib is None:
        raise _RuleError("config", f"{_describe(res, m)} has higher_is_better = null, so a drop is ambiguous; "
                                   "use an absolute bound (>=, <=) for this metric.", observed=value, target=target)
    bres, bm = _baseline_metric(base, rule, res, m)
    bval = bm.get("value")
    if bval is None:
        raise _RuleError("evaluate", f"baseline {_describe(bres, bm)} has no value: {bm.get('reason')}",
                         observed=value, target=target)
    bval = float(bval)
    if bm.get("higher_is_better") is not None and bm.get("higher_is_better") != hib:
        raise _RuleError("evaluate", f"candidate and baseline disagree on higher_is_better for {rule.metric}",
                         observed=value, baseline=bval, target=target)
    sign = 1.0 if hib else -1.0
    drop = sign * (bval - value)
    scale = 1.0
    if rule.op == "max_rel_drop":
        if bval == 0:
            raise _RuleError("evaluate", f"baseline {rule.metric} is 0, so a relative drop is undefined; "
                                         "use max_drop.", observed=value, baseline=bval, target=target)
        scale = abs(bval)
    measured = drop / scale
    what = "relative drop" if rule.op == "max_rel_drop" else "drop"
    common = dict(rule=rule.text, observed=value, threshold=rule.threshold, baseline=bval, drop=measured,
                  target=target)
    desc = f"{rule.metric} {value:.6g}{unit} vs baseline {bval:.6g}: {what} {measured:.4g}"
    exceeded = measured > rule.threshold + EQ_TOL
    if not exceeded:
        return RuleOutcome(status="pass", message=f"{desc} <= {rule.threshold:g}", **common)
    if not rule.significant:
        return RuleOutcome(status="fail", message=f"{desc} > {rule.threshold:g}", **common)
    a = _per_example(cache, cand, res, run_dir, rule.metric, value, "candidate")
    b = _per_example(cache, base, bres, baseline_dir, rule.metric, bval, "baseline")
    import numpy as np

    va, vb = a[rule.metric], b[rule.metric]
    binary = bool(np.all((va == 0) | (va == 1)) and np.all((vb == 0) | (vb == 1)))
    test = rule.test or ("mcnemar" if binary else "bootstrap")
    if test in ("mcnemar", "bootstrap"):
        _check_pairing(a, b, rule.metric)
    from workbench import significance as sig

    if test == "mcnemar":
        if not binary:
            raise _RuleError("config", f"McNemar's test needs 0/1 per-example correctness, and {rule.metric} "
                                       "per-example values are not 0/1; use test=bootstrap or test=welch.", **common)
        r = sig.mcnemar(vb, va)  # b: baseline right & candidate wrong
        p = r.p_value
        significant = p < rule.alpha
        detail = f"McNemar ({r.method}, b={r.b}, c={r.c}) p = {p:.3g}"
        ci_out = None
    elif test == "welch":
        r = sig.welch(vb, va)
        p = r.p_value
        significant = p < rule.alpha
        detail = f"Welch t = {r.statistic:.3g}, df = {r.df:.3g}, p = {p:.3g}"
        ci_out = None
    else:
        bs = sig.paired_bootstrap_diff_ci(sign * vb, sign * va, n_boot=rule.n_boot, seed=seed,
                                          level=1 - rule.alpha)
        p = None
        ci_out = (bs.low / scale, bs.high / scale)
        significant = ci_out[0] > rule.threshold + EQ_TOL
        detail = f"paired bootstrap {100 * (1 - rule.alpha):g}% CI of the {what} [{ci_out[0]:.4g}, {ci_out[1]:.4g}]"
    common.update(p_value=_finite(p) if p is not None else None, test=test, ci=ci_out)
    if significant:
        return RuleOutcome(status="fail", message=f"{desc} > {rule.threshold:g}, significant: {detail}", **common)
    return RuleOutcome(status="pass", message=f"{desc} > {rule.threshold:g} but not significant at "
                                              f"alpha = {rule.alpha:g}: {detail}", **common)


def _baseline_metric(base: Mapping[str, Any], rule: GateRule, res: Mapping[str, Any],
                     m: Mapping[str, Any]) -> tuple[dict, dict]:
    """The baseline's metric with the candidate's exact identity; else the rule's selectors."""
    exact = [(r, bm) for r in base.get("results", []) if all(r.get(k) == res.get(k) for k in SELECTORS)
             for bm in r.get("metrics", []) if bm.get("name") == m.get("name") and (bm.get("tags") or {}) == (m.get("tags") or {})]
    if len(exact) == 1:
        return exact[0]
    return _unique(base, rule, "baseline")


def _per_example(cache: "_PerExampleCache", run: Mapping[str, Any], res: Mapping[str, Any], run_dir: Any,
                 metric: str, value: float, which: str) -> dict[str, Any]:
    import numpy as np

    data = cache.load(run, res, run_dir)
    if metric not in data:
        suite = res.get("suite")
        if run_dir is None:
            where = "no run directory was given"
        elif cache.suite_class(suite) is None:
            where = f"suite {suite!r} is not installed here, so its per-example data cannot be read"
        elif data:
            where = f"its suite's per_example hook gives {sorted(k for k in data if k not in ('y_true', 'example_id'))}"
        else:
            where = ("its suite's per_example hook gives none (artifacts: "
                     f"{sorted(res.get('artifacts') or {}) or 'none'})")
        raise _RuleError("evaluate", f"{which}: no per-example data for {metric!r} of "
                                     f"{suite}/{res.get('model')} ({where}); a significance test needs it.")
    mean = float(np.mean(data[metric]))
    if not math.isclose(mean, value, rel_tol=1e-4, abs_tol=1e-6):
        raise _RuleError("evaluate", f"{which}: per-example {metric} averages to "
                                     f"{mean:.6g} but the metric is {value:.6g}; they do not describe the same "
                                     "examples (or the metric is a rescaled variant: pick, with tags, the variant "
                                     "the per-example data describe, e.g. units=model).")
    return data


def _check_pairing(a: Mapping[str, Any], b: Mapping[str, Any], metric: str) -> None:
    import numpy as np

    if a[metric].shape != b[metric].shape:
        raise _RuleError("evaluate", f"a paired test needs the same examples, got {a[metric].size} candidate and "
                                     f"{b[metric].size} baseline examples; use test=welch for independent samples.")
    for key in ("example_id", "y_true"):
        if key in a and key in b and not np.array_equal(a[key], b[key]):
            raise _RuleError("evaluate", f"candidate and baseline {key} differ: the runs evaluated different "
                                         "examples, so a paired test does not apply; use test=welch.")


