"""Security: checkpoints are not trusted (weights_only unless the plan says allow_pickle,
with a warning); code is imported only from `module:function` references in a plan the
user hands over, never from results files or the store; user strings reaching HTML,
Markdown and JUnit are escaped; the dashboard binds to 127.0.0.1 unless told otherwise.

Every negative check has a positive control (the same marker module *does* write its
marker when imported on purpose), so a check cannot pass just because nothing could run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch

from workbench.cli import main
from workbench.config import user_code_references
from workbench.records import MetricRecord, RunRecord, SuiteResult
from workbench.store import Store

ROOT = Path(__file__).resolve().parent.parent


def _cli(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


class _Evil:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plan(tmp_path: Path, **model: Any) -> Path:
    spec = {"name": "user_mlp", "factory": "tests.helpers:make_tiny_mlp", "dataset": "blobs"}
    spec.update(model)
    spec = {k: v for k, v in spec.items() if v is not None}
    raw = {"run": {"name": "sec", "seed": 0, "device": "cpu", "suites": ["metrics"], "progress": False,
                   "out": str(tmp_path / "reports"), "store": str(tmp_path / "store.sqlite")},
           "datasets": {"blobs": {"source": "callable", "function": "tests.helpers:make_blobs"}},
           "models": [spec], "suites": {"metrics": {"n_boot": 20}}}
    path = tmp_path / "plan.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("with_factory", [True, False], ids=["state_dict-into-factory", "whole-module"])
def test_malicious_checkpoint_does_not_run_through_the_cli(tmp_path, capsys, with_factory):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil(marker)} if with_factory else _Evil(marker), evil)
    plan = _plan(tmp_path, checkpoint=str(evil), factory=None if not with_factory else "tests.helpers:make_tiny_mlp")
    code, out, err = _cli(capsys, ["run", str(plan)])
    assert code == 2 and "weights_only=True" in err and "allow_pickle = true" in err, err
    assert "Traceback" not in err
    assert not marker.exists()
    # Positive control: the file really is a code-running pickle.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_allow_pickle_loads_a_whole_module_with_a_warning(tmp_path, capsys):
    from tests.helpers import TinyMLP

    torch.manual_seed(0)
    whole = tmp_path / "whole.pt"
    torch.save(TinyMLP(), whole)  # a pickled module, not a state_dict: needs allow_pickle
    code, out, err = _cli(capsys, ["run", str(_plan(tmp_path, factory=None, checkpoint=str(whole)))])
    assert code == 2 and "allow_pickle" in err and "WARNING" not in err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = _cli(capsys, ["run", str(_plan(tmp_path, factory=None, checkpoint=str(whole),
                                                        allow_pickle=True))])
    assert code == 0, err
    assert f"WARNING: loading {whole} as a full pickle (allow_pickle=true); it can execute code." in err
    assert any("weights_only=False" in str(w.message) and "arbitrary code" in str(w.message) for w in caught)
    assert "1 ok, 0 errors" in out


def test_safe_loaders_everywhere_in_the_source():
    """No loader in the code base trusts a file: torch.load always weights_only=True except
    the one allow_pickle branch, np.load never allow_pickle=True, no pickle/eval/exec/yaml.load."""
    offenders = []
    for base in ("workbench", "suites", "apps"):
        for path in (ROOT / base).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for i, line in enumerate(text.splitlines(), 1):
                code_part = line.split("#", 1)[0]
                where = f"{path.relative_to(ROOT)}:{i}"
                if "torch.load(" in code_part and "weights_only=True" not in code_part:
                    if not (where.startswith("workbench/build.py") and "weights_only=False" in code_part):
                        offenders.append(where)
                if re.search(r"allow_pickle\s*=\s*True", code_part) and "np." in code_part:
                    offenders.append(where)
                if re.search(r"\b(pickle|cPickle|dill|joblib)\.loads?\(|(?<![.\w])eval\(|(?<![.\w])exec\(|"
                             r"yaml\.load\(|yaml\.unsafe_load", code_part):
                    offenders.append(where)
    assert offenders == []
    runner = (ROOT / "workbench/build.py").read_text()  # model building moved out of runner.py
    unsafe = re.findall(r"if allow_pickle:.*?\n(?:.*\n)*?.*torch\.load\([^)]*weights_only=False", runner)
    assert len(re.findall(r"torch\.load\([^)]*weights_only=False", runner)) == 1 and unsafe  # only under `if allow_pickle:`


def test_malicious_npz_artifact_is_not_unpickled_by_reports(tmp_path, capsys):
    """An artifact replaced by an object-array .npz (a pickle inside): reports and figures
    read it with allow_pickle=False, so nothing runs; the figure becomes a note."""
    import numpy as np

    code, out, err = _cli(capsys, ["run", str(_plan(tmp_path, train={"epochs": 2}))])
    assert code == 0, err
    run_id = re.search(r"run (\S+): 1 ok", out).group(1)
    run_dir = tmp_path / "reports" / run_id
    marker = tmp_path / "pwned-npz"
    npz = sorted(run_dir.rglob("*.npz"))
    assert npz
    for p in npz:
        with open(p, "wb") as f:
            np.savez(f, matrix=np.array([_Evil(marker)], dtype=object), y_true=np.array([_Evil(marker)], dtype=object))
    code, out, err = _cli(capsys, ["--store", str(tmp_path / "store.sqlite"), "report", run_id])
    assert code == 0, err
    assert not marker.exists()
    assert "could not be drawn" in (run_dir / "report.html").read_text()
    np.load(npz[0], allow_pickle=True)["matrix"]  # positive control: this one does run it
    assert marker.exists()


# --------------------------------------------------------------------------- nothing imported from results or the store

SIDE_EFFECT_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def make(**kw):
    raise AssertionError("never called")

def data(**kw):
    raise AssertionError("never called")
"""


@pytest.fixture
def side_effect_module(tmp_path, monkeypatch):
    """A module `wb_sidefx_<pid>` on sys.path that writes a marker file when imported."""
    name = f"wb_sidefx_{os.getpid()}"
    marker = tmp_path / "imported.txt"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(SIDE_EFFECT_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name, marker
    sys.modules.pop(name, None)


def _record_naming(mod: str, run_id: str = "r-sidefx") -> RunRecord:
    plan = {"run": {"name": "sidefx", "seed": 0, "suites": ["metrics"]},
            "models": [{"name": "m", "factory": f"{mod}:make", "dataset": "d"},
                       {"name": "p", "checkpoint": "w.pt", "allow_pickle": True, "arch": "mlp", "dataset": "d"}],
            "datasets": {"d": {"source": "callable", "function": f"{mod}:data"}},
            "suites": {}, "gates": {"rules": ["accuracy{split=test} >= 0.5"]}}
    res = SuiteResult(suite="metrics", model="m", dataset="d", status="ok", seed=1,
                      config={"factory": f"{mod}:make", "callback": f"{mod}:data"},
                      metrics=(MetricRecord(name="accuracy", value=0.9, higher_is_better=True, n=10, ci=(0.6, 1.0),
                                            tags={"split": "test", "factory": f"{mod}:make"}),))
    return RunRecord(run_id=run_id, created_at="2026-11-22T10:00:00+00:00",
                     provenance={"plan": plan, "seed": 0, "device": "cpu", "factory": f"{mod}:make"},
                     results=(res,))


def test_results_files_and_store_rows_never_import_code(tmp_path, capsys, monkeypatch, side_effect_module):
    mod, marker = side_effect_module
    monkeypatch.chdir(tmp_path)
    record = _record_naming(mod)
    assert len(user_code_references(record.provenance["plan"])) == 3  # factory, pickle, callable dataset
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = run_dir / "results.json"
    results.write_text(json.dumps(record.to_dict()))
    rules = tmp_path / "rules.toml"
    rules.write_text('[gates]\nrules = ["accuracy{split=test} >= 0.5"]\n')
    db = tmp_path / "store.sqlite"
    store = Store(db)
    store.begin_run(record.run_id, record.created_at, record.provenance, run_dir)
    store.add_result(record.run_id, record.results[0])
    store.finish_run(record.run_id, "complete", "2026-11-22T10:01:00+00:00")

    st = ["--store", str(db)]
    for argv in (["report", str(results)], ["gate", str(results), "--rules", str(rules)],
                 [*st, "report", record.run_id], [*st, "gate", record.run_id], [*st, "list", "runs"],
                 [*st, "report", "latest", "--format", "md"]):
        code, out, err = _cli(capsys, argv)
        assert code == 0 and "Traceback" not in err, (argv, err)
    assert Store(db).load_run(record.run_id).results[0].config["factory"] == f"{mod}:make"

    # Resuming from the store would build the stored plan: refused, with the way forward.
    code, out, err = _cli(capsys, [*st, "run", "--resume", record.run_id])
    assert code == 2 and "does not import code named in the store" in err
    assert f"workbench run PLAN --resume {record.run_id}" in err and f"{mod}:make" in err

    # The dashboard's read path (when the dashboard is installed here).
    try:
        import workbench.apps.data as dash
    except ImportError:
        dash = None
    if dash is not None:
        dash.result_index(str(db))
        dash.runs_frame(str(db))
        rows = [r.to_dict() for r in record.results]
        dash.metrics_frame(rows)
        dash.suite_figures(rows[0], str(run_dir))

    assert mod not in sys.modules and not marker.exists()
    # Positive control: importing it on purpose does write the marker.
    from workbench.runner import _import_callable

    _import_callable(f"{mod}:make")
    assert marker.exists()


def test_plans_the_user_hands_over_may_name_code(tmp_path, capsys, side_effect_module):
    """The one way in: a `module:function` the user wrote in the plan they pass."""
    mod, marker = side_effect_module
    plan = _plan(tmp_path, factory=f"{mod}:make", untrained=True)
    code, out, err = _cli(capsys, ["validate", str(plan)])
    # `validate` builds the models of a plan the user hands over (issue 14): imported and called,
    # and what the factory raised is a clear error (exit 2), not a crash
    assert marker.exists() and code == 2 and "never called" in err and "Traceback" not in err
    code, out, err = _cli(capsys, ["run", str(plan)])
    assert code == 2 and "never called" in err and "Traceback" not in err  # the user's code ran


def test_resume_from_store_without_user_code_needs_no_plan(tmp_path, capsys):
    """A stored plan of built-in names only can still be resumed by run id alone."""
    raw = {"run": {"name": "builtin", "seed": 0, "device": "cpu", "suites": ["metrics"], "progress": False},
           "models": [{"name": "m", "arch": "mlp", "dataset": "wine", "train": {"epochs": 1}}],
           "suites": {"metrics": {"n_boot": 10}}}
    assert user_code_references(raw) == []
    db = tmp_path / "s.sqlite"
    store = Store(db)
    store.begin_run("r1", "2026-11-22T10:00:00+00:00", {"plan": raw}, tmp_path / "r1")
    code, out, err = _cli(capsys, ["--store", str(db), "run", "--resume", "r1", "--model", "nope"])
    assert code == 2 and "Unknown model 'nope'" in err  # got past the user-code check to plan use


def test_dashboard_explain_now_does_not_import_code_from_the_store(tmp_path, side_effect_module):
    compute = pytest.importorskip("workbench.apps.compute")
    mod, marker = side_effect_module
    record = _record_naming(mod)
    info = {"run_id": record.run_id, "provenance": record.provenance}
    with pytest.raises(compute.RebuildError):
        compute.explain_example(info, record.results[0].to_dict(), 0, store_path=str(tmp_path / "s.sqlite"))
    assert not marker.exists()


# --------------------------------------------------------------------------- escaping

EVIL_PLAN = '<script>alert("plan")</script>'
EVIL_CLASS = '<script>alert("class")</script>'
EVIL_MODEL = "<img src=x onerror=alert(1)>"


def evil_blobs(seed: int = 0) -> Any:
    from tests.helpers import blobs

    data = blobs(seed=seed)
    return dataclasses.replace(data, class_names=(EVIL_CLASS, "b&b", "c|d"))


def test_user_strings_are_escaped_in_every_report(tmp_path, capsys):
    from plotly.offline import get_plotlyjs

    raw = {"run": {"name": EVIL_PLAN, "seed": 0, "device": "cpu", "suites": ["metrics"], "progress": False,
                   "out": str(tmp_path / "reports"), "store": str(tmp_path / "store.sqlite")},
           "datasets": {"blobs": {"source": "callable", "function": f"{__name__}:evil_blobs"}},
           "models": [{"name": EVIL_MODEL, "factory": "tests.helpers:make_tiny_mlp", "dataset": "blobs",
                       "train": {"epochs": 2}}],
           "suites": {"metrics": {"n_boot": 20}}}
    plan = tmp_path / "plan.toml"
    plan.write_text(tomli_w.dumps(raw))
    code, out, err = _cli(capsys, ["run", str(plan)])
    assert code == 0, err
    (run_dir,) = (tmp_path / "reports").iterdir()
    assert "<" not in run_dir.name and "script" in run_dir.name  # the run id is sanitised

    page = (run_dir / "report.html").read_text().replace(get_plotlyjs(), "")
    n_figs = page.count('class="wb-fig"')
    assert n_figs >= 1  # the confusion matrix carries the class names as axis labels
    for needle in ("<script>alert", "<img src=x", "onerror=alert(1)>"):
        assert needle not in page, needle
    # The only script elements are the report's own: packed plotly.js (data, not code), the
    # shared template, one JSON spec per figure, the loader.
    tags = re.findall(r"<script[^>]*>", page)
    own = [t for t in tags if not t.startswith('<script type="application/json" class="wb-fig" data-target="fig-')]
    assert len(tags) == n_figs + 3 and set(own) == {
        "<script>", '<script type="application/octet-stream" id="wb-plotly" data-encoding="gzip+base64">',
        '<script type="application/json" id="wb-template">'}, tags
    # Shown as text: plan name, model name, class name in the per-class metric tags.
    for text in (EVIL_PLAN, EVIL_MODEL, EVIL_CLASS):
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        assert escaped in page, escaped
    specs = re.findall(r'<script type="application/json" class="wb-fig"[^>]*>(.*?)</script>', page, re.S)
    labels = [t.get("x") for s in specs for t in json.loads(s)["data"]]
    assert any(EVIL_CLASS in (x or []) for x in labels)  # axis labels: the text itself, drawn by plotly as text

    from workbench.reporting.markdown import summary_markdown

    md = (run_dir / "summary.md").read_text()
    assert "<script" not in md and "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    # The per-class rows live in report.html (summary.md fits a pull-request comment): the model
    # name, which summary.md does carry, is escaped there; the class names in the full listing.
    assert EVIL_MODEL not in md and "&lt;" in md
    full = summary_markdown(json.loads((run_dir / "results.json").read_text()), include_all_metrics=True,
                            max_bytes=1_000_000)
    assert "class=&lt;script&gt;alert(&quot;class&quot;)&lt;/script&gt;" in full and "class=c\\|d" in full

    xml_text = (run_dir / "junit.xml").read_text()
    assert "<script" not in xml_text and "<img" not in xml_text
    names = [e.get("name", "") + " " + e.get("classname", "") for e in ET.fromstring(xml_text).iter("testcase")]
    assert any(EVIL_MODEL in n for n in names)  # the XML parser gets the original string back

    data = json.loads((run_dir / "results.json").read_text())  # JSON is data: the raw strings, quoted
    assert data["provenance"]["plan"]["run"]["name"] == EVIL_PLAN
    assert any(m["tags"].get("class") == EVIL_CLASS for m in data["results"][0]["metrics"])


def test_dashboard_escapes_run_strings_and_its_browser_tests_feed_them():
    """The dashboard's escaping helper makes every hostile run string inert inside
    st.markdown (no tag can open, no Markdown link or directive survives), and the
    dashboard's browser/app tests exist and exercise hostile strings of their own."""
    from html import unescape

    from workbench.apps.views.common import esc

    for evil in (EVIL_PLAN, EVIL_CLASS, EVIL_MODEL, "[x](javascript:alert(1))", ":red[x] **b** `c`"):
        out = esc(evil)
        assert "<" not in out and ">" not in out, out
        assert "](" not in out and ":red[" not in out and "**" not in out and "`" not in out.replace("\\`", ""), out
        assert unescape(out.replace("\\", "")) == evil  # nothing dropped: the text reads the same
    assert esc(None) == "" and esc("a\nb") == "a b"
    tests = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_dashboard*.py")}
    assert "test_dashboard_browser.py" in tests and "test_dashboard_apptest.py" in tests
    assert any(("<script" in t or "onerror" in t) for t in tests.values())


# --------------------------------------------------------------------------- dashboard address


@pytest.fixture
def fake_streamlit(monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(list(cmd)) or 0)
    return calls


def _address(cmd: list[str]) -> str:
    return cmd[cmd.index("--server.address") + 1]


def test_dashboard_listens_on_localhost_by_default(capsys, fake_streamlit):
    code, out, err = _cli(capsys, ["ui"])
    assert code == 0 and _address(fake_streamlit[0]) == "127.0.0.1"
    assert "WARNING" not in err and "http://127.0.0.1:8501" in out
    assert fake_streamlit[0][fake_streamlit[0].index("--browser.gatherUsageStats") + 1] == "false"
    code, out, err = _cli(capsys, ["ui", "--host", "localhost", "--port", "9000"])
    assert code == 0 and "WARNING" not in err and _address(fake_streamlit[1]) == "localhost"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_dashboard_warns_when_asked_to_listen_elsewhere(capsys, fake_streamlit, host):
    code, out, err = _cli(capsys, ["ui", "--host", host])
    assert code == 0 and _address(fake_streamlit[0]) == host
    assert f"WARNING: the dashboard will listen on {host}" in err and "no authentication" in err


def test_no_streamlit_config_overrides_the_address():
    for cfg in (ROOT / ".streamlit" / "config.toml", ROOT / "apps" / ".streamlit" / "config.toml"):
        if cfg.exists():
            text = cfg.read_text()
            assert "address" not in text or '"127.0.0.1"' in text or "'127.0.0.1'" in text, cfg
