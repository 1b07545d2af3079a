"""Batch reports of a run: results.json, summary.md, report.html, junit.xml.

    from workbench.reporting import write_reports, load_results
    run, run_dir = load_results("runs/abc/results.json")
    paths = write_reports(run, run_dir, formats=("html", "md", "json", "junit"))

Import-light: plotly is imported only when the HTML page is rendered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, did_you_mean
from workbench.records import RunRecord
from workbench.reporting.json_report import load_results, run_to_dict, write_gate_json, write_json

FORMATS = ("html", "md", "json", "junit")
FILE_NAMES = {"html": "report.html", "md": "summary.md", "json": "results.json", "junit": "junit.xml"}

def _relocate(data: dict[str, Any], run_dir: Path, out: Path) -> dict[str, Any]:
    """Artifact paths are relative to the results file; a copy written elsewhere gets
    paths relative to its own directory so readers (the gate, the dashboard) still find them."""
    if run_dir.resolve() == out.resolve():
        return data
    results = []
    for r in data.get("results", []):
        arts = {k: os.path.relpath(run_dir / v, out) if not os.path.isabs(v) else v
                for k, v in (r.get("artifacts") or {}).items()}
        results.append({**r, "artifacts": arts})
    return {**data, "results": results}


__all__ = ["FORMATS", "FILE_NAMES", "load_results", "parse_formats", "run_to_dict", "write_reports"]


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """"html,md" or ["html", "md"] -> ("html", "md"); unknown names raise ConfigError."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in items:
        f = str(f).strip().lower()
        if not f:
            continue
        if f not in FORMATS:
            raise ConfigError(f"Unknown report format {f!r}.{did_you_mean(f, FORMATS)} Valid formats: {', '.join(FORMATS)}.")
        if f not in out:
            out.append(f)
    if not out:
        raise ConfigError(f"Expected at least one report format out of {', '.join(FORMATS)}, got {formats!r}.")
    return tuple(out)


def write_reports(
    run: RunRecord | dict[str, Any],
    run_dir: str | Path,
    formats: str | Sequence[str] = FORMATS,
    gate_outcome: Any = None,
    *,
    out_dir: str | Path | None = None,
    suites: Any = None,
) -> dict[str, Path]:
    """Write the requested reports and return {format: path}.

    run_dir: where the run's artifacts live (paths in results.json are relative to it);
    out_dir: where the reports go (default: run_dir). gate_outcome: a `GateOutcome` (or its
    dict) to include; with "json" it is also written as `gate.json` (key "gate" in the
    returned dict). suites: name -> suite class for figures (default: the SUITES registry).
    """
    fmts = parse_formats(formats)
    data = run_to_dict(run)
    out = Path(out_dir if out_dir is not None else run_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "json" in fmts:
        paths["json"] = write_json(_relocate(data, Path(run_dir), out), out)
        if gate_outcome is not None:
            paths["gate"] = write_gate_json(gate_outcome, out)
    if "md" in fmts:
        from workbench.reporting.markdown import write_markdown

        paths["md"] = write_markdown(data, out, gate_outcome, suites=suites)
    if "junit" in fmts:
        from workbench.reporting.junit import write_junit

        paths["junit"] = write_junit(data, out, gate_outcome)
    if "html" in fmts:
        from workbench.reporting.html import write_html

        paths["html"] = write_html(data, run_dir, out, gate_outcome, suites=suites)
    return paths
