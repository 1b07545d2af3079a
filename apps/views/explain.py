"""Explain: a per-example explorer over the explain suite's artifacts.

Pick an example (number box, `?example=`, or click a point in the overview chart), see
its input, prediction and every method's attribution side by side (diverging colour
scale centred at zero, each map scaled by its own largest |value|; tokens coloured for
text), attention heads and rollout, and each method's quality scores beside it. The
explain suite stores the first `n_examples` test examples; any other test example can be
explained on demand ("Explain this example now"), with the suite's own code, when the
model can be loaded from the training cache.

Artifacts read (suites/explain/README.md): examples.npz (input, label, prediction,
probability, explained_value, attr_<method>, attention, rollout, segments), meta.json,
quality.json, curves.npz; and the metrics suite's predictions.npz for the overview chart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from workbench.apps import data
from workbench.apps.views import common

from workbench.reporting.figures import SIGNED_COLORSCALE as DIVERGING  # noqa: E402  red +, blue −, white 0
MAX_COLS = 4


# --------------------------------------------------------------------------- pure helpers


def normalise(attr: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """attr / max|attr| (in [-1, 1]); a map that is zero up to round-off (max |attr| <=
    `floor`) is all zeros, never stretched to full colour."""
    from workbench.reporting.figures import scale_to_unit

    return scale_to_unit(attr, floor)


def methods_of(ex: Mapping[str, np.ndarray]) -> list[str]:
    """Attribution methods stored in examples.npz (keys attr_<method>), in stored order."""
    return [k[len("attr_"):] for k in ex if k.startswith("attr_")]


def example_arrays(ex: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Row i of every per-example array of examples.npz ("segments" too when per example)."""
    n = len(ex["input"])
    return {k: np.asarray(v)[i] for k, v in ex.items() if np.ndim(v) >= 1 and len(v) == n}


def selected_example(event: Any, index_by_curve: Sequence[Sequence[int]]) -> int | None:
    """The test-example index of the first point of a plotly selection event, from its
    customdata or else (curve_number, point_index) into `index_by_curve`."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    if not points:
        return None
    p = points[0]
    cd = p.get("customdata")
    if isinstance(cd, (list, tuple)) and cd:
        cd = cd[0]
    if cd is not None:
        try:
            return int(cd)
        except (TypeError, ValueError):
            pass
    curve, idx = p.get("curve_number"), p.get("point_index", p.get("point_number"))
    if curve is None or idx is None or curve >= len(index_by_curve) or idx >= len(index_by_curve[curve]):
        return None
    return int(index_by_curve[curve][idx])


def quality_for_example(quality: Mapping[str, Any], i: int) -> pd.DataFrame:
    """One row per method (and the random baseline): its quality scores for example i
    (per-example lists of quality.json, per replacement for deletion/insertion AUC)."""
    rows = []
    for method, checks in quality.items():
        row: dict[str, Any] = {"method": method}
        for key, v in checks.items():
            if isinstance(v, Mapping):
                for rep, vals in v.items():
                    if isinstance(vals, list) and i < len(vals):
                        row[f"{key} ({rep})"] = vals[i]
            elif isinstance(v, list) and v and not isinstance(v[0], (list, dict)) and i < len(v):
                row[key] = v[i]
            elif isinstance(v, str):
                row[key] = v
        rows.append(row)
    return pd.DataFrame(rows)


def quality_summary(result: Mapping[str, Any]) -> pd.DataFrame:
    """Run-level quality metrics of each method (mean or median over the explained
    examples) as "value [CI]" cells: rows = methods, columns = metric (+ replacement)."""
    skip = {"method_coverage", "attention_entropy", "attention_row_sum_error"}
    rows: dict[str, dict[str, str]] = {}
    for m in result.get("metrics", []):
        tags = m.get("tags") or {}
        method = tags.get("method")
        if method is None or m["name"] in skip:
            continue
        col = m["name"] + (f" ({tags['replacement']})" if "replacement" in tags else "")
        cell = common.fmt(m.get("value")) if m.get("value") is not None else f"— ({m.get('reason')})"
        if m.get("ci"):
            cell += " " + common.fmt_ci(m["ci"])
        if "verdict" in tags:
            cell += f" · {tags['verdict']}"
        rows.setdefault(str(method), {"method": str(method)})[col] = cell
    return pd.DataFrame(list(rows.values()))


# --------------------------------------------------------------------------- figures


def token_text(tokens: Sequence[Any]) -> str:
    """The example as the text it is: characters (a character-level model) joined as they
    are, whitespace kept; word or sub-word tokens joined with spaces."""
    toks = [str(t) for t in tokens]
    return "".join(toks) if all(len(t) <= 1 for t in toks) else " ".join(toks)


def picker_figure(indices: np.ndarray, y: np.ndarray, correct: np.ndarray | None, stored: int, current: int,
                  y_title: str) -> tuple[Any, list[list[int]]]:
    """Overview of the test examples to click on: one point per example (customdata = its
    index), coloured by correct/wrong when known, stored explanations marked, the current
    example starred. Returns the figure and each trace's example indices."""
    import plotly.graph_objects as go

    fig = go.Figure()
    by_curve: list[list[int]] = []
    idx = np.asarray(indices)
    yy = np.asarray(y, dtype=float)
    groups = [("examples", np.ones(idx.size, dtype=bool), "#636efa")]
    if correct is not None:
        c = np.asarray(correct, dtype=bool)
        groups = [("correct", c, "#00cc96"), ("wrong", ~c, "#ef553b")]
    for name, mask, color in groups:
        if not mask.any():
            continue
        fig.add_trace(go.Scatter(x=idx[mask], y=yy[mask], mode="markers", name=name, customdata=idx[mask],
                                 marker={"color": color, "size": 6},
                                 hovertemplate="example %{customdata}<br>%{y:.3g}<extra>" + name + "</extra>"))
        by_curve.append(idx[mask].tolist())
    sel = idx < stored
    if sel.any():
        fig.add_trace(go.Scatter(x=idx[sel], y=yy[sel], mode="markers", name="attributions stored",
                                 customdata=idx[sel], marker={"symbol": "diamond-open", "size": 12, "color": "black"},
                                 hovertemplate="example %{customdata} (stored)<extra></extra>"))
        by_curve.append(idx[sel].tolist())
    cur = idx == current
    if cur.any():
        fig.add_trace(go.Scatter(x=idx[cur], y=yy[cur], mode="markers", name="selected", customdata=idx[cur],
                                 marker={"symbol": "star", "size": 16, "color": "gold",
                                         "line": {"color": "black", "width": 1}},
                                 hovertemplate="example %{customdata} (selected)<extra></extra>"))
        by_curve.append(idx[cur].tolist())
    fig.update_layout(xaxis_title="test example", yaxis_title=y_title, height=320, clickmode="event+select",
                      margin={"t": 30, "b": 40})
    if not y_title:  # nothing to plot against: a compact strip of clickable examples, no fake axis
        fig.update_layout(height=170, yaxis={"visible": False, "range": [-1, 1]}, margin={"t": 20, "b": 40})
    return fig, by_curve


def attribution_figure(row: Mapping[str, np.ndarray], methods: Sequence[str], meta: Mapping[str, Any],
                       tokens: Sequence[str] | None) -> Any:
    """Every method's attribution of one example side by side, each divided by its own
    max |value| (z in [-1, 1], diverging scale centred at zero; raw values in the hover)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from workbench.reporting.figures import shared_floor

    modality = meta.get("modality")
    x = np.asarray(row["input"])
    floor = shared_floor([row[f"attr_{m}"] for m in methods])  # a method zero up to round-off shows white
    if modality == "image":
        panels = ["input"] + list(methods)
        cols = min(MAX_COLS, len(panels))
        nrows = -(-len(panels) // cols)
        fig = make_subplots(rows=nrows, cols=cols, subplot_titles=panels, horizontal_spacing=0.03,
                            vertical_spacing=0.08)
        img = x[0] if x.ndim == 3 else x
        fig.add_trace(go.Heatmap(z=img, colorscale="gray", showscale=False, name="input",
                                 hovertemplate="pixel (%{y}, %{x})<br>value %{z:.3g}<extra>input</extra>"), 1, 1)
        for k, m in enumerate(methods, start=1):
            a = np.asarray(row[f"attr_{m}"], dtype=np.float64)
            a = a[0] if a.ndim == 3 else a
            fig.add_trace(go.Heatmap(
                z=normalise(a, floor), customdata=a, colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1, name=m,
                showscale=(k == len(methods)), colorbar={"title": "attr / max|attr|"},
                hovertemplate="pixel (%{y}, %{x})<br>attribution %{customdata:.3g}<extra>" + m + "</extra>",
            ), k // cols + 1, k % cols + 1)
        fig.update_yaxes(autorange="reversed", showticklabels=False)
        fig.update_xaxes(showticklabels=False)
        for k in range(len(panels)):  # square pixels in every panel
            ax = "" if k == 0 else str(k + 1)
            fig.layout[f"yaxis{ax}"].update(scaleanchor=f"x{ax}", constrain="domain")
            fig.layout[f"xaxis{ax}"].update(constrain="domain")
        fig.update_annotations(font_size=11)
        fig.update_layout(height=230 * nrows, margin={"t": 40, "b": 10})
        return fig
    if modality == "tokens":
        labels = list(tokens) if tokens is not None else [str(int(t)) for t in x]
        z = np.stack([normalise(row[f"attr_{m}"], floor) for m in methods]) if methods else np.zeros((0, x.size))
        raw = np.stack([np.asarray(row[f"attr_{m}"], dtype=np.float64) for m in methods]) if methods else z
        relevant = set(meta.get("relevant") or [])
        ticks = [f"{t}★" if j in relevant else str(t) for j, t in enumerate(labels)]
        pos = list(range(len(labels)))
        if meta.get("pad_id") is not None:  # pads are not players (attribution 0 by definition): left out, as in the report
            pos = [j for j in pos if int(x[j]) != int(meta["pad_id"])] or pos
            z, raw = z[:, pos], raw[:, pos]
            labels, ticks = [labels[j] for j in pos], [ticks[j] for j in pos]
        fig = go.Figure(go.Heatmap(
            z=z, customdata=raw, x=pos, y=list(methods), colorscale=DIVERGING, zmid=0,
            zmin=-1, zmax=1, text=[labels] * len(methods), texttemplate="%{text}",
            # readable at 900 px: the cell text shrinks with the number of positions (hover has it all)
            textfont={"size": max(7, min(12, int(640 / max(1, len(labels)))))},
            colorbar={"title": "attr / max|attr|", "thickness": 12},
            hovertemplate="position %{x} (%{text})<br>attribution %{customdata:.3g}<extra>%{y}</extra>",
        ))
        fig.update_xaxes(tickmode="array", tickvals=pos, ticktext=ticks, type="category",
                         title="token" + (" (pads left out: not players)" if len(pos) < x.size else ""))
        fig.update_yaxes(autorange="reversed", type="category")
        fig.update_layout(height=120 + 36 * max(1, len(methods)), margin={"t": 30})
        return fig
    names = list(meta.get("feature_names") or [f"x{j}" for j in range(x.size)])
    fig = make_subplots(rows=2, cols=1, row_heights=[0.3, 0.7], shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=("input value", "attribution (each row / its max |value|)"))
    fig.add_trace(go.Bar(x=list(range(x.size)), y=x.astype(float), name="input", marker_color="#888"), 1, 1)
    if methods:
        z = np.stack([normalise(row[f"attr_{m}"], floor) for m in methods])
        raw = np.stack([np.asarray(row[f"attr_{m}"], dtype=np.float64) for m in methods])
        fig.add_trace(go.Heatmap(z=z, customdata=raw, x=list(range(x.size)), y=list(methods), colorscale=DIVERGING,
                                 zmid=0, zmin=-1, zmax=1, colorbar={"title": "attr / max|attr|", "y": 0.35, "len": 0.7},
                                 hovertemplate="feature %{x}<br>attribution %{customdata:.3g}<extra>%{y}</extra>"),
                      2, 1)
    relevant = set(meta.get("relevant") or [])
    ticks = [f"{nm}★" if j in relevant else str(nm) for j, nm in enumerate(names)]
    fig.update_xaxes(tickmode="array", tickvals=list(range(x.size)), ticktext=ticks, row=2, col=1)
    fig.update_yaxes(autorange="reversed", type="category", row=2, col=1)
    fig.update_layout(height=220 + 34 * max(1, len(methods)), showlegend=False, margin={"t": 40})
    return fig


def attention_figure(attention: np.ndarray, tokens: Sequence[str] | None) -> Any:
    """Heads grid of one example: rows = layers, columns = heads, each (query, key)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n_layers, n_heads, t, _ = attention.shape
    top = float(attention.max()) or 1.0  # one scale for every head, so heads compare
    fig = make_subplots(rows=n_layers, cols=n_heads, horizontal_spacing=0.01, vertical_spacing=0.03,
                        subplot_titles=[f"layer {l} · head {h}" for l in range(n_layers) for h in range(n_heads)])
    for l in range(n_layers):
        for h in range(n_heads):
            fig.add_trace(go.Heatmap(z=attention[l, h], colorscale="Viridis", zmin=0, zmax=top,
                                     showscale=(l == 0 and h == n_heads - 1), colorbar={"title": "weight"},
                                     name=f"L{l}H{h}",
                                     hovertemplate="query %{y} → key %{x}<br>weight %{z:.3f}<extra></extra>"),
                          l + 1, h + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_annotations(font_size=9)
    fig.update_layout(height=max(260, 170 * n_layers), margin={"t": 30, "b": 10})
    return fig


def rollout_figure(rollout: np.ndarray, tokens: Sequence[str] | None) -> Any:
    import plotly.graph_objects as go

    t = rollout.shape[0]
    labels = list(tokens) if tokens is not None else [str(j) for j in range(t)]
    fig = go.Figure(go.Heatmap(z=rollout, colorscale="Viridis", zmin=0, colorbar={"title": "rollout"},
                               hovertemplate="query %{y} → key %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_xaxes(tickmode="array", tickvals=list(range(t)), ticktext=labels, title="key token")
    fig.update_yaxes(tickmode="array", tickvals=list(range(t)), ticktext=labels, title="query token",
                     autorange="reversed")
    fig.update_layout(title="Attention rollout", height=420)
    return fig


def curves_figure(curves: Mapping[str, np.ndarray], i: int, replacement: str, unit: str = "probability",
                  units: str = "features") -> Any | None:
    """Deletion and insertion curves of example i for one replacement, one line per
    method (random order dashed); y is the explained output in `unit`; x the fraction of
    `units` (features, pixels, real tokens) removed or inserted."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    frac = curves.get("fractions")
    if frac is None:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("deletion (lower is better)", "insertion (higher is better)"))
    any_curve = False
    methods = list(dict.fromkeys(k.split("__")[1] for k in curves if k.count("__") == 2))
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff",
               "#fecb52"]
    color = {m: ("#555555" if m == "random" else palette[j % len(palette)]) for j, m in enumerate(methods)}
    for col, mode in ((1, "deletion"), (2, "insertion")):
        for key, arr in curves.items():
            parts = key.split("__")
            if len(parts) != 3 or parts[0] != mode or parts[2] != replacement or i >= len(arr):
                continue
            any_curve = True
            fig.add_trace(go.Scatter(x=frac, y=arr[i], mode="lines", name=parts[1], legendgroup=parts[1],
                                     showlegend=(col == 1),
                                     line={"dash": "dash" if parts[1] == "random" else "solid",
                                           "color": color[parts[1]]}), 1, col)
    if not any_curve:
        return None
    fig.update_xaxes(title_text=f"fraction of {units} removed", row=1, col=1)
    fig.update_xaxes(title_text=f"fraction of {units} inserted", row=1, col=2)
    fig.update_yaxes(title_text=f"explained output ({unit})", row=1, col=1)
    fig.update_yaxes(title_text=f"explained output ({unit})", row=1, col=2)
    fig.update_layout(height=340, margin={"t": 40})
    return fig


# --------------------------------------------------------------------------- page


def _predictions(run: common.RunView, model: str) -> dict[str, np.ndarray] | None:
    r = data.find_result(run.results, "metrics", model)
    if r is None or r.get("status") != "ok":
        return None
    p = data.read_artifact(run.run_dir, r, "predictions")
    return p if p and "y_true" in p and "y_pred" in p and np.ndim(p["y_pred"]) == 1 else None


def _class_name(meta: Mapping[str, Any], k: Any) -> str:
    names = meta.get("class_names") or []
    try:
        return str(names[int(k)])
    except (IndexError, ValueError, TypeError):
        return str(k)


def show_example(row: Mapping[str, np.ndarray], meta: Mapping[str, Any], quality: Mapping[str, Any] | None,
                 qi: int, result: Mapping[str, Any] | None, key: str, tokens: Sequence[str] | None,
                 curves: Mapping[str, np.ndarray] | None) -> None:
    """Input, prediction, attributions side by side with quality scores beside them,
    deletion/insertion curves, attention heads and rollout, for one example."""
    classification = meta.get("task") == "classification"
    facts = []
    if "label" in row:
        label = _class_name(meta, row["label"]) if classification else common.fmt(float(row["label"]))
        facts.append(f"true: **{common.esc(label)}**")
    if "prediction" in row:
        pred = _class_name(meta, row["prediction"]) if classification else common.fmt(float(row["prediction"]))
        facts.append(f"predicted: **{common.esc(pred)}**")
    if "probability" in row:
        facts.append(f"p = {float(row['probability']):.3f}")
    if "explained_value" in row:
        facts.append(f"explained output ({common.esc(meta.get('explained_output', 'output'))}) = "
                     f"{float(row['explained_value']):.4g}")
    if facts:
        st.markdown(" · ".join(facts))
    if tokens is not None:
        st.markdown("**Text**")
        st.code(token_text(tokens), language=None, wrap_lines=True)
    methods = [m for m in methods_of(row)]
    if methods or meta.get("modality") != "lm":
        if meta.get("modality") == "image":  # square maps fit beside the scores
            left, right = st.columns([3, 2])
        else:  # a row per method over every token/feature needs the full width (readable at 900 px)
            left, right = st.container(), st.container()
        with left:
            st.markdown("**Attributions** (each map divided by its own max |value|; red raises the explained "
                        "output, blue lowers it; ★ marks ground-truth relevant features)")
            common.show_figure(attribution_figure(row, methods, meta, tokens), key=f"{key}:attr")
        with right:
            st.markdown("**Quality scores of this example**")
            if quality:
                common.show_table(quality_for_example(quality, qi), hide_index=True, key=f"{key}:quality")
            else:
                st.caption("No quality scores stored.")
            if result is not None:
                summary = quality_summary(result)
                st.markdown("**Over all explained examples** (value [95% CI])")
                if summary.empty:
                    st.caption("The run recorded no quality metrics for these methods.")
                else:
                    common.show_table(summary, hide_index=True, key=f"{key}:quality_summary")
    skipped = meta.get("skipped") or {}
    if skipped:
        st.caption("Not computed: " + "; ".join(f"{common.esc(m)} ({common.esc(r)})" for m, r in skipped.items()))
    if curves is not None:
        reps = list(meta.get("replacements") or sorted({k.split("__")[2] for k in curves if k.count("__") == 2}))
        if reps:
            rep = st.selectbox("Removal value for the deletion / insertion curves", reps, key=f"{key}:rep")
            units = {"image": "pixels", "tokens": "tokens"}.get(str(meta.get("modality")), "features")
            if meta.get("pad_id") is not None:
                units = "real (non-pad) tokens"
            fig = curves_figure(curves, qi, rep, str(meta.get("curve_unit", "probability")), units)
            if fig is not None:
                common.show_figure(fig, key=f"{key}:curves")
    if "attention" in row:
        st.markdown("**Attention heads** (rows: layers, columns: heads; query → key)")
        common.show_figure(attention_figure(np.asarray(row["attention"]), tokens), key=f"{key}:attention")
    if "rollout" in row and np.ndim(row["rollout"]) == 2:
        common.show_figure(rollout_figure(np.asarray(row["rollout"]), tokens), key=f"{key}:rollout")


def render() -> None:
    st.title("Explain")
    run = common.current_run()
    if run is None:
        return
    common.run_caption(run)
    if not common.suite_status_note(run.results, "explain"):
        return
    model = common.pick_model(data.models_with(run.results, "explain"), key="explain:model")
    result = data.find_result(run.results, "explain", model)
    if not common.suite_status_note([result], "explain", model):
        return
    ex = data.read_artifact(run.run_dir, result, "examples")
    meta = data.read_artifact(run.run_dir, result, "meta") or {}
    if not ex or "input" not in ex:
        st.warning("This explain result has no readable examples artifact (examples.npz).")
        return
    quality = data.read_artifact(run.run_dir, result, "quality")
    curves = data.read_artifact(run.run_dir, result, "curves")
    stored = len(ex["input"])
    preds = _predictions(run, model)
    n_total = len(preds["y_true"]) if preds is not None else stored
    if meta.get("note"):
        st.caption(common.esc(meta["note"]))

    ss = st.session_state
    ex_key = f"explain:{run.run_id}:{model}:example"
    if ex_key not in ss:
        want = common.qp_int("example")
        ss[ex_key] = want if want is not None and 0 <= want < n_total else 0
    current = int(ss[ex_key])

    # The overview chart to click on: every test example the metrics suite scored, else the stored ones.
    if preds is not None:
        idx = np.asarray(preds.get("index", np.arange(n_total)))
        classification = preds["y_pred"].dtype.kind in "iub"
        if classification and "probs" in preds:
            y = np.asarray(preds["probs"])[np.arange(n_total), preds["y_pred"]]
            y_title = "probability of the predicted class"
        elif classification:
            y = (preds["y_pred"] == preds["y_true"]).astype(float)
            y_title = "correct"
        else:
            y = np.asarray(preds["y_pred"], dtype=float) - np.asarray(preds["y_true"], dtype=float)
            y_title = "residual (predicted − true)"
        correct = (preds["y_pred"] == preds["y_true"]) if classification else None
    else:
        idx = np.arange(stored)
        has_value = "explained_value" in ex
        y = np.asarray(ex["explained_value"], dtype=float) if has_value else np.zeros(stored)
        y_title = "explained output" if has_value else ""
        correct = (ex["prediction"] == ex["label"]) if "prediction" in ex and "label" in ex \
            and meta.get("task") == "classification" else None
    fig, by_curve = picker_figure(idx, y, correct, stored, current, y_title)
    st.markdown(f"**Pick an example**: click a point, or type its index ({n_total} test examples; "
                f"attributions stored for the first {stored})")
    event = common.show_figure(fig, key=f"explain:{model}:picker", on_select="rerun", selection_mode=("points",))
    clicked = selected_example(event, by_curve)
    last_key = f"{ex_key}:last_click"
    if clicked is not None and clicked != ss.get(last_key):
        ss[last_key] = clicked
        if 0 <= clicked < n_total and clicked != current:
            ss[ex_key] = clicked
            st.rerun()
    i = int(st.number_input("Test example", min_value=0, max_value=max(0, n_total - 1), step=1, key=ex_key))
    st.query_params["example"] = str(i)
    st.caption("Deep link: " + common.esc(common.deep_link(run=run.run_id, page="explain", model=model, example=i)))

    tokens_all = meta.get("tokens")
    if i < stored:
        row = example_arrays(ex, i)
        tokens = tokens_all[i] if tokens_all and i < len(tokens_all) else None
        show_example(row, meta, quality, i, result, key=f"explain:{model}:stored", tokens=tokens, curves=curves)
    else:
        st.info(f"Test example {i} has no stored attributions: the explain suite explained the first {stored} "
                f"test examples (raise `n_examples` in the plan to store more).")
    _on_demand(run, result, model, i)


def _on_demand(run: common.RunView, result: Mapping[str, Any], model: str, i: int) -> None:
    """The explicit "explain this example now" button and its result (kept in the session)."""
    from workbench.apps import compute

    ss = st.session_state
    key = f"explain_now:{run.run_id}:{model}:{i}"
    with st.expander("Explain this example now (on demand)", expanded=key in ss):
        st.caption("Runs the explain suite's own code on this one example, with the run's configuration "
                   "(quality checks: completeness only), on the model loaded from the training cache. "
                   "Nothing is trained: if the cached weights are not on this machine, it says so.")
        if st.button("Explain this example now", key=f"{key}:button"):
            with st.spinner(f"Explaining example {i} of {model}…"):
                try:
                    ss[key] = compute.explain_example(run.info, result, i, store_path=run.path)
                except compute.RebuildError as exc:
                    ss[key] = {"error": str(exc)}
                except Exception as exc:  # shown, not raised: the rest of the page stays usable
                    ss[key] = {"error": f"{type(exc).__name__}: {exc}"}
        out = ss.get(key)
        if out is None:
            return
        if "error" in out:
            st.warning("Could not explain this example now: " + common.esc(out["error"]))
            return
        ex = out.get("examples") or {}
        meta = out.get("meta") or {}
        st.success(f"Explained example {i} in {out.get('seconds', 0):.1f} s (weights from "
                   f"{common.esc(out.get('cache_dir') or 'the run plan')}).")
        if not ex:
            st.caption("The explain suite produced no examples for this input.")
            return
        row = example_arrays(ex, 0)
        tokens = (meta.get("tokens") or [None])[0]
        show_example(row, meta, out.get("quality"), 0, None, key=f"{key}:view", tokens=tokens, curves=None)
