"""junit.xml: one test case per gate rule (and one per suite result), for CI test viewers.

Layout (the Ant/Jenkins JUnit schema most CI tools read)::

    <testsuites name="workbench" tests failures errors skipped time>
      <testsuite name="workbench.gate" ...>       one <testcase> per rule:
          pass -> empty; fail -> <failure message type="GateFailure">;
          could not evaluate / bad rule -> <error message type="GateError"|"GateConfigError">
      <testsuite name="workbench.suites" ...>     one <testcase> per (suite, model, dataset):
          ok -> empty; skipped -> <skipped message>; error -> <error message type="SuiteError">

Strings are escaped by ElementTree; characters XML 1.0 cannot carry are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.records import RunRecord

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(s: Any) -> str:
    return _INVALID_XML.sub("", "" if s is None else str(s))


def _testsuite(parent: ET.Element, name: str, cases: list[dict[str, Any]], timestamp: str | None,
               properties: dict[str, str]) -> dict[str, int]:
    counts = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}
    for c in cases:
        if c.get("kind") == "failure":
            counts["failures"] += 1
        elif c.get("kind") == "error":
            counts["errors"] += 1
        elif c.get("kind") == "skipped":
            counts["skipped"] += 1
    total = sum(float(c.get("time") or 0.0) for c in cases)
    ts = ET.SubElement(parent, "testsuite", {
        "name": name, **{k: str(v) for k, v in counts.items()}, "time": f"{total:.3f}",
        **({"timestamp": _clean(timestamp)} if timestamp else {}),
    })
    if properties:
        props = ET.SubElement(ts, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", {"name": _clean(k), "value": _clean(v)})
    for c in cases:
        tc = ET.SubElement(ts, "testcase", {"classname": _clean(c["classname"]), "name": _clean(c["name"]),
                                            "time": f"{float(c.get('time') or 0.0):.3f}"})
        kind = c.get("kind")
        if kind in ("failure", "error", "skipped"):
            attrs = {"message": _clean(c.get("message"))}
            if kind != "skipped":
                attrs["type"] = _clean(c.get("type") or kind)
            el = ET.SubElement(tc, kind, attrs)
            if c.get("details"):
                el.text = _clean(c["details"])
        if c.get("stdout"):
            ET.SubElement(tc, "system-out").text = _clean(c["stdout"])
    counts["time"] = total  # type: ignore[assignment]
    return counts


def _gate_cases(outcome: Mapping[str, Any]) -> list[dict[str, Any]]:
    cases = []
    for r in outcome.get("rules", []):
        target = r.get("target") or {}
        classname = "workbench.gate" + (f".{target['model']}" if target.get("model") else "")
        details = "\n".join(f"{k}: {r.get(k)}" for k in ("observed", "threshold", "baseline", "drop", "p_value",
                                                           "ci", "test") if r.get(k) is not None)
        case = {"classname": classname, "name": r.get("rule"), "time": r.get("seconds", 0.0),
                "stdout": r.get("message")}
        if r.get("status") == "fail":
            case.update(kind="failure", type="GateFailure", message=r.get("message"), details=details)
        elif r.get("status") == "error":
            kind = "GateConfigError" if r.get("error_kind") == "config" else "GateError"
            case.update(kind="error", type=kind, message=r.get("message"), details=details)
        cases.append(case)
    return cases


def _suite_cases(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    cases = []
    for r in run.get("results", []):
        case = {"classname": f"workbench.suites.{r.get('suite')}", "name": f"{r.get('model')} on {r.get('dataset')}",
                "time": r.get("duration_s") or 0.0}
        if r.get("status") == "skipped":
            case.update(kind="skipped", message=r.get("reason"))
        elif r.get("status") == "error":
            case.update(kind="error", type="SuiteError", message=r.get("reason"), details=r.get("reason"))
        cases.append(case)
    return cases


def junit_xml(run: RunRecord | Mapping[str, Any] | None, gate_outcome: Any = None) -> str:
    """The JUnit XML document (str) for a run's suite results and, if given, its gate
    verdicts (`GateOutcome` or its dict)."""
    d = run.to_dict() if isinstance(run, RunRecord) else (run or {})
    outcome = gate_outcome.to_dict() if hasattr(gate_outcome, "to_dict") else gate_outcome
    root = ET.Element("testsuites", {"name": "workbench"})
    props = {"run_id": str(d.get("run_id", ""))}
    if outcome and outcome.get("baseline_run_id"):
        props["baseline_run_id"] = str(outcome["baseline_run_id"])
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    parts = []
    if outcome is not None:
        parts.append(("workbench.gate", _gate_cases(outcome)))
    if d.get("results"):
        parts.append(("workbench.suites", _suite_cases(d)))
    for name, cases in parts:
        c = _testsuite(root, name, cases, d.get("created_at"), props)
        for k in totals:
            totals[k] += c[k]
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(run: RunRecord | Mapping[str, Any] | None, out_dir: str | Path, gate_outcome: Any = None) -> Path:
    """Write `junit.xml` into `out_dir` and return its path."""
    path = Path(out_dir) / "junit.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(run, gate_outcome), encoding="utf-8")
    return path
