"""What the dashboard reads, and how it is cached.

Pages never compute on load: they read the run store (SQLite, `workbench.store.Store`)
and each run's artifact files through the `st.cache_data` functions below.

Cache keys and lifetimes:
- the run list and the per-run index (models, datasets, suites) refresh every
  `REFRESH_S` seconds, so new runs appear while the dashboard is open;
- a finished run's results are cached for good (keyed by run id and `finished_at`);
  a run that is still `running` is re-read every `REFRESH_S` seconds;
- artifact files are keyed by path, size and modification time, so a rewritten file
  is read again;
- suite figures (`Suite.figures`, shared with the HTML report) are keyed by the result
  JSON and the modification times of its artifacts.

The pure helpers (`read_artifact`, `artifact_path`, `metrics_frame`, ...) take plain
arguments and are tested without Streamlit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from workbench.store import Store, default_store_path

REFRESH_S = 10
RUN_COLUMNS = ["run_id", "created_at", "plan", "status", "gate", "models", "datasets", "suites", "results",
               "device", "seed", "git_sha", "finished_at", "reason"]  # reason: why a run failed / was interrupted


def store_path() -> str:
    """The store this dashboard shows: $WORKBENCH_STORE, else .workbench/store.sqlite."""
    return str(Path(default_store_path()).expanduser().resolve())


def _connect(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30.0)
    con.execute("PRAGMA busy_timeout=30000")
    return con


# --------------------------------------------------------------------------- runs


def result_index(path: str) -> dict[str, dict[str, Any]]:
    """run_id -> {"models", "datasets", "suites" (sorted lists), "n_ok", "n": results}.
    One read of the `results` table (not of the payloads), so it stays fast for 1,000 runs.
    `Store` has no such query; this reads the same file read-only."""
    out: dict[str, dict[str, Any]] = {}
    con = _connect(path)
    try:
        rows = con.execute("SELECT run_id, suite, model, dataset, status FROM results").fetchall()
    finally:
        con.close()
    for run_id, suite, model, dataset, status in rows:
        d = out.setdefault(run_id, {"models": set(), "datasets": set(), "suites": set(), "n_ok": 0, "n": 0})
        d["models"].add(model)
        d["datasets"].add(dataset)
        d["suites"].add(suite)
        d["n"] += 1
        d["n_ok"] += status == "ok"
    for d in out.values():
        for k in ("models", "datasets", "suites"):
            d[k] = sorted(d[k])
    return out


def runs_frame(path: str) -> pd.DataFrame:
    """Every run of the store, newest first, one row per run (columns `RUN_COLUMNS`;
    `models`, `datasets`, `suites` are lists; `created_at` is a UTC timestamp)."""
    rows = Store(path).runs()
    index = result_index(path)
    recs = []
    for r in rows:
        ix = index.get(r["run_id"], {"models": [], "datasets": [], "suites": [], "n_ok": 0, "n": 0})
        recs.append({
            "run_id": r["run_id"], "created_at": r["created_at"], "plan": r.get("plan_name") or "",
            "status": r["status"], "gate": r.get("gate_status") or "", "models": ix["models"],
            "datasets": ix["datasets"], "suites": ix["suites"], "results": f"{ix['n_ok']}/{ix['n']} ok",
            "device": r.get("device") or "", "seed": r.get("seed"), "git_sha": (r.get("git_sha") or "")[:12],
            "finished_at": r.get("finished_at") or "", "reason": r.get("reason") or "",
        })
    df = pd.DataFrame(recs, columns=RUN_COLUMNS)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True, errors="coerce", format="ISO8601")
    return df


@st.cache_data(ttl=REFRESH_S, show_spinner=False, max_entries=8)
def cached_runs(path: str) -> pd.DataFrame:
    return runs_frame(path)


@st.cache_data(ttl=REFRESH_S, show_spinner=False, max_entries=256)
def cached_run_info(path: str, run_id: str) -> dict[str, Any] | None:
    return Store(path).run_info(run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _results_final(path: str, run_id: str, finished_at: str) -> list[dict[str, Any]]:
    return [r.to_dict() for r in Store(path).results(run_id)]


@st.cache_data(ttl=REFRESH_S, show_spinner=False, max_entries=16)
def _results_live(path: str, run_id: str) -> list[dict[str, Any]]:
    return [r.to_dict() for r in Store(path).results(run_id)]


def cached_results(path: str, info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's SuiteResults as dicts (`SuiteResult.to_dict()`), ordered by model, suite."""
    if info.get("status") == "running" or not info.get("finished_at"):
        return _results_live(path, info["run_id"])
    return _results_final(path, info["run_id"], str(info["finished_at"]))


def resolve_run(path: str, wanted: str | None, run_ids: list[str]) -> str | None:
    """A run id from a deep link: an exact id, a unique prefix, or "latest" (newest
    complete run); None when nothing matches."""
    if not wanted:
        return None
    if wanted in run_ids:
        return wanted
    try:
        return Store(path).resolve_run_id(wanted)
    except (ValueError, KeyError):
        return None


def run_candidates(wanted: str, run_ids: list[str], limit: int = 10) -> tuple[str, list[str]]:
    """Why a deep-link run id matched no single run, and what it might have meant:
    ("ambiguous", the runs it is a prefix of) or ("unknown", close ids, else the newest).
    `run_ids` newest first."""
    import difflib

    hits = [r for r in run_ids if r.startswith(wanted)]
    if len(hits) > 1:
        return "ambiguous", hits[:limit]
    close = difflib.get_close_matches(wanted, run_ids, n=limit, cutoff=0.5)
    return "unknown", close or run_ids[:limit]


# --------------------------------------------------------------------------- artifacts


def artifact_path(run_dir: str | Path | None, result: Mapping[str, Any], name: str) -> Path | None:
    """The file of artifact `name` of a result, or None when it is not recorded, missing,
    or points outside the run directory (a results.json is data, not trusted paths)."""
    rel = (result.get("artifacts") or {}).get(name)
    if not rel or run_dir is None:
        return None
    root = Path(run_dir).resolve()
    path = (root / str(rel)).resolve()
    if root != path and root not in path.parents:
        return None
    return path if path.is_file() else None


@st.cache_data(show_spinner=False, max_entries=512)
def _read_file(path: str, size: int, mtime: float) -> Any:
    p = Path(path)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return json.loads(p.read_text(encoding="utf-8"))


def read_artifact(run_dir: str | Path | None, result: Mapping[str, Any], name: str) -> Any:
    """An artifact's content: .npz -> dict of arrays, .json -> parsed JSON; None when
    absent or unreadable (the page then says so)."""
    path = artifact_path(run_dir, result, name)
    if path is None:
        return None
    st_ = path.stat()
    try:
        return _read_file(str(path), st_.st_size, st_.st_mtime)
    except (OSError, ValueError):
        return None


def _mtimes(run_dir: str | None, result: Mapping[str, Any]) -> tuple[float, ...]:
    out = []
    for name in sorted(result.get("artifacts") or {}):
        p = artifact_path(run_dir, result, name)
        out.append(p.stat().st_mtime if p is not None else -1.0)
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=128)
def _suite_figures(suite: str, result_json: str, run_dir: str, mtimes: tuple[float, ...]) -> tuple[list, str | None]:
    from workbench.registry import SUITES

    if suite not in SUITES:
        return [], f"suite {suite!r} is not installed here, so its figures cannot be drawn"
    try:
        figs = SUITES.get(suite).figures(json.loads(result_json), Path(run_dir))
    except Exception as exc:  # a suite's drawing bug is shown as a note, never breaks the page
        return [], f"the {suite} suite could not draw its figures: {type(exc).__name__}: {exc}"
    from workbench.reporting.figures import decimate

    # WebGL draws 20k points smoothly; the static report decimates from 2,000 (reporting/figures.py)
    return [(str(t), decimate(f, 20_000)) for t, f in figs], None


def suite_figures(result: Mapping[str, Any], run_dir: str | None) -> tuple[list[tuple[str, Any]], str | None]:
    """(title, plotly Figure) pairs from the suite's own `figures()` (as in the HTML report),
    and a note when they could not be drawn."""
    if result.get("status") != "ok":
        return [], None
    if run_dir is None:
        return [], "the run has no directory recorded in the store"
    # Suites open `run_dir / rel` themselves: hand them only paths that stay inside the run.
    arts = {k: v for k, v in (result.get("artifacts") or {}).items() if artifact_path(run_dir, result, k) is not None}
    payload = json.dumps({**result, "artifacts": arts}, sort_keys=True, default=str)
    return _suite_figures(str(result["suite"]), payload, str(run_dir), _mtimes(run_dir, result))


def gate_outcome(run_dir: str | None) -> dict[str, Any] | None:
    """The gate verdicts written beside the run (`gate.json`, `GateOutcome.to_dict()`)."""
    if not run_dir:
        return None
    path = Path(run_dir) / "gate.json"
    if not path.is_file():
        return None
    st_ = path.stat()
    try:
        return _read_file(str(path), st_.st_size, st_.st_mtime)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- metrics


def tags_text(tags: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))


def metrics_frame(results: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Every metric of every result: suite, model, dataset, metric, tags, value, CI,
    n, unit, higher_is_better, reason."""
    rows = []
    for r in results:
        for m in r.get("metrics", []):
            ci = m.get("ci")
            rows.append({
                "suite": r["suite"], "model": r["model"], "dataset": r["dataset"], "metric": m["name"],
                "tags": tags_text(m.get("tags") or {}), "value": m.get("value"),
                "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None, "n": m.get("n"),
                "unit": m.get("unit") or "", "higher_is_better": m.get("higher_is_better"),
                "reason": m.get("reason") or "",
            })
    cols = ["suite", "model", "dataset", "metric", "tags", "value", "ci_low", "ci_high", "n", "unit",
            "higher_is_better", "reason"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("value", "ci_low", "ci_high"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["n"] = pd.to_numeric(df["n"], errors="coerce").astype("Int64")
    return df


def find_result(results: list[Mapping[str, Any]], suite: str, model: str) -> Mapping[str, Any] | None:
    return next((r for r in results if r["suite"] == suite and r["model"] == model), None)


def models_with(results: list[Mapping[str, Any]], suite: str) -> list[str]:
    """Models that have a result of `suite` (any status), in store order."""
    return list(dict.fromkeys(r["model"] for r in results if r["suite"] == suite))
