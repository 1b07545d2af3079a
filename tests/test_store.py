import multiprocessing as mp
import sqlite3

from workbench.records import MetricRecord, SuiteResult
from workbench.store import Store


def _result(model: str, value: float) -> SuiteResult:
    return SuiteResult(suite="metrics", model=model, dataset="d", status="ok",
                       metrics=(MetricRecord(name="accuracy", value=value, higher_is_better=True, n=10, ci=(0.1, 0.9)),))


def test_round_trip_and_status(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    s.begin_run("r1", "2026-01-01T00:00:00+00:00", {"seed": 1, "plan": {"run": {"name": "p"}}}, tmp_path)
    assert s.runs()[0]["status"] == "running"
    s.add_result("r1", _result("m", 0.5))
    s.add_result("r1", _result("m", 0.6))  # replaces, never duplicates
    s.finish_run("r1", "complete", "2026-01-01T00:01:00+00:00")
    run = s.load_run("r1")
    assert run.results[0].metrics[0].value == 0.6
    assert len(s.metrics("r1")) == 1
    assert s.resolve_run_id("r") == "r1" and s.resolve_run_id("latest") == "r1"
    with sqlite3.connect(s.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path: str, run: str, n: int) -> None:
    s = Store(path)
    s.begin_run(run, "2026-01-01T00:00:00+00:00", {"seed": 0}, "/tmp")
    for i in range(n):
        s.add_result(run, _result(f"m{i}", i / n))
    s.finish_run(run, "complete", "2026-01-01T00:00:01+00:00")


def test_concurrent_processes_both_land(tmp_path):
    path = str(tmp_path / "s.sqlite")
    Store(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, f"run{i}", 25)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = Store(path)
    assert {r["run_id"]: r["status"] for r in s.runs()} == {"run0": "complete", "run1": "complete"}
    assert len(s.results("run0")) == 25 and len(s.results("run1")) == 25


def test_reader_during_writer(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    s.begin_run("r", "t", {}, tmp_path)
    con = sqlite3.connect(s.path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute("UPDATE runs SET plan_name='x'")
    assert s.runs()[0]["run_id"] == "r"  # WAL: a reader is not blocked by a writer
    con.execute("COMMIT")
    con.close()
