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


def test_token_map_and_curves_leave_pads_out() -> None:
    """The dashboard's token map, like the report's, shows real tokens only (pads are no
    players, attribution 0 by definition), and the curves' x-axis says what a unit is."""
    import numpy as np

    from workbench.apps.views.explain import attribution_figure, curves_figure

    row = {"input": np.array([5, 6, 7, 0, 0]), "attr_ig": np.array([1.0, -0.5, 0.25, 0.0, 0.0])}
    meta = {"modality": "tokens", "pad_id": 0}
    fig = attribution_figure(row, ["ig"], meta, ["a", "b", "c", "[PAD]", "[PAD]"])
    assert list(fig.data[0].x) == [0, 1, 2] and np.asarray(fig.data[0].z).shape == (1, 3)
    assert "[PAD]" not in list(fig.layout.xaxis.ticktext) and "pads left out" in fig.layout.xaxis.title.text
    unpadded = attribution_figure(row, ["ig"], {"modality": "tokens"}, ["a", "b", "c", "d", "e"])
    assert list(unpadded.data[0].x) == [0, 1, 2, 3, 4]
    curves = {"fractions": np.linspace(0, 1, 3), "deletion__ig__zero": np.array([[1.0, 0.5, 0.1]])}
    cf = curves_figure(curves, 0, "zero", "probability", "real (non-pad) tokens")
    assert cf.layout.xaxis.title.text == "fraction of real (non-pad) tokens removed"
