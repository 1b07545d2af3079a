"""Run history in SQLite (WAL mode), so the dashboard can read while a run writes.

Default location: $WORKBENCH_STORE, else `.workbench/store.sqlite` under the current
directory. Large arrays live beside the store in each run's directory as files
referenced by path. A run is `running` until `finish_run` marks it `complete`, `failed`
or `interrupted` (the last two with a one-line `reason`), so a killed run is never shown
as complete; results are committed one job at a time so
`--resume` can skip finished jobs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from workbench.records import MetricRecord, RunRecord, SuiteResult

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    plan_name TEXT,
    status TEXT NOT NULL,            -- running | complete | failed | interrupted
    run_dir TEXT,
    seed INTEGER,
    device TEXT,
    git_sha TEXT,
    gate_status TEXT,
    provenance TEXT NOT NULL,
    reason TEXT                      -- why a run failed or was interrupted (one line)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    suite TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    payload TEXT NOT NULL,            -- SuiteResult.to_dict() as JSON
    PRIMARY KEY (run_id, suite, model)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    suite TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    reason TEXT,
    higher_is_better INTEGER,
    unit TEXT,
    n INTEGER,
    ci_low REAL,
    ci_high REAL,
    tags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id, model, name);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
"""


def default_store_path() -> Path:
    return Path(os.environ.get("WORKBENCH_STORE", ".workbench/store.sqlite"))


def _retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Retry on 'database is locked' beyond the busy timeout (concurrent writers)."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


class Store:
    """A thin layer over one SQLite file. Safe for several processes at once."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
                _retry(lambda: con.executescript(SCHEMA))
                cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
                if "reason" not in cols:  # a store made before runs had a reason
                    _retry(lambda: con.execute("ALTER TABLE runs ADD COLUMN reason TEXT"))
        except (OSError, sqlite3.DatabaseError) as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            from workbench.errors import ConfigError

            raise ConfigError(
                f"Cannot open the run store {str(self.path)!r}: {exc}. Expected an SQLite file written by the "
                "workbench or a new path (--store, $WORKBENCH_STORE or [run] store)."
            ) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA foreign_keys=ON")
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            _retry(lambda: con.execute("BEGIN IMMEDIATE"))
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:  # an interrupt can land just after COMMIT
                    con.execute("ROLLBACK")
                raise

    # -- writing ---------------------------------------------------------------
    def begin_run(self, run_id: str, created_at: str, provenance: dict[str, Any], run_dir: Path | str) -> None:
        plan = provenance.get("plan") or {}
        with self._tx() as con:
            con.execute(
                "INSERT INTO runs (run_id, created_at, plan_name, status, run_dir, seed, device, git_sha, provenance)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)"
                " ON CONFLICT(run_id) DO UPDATE SET status='running', finished_at=NULL, reason=NULL,"
                " provenance=excluded.provenance",
                (run_id, created_at, (plan.get("run") or {}).get("name"), str(run_dir), provenance.get("seed"),
                 provenance.get("device"), provenance.get("git_sha"), json.dumps(provenance, default=str)),
            )

    def add_result(self, run_id: str, result: SuiteResult) -> None:
        """Atomically replace the (suite, model) result of a run and its metrics."""
        payload = json.dumps(result.to_dict(), default=str)
        rows = [
            (run_id, result.suite, result.model, result.dataset, m.name, m.value, m.reason,
             None if m.higher_is_better is None else int(m.higher_is_better), m.unit, m.n,
             m.ci[0] if m.ci else None, m.ci[1] if m.ci else None, json.dumps(m.tags, sort_keys=True))
            for m in result.metrics
        ]
        with self._tx() as con:
            con.execute("DELETE FROM results WHERE run_id=? AND suite=? AND model=?", (run_id, result.suite, result.model))
            con.execute("DELETE FROM metrics WHERE run_id=? AND suite=? AND model=?", (run_id, result.suite, result.model))
            con.execute(
                "INSERT INTO results (run_id, suite, model, dataset, status, reason, payload) VALUES (?,?,?,?,?,?,?)",
                (run_id, result.suite, result.model, result.dataset, result.status, result.reason, payload),
            )
            con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def finish_run(self, run_id: str, status: str, finished_at: str, provenance: dict[str, Any] | None = None,
                   gate_status: str | None = None, reason: str | None = None) -> None:
        """Mark a run `complete`, `failed` or `interrupted`; `reason` says why it did not complete."""
        with self._tx() as con:
            if provenance is not None:
                con.execute("UPDATE runs SET provenance=? WHERE run_id=?", (json.dumps(provenance, default=str), run_id))
            con.execute("UPDATE runs SET status=?, finished_at=?, gate_status=COALESCE(?, gate_status), reason=? "
                        "WHERE run_id=?", (status, finished_at, gate_status, reason, run_id))

    def set_gate_status(self, run_id: str, gate_status: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE runs SET gate_status=? WHERE run_id=?", (gate_status, run_id))

    # -- reading ---------------------------------------------------------------
    def runs(self, *, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs newest first, without their provenance blob."""
        q = ("SELECT run_id, created_at, finished_at, plan_name, status, run_dir, seed, device, git_sha, gate_status, "
             "reason FROM runs")
        args: list[Any] = []
        if status:
            q += " WHERE status=?"
            args.append(status)
        q += " ORDER BY created_at DESC, run_id DESC"
        if limit:
            q += f" LIMIT {int(limit)}"
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(q, args)]

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            row = con.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["provenance"] = json.loads(d["provenance"])
        return d

    def results(self, run_id: str) -> list[SuiteResult]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT payload FROM results WHERE run_id=? ORDER BY model, suite", (run_id,)
            ).fetchall()
        return [SuiteResult.from_dict(json.loads(r[0])) for r in rows]

    def load_run(self, run_id: str) -> RunRecord:
        info = self.run_info(run_id)
        if info is None:
            from workbench.errors import unknown_name

            raise unknown_name("run", run_id, [r["run_id"] for r in self.runs(limit=20)])
        return RunRecord(run_id=run_id, created_at=info["created_at"], provenance=info["provenance"],
                         results=tuple(self.results(run_id)))

    def metrics(self, run_id: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM metrics WHERE 1=1", []
        if run_id:
            q += " AND run_id=?"
            args.append(run_id)
        if name:
            q += " AND name=?"
            args.append(name)
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            out = []
            for r in con.execute(q, args):
                d = dict(r)
                d["tags"] = json.loads(d["tags"])
                d["higher_is_better"] = None if d["higher_is_better"] is None else bool(d["higher_is_better"])
                out.append(d)
        return out

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from a unique prefix ("latest" = newest complete run)."""
        if prefix == "latest":
            runs = self.runs(status="complete", limit=1)
            if not runs:
                from workbench.errors import ConfigError

                raise ConfigError(f"No complete run in the store {self.path}.")
            return runs[0]["run_id"]
        with self._connect() as con:
            hits = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE run_id LIKE ?", (prefix + "%",))]
        if len(hits) == 1:
            return hits[0]
        from workbench.errors import ConfigError, unknown_name

        if not hits:
            raise unknown_name("run", prefix, [r["run_id"] for r in self.runs(limit=20)])
        raise ConfigError(f"Run id prefix {prefix!r} is ambiguous: {', '.join(hits[:10])}.")


def metric_from_row(row: dict[str, Any]) -> MetricRecord:
    ci = (row["ci_low"], row["ci_high"]) if row.get("ci_low") is not None else None
    return MetricRecord(name=row["name"], value=row["value"], reason=row["reason"],
                        higher_is_better=row["higher_is_better"], unit=row["unit"], n=row["n"], ci=ci,
                        tags=row["tags"])
