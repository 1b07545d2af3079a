"""CI gates: threshold and baseline rules over a run's metrics -> pass / fail / error.

Rules come from a plan's `[gates]` table or a separate TOML file (see docs/gates.md)::

    [gates]
    alpha = 0.05                       # default significance level
    rules = [
      "accuracy{model=digits_cnn} >= 0.9",
      "robust_accuracy{attack=pgd_linf,eps=0.1} >= 0.7",
      "accuracy{model=digits_cnn} max_drop 0.02",              # against --baseline
      "mse{model=diabetes_mlp} max_rel_drop 0.05 significant test=bootstrap",
      {metric = "accuracy", tags = {model = "digits_cnn"}, max_drop = 0.0, test = "mcnemar", alpha = 0.05},
    ]

String grammar: ``METRIC{key=value,...} OP NUMBER [significant] [test=NAME] [alpha=X] [n_boot=N]``
with OP one of ``>= <= > < ==`` (absolute bound) or ``max_drop`` / ``max_rel_drop`` (change
against a baseline run). In the braces, ``model``, ``suite`` and ``dataset`` select the
result; every other key must equal a metric tag (numbers compare numerically: ``eps=0.1``).

"Worse" follows the metric's ``higher_is_better``: drop = baseline - candidate when higher
is better, candidate - baseline when lower is better. A baseline rule fails when the drop
exceeds the limit; with ``significant`` (or a ``test``) it fails only when, in addition,
the drop is statistically significant: McNemar (per-example correctness, p < alpha),
Welch's t-test (per-example scores, p < alpha) or the paired bootstrap (the
(1 - alpha) percentile CI of the drop lies entirely above the limit). The default test is
McNemar for 0/1 per-example values and the paired bootstrap otherwise.

Exit codes (`gate_exit_code`): 0 every rule passed; 2 a rule is unusable as written
(bad syntax, unknown operator, several metrics match, no direction for a drop rule, no
baseline given); else 1 if a rule failed; else 3 if a rule could not be evaluated
(missing or null metric, missing per-example data). A rule naming a metric the run does
not have is an error, never a pass.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO

from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.records import RunRecord

ABSOLUTE_OPS = (">=", "<=", ">", "<", "==")
BASELINE_OPS = ("max_drop", "max_rel_drop")
OPS = ABSOLUTE_OPS + BASELINE_OPS
TESTS = ("mcnemar", "bootstrap", "welch")
SELECTORS = ("model", "suite", "dataset")
RULE_KEYS = ("metric", "tags", "op", "threshold", "max_drop", "max_rel_drop", "significant", "test", "alpha",
             "n_boot", "name")
GATES_KEYS = ("rules", "baseline", "alpha", "n_boot", "seed")
DEFAULT_ALPHA = 0.05
DEFAULT_N_BOOT = 2000
EQ_TOL = 1e-9  # `==` and the drop limit tolerate float round-off of this size

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_UNEVALUATED = 0, 1, 2, 3

_COMMON_OP_TYPOS = {"=>": ">=", "=<": "<=", "=": "==", "≥": ">=", "≤": "<=", "gte": ">=", "lte": "<=",
                    "ge": ">=", "le": "<=", "gt": ">", "lt": "<", "eq": "=="}

Status = Literal["pass", "fail", "error"]
TagValue = str | int | float


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class GateRule:
    """One parsed rule. `selectors` holds model/suite/dataset and metric-tag constraints."""

    text: str
    metric: str
    selectors: tuple[tuple[str, TagValue], ...]
    op: str
    threshold: float
    significant: bool = False
    test: str | None = None
    alpha: float = DEFAULT_ALPHA
    n_boot: int = DEFAULT_N_BOOT

    @property
    def kind(self) -> str:
        """"absolute" (a bound on the value) or "baseline" (a limit on the change)."""
        return "baseline" if self.op in BASELINE_OPS else "absolute"


@dataclass(frozen=True)
class GateConfig:
    """The `[gates]` table: rules plus defaults. `baseline` is a path or run id (or None)."""

    rules: tuple[GateRule, ...]
    baseline: str | None = None
    alpha: float = DEFAULT_ALPHA
    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0

    def absolute_only(self) -> "GateConfig":
        """The same gates without the baseline rules: what `workbench run` can check on its
        own, before anyone passes a baseline."""
        return replace(self, rules=tuple(r for r in self.rules if r.kind == "absolute"))

    @property
    def needs_baseline(self) -> bool:
        return any(r.kind == "baseline" for r in self.rules)


_NAME_RE = r"[A-Za-z_][\w.\-]*"
_HEAD_RE = re.compile(rf"^\s*(?P<metric>{_NAME_RE})\s*(?:\{{(?P<tags>[^{{}}]*)\}})?\s*(?P<rest>.*)$", re.S)
_OP_RE = re.compile(r"^(?P<op>>=|<=|==|!=|=>|=<|>|<|=|≥|≤|[A-Za-z_]+)\s*(?P<rest>.*)$", re.S)
_TAG_RE = re.compile(
    rf"\s*(?P<key>{_NAME_RE})\s*=\s*(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^,]*?)\s*(?:,|$)"
)


def _fmt_num(x: float) -> str:
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s


def _parse_tags(body: str, text: str) -> list[tuple[str, TagValue]]:
    out: list[tuple[str, TagValue]] = []
    pos, body = 0, body.strip()
    while pos < len(body):
        m = _TAG_RE.match(body, pos)
        if not m or m.end() == pos:
            raise ConfigError(
                f"Gate rule {text!r}: cannot read the tags at {body[pos:]!r}; expected key=value pairs "
                "separated by commas, e.g. {attack=pgd_linf,eps=0.1}."
            )
        value = m.group("value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = json.loads(value) if value[0] == '"' else value[1:-1]
        elif value == "":
            raise ConfigError(f"Gate rule {text!r}: tag {m.group('key')!r} has no value.")
        out.append((m.group("key"), value))
        pos = m.end()
    keys = [k for k, _ in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"Gate rule {text!r}: tag(s) {dup} given twice.")
    return out


def _check_op(op: str, text: str) -> str:
    if op in OPS:
        return op
    hint = f" Did you mean {_COMMON_OP_TYPOS[op]!r}?" if op in _COMMON_OP_TYPOS else did_you_mean(op, OPS)
    raise ConfigError(f"Gate rule {text!r}: unknown operator {op!r}.{hint} Valid operators: {', '.join(OPS)}.")


def _check_test(test: Any, text: str) -> str:
    if not isinstance(test, str) or test not in TESTS:
        hint = did_you_mean(test, TESTS) if isinstance(test, str) else ""
        raise ConfigError(f"Gate rule {text!r}: unknown test {test!r}.{hint} Valid tests: {', '.join(TESTS)}.")
    return test


def _check_alpha(alpha: Any, text: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < float(alpha) < 1:
        raise ConfigError(f"Gate rule {text!r}: expected `alpha` to be a number in (0, 1), got {alpha!r}.")
    return float(alpha)


def _check_n_boot(n_boot: Any, text: str) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ConfigError(f"Gate rule {text!r}: expected `n_boot` to be an int >= 100, got {n_boot!r}.")
    return n_boot


def _check_threshold(value: Any, op: str, text: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"Gate rule {text!r}: expected a finite number after {op!r}, got {value!r}.")
    value = float(value)
    if op in BASELINE_OPS and value < 0:
        raise ConfigError(f"Gate rule {text!r}: `{op}` must be >= 0 (0 means no drop allowed), got {value}.")
    return value


def _canonical(metric: str, selectors: Sequence[tuple[str, TagValue]], op: str, threshold: float,
               significant: bool, test: str | None, alpha: float, alpha_given: bool) -> str:
    tags = ",".join(f"{k}={v}" for k, v in selectors)
    s = f"{metric}{{{tags}}}" if tags else metric
    s += f" {op} {_fmt_num(threshold)}"
    if significant:
        s += " significant"
        if test:
            s += f" test={test}"
        if alpha_given:
            s += f" alpha={alpha}"
    return s


def parse_rule(rule: str | Mapping[str, Any], *, alpha: float = DEFAULT_ALPHA,
               n_boot: int = DEFAULT_N_BOOT) -> GateRule:
    """Parse a rule string or table (see the module docstring). Bad input raises
    ConfigError naming the rule, what was expected and the valid choices."""
    if isinstance(rule, str):
        return _parse_rule_string(rule, alpha=alpha, n_boot=n_boot)
    if isinstance(rule, Mapping):
        return _parse_rule_table(rule, alpha=alpha, n_boot=n_boot)
    raise ConfigError(
        f"Expected a gate rule to be a string like 'accuracy >= 0.9' or a table with `metric`, "
        f"got {type(rule).__name__} {rule!r}."
    )


def _parse_rule_string(text: str, *, alpha: float, n_boot: int) -> GateRule:
    text = text.strip()
    head = _HEAD_RE.match(text)
    if not text or not head:
        raise ConfigError(
            f"Gate rule {text!r}: expected 'METRIC{{tag=value,...}} OP NUMBER', e.g. "
            "'robust_accuracy{attack=pgd_linf,eps=0.1} >= 0.7' or 'accuracy max_drop 0.02'."
        )
    metric = head.group("metric")
    selectors = _parse_tags(head.group("tags") or "", text)
    rest = head.group("rest").strip()
    opm = _OP_RE.match(rest)
    if not opm:
        raise ConfigError(
            f"Gate rule {text!r}: expected an operator after the metric; valid operators: {', '.join(OPS)}."
        )
    op = _check_op(opm.group("op"), text)
    tokens = opm.group("rest").split()
    if not tokens:
        raise ConfigError(f"Gate rule {text!r}: expected a number after {op!r}.")
    try:
        threshold = float(tokens[0])
    except ValueError:
        raise ConfigError(f"Gate rule {text!r}: expected a number after {op!r}, got {tokens[0]!r}.") from None
    threshold = _check_threshold(threshold, op, text)
    significant, test, alpha_given, rule_alpha, rule_n_boot = False, None, False, alpha, n_boot
    for tok in tokens[1:]:
        if op not in BASELINE_OPS:
            raise ConfigError(
                f"Gate rule {text!r}: unexpected {tok!r} after the number; options such as `significant` "
                f"apply to baseline rules ({', '.join(BASELINE_OPS)}) only."
            )
        key, eq, val = tok.partition("=")
        if tok == "significant":
            significant = True
        elif eq and key == "test":
            test, significant = _check_test(val, text), True
        elif eq and key == "alpha":
            try:
                rule_alpha = _check_alpha(float(val), text)
            except ValueError:
                raise ConfigError(f"Gate rule {text!r}: expected `alpha` to be a number, got {val!r}.") from None
            alpha_given = True
        elif eq and key == "n_boot":
            if not val.isdigit():
                raise ConfigError(f"Gate rule {text!r}: expected `n_boot` to be an int, got {val!r}.")
            rule_n_boot = _check_n_boot(int(val), text)
        else:
            choices = ("significant", "test=", "alpha=", "n_boot=")
            raise ConfigError(
                f"Gate rule {text!r}: unknown option {tok!r}.{did_you_mean(key if eq else tok, choices)} "
                f"Valid options: significant, test={'|'.join(TESTS)}, alpha=X, n_boot=N."
            )
    return GateRule(text=text, metric=metric, selectors=tuple(selectors), op=op, threshold=threshold,
                    significant=significant, test=test, alpha=rule_alpha, n_boot=rule_n_boot)


def _parse_rule_table(table: Mapping[str, Any], *, alpha: float, n_boot: int) -> GateRule:
    shown = json.dumps(dict(table), default=str, sort_keys=True)
    for key in table:
        if key not in RULE_KEYS:
            raise ConfigError(
                f"Gate rule {shown}: unknown key {key!r}.{did_you_mean(str(key), RULE_KEYS)} "
                f"Valid keys: {', '.join(RULE_KEYS)}."
            )
    metric = table.get("metric")
    if not isinstance(metric, str) or not re.fullmatch(_NAME_RE, metric):
        raise ConfigError(f"Gate rule {shown}: expected `metric` to be a metric name such as 'accuracy', got {metric!r}.")
    tags = table.get("tags", {})
    if not isinstance(tags, Mapping):
        raise ConfigError(f"Gate rule {shown}: expected `tags` to be a table like {{model = 'cnn'}}, got {tags!r}.")
    selectors: list[tuple[str, TagValue]] = []
    for k, v in tags.items():
        if isinstance(v, bool):
            v = str(v).lower()
        if not isinstance(v, (str, int, float)):
            raise ConfigError(f"Gate rule {shown}: tag {k!r} must be a string or number, got {v!r}.")
        selectors.append((str(k), v))
    kinds = [k for k in ("op", "max_drop", "max_rel_drop") if k in table]
    if len(kinds) != 1:
        raise ConfigError(
            f"Gate rule {shown}: give exactly one of `op` (with `threshold`), `max_drop` or `max_rel_drop`, "
            f"got {kinds or 'none'}."
        )
    if kinds[0] == "op":
        op = table["op"]
        if not isinstance(op, str):
            raise ConfigError(f"Gate rule {shown}: expected `op` to be one of {', '.join(ABSOLUTE_OPS)}, got {op!r}.")
        op = _check_op(op, shown)
        if op in BASELINE_OPS:
            raise ConfigError(f"Gate rule {shown}: write `{op} = NUMBER` instead of `op = {op!r}`.")
        if "threshold" not in table:
            raise ConfigError(f"Gate rule {shown}: `op` needs a `threshold`.")
        threshold = _check_threshold(table["threshold"], op, shown)
    else:
        if "threshold" in table:
            raise ConfigError(f"Gate rule {shown}: `threshold` goes with `op`; `{kinds[0]}` is the limit itself.")
        op = kinds[0]
        threshold = _check_threshold(table[op], op, shown)
    test = table.get("test")
    significant = table.get("significant", test is not None)
    if not isinstance(significant, bool):
        raise ConfigError(f"Gate rule {shown}: expected `significant` to be true or false, got {significant!r}.")
    if test is not None:
        test = _check_test(test, shown)
        if significant is False:
            raise ConfigError(f"Gate rule {shown}: `test` given with significant = false; drop one of them.")
    if (significant or "alpha" in table or "n_boot" in table) and op not in BASELINE_OPS:
        raise ConfigError(
            f"Gate rule {shown}: significance options apply to baseline rules ({', '.join(BASELINE_OPS)}) only."
        )
    rule_alpha = _check_alpha(table["alpha"], shown) if "alpha" in table else alpha
    rule_n_boot = _check_n_boot(table["n_boot"], shown) if "n_boot" in table else n_boot
    text = table.get("name") or _canonical(metric, selectors, op, threshold, significant, test, rule_alpha,
                                             "alpha" in table)
    if not isinstance(text, str):
        raise ConfigError(f"Gate rule {shown}: expected `name` to be a string, got {text!r}.")
    return GateRule(text=text, metric=metric, selectors=tuple(selectors), op=op, threshold=threshold,
                    significant=significant, test=test, alpha=rule_alpha, n_boot=rule_n_boot)


def parse_gates(gates: Mapping[str, Any] | Sequence[Any], *, source: str = "[gates]") -> GateConfig:
    """Parse a `[gates]` table (`rules`, optional `baseline`, `alpha`, `n_boot`, `seed`) or a
    bare list of rules. Plans can call this at validation time to fail early (exit 2)."""
    if isinstance(gates, (str, bytes)) or not isinstance(gates, (Mapping, Sequence)):
        raise ConfigError(f"{source}: expected a table with `rules = [...]` or a list of rules, got {gates!r}.")
    if not isinstance(gates, Mapping):
        gates = {"rules": list(gates)}
    for key in gates:
        if key not in GATES_KEYS:
            raise ConfigError(
                f"{source}: unknown key {key!r}.{did_you_mean(str(key), GATES_KEYS)} Valid keys: {', '.join(GATES_KEYS)}."
            )
    alpha = _check_alpha(gates.get("alpha", DEFAULT_ALPHA), source)
    n_boot = _check_n_boot(gates.get("n_boot", DEFAULT_N_BOOT), source)
    seed = gates.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{source}: expected `seed` to be an int, got {seed!r}.")
    baseline = gates.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise ConfigError(f"{source}: expected `baseline` to be a path or run id, got {baseline!r}.")
    rules = gates.get("rules", [])
    if isinstance(rules, (str, Mapping)):
        rules = [rules]
    if not isinstance(rules, Sequence):
        raise ConfigError(f"{source}: expected `rules` to be a list of rule strings or tables, got {rules!r}.")
    parsed = []
    for r in rules:
        try:
            parsed.append(parse_rule(r, alpha=alpha, n_boot=n_boot))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    return GateConfig(rules=tuple(parsed), baseline=baseline, alpha=alpha, n_boot=n_boot, seed=seed)


def load_gates_file(path: str | Path) -> GateConfig:
    """Read rules from a TOML file: either a `[gates]` table or top-level `rules = [...]`."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Gate rules file {str(path)!r} does not exist.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    table = raw.get("gates", raw) if isinstance(raw.get("gates"), dict) else raw
    if "gates" in raw and not isinstance(raw["gates"], dict):
        raise ConfigError(f"{path}: expected [gates] to be a table with `rules = [...]`.")
    if "gates" in raw and set(raw) - {"gates"}:
        raise ConfigError(f"{path}: unexpected top-level keys {sorted(set(raw) - {'gates'})} beside [gates].")
    return parse_gates(table, source=str(path))


def gates_from_run(run: RunRecord | Mapping[str, Any]) -> GateConfig | None:
    """The `[gates]` table recorded in the run's resolved plan (provenance.plan.gates), if any."""
    d = run.to_dict() if isinstance(run, RunRecord) else run
    plan = (d.get("provenance") or {}).get("plan") or {}
    gates = plan.get("gates") if isinstance(plan, Mapping) else None
    if not gates:
        return None
    return parse_gates(gates, source="plan [gates]")


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


def load_per_example(result: Mapping[str, Any], run_dir: str | Path | None) -> dict[str, Any]:
    """Per-example arrays (N,) of one result, read from its `.npz` artifacts, keyed by the
    metric they average to. Returns {} when there are none (the gate then reports
    "could not evaluate"); never raises for a missing or unreadable file.

    From an artifact with `y_true` and `y_pred` (the metrics suite's "predictions"):
      classification (integer labels): "accuracy" (1.0 correct / 0.0 wrong), "error_rate";
        with `probs` (N, K): "nll" / "log_loss" (-log p[y]), "brier_score" (sum_k (p_k - 1[y=k])^2)
      regression (float targets, y_pred (N,)): "mse" (squared error), "mae" (absolute error)
    Any array named `per_example_<metric>` (N,) is taken as is under "<metric>".
    "y_true" and "example_id" (the artifact's `example_id` or `index`, when present) are
    returned too, to check that two runs saw the same examples.
    """
    import numpy as np

    if run_dir is None:
        return {}
    arts = result.get("artifacts") or {}
    order = sorted(arts, key=lambda k: (k != "predictions", k))
    out: dict[str, Any] = {}
    for name in order:
        rel = arts[name]
        if not isinstance(rel, str) or not rel.endswith(".npz"):
            continue
        path = Path(run_dir) / rel
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            continue
        for k, v in data.items():
            if k.startswith("per_example_") and v.ndim == 1 and k[len("per_example_"):] not in out:
                out[k[len("per_example_"):]] = v.astype(np.float64)
        if "y_true" in data and "y_pred" in data and "y_true" not in out:
            out.update(_derive_per_example(data))
        for key in ("example_id", "index"):
            if key in data and "example_id" not in out and data[key].ndim == 1:
                out["example_id"] = data[key]
    return out


def _derive_per_example(data: Mapping[str, Any]) -> dict[str, Any]:
    import numpy as np

    y_true, y_pred = np.asarray(data["y_true"]), np.asarray(data["y_pred"])
    if y_true.ndim != 1 or y_true.shape != y_pred.shape[:1]:
        return {}
    out: dict[str, Any] = {"y_true": y_true}
    if y_pred.ndim == 1 and y_true.dtype.kind in "biu" and y_pred.dtype.kind in "biu":
        correct = (y_true == y_pred).astype(np.float64)
        out["accuracy"] = correct
        out["error_rate"] = 1.0 - correct
        probs = data.get("probs")
        if probs is None:
            probs = data.get("proba")
        if probs is not None and probs.ndim == 2 and probs.shape[0] == y_true.size and y_true.max(initial=0) < probs.shape[1]:
            p = np.asarray(probs, dtype=np.float64)
            py = p[np.arange(y_true.size), y_true]
            out["nll"] = out["log_loss"] = -np.log(np.clip(py, 1e-300, None))
            onehot = np.zeros_like(p)
            onehot[np.arange(y_true.size), y_true] = 1.0
            out["brier_score"] = ((p - onehot) ** 2).sum(axis=1)
    elif y_pred.ndim == 1 and y_pred.dtype.kind == "f":
        err = y_pred.astype(np.float64) - y_true.astype(np.float64)
        out["mse"] = err**2
        out["mae"] = np.abs(err)
    return out


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
) -> GateOutcome:
    """Evaluate every rule on `run` (and `baseline` for drop rules). Per-example data for
    significance tests are read from the results' artifacts under `run_dir` /
    `baseline_dir`. Never raises for a rule that cannot be evaluated: that rule gets
    status "error" with the reason. Unparseable rules raise ConfigError."""
    t0 = time.perf_counter()
    if isinstance(rules, GateConfig):
        cfg = rules
    else:
        cfg = GateConfig(rules=tuple(r if isinstance(r, GateRule) else parse_rule(r) for r in rules))
    seed = cfg.seed if seed is None else seed
    cand = run.to_dict() if isinstance(run, RunRecord) else run
    base = baseline.to_dict() if isinstance(baseline, RunRecord) else baseline
    cache: dict[tuple[int, int], dict[str, Any]] = {}
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
                   run_dir: Any, baseline_dir: Any, seed: int, cache: dict) -> RuleOutcome:
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


def _per_example(cache: dict, run: Mapping[str, Any], res: Mapping[str, Any], run_dir: Any, metric: str,
                 value: float, which: str) -> dict[str, Any]:
    import numpy as np

    key = (id(run), id(res))
    if key not in cache:
        cache[key] = load_per_example(res, run_dir)
    data = cache[key]
    if metric not in data:
        where = "no run directory was given" if run_dir is None else (
            f"artifacts {sorted((res.get('artifacts') or {}))} hold none for it" if data or res.get("artifacts")
            else "the result has no artifacts")
        raise _RuleError("evaluate", f"{which}: no per-example data for {metric!r} of "
                                     f"{res.get('suite')}/{res.get('model')} ({where}); a significance test needs "
                                     "the metrics suite's predictions artifact (y_true, y_pred).")
    mean = float(np.mean(data[metric]))
    if not math.isclose(mean, value, rel_tol=1e-4, abs_tol=1e-6):
        raise _RuleError("evaluate", f"{which}: per-example {metric} from the predictions artifact averages to "
                                     f"{mean:.6g} but the metric is {value:.6g}; they do not describe the same "
                                     "examples (or the metric is a rescaled variant: pick, with tags, the variant "
                                     "computed from the predictions, e.g. units=model).")
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


# --------------------------------------------------------------------------- output


def format_outcome(outcome: GateOutcome) -> str:
    """Plain-text verdict, one line per rule, for the terminal."""
    lines = []
    for r in outcome.results:
        tag = {"pass": "PASS ", "fail": "FAIL ", "error": "ERROR"}[r.status]
        lines.append(f"{tag} {r.rule}: {r.message}")
    c = outcome.counts()
    lines.append(f"gate {outcome.status}: {c['pass']} passed, {c['fail']} failed, {c['error']} errors "
                 f"(exit {outcome.exit_code})")
    return "\n".join(lines)


def _gh_escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_escape_property(s: str) -> str:
    return _gh_escape_data(s).replace(":", "%3A").replace(",", "%2C")


def github_annotations(
    outcome: GateOutcome,
    env: Mapping[str, str] = os.environ,
    *,
    summary_markdown: str | None = None,
    stream: TextIO | None = None,
) -> list[str]:
    """On GitHub Actions (`GITHUB_ACTIONS=true`): print one `::error` workflow command per
    failed or unevaluated rule to `stream` (stdout) and append `summary_markdown` (default:
    the gate's Markdown table) to the file named by `$GITHUB_STEP_SUMMARY`. Elsewhere does
    nothing. Returns the annotation lines."""
    if env.get("GITHUB_ACTIONS") != "true":
        return []
    stream = stream if stream is not None else sys.stdout
    lines = []
    for r in outcome.results:
        if r.status == "pass":
            continue
        title = ("Gate failed: " if r.status == "fail" else "Gate could not evaluate: ") + r.rule
        lines.append(f"::error title={_gh_escape_property(title)}::{_gh_escape_data(r.message)}")
    for line in lines:
        print(line, file=stream)
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        if summary_markdown is None:
            from workbench.reporting.markdown import gate_markdown

            summary_markdown = gate_markdown(outcome)
        with open(summary_path, "a", encoding="utf-8") as fh:
            fh.write(summary_markdown.rstrip("\n") + "\n\n")
    return lines


def gate_main(
    candidate: str | Path,
    *,
    rules_file: str | Path | None = None,
    baseline: str | Path | None = None,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = ("html", "md", "json", "junit"),
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Everything `workbench gate` does, returning its exit code.

    candidate / baseline: a results.json file or the run directory holding it (the CLI
    resolves run ids to these paths). Rules come from `rules_file` if given, else from the
    run's plan (`[gates]`). With `out_dir`, writes the reports (including the gate
    verdicts, `gate.json` and `junit.xml`) there. Prints the verdicts; on GitHub Actions
    also prints `::error` annotations and appends to the step summary. Configuration
    problems print one line to `stderr` and return 2.
    """
    from workbench.errors import WorkbenchError
    from workbench.reporting import load_results, write_reports
    from workbench.reporting.markdown import summary_markdown

    env = os.environ if env is None else env
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    try:
        run, run_dir = load_results(candidate)
        if rules_file is not None:
            cfg = load_gates_file(rules_file)
        else:
            cfg = gates_from_run(run)
            if cfg is None:
                raise ConfigError("No gate rules: add `[gates] rules = [...]` to the plan or pass --rules FILE.")
        if not cfg.rules:
            raise ConfigError("The gate has no rules; an empty gate would pass anything.")
        base = base_dir = None
        base_src = baseline if baseline is not None else cfg.baseline
        if base_src is not None:
            base, base_dir = load_results(base_src)
        outcome = evaluate_gates(run, cfg, baseline=base, run_dir=run_dir, baseline_dir=base_dir)
        print(format_outcome(outcome), file=stdout)
        if out_dir is not None:
            paths = write_reports(run, run_dir, formats=formats, gate_outcome=outcome, out_dir=out_dir)
            print("reports: " + ", ".join(str(p) for p in paths.values()), file=stdout)
        github_annotations(outcome, env, stream=stdout,
                           summary_markdown=summary_markdown(run, outcome, include_all_metrics=False))
        return outcome.exit_code
    except (WorkbenchError, ValueError) as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_USAGE
