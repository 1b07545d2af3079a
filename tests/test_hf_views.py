"""A Hugging Face model's explain results in the dashboard's Explain page and the HTML report,
like the reference Transformer's: token attributions with the tokenizer's tokens, one
attention map per layer and head, the rollout. Tiny BERT written by the test, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("streamlit")

from hf_tiny import write_bert  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")


@pytest.mark.slow
def test_explain_page_and_report_show_hf_tokens_and_heads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from workbench.cli import main

    model = write_bert(tmp_path / "cls", kind="classifier")
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""
[run]
name = "hf-views"
device = "cpu"
max_samples = 16
out = "{tmp_path / 'reports'}"
store = "{tmp_path / 'runs.sqlite'}"
cache = "{tmp_path / 'cache'}"
progress = false
suites = ["explain"]

[datasets.docs]
source = "hf_text"
tokenizer = "{model}"
corpus = "stdlib_docstrings"
max_length = 12

[suites.explain]
n_examples = 3
methods = ["integrated_gradients", "attention", "rollout"]

[[models]]
name = "bertcls"
arch = "hf"
dataset = "docs"
options = {{ path = "{model}" }}
""")
    assert main(["run", str(plan)]) == 0
    (run_dir,) = list((tmp_path / "reports").iterdir())
    meta = json.loads((run_dir / "artifacts" / "explain" / "bertcls" / "meta.json").read_text())
    assert meta["tokens"][0][0] == "[CLS]" and meta["modality"] == "tokens"

    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "runs.sqlite"))
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in {"run": run_dir.name, "page": "explain", "model": "bertcls", "example": "0"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    names = [t.get("name") for c in at.get("plotly_chart") for t in json.loads(c.proto.spec).get("data", [])]
    assert {"L0H0", "L1H3"} <= set(names)  # 2 layers x 4 heads of the tiny BERT
    assert "integrated_gradients" in names
    assert any("Attention heads" in m.value for m in at.markdown)
    html = (run_dir / "report.html").read_text()
    assert "[CLS]" in html and "integrated_gradients" in html
