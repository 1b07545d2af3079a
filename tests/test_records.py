import json
import math

import pytest

from workbench.records import SCHEMA_VERSION, MetricRecord, RunRecord, SuiteResult


def test_null_value_needs_reason():
    with pytest.raises(ValueError, match="reason"):
        MetricRecord(name="energy", value=None)
    m = MetricRecord.unavailable("energy", "no RAPL access on this machine", unit="J")
    assert m.value is None and "RAPL" in m.reason


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_becomes_explained_null(bad):
    m = MetricRecord(name="loss", value=bad)
    assert m.value is None
    assert "non-finite" in m.reason


def test_round_trip_through_json():
    m = MetricRecord(name="accuracy", value=0.9, higher_is_better=True, unit="fraction", n=100,
                     ci=(0.85, 0.94), tags={"split": "test", "eps": 0.1, "flag": True})
    r = SuiteResult(suite="metrics", model="m", dataset="d", status="ok", metrics=(m,), artifacts={"a": "x.npz"})
    run = RunRecord(run_id="r1", created_at="2026-01-01T00:00:00+00:00", provenance={"seed": 0}, results=(r,))
    back = RunRecord.from_dict(json.loads(json.dumps(run.to_dict())))
    assert back == run
    assert back.to_dict()["schema_version"] == SCHEMA_VERSION
    assert back.results[0].metrics[0].tags["flag"] == "true"


def test_schema_version_mismatch_is_clear():
    d = RunRecord(run_id="r", created_at="t", provenance={}).to_dict()
    d["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version"):
        RunRecord.from_dict(d)


def test_non_ok_result_needs_reason():
    with pytest.raises(ValueError, match="reason"):
        SuiteResult(suite="s", model="m", dataset="d", status="skipped")
    with pytest.raises(ValueError, match="status"):
        SuiteResult(suite="s", model="m", dataset="d", status="done")


def test_metric_lookup_by_tags():
    ms = (MetricRecord(name="f1", value=0.5, tags={"class": "a"}), MetricRecord(name="f1", value=0.7, tags={"class": "b"}))
    r = SuiteResult(suite="s", model="m", dataset="d", status="ok", metrics=ms)
    assert r.metric("f1", **{"class": "b"}).value == 0.7
    with pytest.raises(KeyError):
        r.metric("f1")
