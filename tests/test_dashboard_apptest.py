"""The Streamlit dashboard (apps/) under `streamlit.testing.v1.AppTest`: every page against
fixture runs, asserting on the data behind each chart (the plotly spec JSON, arrays
decoded from plotly's base64 form) and each table, recomputed independently from the
saved arrays (scikit-learn, scipy, plain loops).

Fixtures: a demo store written with workbench.store.Store and workbench.records
(apps/demo.py: 2 runs x 3 models, every suite's artifacts, a `<script>` class name), and
one real run of workbench.runner.run_plan (metrics + explain + uncertainty on a tiny MLP).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

st = pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from workbench.apps.demo import IMAGE_CLASSES, write_demo_store  # noqa: E402
from workbench.records import SuiteResult  # noqa: E402
from workbench.store import Store  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")
TIMEOUT = 120


# --------------------------------------------------------------------------- helpers


def decode(v: Any) -> np.ndarray:
    """A plotly JSON array: a list, or (plotly >= 6) {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if shape:
            a = a.reshape([int(s) for s in str(shape).split(",")])
        return a
    return np.asarray(v)


def charts(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def traces(at: AppTest, **match: Any) -> list[dict[str, Any]]:
    """Every trace of every chart whose fields equal `match` (e.g. type="heatmap")."""
    return [t for fig in charts(at) for t in fig["data"] if all(t.get(k) == v for k, v in match.items())]


def texts(at: AppTest) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "info", "warning", "success", "error", "title", "subheader"):
        out += [str(e.value) for e in at.get(kind)]
    return out


def frame(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first table holding all `columns` (st.dataframe keys do not reach AppTest)."""
    for d in at.dataframe:
        if all(c in d.value.columns for c in columns):
            return d.value
    raise KeyError(f"no table with columns {columns}: {[list(d.value.columns) for d in at.dataframe]}")


def open_app(monkeypatch: pytest.MonkeyPatch, store: str | Path, **query: Any) -> AppTest:
    monkeypatch.setenv("WORKBENCH_STORE", str(store))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = str(v)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert_inert(at)
    return at


def assert_inert(at: AppTest) -> None:
    """Run data (a `<script>` class name, reasons, notes) reaches Markdown only escaped;
    tables are drawn as text on a canvas, so raw strings are safe there."""
    for t in texts(at):
        assert "<script" not in t, t


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(autouse=True)
def _clear_streamlit_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return write_demo_store(tmp_path_factory.mktemp("demo"), n_examples=60, n_explained=8)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the real runner: a tiny MLP on synthetic tabular data, metrics +
    explain + uncertainty, cheap settings (the explain methods avoid shap's slow import)."""
    from workbench.config import build_plan
    from workbench.runner import run_plan

    root = tmp_path_factory.mktemp("real")
    raw = {
        "run": {"name": "tiny-real", "seed": 0, "device": "cpu", "out": str(root / "reports"),
                "store": str(root / "store.sqlite"), "cache": str(root / "cache"),
                "suites": ["metrics", "explain", "uncertainty"], "progress": False, "max_samples": 40},
        "models": [{"name": "tab_mlp", "arch": "mlp", "dataset": "synthetic_tabular", "train": {"epochs": 2}}],
        "suites": {"metrics": {"n_boot": 50},
                   "explain": {"n_examples": 4, "methods": ["saliency", "integrated_gradients", "occlusion"],
                               "quality": ["completeness", "deletion"], "ig_steps": 16},
                   "uncertainty": {"methods": ["single", "mc_dropout"], "mc_samples": 4, "n_boot": 50,
                                   "n_calibrated_sims": 50}},
        "gates": {"rules": ["accuracy{model=tab_mlp,split=test} >= 0.5"]},
    }
    out = run_plan(build_plan(raw), log=lambda m: None)
    return {"store": root / "store.sqlite", "run_id": out.run.run_id, "run_dir": out.run_dir, "record": out.run}


# --------------------------------------------------------------------------- runs


def test_runs_page_lists_filters_and_opens(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], page="runs")
    df = frame(at, "run_id", "gate")
    assert df["run_id"].tolist() == ["demo-b", "demo-a"]  # newest first
    assert df["gate"].tolist() == ["FAIL", "pass"]
    assert set(df.loc[0, "models"].split(", ")) == {"img_cnn", "tok_tr", "reg_mlp", "char_gpt"}
    at.multiselect(key="runs:gate").select("pass").run()
    assert frame(at, "run_id", "gate")["run_id"].tolist() == ["demo-a"]
    at.selectbox(key="runs:open").select("demo-a").run()
    at.button(key="runs:go_overview").click().run()
    assert not at.exception
    assert at.title[0].value == "Overview"
    assert at.session_state["run"] == "demo-a"
    assert at.query_params["run"] == "demo-a" and at.query_params["page"] == "overview"


def test_filter_runs_by_model_dataset_plan_and_date(tmp_path):
    from workbench.apps.data import runs_frame
    from workbench.apps.demo import light_run
    from workbench.apps.views.runs import filter_runs

    store = Store(tmp_path / "s.sqlite")
    for i in range(12):
        light_run(store, tmp_path / "runs", i)
    df = runs_frame(str(store.path))
    assert len(df) == 12 and df["created_at"].is_monotonic_decreasing
    got = filter_runs(df, models=["mlp_3"])
    # plain loop over what was written: run i has model mlp_{i % 5}
    assert sorted(got["run_id"]) == [f"hist-{i:05d}" for i in range(12) if i % 5 == 3]
    assert set(filter_runs(df, plans=["ci"])["run_id"]) == {f"hist-{i:05d}" for i in range(12) if i % 2 == 1}
    day = df["created_at"].dt.date
    lo, hi = sorted(day)[3], sorted(day)[8]
    assert len(filter_runs(df, since=lo, until=hi)) == sum(lo <= d <= hi for d in day)
    assert len(filter_runs(df, gates=["pass"], datasets=["breast_cancer"])) == len([i for i in range(12) if i % 3 == 0])
    assert filter_runs(df, models=["nope"]).empty


def test_deep_links_select_run_page_model_and_example(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="explain", model="img_cnn", example="5")
    assert at.title[0].value == "Explain"
    assert at.session_state["run"] == "demo-a"
    assert at.number_input(key="explain:demo-a:img_cnn:example").value == 5
    assert dict(at.query_params) == {"run": "demo-a", "page": "explain", "model": "img_cnn", "example": "5"}
    latest = open_app(monkeypatch, demo["store"], run="latest", page="overview")
    assert latest.session_state["run"] == "demo-b"
    unknown = open_app(monkeypatch, demo["store"], run="no-such-run", page="overview")
    assert unknown.session_state["run"] == "demo-b"  # falls back to the newest run


# --------------------------------------------------------------------------- overview


def test_overview_provenance_gate_and_every_metric(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="overview")
    prov = dict(frame(at, "field", "value").values.tolist())
    assert prov["git SHA"] == "0123456789abcdef" and prov["seed"] == "0" and prov["plan"] == "demo"
    versions = frame(at, "package", "version")
    assert dict(zip(versions["package"], versions["version"]))["torch"] == "2.13.0"
    gate = frame(at, "rule", "status", "observed")
    assert gate["status"].tolist() == ["pass"]
    results = frame(at, "suite", "model", "status", "artifacts")
    stored = Store(demo["store"]).results("demo-a")
    assert len(results) == len(stored)
    assert set(results.loc[results["status"] == "error", "model"]) == {"reg_mlp"}
    # every metric, paginated: the caption counts all of them, the first page holds 100
    rows = Store(demo["store"]).metrics("demo-a")
    assert any(f"of {len(rows)}" in t for t in texts(at))
    table = frame(at, "metric", "ci_low", "higher_is_better")
    assert len(table) == min(100, len(rows))
    at.multiselect(key="overview:models").select("img_cnn").run()
    at.multiselect(key="overview:suites").select("metrics").run()
    table = frame(at, "metric", "ci_low", "higher_is_better")
    acc = table[table["metric"] == "accuracy"].iloc[0]
    ref = next(r for r in rows if r["model"] == "img_cnn" and r["name"] == "accuracy")
    assert acc["value"] == pytest.approx(ref["value"]) and acc["n"] == ref["n"]
    assert (acc["ci_low"], acc["ci_high"]) == pytest.approx((ref["ci_low"], ref["ci_high"]))


# --------------------------------------------------------------------------- metrics


def test_metrics_page_confusion_matrix_and_per_class(demo, monkeypatch):
    from sklearn.metrics import confusion_matrix, f1_score

    at = open_app(monkeypatch, demo["store"], run="demo-a", page="metrics", model="img_cnn")
    pred = npz(demo["runs"]["demo-a"] / "artifacts/metrics/img_cnn/predictions.npz")
    (heat,) = traces(at, type="heatmap")
    ref = confusion_matrix(pred["y_true"], pred["y_pred"], labels=range(len(IMAGE_CLASSES)))
    np.testing.assert_array_equal(decode(heat["z"]), ref)
    assert list(heat["x"]) == IMAGE_CLASSES  # the <script> class name is data, drawn as text by plotly
    (bars,) = traces(at, type="bar")
    f1 = f1_score(pred["y_true"], pred["y_pred"], average=None, labels=range(len(IMAGE_CLASSES)))
    np.testing.assert_allclose(decode(bars["y"]), f1)
    pc = frame(at, "class", "recall CI")
    assert pc["class"].tolist() == IMAGE_CLASSES
    np.testing.assert_allclose(pc["recall"].astype(float), np.diag(ref) / ref.sum(1))


def test_metrics_page_regression_scatter_and_residuals(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="metrics", model="reg_mlp")
    pred = npz(demo["runs"]["demo-a"] / "artifacts/metrics/reg_mlp/predictions.npz")
    pts = traces(at, name="examples")[0]
    np.testing.assert_allclose(decode(pts["x"]), pred["y_true"])
    np.testing.assert_allclose(decode(pts["y"]), pred["y_pred"])
    (hist,) = traces(at, type="histogram")
    np.testing.assert_allclose(decode(hist["x"]), pred["y_pred"] - pred["y_true"])


# --------------------------------------------------------------------------- robustness / uncertainty / efficiency


def test_robustness_page_curves_and_gallery(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="robustness", model="img_cnn")
    run_dir = demo["runs"]["demo-a"]
    summary = json.loads((run_dir / "artifacts/robustness/img_cnn/robustness_summary.json").read_text())
    for variant in ("standard", "pgd_at"):
        (tr,) = traces(at, name=f"{variant}: pgd")
        np.testing.assert_allclose(decode(tr["y"]), summary["variants"][variant]["curves"]["pgd"]["accuracy"])
    ex = npz(run_dir / "artifacts/robustness/img_cnn/adversarial_examples.npz")
    at.number_input(key="robustness:img_cnn:example").set_value(2).run()
    figs = charts(at)
    gallery = next(f for f in figs if [t.get("name") for t in f["data"]] == ["clean", "perturbation", "adversarial"])
    np.testing.assert_allclose(decode(gallery["data"][0]["z"]), ex["clean"][2, 0])
    np.testing.assert_allclose(decode(gallery["data"][1]["z"]), ex["adversarial"][2, 0] - ex["clean"][2, 0], atol=1e-6)
    assert gallery["data"][1]["zmid"] == 0
    before, after = traces(at, name="before (clean)")[0], traces(at, name="after (adversarial)")[0]
    np.testing.assert_allclose(decode(before["y"]), ex["probs_clean"][2], rtol=1e-6)
    np.testing.assert_allclose(decode(after["y"]), ex["probs_adversarial"][2], rtol=1e-6)
    variants = frame(at, "variant", "clean accuracy")
    assert variants["clean accuracy"].tolist() == [0.95, 0.93]
    # a note carrying a <script> class name is shown escaped, as text
    assert any("&lt;script&gt;alert" in t for t in texts(at))


def test_uncertainty_page_reliability_and_risk_coverage(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="uncertainty", model="img_cnn")
    run_dir = demo["runs"]["demo-a"]
    pred = npz(run_dir / "artifacts/metrics/img_cnn/predictions.npz")
    conf = pred["probs"].max(1).astype(np.float64)
    correct = pred["y_pred"] == pred["y_true"]
    # accuracy per equal-width confidence bin, by a plain loop over the examples
    acc, counts, hits = [], [], []
    for j in range(10):
        lo, hi = j / 10, (j + 1) / 10
        sel = [c for c, x in zip(correct, conf) if (lo <= x < hi) or (j == 9 and x >= hi)]
        if sel:  # an empty bin has no accuracy and no bar
            acc.append(sum(sel) / len(sel))
            counts.append(len(sel))
            hits.append(sum(sel))
    before = traces(at, type="bar", name="before")[0]
    np.testing.assert_allclose(decode(before["y"]), acc)
    assert before["text"] == [f"n={c}" for c in counts]  # every bar says how many examples it holds
    # per-bin 95% interval: Clopper-Pearson from scipy's beta quantiles
    from scipy.stats import beta

    ref_lo = [beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0 for k, n in zip(hits, counts)]
    ref_hi = [beta.ppf(0.975, k + 1, n - k) if k < n else 1.0 for k, n in zip(hits, counts)]
    err = before["error_y"]
    np.testing.assert_allclose(np.asarray(acc) - decode(err["arrayminus"]), ref_lo, atol=1e-9)
    np.testing.assert_allclose(np.asarray(acc) + decode(err["array"]), ref_hi, atol=1e-9)
    risk = [t for t in traces(at, type="scatter") if str(t.get("name", "")).startswith("single (AURC")]
    order = np.argsort(-conf, kind="stable")
    ref_risk = np.cumsum(~correct[order]) / np.arange(1, conf.size + 1)
    np.testing.assert_allclose(decode(risk[0]["y"]), ref_risk)


def test_efficiency_page_table_and_pareto(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="efficiency", model="img_cnn")
    table = frame(at, "model", "latency_p50_s", "task_value")
    assert table["model"].tolist() == ["img_cnn", "tok_tr"]
    lat = npz(demo["runs"]["demo-a"] / "artifacts/efficiency/img_cnn/latency.npz")
    assert table.loc[0, "latency_p50_s"] == pytest.approx(np.quantile(lat["samples_s"][0], 0.5))
    assert table.loc[0, "latency_batch"] == 1
    pred = npz(demo["runs"]["demo-a"] / "artifacts/metrics/img_cnn/predictions.npz")
    assert table.loc[0, "task_value"] == pytest.approx((pred["y_true"] == pred["y_pred"]).mean())
    pareto = next(f for f in charts(at) if "Task metric vs latency" in str(f["layout"].get("title")))
    (acc_trace,) = [t for t in pareto["data"] if t["name"] == "accuracy"]
    np.testing.assert_allclose(decode(acc_trace["x"]), table["latency_p50_s"])
    # the suite's own figures follow (compression table, Pareto, latency, FLOPs)
    assert len(charts(at)) >= 4  # (the compression table is a real table, not a chart)


def test_pareto_mask_matches_a_sort_based_skyline():
    from workbench.apps.views.efficiency import pareto_mask

    rng = np.random.default_rng(0)
    for _ in range(20):
        cost, score = rng.random(15), rng.random(15)
        best, ref = -np.inf, np.zeros(15, dtype=bool)
        for i in np.argsort(cost):  # cheapest first: on the front iff better than every cheaper point
            if score[i] > best:
                ref[i], best = True, score[i]
        np.testing.assert_array_equal(pareto_mask(cost, score), ref)
        np.testing.assert_array_equal(pareto_mask(cost, -score, higher_is_better=False), ref)


# --------------------------------------------------------------------------- explain


def test_explain_explorer_image_attributions_and_quality(demo, monkeypatch):
    from workbench.apps.views.explain import normalise

    at = open_app(monkeypatch, demo["store"], run="demo-a", page="explain", model="img_cnn", example="3")
    art = demo["runs"]["demo-a"] / "artifacts/explain/img_cnn"
    ex = npz(art / "examples.npz")
    quality = json.loads((art / "quality.json").read_text())
    heat = {t["name"]: t for t in traces(at, type="heatmap")}
    np.testing.assert_allclose(decode(heat["input"]["z"]), ex["input"][3, 0])
    for m in ("saliency", "integrated_gradients", "occlusion"):
        z, raw = decode(heat[m]["z"]), ex[f"attr_{m}"][3]
        np.testing.assert_allclose(z, raw / np.abs(raw).max(), rtol=1e-6)
        np.testing.assert_allclose(decode(heat[m]["customdata"]), raw, rtol=1e-6)
        assert heat[m]["zmid"] == 0 and heat[m]["zmin"] == -1 and heat[m]["zmax"] == 1
        assert np.abs(z).max() == pytest.approx(1.0)
    np.testing.assert_array_equal(normalise(np.zeros(4)), np.zeros(4))
    q = frame(at, "method", "completeness_gap", "deletion_auc (blur)").set_index("method")
    ig_gap = quality["integrated_gradients"]["completeness_gap"][3]
    # tables show numbers for people (4 significant digits; a column with a missing cell is text)
    assert float(q.loc["integrated_gradients", "completeness_gap"]) == pytest.approx(ig_gap, rel=5e-4)
    assert float(q.loc["random", "deletion_auc (blur)"]) == pytest.approx(quality["random"]["deletion_auc"]["blur"][3],
                                                                         rel=5e-4)
    # the picker: every scored test example, the stored ones marked, example 3 starred
    pred = npz(demo["runs"]["demo-a"] / "artifacts/metrics/img_cnn/predictions.npz")
    correct = traces(at, name="correct")[0]
    np.testing.assert_array_equal(np.sort(decode(correct["customdata"])),
                                  np.nonzero(pred["y_pred"] == pred["y_true"])[0])
    np.testing.assert_array_equal(decode(traces(at, name="attributions stored")[0]["customdata"]), np.arange(8))
    np.testing.assert_array_equal(decode(traces(at, name="selected")[0]["customdata"]), [3])
    curves = npz(art / "curves.npz")
    (dl,) = [t for t in traces(at, name="occlusion") if t.get("type") == "scatter" and t.get("xaxis", "x") == "x"]
    np.testing.assert_allclose(decode(dl["y"]), curves["deletion__occlusion__zero"][3])
    # another example, then one without stored attributions
    at.number_input(key="explain:demo-a:img_cnn:example").set_value(6).run()
    heat = {t["name"]: t for t in traces(at, type="heatmap")}
    np.testing.assert_allclose(decode(heat["saliency"]["customdata"]), ex["attr_saliency"][6], rtol=1e-6)
    assert at.query_params["example"] == "6"
    at.number_input(key="explain:demo-a:img_cnn:example").set_value(20).run()
    assert not traces(at, type="heatmap")
    assert any("no stored attributions" in t for t in texts(at))
    assert at.button(key="explain_now:demo-a:img_cnn:20:button") is not None


def test_explain_tokens_attention_grid_and_rollout(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="explain", model="tok_tr", example="2")
    art = demo["runs"]["demo-a"] / "artifacts/explain/tok_tr"
    ex = npz(art / "examples.npz")
    meta = json.loads((art / "meta.json").read_text())
    attr = [t for t in traces(at, type="heatmap") if t.get("texttemplate")][0]
    assert attr["text"][0] == meta["tokens"][2]  # tokens coloured by attribution
    assert list(attr["y"]) == ["saliency", "integrated_gradients", "rollout"]
    z = decode(attr["z"])
    for r, m in enumerate(attr["y"]):
        np.testing.assert_allclose(z[r], ex[f"attr_{m}"][2] / np.abs(ex[f"attr_{m}"][2]).max(), rtol=1e-6)
    heads = {t["name"]: t for t in traces(at, type="heatmap") if str(t.get("name", "")).startswith("L")}
    assert sorted(heads) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    np.testing.assert_allclose(decode(heads["L1H0"]["z"]), ex["attention"][2, 1, 0])
    (roll,) = [f for f in charts(at) if "rollout" in str(f["layout"].get("title"))]
    np.testing.assert_allclose(decode(roll["data"][0]["z"]), ex["rollout"][2])


def test_language_model_perplexity_generations_and_attention(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="metrics", model="char_gpt")
    docs = npz(demo["runs"]["demo-a"] / "artifacts/metrics/char_gpt/lm_documents.npz")
    (bar,) = traces(at, type="bar")
    assert decode(bar["y"])[0] == pytest.approx(np.exp(docs["doc_nll"].sum() / docs["doc_tokens"].sum()))
    gens = frame(at, "prompt", "generated")
    assert gens["generated"].tolist() == ["the cat", "a dog <b>", "def f():"]
    at = open_app(monkeypatch, demo["store"], run="demo-a", page="explain", model="char_gpt", example="1")
    ex = npz(demo["runs"]["demo-a"] / "artifacts/explain/char_gpt/examples.npz")
    heads = {t["name"]: t for t in traces(at, type="heatmap") if str(t.get("name", "")).startswith("L")}
    assert len(heads) == 4
    np.testing.assert_allclose(decode(heads["L0H1"]["z"]), ex["attention"][1, 0, 1])
    (roll,) = [f for f in charts(at) if "rollout" in str(f["layout"].get("title"))]
    np.testing.assert_allclose(decode(roll["data"][0]["z"]), ex["rollout"][1])
    assert np.allclose(np.triu(decode(roll["data"][0]["z"]), 1), 0)  # causal: nothing above the diagonal


def test_selected_example_from_a_plotly_click_event():
    from workbench.apps.views.explain import selected_example

    by_curve = [[0, 2, 4], [1, 3]]
    assert selected_example({"selection": {"points": [{"customdata": 7, "curve_number": 0, "point_index": 1}]}},
                            by_curve) == 7
    assert selected_example({"selection": {"points": [{"customdata": [9]}]}}, by_curve) == 9
    assert selected_example({"selection": {"points": [{"curve_number": 1, "point_index": 1}]}}, by_curve) == 3
    assert selected_example({"selection": {"points": []}}, by_curve) is None
    assert selected_example(None, by_curve) is None


def test_large_runs_use_webgl_scatter(tmp_path, monkeypatch):
    big = write_demo_store(tmp_path, n_examples=2500, n_explained=4)
    at = open_app(monkeypatch, big["store"], run="demo-a", page="explain", model="img_cnn")
    picker = [t for t in charts(at)[0]["data"] if t["name"] in ("correct", "wrong")]
    assert {t["type"] for t in picker} == {"scattergl"}
    assert sum(decode(t["customdata"]).size for t in picker) == 2500
    at = open_app(monkeypatch, big["store"], run="demo-a", page="metrics", model="reg_mlp")
    (pts,) = traces(at, name="examples")
    assert pts["type"] == "scattergl" and decode(pts["x"]).size == 2500


# --------------------------------------------------------------------------- compare


def test_compare_paired_tests_and_flips_match_plain_loops(demo, monkeypatch):
    from scipy.stats import binomtest, chi2

    at = open_app(monkeypatch, demo["store"], run="demo-a", other="demo-b", page="compare")
    paired = frame(at, "model", "p-value", "95% CI").set_index("model")
    a = npz(demo["runs"]["demo-a"] / "artifacts/metrics/img_cnn/predictions.npz")
    b = npz(demo["runs"]["demo-b"] / "artifacts/metrics/img_cnn/predictions.npz")
    b_only = c_only = 0
    flipped = []
    for i, (y, pa, pb) in enumerate(zip(a["y_true"], a["y_pred"], b["y_pred"])):
        b_only += (pa == y) and (pb != y)
        c_only += (pa != y) and (pb == y)
        if pa != pb:
            flipped.append(i)
    n = b_only + c_only
    p_ref = binomtest(min(b_only, c_only), n, 0.5).pvalue if n < 25 else \
        chi2.sf((abs(b_only - c_only) - 1) ** 2 / n, 1)
    row = paired.loc["img_cnn"]
    assert row["p-value"] == pytest.approx(p_ref, rel=1e-9)
    assert row["discordant (A✓B✗ / A✗B✓)"] == f"{b_only} / {c_only}"
    assert row["B − A"] == pytest.approx((b["y_pred"] == b["y_true"]).mean() - (a["y_pred"] == a["y_true"]).mean())
    lo, hi = (float(v) for v in row["95% CI"].strip("[]").split(","))
    assert lo <= row["B − A"] <= hi
    flips = frame(at, "example", "pred A", "kind")
    assert flips["example"].tolist() == flipped[:50] and len(flipped) > 0
    assert set(flips["kind"]) <= {"fixed by B", "broken by B", "changed (both wrong)"}
    # the regression model saw different targets in the two runs: no paired test, said so
    assert any(r"reg\_mlp" in t and "not paired" in t for t in texts(at))
    forest = next(f for f in charts(at) if "improvement over A" in str(f["layout"].get("title")))
    # accuracy: right of 0 is B better, so the plotted value is B − A as it is
    np.testing.assert_allclose(decode(forest["data"][0]["x"]), paired.loc[list(forest["data"][0]["y"]), "B − A"])
    assert "→ B better" in forest["layout"]["xaxis"]["title"]["text"]
    # the plan's gate rules, B against A as the baseline, agree with the paired table
    at.button(key="compare:gate:demo-b:demo-a:button").click().run()
    gate = frame(at, "rule", "status", "p_value").set_index("rule")
    drop = gate.loc["accuracy{model=img_cnn,suite=metrics} max_drop 0.0 test=mcnemar"]
    assert float(drop["p_value"]) == pytest.approx(p_ref, rel=5e-4)  # shown with 4 significant digits
    assert drop["status"] == ("fail" if p_ref < 0.05 and c_only < b_only else "pass")
    deltas = frame(at, "delta (B − A)", "B vs A")
    acc = deltas[(deltas["model"] == "img_cnn") & (deltas["metric"] == "accuracy")].iloc[0]
    assert acc["delta (B − A)"] == pytest.approx(acc["B"] - acc["A"])
    assert acc["B vs A"] == ("better" if acc["B"] > acc["A"] else "worse" if acc["B"] < acc["A"] else "same")


def test_forest_plot_orients_every_metric_so_right_is_better():
    from workbench.apps.views.compare import forest_figure, improvement

    acc = {"model": "m1", "metric": "accuracy", "diff": 0.02, "ci": (0.01, 0.03)}  # B more accurate: better
    mse = {"model": "m2", "metric": "mse", "diff": -0.5, "ci": (-0.8, -0.2)}  # B's error lower: better
    worse = {"model": "m3", "metric": "mse", "diff": 0.4, "ci": (0.1, 0.7)}  # B's error higher: worse
    assert improvement(acc) == (0.02, (0.01, 0.03))
    assert improvement(mse) == (0.5, (0.2, 0.8)) and improvement(worse) == (-0.4, (-0.7, -0.1))
    fig = forest_figure([acc, mse, worse])
    assert len(fig.data) == 2  # one panel per metric: accuracy and MSE never share an axis
    assert list(fig.data[1].x) == [0.5, -0.4] and list(fig.data[1].marker.color) == ["#1a7f37", "#cf222e"]


def test_paired_comparison_refuses_unpaired_predictions():
    from workbench.apps.views.compare import paired_comparison

    a = {"y_true": np.array([0, 1, 1]), "y_pred": np.array([0, 1, 0]), "index": np.arange(3)}
    assert "not paired" in paired_comparison(a, {**a, "y_true": np.array([0, 1])})["error"]
    assert "not paired" in paired_comparison(a, {**a, "index": np.array([1, 2, 3])})["error"]
    same = paired_comparison(a, a)
    assert same["p_value"] == 1.0 and same["diff"] == 0.0 and same["flips"].empty


# --------------------------------------------------------------------------- graceful degradation and safety


def test_pages_without_their_suite_say_so(tmp_path, monkeypatch):
    store = Store(tmp_path / "store.sqlite")
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    plan = {"run": {"name": "m"}, "gates": {"rules": ["accuracy{model=m} >= 0.5"]}}
    store.begin_run("only-metrics", "2026-11-22T00:00:00+00:00", {"seed": 0, "plan": plan}, run_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    np.savez(outside / "predictions.npz", y_true=np.zeros(5), y_pred=np.ones(5))
    store.add_result("only-metrics", SuiteResult(suite="metrics", model="m", dataset="d", status="ok",
                                                 artifacts={"predictions": "../outside/predictions.npz"}))
    store.finish_run("only-metrics", "complete", "2026-11-22T00:01:00+00:00")
    for page in ("robustness", "uncertainty", "efficiency", "explain"):
        at = open_app(monkeypatch, store.path, page=page)
        assert any("did not run" in i.value for i in at.info), page
        assert not at.get("plotly_chart")
    at = open_app(monkeypatch, store.path, page="metrics")
    assert any("no artifacts" in t for t in texts(at))  # the file outside the run directory is not read
    assert not at.get("plotly_chart")
    at = open_app(monkeypatch, store.path, page="overview")
    at.button(key="overview:gate_now:only-metrics:button").click().run()
    gate = frame(at, "rule", "status", "message")
    assert gate["status"].tolist() == ["error"]  # the run has no accuracy: an error, never a pass
    at = open_app(monkeypatch, store.path, page="compare")
    assert any("only one run" in i.value for i in at.info)
    empty = open_app(monkeypatch, tmp_path / "missing" / "store.sqlite", page="overview")
    assert any("No run store" in i.value for i in empty.info)
    assert not (tmp_path / "missing").exists()  # reading never creates a store


# --------------------------------------------------------------------------- a real run


def test_real_run_every_page_and_explain_now(real_run, monkeypatch):
    from sklearn.metrics import confusion_matrix

    store, run_id, run_dir = real_run["store"], real_run["run_id"], Path(real_run["run_dir"])
    for page in ("runs", "overview", "uncertainty"):
        at = open_app(monkeypatch, store, run=run_id, page=page)
        assert at.title[0].value.split()[0].lower() in (page, "runs")
    at = open_app(monkeypatch, store, run=run_id, page="overview")
    gate = frame(at, "rule", "status", "observed")
    accuracy = next(r for r in real_run["record"].results if r.suite == "metrics").metric("accuracy").value
    assert gate["status"].tolist() == ["pass" if accuracy >= 0.5 else "fail"]
    at = open_app(monkeypatch, store, run=run_id, page="metrics")
    pred = npz(run_dir / "artifacts/metrics/tab_mlp/predictions.npz")
    (heat,) = traces(at, type="heatmap")
    np.testing.assert_array_equal(decode(heat["z"]), confusion_matrix(pred["y_true"], pred["y_pred"]))
    at = open_app(monkeypatch, store, run=run_id, page="robustness")
    assert any("did not run" in i.value for i in at.info)

    at = open_app(monkeypatch, store, run=run_id, page="explain", example="0")
    ex = npz(run_dir / "artifacts/explain/tab_mlp/examples.npz")
    (attr,) = [t for t in traces(at, type="heatmap")]
    assert list(attr["y"]) == ["saliency", "integrated_gradients", "occlusion"]
    np.testing.assert_allclose(decode(attr["customdata"]), np.stack([ex[f"attr_{m}"][0] for m in attr["y"]]),
                               rtol=1e-6)
    # on demand: example 0 again, from the cached model, must reproduce the stored attributions
    at.button(key=f"explain_now:{run_id}:tab_mlp:0:button").click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert at.success, [w.value for w in at.warning]
    now = [t for t in traces(at, type="heatmap")][1]
    np.testing.assert_allclose(decode(now["customdata"]), decode(attr["customdata"]), rtol=1e-4, atol=1e-6)
    # and an example the run did not store (index 6 >= n_examples = 4)
    at.number_input(key=f"explain:{run_id}:tab_mlp:example").set_value(6).run()
    at.button(key=f"explain_now:{run_id}:tab_mlp:6:button").click().run(timeout=TIMEOUT)
    assert at.success, [w.value for w in at.warning]
    (now,) = [t for t in traces(at, type="heatmap")]
    assert decode(now["customdata"]).shape == (3, ex["input"].shape[1])
    q = frame(at, "method", "completeness_gap").set_index("method")
    assert float(q.loc["integrated_gradients", "completeness_gap"]) < 0.05  # IG's own property holds


def test_explain_now_never_trains(real_run, tmp_path, monkeypatch):
    """Without the training cache the on-demand explanation refuses, with the reason."""
    from workbench.apps import compute

    info = Store(real_run["store"]).run_info(real_run["run_id"])
    info["provenance"]["plan"]["run"]["cache"] = str(tmp_path / "empty-cache")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    result = next(r for r in real_run["record"].results if r.suite == "explain").to_dict()
    with pytest.raises(compute.RebuildError, match="never trains"):
        compute.explain_example(info, result, 1, store_path=str(tmp_path / "elsewhere" / "store.sqlite"))
    assert not list(tmp_path.rglob("*.pt"))


def test_tables_never_show_none():
    """A missing cell is empty (Streamlit would draw "None"); numbers are formatted for people."""
    from workbench.apps.views.common import blank_missing

    df = pd.DataFrame({"v": [0.758348403, np.nan], "o": ["a", None], "n": pd.array([3, None], dtype="Int64"),
                       "whole": [1.0, 2.0]})
    out = blank_missing(df)
    assert out["v"].tolist() == ["0.7583", ""] and out["o"].tolist() == ["a", ""] and out["n"].tolist() == ["3", ""]
    assert out["whole"].dtype == np.float64  # a complete column keeps its dtype and numeric sort
    assert blank_missing(df, ["o"])["v"].isna().sum() == 1  # only the named columns


@pytest.mark.slow
def test_efficiency_page_on_a_real_quickstart_run(quickstart_run, monkeypatch):
    """The real efficiency suite tags its sweep `variant=base` (no `study=sweep`): every
    model still gets its latency (the p50 at the smallest batch, read here by a plain loop
    over results.json), its task metric, and the accuracy-vs-latency chart."""
    d = json.loads((Path(quickstart_run["run_dir"]) / "results.json").read_text())
    expected = {}
    for r in d["results"]:
        if r["suite"] != "efficiency" or r["status"] != "ok":
            continue
        best = None
        for m in r["metrics"]:
            t = m.get("tags") or {}
            if (m["name"] == "latency" and t.get("quantile") == "p50" and t.get("variant", "base") == "base"
                    and m.get("value") is not None and (best is None or t["batch_size"] < best[0])):
                best = (t["batch_size"], m["value"])
        expected[r["model"]] = best[1]
    at = open_app(monkeypatch, quickstart_run["store"], run=quickstart_run["run_id"], page="efficiency")
    table = frame(at, "model", "latency_p50_s", "task_value").set_index("model")
    assert len(expected) >= 4 and set(table.index) == set(expected)
    for model, latency in expected.items():
        assert table.loc[model, "latency_p50_s"] == pytest.approx(latency)
        assert table.loc[model, "task_value"] == table.loc[model, "task_value"]  # not NaN
    assert any("Task metric vs latency: accuracy" in str(f["layout"].get("title")) for f in charts(at))
    assert not any("No model has both" in c.value for c in at.caption)


def test_run_link_candidates():
    from workbench.apps.data import run_candidates

    ids = ["20261204-1600-quickstart-aa", "20261204-1500-quickstart-bb", "20261203-0900-ci-cc"]
    assert run_candidates("20261204", ids) == ("ambiguous", ids[:2])
    kind, close = run_candidates("20261204-1600-quickstart-ab", ids)
    assert kind == "unknown" and close[0] == ids[0]
    assert run_candidates("zzz", ids) == ("unknown", ids)  # nothing close: the newest runs


def test_unknown_run_link_shows_candidates_not_another_run(demo, monkeypatch):
    at = open_app(monkeypatch, demo["store"], run="demo-", page="metrics")
    assert any("matches several runs" in w.value and "demo-a" in w.value and "demo-b" in w.value for w in at.warning)
    assert not at.get("plotly_chart")  # no run is shown in its place
