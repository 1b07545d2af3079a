"""Gate rules: the grammar of a rule string or table, and the `[gates]` configuration.

See `workbench.gates` for the grammar and the meaning of each operator.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from workbench.errors import ConfigError, did_you_mean
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
    prov = d.get("provenance") or {}
    plan = prov.get("plan") or {}
    gates = plan.get("gates") if isinstance(plan, Mapping) else None
    if not gates:
        return None
    cfg = parse_gates(gates, source="plan [gates]")
    # rules the run did not select (`run --suite/--model`, provenance.gates_not_run) are not run here either
    not_run = {r.get("rule") for r in prov.get("gates_not_run") or [] if isinstance(r, Mapping)}
    return replace(cfg, rules=tuple(r for r in cfg.rules if r.text not in not_run)) if not_run else cfg


