"""summary.md: the headline metrics, their CIs and the gate verdicts, for a pull-request
comment or `$GITHUB_STEP_SUMMARY`. It always fits a pull-request comment (at most 65,536
characters: GitHub's limit); long tables are cut with a note. The full listing of every
metric is in report.html and results.json, which the summary links.

Every user-supplied string (model, dataset, plan and metric names, tags, reasons, rule
texts, messages) goes through `md_escape`, so it can neither inject HTML nor break a table.
The headline selection (`headline_rows`, which asks each result's suite class through its
hooks) and number formatting are shared with the HTML page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.records import RunRecord

# A GitHub pull-request comment holds at most 65,536 characters (a step summary 1 MiB). The
# budget is counted in UTF-8 bytes, which are never fewer than characters.
MAX_BYTES = 65_536

# Which rows are headline material is each suite's own business (`Suite.headline_metrics`,
# `is_headline`, `headline_worst_case`, `headline_detail_tags`): this module names no suite
# and no metric. Every row stays in results.json and the full tables.


from workbench.registry import suite_class  # noqa: E402  (re-exported: name -> suite class or None)


def is_headline(suite_cls: Any, m: Mapping[str, Any]) -> bool:
    """Whether metric row `m` (its `to_dict()` form) is headline material for `suite_cls`
    (None: a suite that is not installed, which has no headline rows)."""
    if suite_cls is None:
        return False
    try:
        return m.get("name") in tuple(getattr(suite_cls, "headline_metrics", ())) and bool(suite_cls.is_headline(dict(m)))
    except Exception:
        return False

# `#` (issue links), `@` (mentions) and `$` (math) are special on GitHub too.
_MD_BACKSLASH = set("\\`*_[]|~#@$")
_MD_ENTITY = {"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;"}


_MD_TABLE = {ord(c): "\\" + c for c in _MD_BACKSLASH}
_MD_TABLE.update({ord(c): e for c, e in _MD_ENTITY.items()})
_MD_TABLE.update({ord(c): " " for c in "\r\n\t"})
_MD_TABLE.update({i: None for i in (*range(0, 32), 127) if i not in _MD_TABLE})


def md_escape(value: Any) -> str:
    """Make any value safe inside Markdown text and table cells: HTML specials become
    entities, Markdown punctuation is backslash-escaped, newlines become spaces and other
    control characters are dropped."""
    return ("" if value is None else str(value)).translate(_MD_TABLE)


# --------------------------------------------------------------------------- shared formatting


QUIET_UNITS = frozenset({"fraction", "dimensionless", "ratio", "1", "count"})  # not repeated after the number


ZERO_BELOW = 1e-12  # |v| below this prints as 0: float round-off (3.5e-18), not a measurement


def fmt_value(v: float | None, unit: str | None = None, *, scale: float | None = None) -> str:
    """A number for people: 4 significant digits (thousands separators above 10^4),
    followed by its unit unless the unit is a plain fraction/ratio. Round-off prints as 0:
    |v| < 1e-12, or |v| < 1e-9 x `scale` (the magnitude of the quantity it sits beside,
    e.g. a CI bound next to its value)."""
    if v is None:
        return "n/a"
    v = float(v)
    if not math.isfinite(v):
        return {"inf": "∞", "-inf": "−∞"}.get(str(v), "n/a")
    if abs(v) < ZERO_BELOW or (scale is not None and math.isfinite(scale) and abs(v) < 1e-9 * abs(scale)):
        v = 0.0
    if unit == "s" and v != 0 and abs(v) < 1:  # durations: 92.37 µs, not 9.237e-05 s
        factor, prefix = time_prefix(v)
        return f"{v / factor:.4g} {prefix}s"
    if v != 0 and (abs(v) < 1e-3):
        s = f"{v:.3e}"
    elif abs(v) >= 1e4:
        s = f"{v:,.0f}"
    else:
        s = f"{v:.4g}"
    return f"{s} {unit}" if unit and unit not in QUIET_UNITS else s


def time_prefix(v: float) -> tuple[float, str]:
    """(factor, SI prefix) that puts a duration under 1 s in ms, µs or ns."""
    a = abs(v)
    return (1e-3, "m") if a >= 1e-3 else (1e-6, "µ") if a >= 1e-6 else (1e-9, "n")


def fmt_ci(ci: Sequence[float] | None, value: float | None = None, unit: str | None = None) -> str:
    """"[low, high]", each bound formatted on the scale of the interval and its value (so
    a bound of 3.5e-18 beside 0.97 prints as 0); durations in the value's unit prefix
    ("[88.77, 93.78] µs"); "" without an interval."""
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    mags = [abs(float(x)) for x in (*ci, value) if x is not None and math.isfinite(float(x))]
    scale = max(mags) if mags else None
    if unit == "s" and scale and scale < 1:
        factor, prefix = time_prefix(float(value) if value else scale)
        return f"[{float(ci[0]) / factor:.4g}, {float(ci[1]) / factor:.4g}] {prefix}s"
    return f"[{fmt_value(ci[0], scale=scale)}, {fmt_value(ci[1], scale=scale)}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"


def arrow(higher_is_better: bool | None) -> str:
    return {True: "↑", False: "↓"}.get(higher_is_better, "·")


def distinguishing_tags(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each headline row's tags, cut to what tells it apart: within a (model, metric) group
    of several rows only the tag keys whose values differ (latency at batch_size=1 and 32
    shows `batch_size`, not the torch version they share); a row alone keeps all its tags.
    Every tag stays in results.json and the full tables."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.get("model"), r.get("metric")), []).append(i)
    out: list[dict[str, Any]] = [dict(r.get("tags") or {}) for r in rows]
    for members in groups.values():
        if len(members) < 2:
            continue
        keys = set().union(*(out[i].keys() for i in members))
        varying = {k for k in keys if len({str(out[i].get(k)) for i in members}) > 1}
        for i in members:
            out[i] = {k: v for k, v in out[i].items() if k in varying}
    return out


def tags_text(tags: Mapping[str, Any] | None, skip: Sequence[str] = ()) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((tags or {}).items()) if k not in skip)


def headline_rows(run: Mapping[str, Any], suites: Any = None) -> list[dict[str, Any]]:
    """The headline metrics of every ok result, grouped by model in order of appearance,
    then by result, in the order of the suite's `headline_metrics`.

    Each row: model, dataset, suite, metric, value, reason, ci, n, unit, higher_is_better,
    tags, note. For a metric in the suite's `headline_worst_case` the row is the worst case
    over that tag (the suite's own per-example worst case when it reports one); `note` says
    which. `suites`: name -> suite class (default: the SUITES registry); a suite that is not
    installed contributes no rows.
    """
    results = [r for r in run.get("results", []) if r.get("status") == "ok"]
    models: list[str] = []
    for r in results:
        if r.get("model") not in models:
            models.append(r.get("model"))
    classes: dict[Any, Any] = {}
    rows: list[dict[str, Any]] = []
    for model in models:
        for res in (r for r in results if r.get("model") == model):
            name = res.get("suite")
            if name not in classes:
                classes[name] = suite_class(suites, name)
            cls = classes[name]
            if cls is None:
                continue
            groups: dict[str, list[Mapping[str, Any]]] = {}
            for m in res.get("metrics", []):
                if is_headline(cls, m):
                    groups.setdefault(m["name"], []).append(m)
            worst = dict(getattr(cls, "headline_worst_case", {}) or {})
            detail = frozenset(getattr(cls, "headline_detail_tags", ()) or ())
            for metric in getattr(cls, "headline_metrics", ()):
                ms = groups.get(metric, [])
                if ms and metric in worst:
                    rows.extend(_worst_case_rows(res, ms, worst[metric], detail))
                else:
                    rows.extend(_row(res, m) for m in ms)
    return rows


def _row(res: Mapping[str, Any], m: Mapping[str, Any], note: str = "", tags: Mapping[str, Any] | None = None) -> dict:
    return {
        "model": res.get("model"), "dataset": res.get("dataset"), "suite": res.get("suite"),
        "metric": m.get("name"), "value": m.get("value"), "reason": m.get("reason"), "ci": m.get("ci"),
        "n": m.get("n"), "unit": m.get("unit"), "higher_is_better": m.get("higher_is_better"),
        "tags": dict(m.get("tags") or {}) if tags is None else dict(tags), "note": note,
    }


def _worst_case_rows(res: Mapping[str, Any], ms: list[Mapping[str, Any]], over: str,
                     detail: frozenset[str] = frozenset()) -> list[dict]:
    """The worst case over tag `over`. When the suite reports its own per-example worst
    case (`over` = "worst_case", e.g. an example counts only if every attack fails on it)
    those rows are used as they are; otherwise the worst value over `over` in each group of
    rows that agree on every other tag (the `detail` tags aside)."""
    own = [m for m in ms if (m.get("tags") or {}).get(over) == "worst_case"]
    if own:
        return [_row(res, m, note=f"worst case over {(m.get('tags') or {}).get('attacks') or 'all ' + over + 's'}"
                     " (per example)", tags={k: v for k, v in (m.get("tags") or {}).items() if k not in (over, "attacks")})
                for m in own]
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for m in ms:
        tags = m.get("tags") or {}
        key = tuple(sorted((k, str(v)) for k, v in tags.items() if k != over and k not in detail))
        groups.setdefault(key, []).append(m)
    rows = []
    for key, group in groups.items():
        valued = [m for m in group if m.get("value") is not None]
        hib = group[0].get("higher_is_better")
        if not valued:
            rows.append(_row(res, group[0], note=f"no {over} gave a value", tags=dict(key)))
            continue
        pick = min if hib is not False else max
        worst = pick(valued, key=lambda m: m["value"])
        note = f"worst of {len(group)} ({over}={(worst.get('tags') or {}).get(over, '?')})" if len(group) > 1 else ""
        if len(valued) < len(group):
            note += f"; {len(group) - len(valued)} without a value"
        rows.append(_row(res, worst, note=note, tags=dict(key)))
    return rows


def provenance_fields(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs describing where a run came from; values are raw strings."""
    prov = run.get("provenance") or {}
    plan = prov.get("plan") if isinstance(prov.get("plan"), Mapping) else {}
    plan_run = plan.get("run") if isinstance(plan.get("run"), Mapping) else {}
    plan_name = prov.get("plan_name") or plan_run.get("name") or plan.get("name")
    plan_source = plan.get("source") or prov.get("plan_path")
    versions = prov.get("versions") or {}
    fields = [
        ("run id", run.get("run_id")),
        ("created", run.get("created_at")),
        ("plan", plan_name),
        ("plan file", plan_source),
        ("profile", plan_run.get("profile") or prov.get("profile")),
        ("seed", prov.get("seed")),
        ("device", prov.get("device")),
        ("git", prov.get("git_sha")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, Mapping)
         else versions),
        # what the user must know about the numbers: data transforms and splits, untrained
        # models, overlap warnings, gate rules not run (workbench.runsetup)
        ("notes", "; ".join(map(str, prov["notes"])) if isinstance(prov.get("notes"), list) else None),
    ]
    return [(k, str(v)) for k, v in fields if v not in (None, "", {})]


def status_counts(run: Mapping[str, Any]) -> dict[str, int]:
    out = {"ok": 0, "skipped": 0, "error": 0}
    for r in run.get("results", []):
        out[r.get("status", "error")] = out.get(r.get("status", "error"), 0) + 1
    return out


# --------------------------------------------------------------------------- Markdown


class _Doc:
    """Lines with a byte budget; once a table no longer fits, everything after is cut."""

    RESERVE = 600

    def __init__(self, max_bytes: int) -> None:
        self.lines: list[str] = []
        self.size = 0
        self.max_bytes = max_bytes
        self.full = False

    def add(self, line: str, *, force: bool = False) -> bool:
        """Append a line if it fits the budget; `force` spends the reserve (notes only)."""
        b = len(line.encode("utf-8")) + 1
        if not force and (self.full or self.size + b > self.max_bytes - self.RESERVE):
            self.full = True
            return False
        self.lines.append(line)
        self.size += b
        return True

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]], what: str, total: int | None = None) -> None:
        """Add a table; `rows` may be a lazy iterable (then give `total`), so rows past the
        budget are never formatted."""
        total = len(rows) if total is None else total  # type: ignore[arg-type]
        if not self.add("| " + " | ".join(header) + " |") or not self.add("|" + "---|" * len(header)):
            return
        for i, row in enumerate(rows):
            if not self.add("| " + " | ".join(row) + " |"):
                self.add("", force=True)
                self.add(f"_{what} truncated: {i} of {total} rows shown to keep this summary under "
                         f"{self.max_bytes:,} bytes; every row is in results.json and report.html._", force=True)
                return
        self.add("")

    def text(self) -> str:
        out = "\n".join(self.lines).rstrip("\n") + "\n"
        if self.full:
            out += "\n_Summary cut here to stay under the size limit; see results.json and report.html._\n"
        return out


_STATUS_MD = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}


def _gate_section(doc: _Doc, outcome: Mapping[str, Any], level: str = "###") -> None:
    rules = outcome.get("rules", [])
    c = {s: sum(r.get("status") == s for r in rules) for s in ("pass", "fail", "error")}
    head = {"pass": "✅ PASS", "fail": "❌ FAIL", "error": "⚠️ ERROR"}.get(outcome.get("status"), "?")
    doc.add(f"{level} Gate: {head}")
    doc.add("")
    base = outcome.get("baseline_run_id")
    doc.add(f"{len(rules)} rules: {c['pass']} passed, {c['fail']} failed, {c['error']} could not be evaluated "
            f"(exit code {outcome.get('exit_code')})" + (f"; baseline run {md_escape(base)}" if base else "") + ".")
    doc.add("")
    rows = [[_STATUS_MD.get(r.get("status"), md_escape(r.get("status"))), md_escape(r.get("rule")),
             fmt_value(r.get("observed")) if r.get("observed") is not None else "",
             fmt_value(r.get("threshold")) if r.get("threshold") is not None else "",
             fmt_value(r.get("baseline")) if r.get("baseline") is not None else "",
             fmt_p(r.get("p_value")), md_escape(r.get("message"))] for r in rules]
    doc.table(["status", "rule", "observed", "limit", "baseline", "p", "message"], rows, "Gate table")


def _outcome_dict(gate_outcome: Any) -> dict[str, Any] | None:
    if gate_outcome is None:
        return None
    return gate_outcome.to_dict() if hasattr(gate_outcome, "to_dict") else dict(gate_outcome)


def gate_markdown(gate_outcome: Any, *, max_bytes: int = MAX_BYTES) -> str:
    """The gate verdicts alone (a `GateOutcome` or its dict) as Markdown."""
    doc = _Doc(max_bytes)
    _gate_section(doc, _outcome_dict(gate_outcome) or {"rules": []}, level="##")
    return doc.text()


def summary_markdown(
    run: RunRecord | Mapping[str, Any],
    gate_outcome: Any = None,
    *,
    max_bytes: int = MAX_BYTES,
    include_all_metrics: bool = False,
    suites: Any = None,
) -> str:
    """The run summary: provenance line, gate verdicts, headline metrics with CIs, suites
    that did not run, and where every metric is (report.html, results.json). At most
    `max_bytes` UTF-8 bytes (default: a pull-request comment). `include_all_metrics` adds
    the full listing, folded (for a larger budget such as a 1 MiB step summary)."""
    d = run.to_dict() if isinstance(run, RunRecord) else run
    if max_bytes < 2 * _Doc.RESERVE:
        raise ValueError(f"Expected `max_bytes` >= {2 * _Doc.RESERVE}, got {max_bytes}.")
    doc = _Doc(max_bytes)
    prov = dict(provenance_fields(d))
    title = f"## Workbench run {md_escape(d.get('run_id'))}"
    if prov.get("plan"):
        title += f" (plan {md_escape(prov['plan'])})"
    doc.add(title)
    doc.add("")
    counts = status_counts(d)
    bits = [f"**{md_escape(k)}** {md_escape(prov[k])}" for k in ("created", "seed", "device", "git") if k in prov]
    bits.append(f"{sum(counts.values())} results: {counts['ok']} ok, {counts['skipped']} skipped, "
                f"{counts['error']} errors")
    doc.add(" · ".join(bits))
    doc.add("")
    notes = (d.get("provenance") or {}).get("notes")
    if isinstance(notes, list) and notes:
        doc.add("**Notes**")
        doc.add("")
        for note in notes:
            doc.add(f"- {md_escape(str(note))}")
        doc.add("")
    outcome = _outcome_dict(gate_outcome)
    if outcome is not None:
        _gate_section(doc, outcome)
    doc.add("### Headline metrics")
    doc.add("")
    rows = headline_rows(d, suites)
    shown = distinguishing_tags(rows)
    if rows:
        doc.table(
            ["model", "metric", "value", "95% CI", "n", "", "dataset", "tags"],
            [[md_escape(r["model"]), md_escape(r["metric"]),
              (md_escape(fmt_value(r["value"], r["unit"])) if r["value"] is not None
               else "n/a: " + md_escape(r["reason"])),
              md_escape(fmt_ci(r["ci"], r["value"], r["unit"])), "" if r["n"] is None else str(r["n"]),
              arrow(r["higher_is_better"]), md_escape(r["dataset"]),
              md_escape("; ".join(x for x in (tags_text(t), r["note"]) if x))] for r, t in zip(rows, shown)],
            "Headline table",
        )
    else:
        doc.add("_No headline metrics in this run._")
        doc.add("")
    not_run = [r for r in d.get("results", []) if r.get("status") != "ok"]
    if not_run:
        doc.add("### Suites that did not run")
        doc.add("")
        doc.table(["suite", "model", "dataset", "status", "reason"],
                  [[md_escape(r.get("suite")), md_escape(r.get("model")), md_escape(r.get("dataset")),
                    md_escape(r.get("status")), md_escape(r.get("reason"))] for r in not_run],
                  "Table of suites that did not run")
    total = sum(len(r.get("metrics", [])) for r in d.get("results", []))
    doc.add(f"Every metric ({total}) with its 95% CI, n, unit and tags, and every figure: "
            "[report.html](report.html) · [results.json](results.json), beside this file.", force=True)
    doc.add("", force=True)
    if include_all_metrics:
        all_rows = ([md_escape(r.get("suite")), md_escape(r.get("model")), md_escape(m.get("name")),
                     md_escape(fmt_value(m.get("value"), m.get("unit"))) if m.get("value") is not None
                     else "n/a: " + md_escape(m.get("reason")),
                     md_escape(fmt_ci(m.get("ci"), m.get("value"), m.get("unit"))),
                     "" if m.get("n") is None else str(m.get("n")),
                     arrow(m.get("higher_is_better")), md_escape(tags_text(m.get("tags")))]
                    for r in d.get("results", []) for m in r.get("metrics", []))
        if total and doc.add(f"<details><summary>All {total} metrics</summary>"):
            doc.add("")
            doc.table(["suite", "model", "metric", "value", "95% CI", "n", "", "tags"], all_rows, "Metric table",
                      total=total)
            doc.add("</details>", force=True)
    return doc.text()


def write_markdown(run: RunRecord | Mapping[str, Any], out_dir: str | Path, gate_outcome: Any = None,
                   *, max_bytes: int = MAX_BYTES, suites: Any = None) -> Path:
    """Write `summary.md` into `out_dir` and return its path."""
    path = Path(out_dir) / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_markdown(run, gate_outcome, max_bytes=max_bytes, suites=suites), encoding="utf-8")
    return path
