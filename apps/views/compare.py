"""Compare two runs: every shared metric's delta (B − A) beside both CIs, a paired
significance test per model on the metrics suite's per-example predictions
(McNemar for classification, paired bootstrap CI of the difference in accuracy or
squared error, from workbench.significance), and the examples whose prediction flipped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from workbench.apps import data
from workbench.apps.views import common

N_BOOT = 2000
SEED = 0


def metric_deltas(results_a: Sequence[Mapping[str, Any]], results_b: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per metric present in both runs, matched on (suite, model, dataset, metric,
    tags): both values with their CIs, delta = B − A, and whether B is better by the
    metric's direction ("better" / "worse" / "same", "—" when it has none)."""
    a = data.metrics_frame(list(results_a))
    b = data.metrics_frame(list(results_b))
    keys = ["suite", "model", "dataset", "metric", "tags"]
    m = a.merge(b, on=keys, how="inner", suffixes=(" A", " B"))
    m = m.drop_duplicates(subset=keys)
    out = pd.DataFrame({k: m[k] for k in keys})
    out["A"] = m["value A"]
    out["A CI"] = [common.fmt_ci((lo, hi)) if pd.notna(lo) else "—" for lo, hi in zip(m["ci_low A"], m["ci_high A"])]
    out["B"] = m["value B"]
    out["B CI"] = [common.fmt_ci((lo, hi)) if pd.notna(lo) else "—" for lo, hi in zip(m["ci_low B"], m["ci_high B"])]
    out["delta (B − A)"] = m["value B"] - m["value A"]
    out["n A"] = m["n A"]
    out["n B"] = m["n B"]
    out["unit"] = m["unit A"]

    def verdict(d: float, hib: Any) -> str:
        if pd.isna(d) or hib is None or pd.isna(hib):
            return "—"
        if d == 0:
            return "same"
        return "better" if (d > 0) == bool(hib) else "worse"

    out["B vs A"] = [verdict(d, h) for d, h in zip(out["delta (B − A)"], m["higher_is_better A"])]
    return out.reset_index(drop=True)


def paired_comparison(pred_a: Mapping[str, np.ndarray], pred_b: Mapping[str, np.ndarray], *, seed: int = SEED,
                      n_boot: int = N_BOOT) -> dict[str, Any]:
    """Paired tests on the same test examples of two runs (predictions.npz of the metrics
    suite). Classification: McNemar on correctness and the paired bootstrap CI of
    accuracy B − A; regression: the paired bootstrap CI of MSE B − A. Also the flipped
    examples (classification: y_pred differs). {"error": reason} when not paired."""
    from workbench.significance import mcnemar, paired_bootstrap_diff_ci

    ya, yb = np.asarray(pred_a["y_true"]), np.asarray(pred_b["y_true"])
    if ya.shape != yb.shape:
        return {"error": f"not paired: run A has {ya.size} test examples, run B {yb.size}"}
    ia, ib = pred_a.get("index"), pred_b.get("index")
    if ia is not None and ib is not None and not np.array_equal(ia, ib):
        return {"error": "not paired: the runs scored different test examples (index arrays differ)"}
    if not np.array_equal(ya, yb):
        return {"error": "not paired: the true labels differ, so the runs saw different data"}
    pa, pb = np.asarray(pred_a["y_pred"]), np.asarray(pred_b["y_pred"])
    index = np.asarray(ia) if ia is not None else np.arange(ya.size)
    if pa.dtype.kind in "iub" and ya.dtype.kind in "iub":
        ca, cb = pa == ya, pb == yb
        test = mcnemar(ca, cb)
        boot = paired_bootstrap_diff_ci(cb.astype(float), ca.astype(float), n_boot=n_boot, seed=seed)
        flipped = np.nonzero(pa != pb)[0]
        kind = np.where(cb[flipped] & ~ca[flipped], "fixed by B",
                        np.where(ca[flipped] & ~cb[flipped], "broken by B", "changed (both wrong)"))
        flips = pd.DataFrame({"example": index[flipped], "true": ya[flipped], "pred A": pa[flipped],
                              "pred B": pb[flipped], "kind": kind})
        return {"task": "classification", "metric": "accuracy", "n": int(ya.size), "a": float(ca.mean()),
                "b": float(cb.mean()), "diff": boot.diff, "ci": (boot.low, boot.high), "n_boot": n_boot,
                "test": "McNemar " + ("exact binomial" if test.method == "exact"
                                      else "chi² with continuity correction"),
                "p_value": test.p_value, "statistic": test.statistic,
                "discordant": {"A right, B wrong": test.b, "A wrong, B right": test.c}, "flips": flips}
    ea = (pa.astype(float) - ya.astype(float)) ** 2
    eb = (pb.astype(float) - yb.astype(float)) ** 2
    boot = paired_bootstrap_diff_ci(eb, ea, n_boot=n_boot, seed=seed)
    return {"task": "regression", "metric": "mse", "n": int(ya.size), "a": float(ea.mean()), "b": float(eb.mean()),
            "diff": boot.diff, "ci": (boot.low, boot.high), "n_boot": n_boot,
            "test": "paired bootstrap of squared error", "p_value": None, "statistic": None, "discordant": None,
            "flips": None}


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_paired(path: str, run_a: str, run_b: str, model: str, stamp: tuple) -> dict[str, Any]:
    info_a, info_b = data.cached_run_info(path, run_a), data.cached_run_info(path, run_b)
    ra = data.find_result(data.cached_results(path, info_a), "metrics", model)
    rb = data.find_result(data.cached_results(path, info_b), "metrics", model)
    pa = data.read_artifact(info_a.get("run_dir"), ra, "predictions") if ra else None
    pb = data.read_artifact(info_b.get("run_dir"), rb, "predictions") if rb else None
    if pa is None or pb is None or "y_true" not in pa or "y_true" not in pb:
        missing = [r for r, p in ((run_a, pa), (run_b, pb)) if p is None or "y_true" not in p]
        return {"error": f"no per-example predictions (metrics suite predictions.npz) in run(s) {', '.join(missing)}"}
    return paired_comparison(pa, pb)


def _discordant(d: Mapping[str, int] | None) -> str:
    return f"{d['A right, B wrong']} / {d['A wrong, B right']}" if d else "—"


# Direction of the paired metrics `paired_comparison` reports.
PAIRED_HIGHER_IS_BETTER = {"accuracy": True, "mse": False}


def improvement(row: Mapping[str, Any]) -> tuple[float, tuple[float, float]]:
    """B's improvement over A and its CI, oriented so that > 0 always means B is better
    (B − A for accuracy, A − B for MSE)."""
    sign = 1.0 if PAIRED_HIGHER_IS_BETTER.get(str(row["metric"]), True) else -1.0
    lo, hi = sorted((sign * row["ci"][0], sign * row["ci"][1]))
    return sign * row["diff"], (lo, hi)


def forest_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    """B's improvement over A per model with its 95% paired bootstrap CI: one panel per
    metric (each in its own units), every panel oriented so right of 0 is "B better"."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    fig = make_subplots(rows=len(metrics), cols=1, vertical_spacing=0.25 / max(1, len(metrics)))
    for k, metric in enumerate(metrics, start=1):
        sel = [r for r in rows if r["metric"] == metric]
        imp = [improvement(r) for r in sel]
        hib = PAIRED_HIGHER_IS_BETTER.get(str(metric), True)
        fig.add_trace(go.Scatter(
            x=[v for v, _ in imp], y=[r["model"] for r in sel], mode="markers", name=str(metric),
            error_x={"type": "data", "symmetric": False, "array": [ci[1] - v for v, ci in imp],
                     "arrayminus": [v - ci[0] for v, ci in imp]},
            marker={"size": 11, "color": ["#1a7f37" if ci[0] > 0 else "#cf222e" if ci[1] < 0 else "#59636e"
                                          for _, ci in imp]},
            hovertemplate="%{y}: %{x:.4g}<extra></extra>", showlegend=False), k, 1)
        fig.add_vline(x=0, line_dash="dash", line_color="grey", row=k, col=1)
        what = "accuracy B − A" if hib else f"{metric} A − B"
        fig.update_xaxes(title_text=f"{what} (→ B better, ← B worse)", zeroline=False, row=k, col=1)
        fig.update_yaxes(type="category", row=k, col=1)
    fig.update_layout(title="B's improvement over A per model (95% paired bootstrap CI; green: B better, "
                            "red: B worse, grey: no clear difference)",
                      height=140 + 110 * len(metrics) + 30 * len(rows), margin={"t": 60})
    return fig


def render() -> None:
    st.title("Compare two runs")
    run = common.current_run()
    if run is None:
        return
    runs = data.cached_runs(run.path)
    others = [r for r in runs["run_id"].tolist() if r != run.run_id]
    if not others:
        st.info("The store has only one run; there is nothing to compare it with.")
        return
    ss = st.session_state
    if ss.get("compare:other") not in others:
        want = data.resolve_run(run.path, st.query_params.get("other"), others)
        if want not in others:
            plan = run.info.get("plan_name")
            older = runs[(runs["created_at"] <= pd.Timestamp(run.info["created_at"])) & (runs["run_id"] != run.run_id)]
            same = older[older["plan"] == plan]
            want = (same["run_id"].tolist() or older["run_id"].tolist() or others)[0]
        ss["compare:other"] = want
    st.markdown(f"**Run A** (sidebar): {common.esc(run.run_id)}")
    other = st.selectbox("Run B", others, key="compare:other")
    st.query_params["other"] = other
    info_b = data.cached_run_info(run.path, other)
    if info_b is None:
        st.warning("Run B is not in the store.")
        return
    results_b = data.cached_results(run.path, info_b)

    st.subheader("Paired tests on the same test examples")
    models = sorted(set(data.models_with(run.results, "metrics")) & set(data.models_with(results_b, "metrics")))
    if not models:
        st.info("The two runs share no model with a metrics-suite result, so no paired test is possible.")
    rows, flips = [], {}
    for model in models:
        stamp = (str(run.info.get("finished_at")), str(info_b.get("finished_at")))
        res = _cached_paired(run.path, run.run_id, other, model, stamp)
        if "error" in res:
            st.caption(f"{common.esc(model)}: {common.esc(res['error'])}")
            continue
        rows.append({"model": model, **{k: res[k] for k in ("metric", "n", "a", "b", "diff", "ci", "test",
                                                             "p_value", "discordant")}})
        if res.get("flips") is not None:
            flips[model] = res["flips"]
    if rows:
        table = pd.DataFrame([{
            "model": r["model"], "metric": r["metric"], "n": r["n"], "A": r["a"], "B": r["b"],
            "B − A": r["diff"], "95% CI": common.fmt_ci(r["ci"], r["diff"]), "test": r["test"], "p-value": r["p_value"],
            "discordant (A✓B✗ / A✗B✓)": _discordant(r["discordant"]),
        } for r in rows])
        common.show_table(table, hide_index=True, key="compare:paired")
        common.show_figure(forest_figure(rows), key="compare:forest")

    gate_key = f"compare:gate:{other}:{run.run_id}"
    if st.button("Evaluate run B's gate rules with run A as the baseline", key=f"{gate_key}:button",
                 help="Every rule of run B's own [gates] table (drop rules use A as the baseline), "
                      "with workbench.gates.evaluate_gates"):
        from workbench.apps import compute

        with st.spinner("Evaluating gates…"):
            try:
                ss[gate_key] = compute.evaluate_run_gates(run.path, other, baseline_id=run.run_id) or {
                    "note": "Run B's plan has no [gates] rules."}
            except Exception as exc:  # shown, not raised
                ss[gate_key] = {"note": f"{type(exc).__name__}: {exc}"}
    got = ss.get(gate_key)
    if got and "note" in got:
        st.caption(common.esc(got["note"]))
    elif got:
        from workbench.apps.views.overview import gate_table

        st.markdown(f"Gate of run B against run A: **{common.esc(got.get('status'))}** (evaluated now, not saved)")
        gate_table(got, key="compare:gate")

    st.subheader("Examples whose prediction flipped")
    if not flips:
        st.caption("No classification model with paired predictions in both runs.")
    for model, df in flips.items():
        st.markdown(f"**{common.esc(model)}**: {len(df)} flipped "
                    f"({int((df['kind'] == 'fixed by B').sum())} fixed, {int((df['kind'] == 'broken by B').sum())} "
                    f"broken)")
        if len(df):
            common.show_table(common.paginate(df, key=f"compare:flips:{model}:page", page_size=50), hide_index=True,
                         key=f"compare:flips:{model}")
            first = int(df["example"].iloc[0])
            st.caption("Explore in run B: " + common.esc(common.deep_link(run=other, page="explain", model=model,
                                                                          example=first)))

    st.subheader("Metric deltas (B − A)")
    deltas = metric_deltas(run.results, results_b)
    c1, c2 = st.columns(2)
    suites = c1.multiselect("Suite", sorted(deltas["suite"].unique()), key="compare:suites")
    changed = c2.checkbox("Only metrics that changed", value=False, key="compare:changed")
    if suites:
        deltas = deltas[deltas["suite"].isin(suites)]
    if changed:
        deltas = deltas[deltas["delta (B − A)"].fillna(0) != 0]
    st.caption("Each run's own 95% CI is shown; the CI of the difference needs per-example data and is "
               "given above for the paired tests.")
    common.show_table(common.paginate(deltas, key="compare:deltas:page", page_size=100), hide_index=True,
                 key="compare:deltas")
