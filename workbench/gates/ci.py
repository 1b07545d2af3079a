"""Gate output for people and CI: plain-text verdicts, GitHub Actions annotations and
step summary, and `gate_main` (everything `workbench gate` does)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from workbench.errors import ConfigError

from workbench.gates.evaluate import GateOutcome, evaluate_gates
from workbench.gates.rules import EXIT_USAGE, gates_from_run, load_gates_file

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
