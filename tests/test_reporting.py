"""Batch reports: results.json round trip, Markdown (escaping, headline, size cap), JUnit
(parsed back with xml.etree), HTML (plotly.js inlined once, escaping, no external URL,
visible notes for broken figures). Runs are built by hand; no model is trained."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import ConfigError
from workbench.gates import evaluate_gates
from workbench.records import MetricRecord, RunRecord, SuiteResult
from workbench.reporting import load_results, parse_formats, write_reports
from workbench.reporting.html import render_html
from workbench.reporting.junit import junit_xml
from workbench.reporting.markdown import headline_rows, md_escape, summary_markdown

EVIL = "<script>alert(1)</script>"


class CurveSuite:
    """A stand-in suite whose figures read a saved npz artifact (x, y) and draw one line
    per row of y, with a title that carries a user string."""

    headline_metrics = ("accuracy", "mse", "expected_calibration_error")

    @classmethod
    def is_headline(cls, metric):
        return "class" not in (metric.get("tags") or {})

    @classmethod
    def figures(cls, result, run_dir):
        import plotly.graph_objects as go

        with np.load(Path(run_dir) / result["artifacts"]["curve"]) as z:
            x, ys = z["x"], z["y"]
        out = []
        for i, y in enumerate(ys):
            fig = go.Figure(go.Scatter(x=x, y=y, name=f"class {EVIL}"))
            fig.update_layout(title=f"curve {i} of {result['model']} </script><b>")
            out.append((f"Curve {i} {EVIL}", fig))
        return out


class RobustnessLikeSuite:
    """Headline hooks only: robust accuracy, worst case over `attack`, eps = 0 left out."""

    headline_metrics = ("robust_accuracy",)
    headline_worst_case = {"robust_accuracy": "attack"}
    headline_detail_tags = frozenset({"attacks"})

    @classmethod
    def is_headline(cls, metric):
        return float((metric.get("tags") or {}).get("eps", 1)) != 0.0


class BrokenSuite:
    @classmethod
    def figures(cls, result, run_dir):
        raise RuntimeError("artifact vanished")


class NotAFigureSuite:
    @classmethod
    def figures(cls, result, run_dir):
        return [("a set", {1, 2})]


SUITES = {"curves": CurveSuite, "robustness_like": RobustnessLikeSuite, "broken": BrokenSuite,
          "odd": NotAFigureSuite}


def make_report_run(run_dir: Path, n_curves: int = 2, run_id: str = "r1") -> RunRecord:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "artifacts").mkdir(exist_ok=True)
    x = np.linspace(0, 1, 20)
    np.savez(run_dir / "artifacts/curve.npz", x=x, y=np.stack([x**k for k in range(1, n_curves + 1)]))
    y = np.arange(50) % 3
    y_pred = np.where(np.arange(50) < 45, y, (y + 1) % 3)
    np.savez(run_dir / "artifacts/pred.npz", y_true=y, y_pred=y_pred)
    metrics = (
        MetricRecord(name="accuracy", value=0.9, higher_is_better=True, unit="fraction", n=50, ci=(0.79, 0.96),
                     tags={"split": "test"}),
        MetricRecord(name="f1", value=0.8, higher_is_better=True, n=17, tags={"split": "test", "class": EVIL}),
        MetricRecord.unavailable("expected_calibration_error", f"no probabilities {EVIL}", higher_is_better=False),
        MetricRecord(name="mse", value=12345.678, higher_is_better=False, unit="target units²", n=50,
                     ci=(11000.0, 13000.0)),
    )
    results = (
        SuiteResult(suite="curves", model=f"cnn{EVIL}", dataset="digits|x", status="ok", metrics=metrics,
                    artifacts={"curve": "artifacts/curve.npz", "predictions": "artifacts/pred.npz"},
                    seed=0, duration_s=0.5),
        SuiteResult(suite="robustness_like", model=f"cnn{EVIL}", dataset="digits|x", status="ok", metrics=(
            MetricRecord(name="robust_accuracy", value=0.97, higher_is_better=True, n=50,
                         tags={"attack": "none", "eps": 0.0}),
            MetricRecord(name="robust_accuracy", value=0.55, higher_is_better=True, n=50, ci=(0.4, 0.7),
                         tags={"attack": "pgd_linf", "eps": 0.1}),
            MetricRecord(name="robust_accuracy", value=0.60, higher_is_better=True, n=50,
                         tags={"attack": "fgsm", "eps": 0.1}),
            MetricRecord(name="robust_accuracy", value=0.20, higher_is_better=True, n=50,
                         tags={"attack": "pgd_linf", "eps": 0.3}),
        )),
        SuiteResult(suite="broken", model="mlp", dataset="wine", status="ok",
                    metrics=(MetricRecord(name="accuracy", value=0.5, higher_is_better=True),)),
        SuiteResult(suite="odd", model="mlp", dataset="wine", status="ok", metrics=()),
        SuiteResult(suite="not_registered", model="mlp", dataset="wine", status="ok", metrics=()),
        SuiteResult(suite="explain", model="mlp", dataset="wine", status="skipped", reason=f"skip {EVIL}"),
        SuiteResult(suite="efficiency", model="mlp", dataset="wine", status="error", reason="boom\nline 2"),
    )
    prov = {"seed": 3, "device": "cpu", "git_sha": "deadbeef", "versions": {"torch": "2.13.0", "workbench": "0.1"},
            "plan": {"run": {"name": f"plan {EVIL}"}, "gates": {}, "source": "plans/x.toml"}}
    run = RunRecord(run_id=run_id, created_at="2026-11-22T10:00:00+00:00", provenance=prov, results=results)
    (run_dir / "results.json").write_text(json.dumps(run.to_dict()))
    return run


@pytest.fixture()
def run_and_dir(tmp_path):
    return make_report_run(tmp_path / "run"), tmp_path / "run"


# --------------------------------------------------------------------------- JSON


def test_write_reports_writes_every_format_and_json_round_trips(run_and_dir, tmp_path):
    run, run_dir = run_and_dir
    paths = write_reports(run, run_dir, suites=SUITES)
    assert {k: p.name for k, p in paths.items()} == {
        "json": "results.json", "md": "summary.md", "junit": "junit.xml", "html": "report.html"}
    data = json.loads(paths["json"].read_text())
    assert RunRecord.from_dict(data) == run and data == run.to_dict()
    loaded, where = load_results(run_dir)
    assert loaded == run.to_dict() and where == run_dir
    assert load_results(paths["json"])[0] == loaded
    only = write_reports(run, run_dir, formats="md,json", out_dir=tmp_path / "only")
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["results.json", "summary.md"]
    assert set(only) == {"md", "json"}


def test_dict_input_is_validated_and_nan_becomes_null_with_reason(run_and_dir, tmp_path):
    run, _ = run_and_dir
    d = run.to_dict()
    d["results"][0]["metrics"][0]["value"] = float("nan")
    d["extra_key"] = {"kept": True}
    path = write_reports(d, tmp_path / "x", formats=["json"])["json"]
    text = path.read_text()
    assert "NaN" not in text
    out = json.loads(text)
    m = out["results"][0]["metrics"][0]
    assert m["value"] is None and "non-finite" in m["reason"] and out["extra_key"] == {"kept": True}


def test_copy_elsewhere_keeps_artifacts_reachable(run_and_dir, tmp_path):
    """results.json written to another folder gets artifact paths relative to it, so the
    gate can still read the predictions."""
    run, run_dir = run_and_dir
    write_reports(run, run_dir, formats="json", out_dir=tmp_path / "reports" / "r1")
    copy, copy_dir = load_results(tmp_path / "reports" / "r1")
    rel = copy["results"][0]["artifacts"]["predictions"]
    assert (copy_dir / rel).resolve() == (run_dir / "artifacts/pred.npz").resolve()
    o = evaluate_gates(copy, ["accuracy{suite=curves} max_drop 0 significant"], baseline=copy,
                       run_dir=copy_dir, baseline_dir=copy_dir)
    assert o.results[0].status == "pass"


def test_load_results_errors(tmp_path):
    with pytest.raises(ConfigError, match="No results file"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 99, "run_id": "x"}))
    with pytest.raises(ConfigError, match="schema_version"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 2}))
    with pytest.raises(ConfigError, match="missing key 'run_id'"):
        load_results(tmp_path)


def test_parse_formats():
    assert parse_formats("html, md,html") == ("html", "md")
    with pytest.raises(ConfigError, match="Did you mean 'html'"):
        parse_formats("htm")
    with pytest.raises(ConfigError, match="at least one"):
        parse_formats("")


# --------------------------------------------------------------------------- Markdown


def test_md_escape():
    assert md_escape(EVIL) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert md_escape("a|b*c_d`e[f](g)~h#1@me$x$&amp;") == r"a\|b\*c\_d\`e\[f\](g)\~h\#1\@me\$x\$&amp;amp;"
    assert md_escape("line\nbreak\x00") == "line break"
    assert md_escape(None) == "" and md_escape(0.5) == "0.5"


def _table_rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


def test_markdown_summary_escapes_and_keeps_tables_intact(run_and_dir):
    run, run_dir = run_and_dir
    outcome = evaluate_gates(run, ["accuracy{suite=curves} >= 0.95", f"nope{{model={EVIL.replace(',', '')}}} >= 1"])
    md = summary_markdown(run, outcome, suites=SUITES)
    assert EVIL not in md and "<script" not in md
    assert "cnn&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "digits\\|x" in md  # a pipe in a dataset name does not open a new column
    # Each table keeps the column count of its header.
    for block in md.split("\n\n"):
        rows = _table_rows(block)
        if rows:
            counts = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
            assert len(counts) == 1, block
    assert "### Gate: ❌ FAIL" in md and "❌ fail" in md and "⚠️ error" in md
    assert "no probabilities &lt;script&gt;" in md  # the reason of a null metric
    assert "skip &lt;script&gt;" in md and "boom line 2" in md  # suites that did not run, newline flattened


def test_headline_rows_pick_headline_metrics_and_worst_case_robustness(run_and_dir):
    run, _ = run_and_dir
    rows = headline_rows(run.to_dict(), SUITES)
    names = [(r["model"], r["metric"]) for r in rows]
    assert ("mlp", "accuracy") not in names  # suite "broken" declares no headline metrics
    assert headline_rows(run.to_dict(), {}) == []  # suites not installed: no headline rows
    cnn = [r for r in rows if r["model"] == f"cnn{EVIL}"]
    assert [r["metric"] for r in cnn] == ["accuracy", "mse", "expected_calibration_error", "robust_accuracy",
                                          "robust_accuracy"]
    assert all(r["metric"] != "f1" for r in rows)  # per-class metrics are not headline
    ra = [r for r in cnn if r["metric"] == "robust_accuracy"]
    assert [(r["tags"]["eps"], r["value"]) for r in ra] == [("0.1", 0.55), ("0.3", 0.20)]  # eps=0 left out
    assert "worst of 2 (attack=pgd_linf)" in ra[0]["note"] and ra[1]["note"] == ""
    md = summary_markdown(run, suites=SUITES)
    assert "| 0.55 | \\[0.4, 0.7\\] | 50 |" in md and "12,346 target units²" in md
    # A suite's own per-example worst case is preferred to the minimum over attacks.
    d = run.to_dict()
    d["results"][1]["metrics"].append({"name": "robust_accuracy", "value": 0.5, "higher_is_better": True,
                                        "n": 50, "ci": None, "reason": None, "unit": None,
                                        "tags": {"attack": "worst_case", "attacks": "pgd_linf+fgsm", "eps": 0.1}})
    ra = [r for r in headline_rows(d, SUITES) if r["metric"] == "robust_accuracy"]
    assert [(r["value"], r["tags"], r["note"]) for r in ra] == [
        (0.5, {"eps": 0.1}, "worst case over pgd_linf+fgsm (per example)")]


def test_markdown_fits_a_pull_request_comment(tmp_path):
    metrics = tuple(MetricRecord(name="f1", value=i / 30000, higher_is_better=True, n=10,
                                 tags={"class": f"class_{i}_" + "x" * 80})
                    for i in range(12000))
    accs = tuple(SuiteResult(suite="metrics", model=f"model_{j}", dataset="d", status="ok",
                             metrics=(MetricRecord(name="accuracy", value=0.5, higher_is_better=True),))
                 for j in range(50))
    run = RunRecord(run_id="big", created_at="now", provenance={},
                    results=(SuiteResult(suite="metrics", model="m", dataset="d", status="ok", metrics=metrics),
                             *accs))
    md = summary_markdown(run)
    assert len(md) <= 65_536 and len(md.encode()) <= 65_536  # GitHub's pull-request comment limit
    assert "class\\_1\\_" not in md  # the full listing is not in the summary ...
    assert "Every metric (12050)" in md and "[report.html](report.html)" in md  # ... it is linked
    # A larger budget may fold the full listing in; it is cut with a note.
    big = summary_markdown(run, max_bytes=1_000_000, include_all_metrics=True)
    assert len(big.encode()) <= 1_000_000
    assert "Metric table truncated" in big and "of 12050 rows shown" in big
    assert big.rstrip().endswith("_Summary cut here to stay under the size limit; see results.json and report.html._")
    small = summary_markdown(run, max_bytes=5000, include_all_metrics=True)
    assert len(small.encode()) <= 5000 and "truncated" in small
    paths = write_reports(run, tmp_path, formats="md")
    assert len(paths["md"].read_text(encoding="utf-8")) <= 65_536


def test_markdown_headline_table_is_capped_for_any_run():
    from workbench.reporting.markdown import _Doc

    doc = _Doc(65_536)
    doc.table(["model", "metric", "value"], [[f"model_{i}" + "y" * 200, "accuracy", "0.5"] for i in range(2000)],
              "Headline table")
    text = doc.text()
    assert len(text.encode()) <= 65_536
    assert "Headline table truncated" in text and "of 2000 rows shown" in text


def test_numbers_are_formatted_for_people():
    from workbench.reporting.markdown import fmt_ci, fmt_value

    assert fmt_value(3.469e-18) == "0"  # float round-off is not a figure
    assert fmt_ci([3.469e-18, 0.0312], 0.01) == "[0, 0.0312]"
    assert fmt_ci([1.2e-7, 3.1e-7], 2e-7) == "[1.200e-07, 3.100e-07]"  # a genuinely small quantity stays
    assert fmt_value(0.97312) == "0.9731" and fmt_value(123456.7) == "123,457"
    assert fmt_value(float("nan")) == "n/a" and fmt_value(float("inf")) == "∞" and fmt_value(None) == "n/a"
    assert fmt_value(0.25, "s") == "250 ms" and fmt_value(9.237e-05, "s") == "92.37 µs"  # durations
    assert fmt_value(12.5, "s") == "12.5 s" and fmt_value(0.25, "fraction") == "0.25"
    assert fmt_ci([8.877e-05, 9.378e-05], 9.237e-05, "s") == "[88.77, 93.78] µs"


def test_headline_tags_show_what_tells_rows_apart():
    from workbench.reporting.markdown import distinguishing_tags

    rows = [{"model": "m", "metric": "latency", "tags": {"batch_size": 1, "torch": "2.13", "threads": 1}},
            {"model": "m", "metric": "latency", "tags": {"batch_size": 32, "torch": "2.13", "threads": 1}},
            {"model": "m", "metric": "parameters", "tags": {"kind": "total", "variant": "base"}}]
    assert distinguishing_tags(rows) == [{"batch_size": 1}, {"batch_size": 32}, {"kind": "total", "variant": "base"}]


# --------------------------------------------------------------------------- JUnit


def test_junit_parses_back_with_counts(run_and_dir, tmp_path):
    run, run_dir = run_and_dir
    outcome = evaluate_gates(run, [
        "accuracy{suite=curves} >= 0.5",                  # pass
        "accuracy{suite=curves} >= 0.95",                 # fail
        "expected_calibration_error <= 0.1",              # error: null value
        "robust_accuracy >= 0.1",                         # error: ambiguous (config)
        {"metric": "f1", "tags": {"class": EVIL}, "op": ">=", "threshold": 0.5,
         "name": f"f1 of {EVIL}\x07 class"},              # pass, nasty name
    ])
    text = junit_xml(run, outcome)
    root = ET.fromstring(text.encode())
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures"), root.get("errors")) == ("12", "1", "3")
    gate = root.find("testsuite[@name='workbench.gate']")
    assert (gate.get("tests"), gate.get("failures"), gate.get("errors"), gate.get("skipped")) == ("5", "1", "2", "0")
    assert float(gate.get("time")) >= 0
    cases = gate.findall("testcase")
    assert [c.get("name") for c in cases][:2] == ["accuracy{suite=curves} >= 0.5", "accuracy{suite=curves} >= 0.95"]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    fail = cases[1].find("failure")
    assert fail.get("type") == "GateFailure" and "is not >= 0.95" in fail.get("message")
    assert cases[2].find("error").get("type") == "GateError"
    assert cases[3].find("error").get("type") == "GateConfigError"
    assert cases[4].get("name") == f"f1 of {EVIL} class"  # escaped in XML, control char dropped
    assert "\x07" not in text and "<script>" not in text
    suites = root.find("testsuite[@name='workbench.suites']")
    assert (suites.get("tests"), suites.get("errors"), suites.get("skipped")) == ("7", "1", "1")
    err = [c for c in suites.findall("testcase") if c.find("error") is not None][0]
    assert err.get("classname") == "workbench.suites.efficiency" and "boom" in err.find("error").get("message")
    # Without a gate: only the suite results.
    root = ET.fromstring(junit_xml(run).encode())
    assert [ts.get("name") for ts in root.findall("testsuite")] == ["workbench.suites"]
    path = write_reports(run, run_dir, formats="junit", gate_outcome=outcome)["junit"]
    assert ET.parse(path).getroot().get("tests") == "12"


# --------------------------------------------------------------------------- HTML


@pytest.fixture(scope="module")
def plotly_head():
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    return js, js[:200]


def _embedded_plotly(html: str) -> list[str]:
    """Every plotly.js the page carries, unpacked (gzip + base64) as the loader does."""
    import base64
    import gzip

    packed = re.findall(r'<script type="application/octet-stream" id="wb-plotly"[^>]*>(.*?)</script>', html, re.S)
    return [gzip.decompress(base64.b64decode(p)).decode("utf-8") for p in packed]


def test_html_inlines_plotly_once_for_many_figures(tmp_path, plotly_head):
    js, head = plotly_head
    run = make_report_run(tmp_path / "r", n_curves=4)
    html = render_html(run, tmp_path / "r", suites=SUITES)
    assert _embedded_plotly(html) == [js]  # once, compressed, byte for byte
    assert html.count('class="wb-fig"') == 4 and html.count('<div class="fig"') == 4
    assert len(html) < len(js) / 2 + 100_000  # compressed; 4 figures cost kilobytes, not 4 x 4.8 MB
    assert html.count('id="wb-template"') == 1  # the default template is carried once, not per figure
    # ... with the layout defaults whole, and the trace defaults of the trace types drawn only
    from workbench.reporting.figures import default_template

    tpl = json.loads(re.search(r'id="wb-template">(.*?)</script>', html, re.S).group(1))
    full = default_template()
    assert tpl["layout"] == full["layout"] and tpl["data"] == {"scatter": full["data"]["scatter"]}
    assert set(full["data"]) > {"scatter"}  # the types the report does not draw were left out
    # Each embedded spec parses and has the data of its artifact.
    specs = re.findall(r'<script type="application/json" class="wb-fig" data-target="(fig-\d+)"[^>]*>(.*?)</script>', html,
                       re.S)
    assert [s[0] for s in specs] == ["fig-0", "fig-1", "fig-2", "fig-3"]
    spec = json.loads(specs[3][1])
    assert spec["data"][0]["type"] == "scatter" and "curve 3 of" in spec["layout"]["title"]["text"]
    assert "template" not in spec["layout"] and 'data-target="fig-3" data-shared-template' in html


def test_html_turns_table_figures_into_tables_and_decimates_big_scatters(tmp_path):
    import plotly.graph_objects as go

    from workbench.reporting.figures import decimation_index

    n = 50_000
    x = np.arange(n)
    y = np.sin(x / 500.0)

    class TableSuite:
        @classmethod
        def figures(cls, result, run_dir):
            methods = [f"method_{i}" for i in range(7)]
            return [("Quality", go.Figure(go.Table(header={"values": ["method", "score"]},
                                                   cells={"values": [methods, [3.469e-18, *range(1, 7)]]}))),
                    ("Curve", go.Figure(go.Scatter(x=x, y=y, mode="lines"))),
                    ("Cloud", go.Figure(go.Scatter(x=x, y=y, mode="markers", text=[str(i) for i in x])))]

    run = RunRecord(run_id="t", created_at="now", provenance={}, results=(
        SuiteResult(suite="tab", model="m", dataset="d", status="ok"),))
    html = render_html(run, tmp_path, suites={"tab": TableSuite}, plotlyjs="/*plotly*/")
    assert all(f"<td>method_{i}</td>" in html for i in range(7))  # every row, as a real table
    assert '<td class="num">0</td>' in html  # round-off printed as 0
    specs = [json.loads(s) for s in re.findall(r'class="wb-fig"[^>]*>(.*?)</script>', html, re.S)]
    assert len(specs) == 2  # the table is not a plotly figure
    line, cloud = specs[0]["data"][0], specs[1]["data"][0]

    def arr(v):
        return np.frombuffer(__import__("base64").b64decode(v["bdata"]), dtype=v["dtype"]) if isinstance(v, dict) else np.asarray(v)

    ly = arr(line["y"])
    assert ly.size <= 2002 and ly.max() == y.max() and ly.min() == y.min()  # the envelope is kept
    assert len(cloud["text"]) == 2000 == arr(cloud["x"]).size
    assert "showing 2,000 of 50,000" in specs[1]["layout"]["annotations"][0]["text"]
    idx = decimation_index(y, n)
    # min/max per bucket: every bucket's extremes are kept, so no drawn peak is lost
    edges = np.linspace(0, n, 1001).astype(int)
    for a, b in zip(edges[:-1], edges[1:]):
        assert y[a:b].max() in y[idx] and y[a:b].min() in y[idx]


def test_html_escapes_user_strings_and_references_no_external_url(run_and_dir, plotly_head):
    js, _ = plotly_head
    run, run_dir = run_and_dir
    outcome = evaluate_gates(run, [f"accuracy{{suite=curves}} >= 0.95", "nope >= 1"])
    html = render_html(run, run_dir, outcome, suites=SUITES)
    page = html.replace(js, "")
    assert EVIL not in page and "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "</script><b>" not in page  # inside figure JSON too
    # Only our own script elements: packed plotly.js, the template, the figure specs, the loader.
    assert page.count("<script") == 1 + 1 + 2 + 1
    assert not re.search(r"https?://|//cdn|@import|<link|<img|<iframe|src=", page, re.I)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Tables: a null metric shows n/a with its reason; directions; provenance; gate.
    assert "no probabilities &lt;script&gt;" in page and "↑" in page and "↓" in page
    assert "<details><summary>Per-class metrics (1)</summary>" in page  # per-class rows start folded
    for text in ("deadbeef", "plan &lt;script&gt;", "torch 2.13.0", "2026-11-22T10:00:00+00:00", "Gate", "FAIL"):
        assert text in page
    # Every table-of-contents link has its target.
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert set(re.findall(r'href="#([^"]+)"', page)) <= ids


def test_html_notes_for_suites_that_cannot_draw(run_and_dir):
    run, run_dir = run_and_dir
    page = render_html(run, run_dir, suites=SUITES, plotlyjs="/*plotly*/")
    assert "Figures of suite &#x27;broken&#x27; could not be drawn: RuntimeError: artifact vanished" in page
    assert "Figure 1 of suite &#x27;odd&#x27; could not be converted" in page
    assert "Figures of suite &#x27;not_registered&#x27; could not be drawn: LookupError" in page
    # The default registry: an unknown suite name gives a note, not a crash.
    page = render_html(run, run_dir, plotlyjs="/*plotly*/")
    assert "Figures of suite &#x27;curves&#x27; could not be drawn: UnknownNameError" in page


def test_html_without_figures_does_not_embed_plotly(tmp_path, plotly_head):
    _, head = plotly_head
    run = RunRecord(run_id="empty", created_at="now", provenance={}, results=(
        SuiteResult(suite="x", model="m", dataset="d", status="skipped", reason="nothing"),))
    html = render_html(run, tmp_path, suites={})
    assert head not in html and len(html) < 20_000 and "No suite produced results" in html


def test_real_metrics_suite_figures_render_from_artifacts(tmp_path):
    """The metrics suite's own figures, drawn from hand-written artifacts in its format."""
    from workbench.registry import SUITES as REGISTRY

    try:
        metrics_suite = REGISTRY.get("metrics")
    except Exception as exc:  # the suite is written by another helper
        pytest.skip(f"metrics suite not importable here: {exc}")
    d = tmp_path / "artifacts/metrics/cnn"
    d.mkdir(parents=True)
    y = np.arange(30) % 3
    np.savez(d / "confusion_matrix.npz", matrix=np.array([[9, 1, 0], [0, 10, 0], [1, 0, 9]]),
             class_names=np.array(["a", "b", EVIL]))
    np.savez(d / "predictions.npz", y_true=y, y_pred=y, probs=np.eye(3)[y].astype(np.float32), index=np.arange(30))
    res = SuiteResult(suite="metrics", model="cnn", dataset="digits", status="ok", metrics=(
        MetricRecord(name="accuracy", value=1.0, higher_is_better=True, n=30),
        *(MetricRecord(name="f1", value=1.0, higher_is_better=True, ci=(0.9, 1.0), tags={"class": c})
          for c in ("a", "b", EVIL))),
        artifacts={"confusion_matrix": "artifacts/metrics/cnn/confusion_matrix.npz",
                   "predictions": "artifacts/metrics/cnn/predictions.npz"})
    run = RunRecord(run_id="m", created_at="now", provenance={}, results=(res,))
    expected = len(metrics_suite.figures(res.to_dict(), tmp_path))
    html = render_html(run, tmp_path, plotlyjs="/*plotly*/")
    assert expected >= 1 and html.count('class="wb-fig"') == expected
    assert "class=\"note\"" not in html


def test_step_summary_is_the_same_short_form_as_summary_md(tmp_path):
    """`workbench gate` on GitHub Actions appends to $GITHUB_STEP_SUMMARY exactly the
    pull-request-sized summary.md it writes (not a longer listing)."""
    import io

    from workbench.gates import gate_main

    metrics = tuple(MetricRecord(name="f1", value=i / 3000, higher_is_better=True, n=10, tags={"class": f"c{i}"})
                    for i in range(3000))
    run = RunRecord(run_id="ci", created_at="now", provenance={}, results=(
        SuiteResult(suite="metrics", model="m", dataset="d", status="ok",
                    metrics=(MetricRecord(name="accuracy", value=0.9, higher_is_better=True, n=100), *metrics)),))
    write_reports(run, tmp_path / "run", formats="json")
    rules = tmp_path / "rules.toml"
    rules.write_text('rules = ["accuracy{model=m} >= 0.5"]\n')
    step = tmp_path / "step.md"
    code = gate_main(tmp_path / "run" / "results.json", rules_file=rules, out_dir=tmp_path / "out", formats=("md",),
                     env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(step)}, stdout=io.StringIO())
    assert code == 0
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert step.read_text(encoding="utf-8").rstrip("\n") == summary.rstrip("\n")
    assert len(summary) <= 65_536 and "Every metric (3001)" in summary and "c2999" not in summary


def _unlabelled_axes(fig) -> list[str]:
    """Axes that carry a trace and show tick labels but have no title."""
    used = set()
    for t in fig.data:
        if t.type in ("table", "pie", "indicator"):
            continue
        used.add("xaxis" + (getattr(t, "xaxis", None) or "x")[1:])
        used.add("yaxis" + (getattr(t, "yaxis", None) or "y")[1:])
    out = []
    for name in sorted(used):
        ax = fig.layout[name]
        if ax.visible is False or ax.showticklabels is False:
            continue
        if not (ax.title and ax.title.text):
            out.append(name)
    return out


@pytest.mark.slow
def test_every_figure_of_a_real_run_labels_its_axes_and_never_hides_a_table(quickstart_run):
    """Every registered suite's figures on the real quickstart run: each axis with tick
    labels has a title, and a figure that is only a table becomes an HTML table."""
    from workbench.registry import SUITES as REGISTRY
    from workbench.reporting.html import collect_figures

    d = json.loads((quickstart_run["run_dir"] / "results.json").read_text())
    missing, n = [], 0
    for r in d["results"]:
        if r["status"] != "ok":
            continue
        for title, fig in REGISTRY.get(r["suite"]).figures(r, quickstart_run["run_dir"]):
            n += 1
            missing += [f"{r['suite']} / {r['model']} / {title}: {ax}" for ax in _unlabelled_axes(fig)]
        items, notes = collect_figures(r, quickstart_run["run_dir"])
        assert not notes, notes
        for item in items:
            if item["kind"] == "figure":
                assert '"type":"table"' not in item["spec"], (r["suite"], item["title"])
    assert n > 20 and not missing, "\n".join(missing)


def test_colour_ranges_refuse_to_stretch_float_noise():
    from workbench.reporting.figures import (
        SIGNED_COLORSCALE,
        magnitude_scale,
        scale_to_unit,
        shared_floor,
        signed_scale,
    )

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1e-7, (8, 8))  # float32 round-off on an input of scale 1
    kw, note = signed_scale(noise, reference=np.ones(4))
    assert (kw["zmin"], kw["zmax"], kw["zmid"]) == (-1.0, 1.0, 0.0) and "round-off" in note
    real = rng.normal(0, 0.1, (8, 8))
    kw, note = signed_scale(real, reference=np.ones(4))
    assert note is None and kw["zmax"] == -kw["zmin"] == np.abs(real).max() and kw["colorscale"] == SIGNED_COLORSCALE
    kw, note = magnitude_scale(np.full(5, 3e-7), reference=1.0)
    assert kw["zmax"] == 1.0 and note
    # maps shown side by side: a method that is zero up to round-off stays zero (white)
    maps = [rng.normal(0, 1, 16), rng.normal(0, 1e-9, 16)]
    floor = shared_floor(maps)
    assert np.abs(scale_to_unit(maps[0], floor)).max() == pytest.approx(1.0)
    assert not scale_to_unit(maps[1], floor).any()


def test_summary_of_a_run_with_thousands_of_headline_rows_still_fits():
    accs = tuple(SuiteResult(suite="metrics", model=f"model_{j}_" + "m" * 60, dataset="d", status="ok",
                             metrics=(MetricRecord(name="accuracy", value=0.5, higher_is_better=True, n=10,
                                                   ci=(0.2, 0.8), tags={"split": "test"}),))
                 for j in range(3000))
    md = summary_markdown(RunRecord(run_id="huge", created_at="now", provenance={}, results=accs))
    assert len(md.encode()) <= 65_536
    assert "Headline table truncated" in md and "of 3000 rows shown" in md and "[report.html](report.html)" in md
