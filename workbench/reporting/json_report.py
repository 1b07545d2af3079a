"""results.json: read and write the results contract (schema_version 2, see README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError
from workbench.records import SCHEMA_VERSION, RunRecord

RESULTS_FILE = "results.json"
GATE_FILE = "gate.json"


def run_to_dict(run: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """The contract dict of a run. A dict is validated and normalised through
    `RunRecord.from_dict` (non-finite values become null with a reason); extra top-level
    keys are kept. Raises ConfigError when it is not a results.json of this schema."""
    if isinstance(run, RunRecord):
        return run.to_dict()
    if not isinstance(run, dict):
        raise ConfigError(f"Expected a RunRecord or a results.json dict, got {type(run).__name__}.")
    try:
        record = RunRecord.from_dict(run)
    except (KeyError, TypeError, ValueError) as exc:
        missing = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(f"Not a valid results.json (schema_version {SCHEMA_VERSION}): {missing}.") from exc
    out = {k: v for k, v in run.items() if k not in ("schema_version", "run_id", "created_at", "provenance", "results")}
    return {**record.to_dict(), **out}


def load_results(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a results.json (or a run directory holding one). Returns the validated dict
    and the run directory its artifact paths are relative to."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise ConfigError(f"No results file at {str(p)!r}; give a results.json or a run directory holding one.")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc}).") from exc
    try:
        return run_to_dict(raw), p.parent
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


def dumps(data: Any) -> str:
    """Strict JSON (no NaN/Infinity), stable key order as given, UTF-8 kept readable."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def write_json(run: RunRecord | dict[str, Any], out_dir: str | Path) -> Path:
    """Write `results.json` into `out_dir` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    _atomic_write(path, dumps(run_to_dict(run)))
    return path


def write_gate_json(gate_outcome: Any, out_dir: str | Path) -> Path:
    """Write the gate verdicts (`GateOutcome.to_dict()`) as `gate.json`."""
    data = gate_outcome.to_dict() if hasattr(gate_outcome, "to_dict") else dict(gate_outcome)
    path = Path(out_dir) / GATE_FILE
    _atomic_write(path, dumps(data))
    return path


def _atomic_write(path: Path, text: str) -> None:
    """Write next to the target and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
