"""Plotly figures of the explain suite, drawn only from saved artifacts (no recomputation
beyond a few tiny matrix products for the per-layer rollout).

- attribution heatmaps side by side (diverging scale centred at zero, each panel scaled
  by its own max |value|; tokens coloured with their text)
- attention head grid (layers x heads) with the rollout up to each layer
- deletion and insertion curves (mean over examples) against the random order
- quality table (one row per method)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from workbench.reporting.figures import SIGNED_COLORSCALE, scale_to_unit, shared_floor
from workbench.suite import load_artifact

DIVERGING = SIGNED_COLORSCALE  # red = supports the explained output, blue = against it (one convention)
MAX_EXAMPLES = 4
SHORT = {"input_x_gradient": "input×grad", "integrated_gradients": "integ. grad", "smoothgrad": "SmoothGrad",
         "deeplift": "DeepLift", "shapley": "Shapley", "shap_kernel": "shap Kernel", "shap_gradient": "shap Grad",
         "shap_deep": "shap Deep"}
QUALITY_COLUMNS = (
    ("completeness_gap", {}, "completeness gap (median)"),
    ("deletion_auc", {"replacement": "zero"}, "deletion AUC, zero (↓)"),
    ("insertion_auc", {"replacement": "zero"}, "insertion AUC, zero (↑)"),
    ("randomisation_rank_correlation", {}, "randomisation ρ (↓)"),
    ("seed_rank_correlation", {}, "seed stability ρ (↑)"),
    ("infidelity", {}, "infidelity (↓)"),
    ("max_sensitivity", {}, "max-sensitivity (↓)"),
    ("top_k_precision", {}, "top-k precision (↑)"),
    ("surrogate_r2", {}, "LIME R² (↑)"),
)


def _load(result: dict[str, Any], run_dir: Path, name: str) -> Any:
    return load_artifact(result, run_dir, name)

def _scaled(a: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """a / max|a|, so every panel spans [-1, 1] around 0; a map that is zero up to
    round-off (max |a| <= floor) stays zero instead of being stretched to full colour.
    NaN (an example the method did not explain) stays NaN: a gap, not a zero."""
    return np.where(np.isnan(np.asarray(a, dtype=np.float64)), np.nan, scale_to_unit(a, floor))


def explain_figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    """(title, figure) pairs for one explain result (its to_dict() form)."""
    if result.get("status") != "ok":
        return []
    ex = _load(result, run_dir, "examples")
    meta = _load(result, run_dir, "meta") or {}
    figs: list[tuple[str, Any]] = []
    if ex is not None and meta.get("attributions"):
        fig = attribution_figure(ex, meta)
        if fig is not None:
            figs.append(("Attributions side by side", fig))
    if ex is not None and "attention" in ex:
        figs.append(("Attention heads and rollout (example 0)", attention_figure(ex, meta)))
    curves = _load(result, run_dir, "curves")
    if curves is not None:
        for mode in ("deletion", "insertion"):
            fig = curves_figure(curves, mode, meta)
            if fig is not None:
                figs.append((f"{mode.capitalize()} curves vs random order", fig))
    table = quality_table(result.get("metrics") or [])
    if table is not None:
        figs.append(("Explanation quality", table))
    return figs


def attribution_figure(ex: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    methods = [m for m in meta["attributions"] if f"attr_{m}" in ex]
    if not methods:
        return None
    n = min(MAX_EXAMPLES, int(ex["input"].shape[0]))
    modality = meta.get("modality")
    pred = ex.get("prediction")
    if modality == "image":
        cols = ["input"] + [SHORT.get(m, m) for m in methods]
        fig = make_subplots(rows=n, cols=len(cols), column_titles=cols, horizontal_spacing=0.01,
                            vertical_spacing=0.02)
        for i in range(n):
            img = ex["input"][i]
            img = img.mean(0) if img.ndim == 3 else img
            fig.add_trace(go.Heatmap(z=img[::-1], colorscale="gray", showscale=False,
                                     hovertemplate="input %{z:.2f}<extra></extra>"), row=i + 1, col=1)
            floor = shared_floor([ex[f"attr_{m}"][i] for m in methods])
            for j, m in enumerate(methods):
                a = _scaled(ex[f"attr_{m}"][i], floor)
                fig.add_trace(go.Heatmap(z=a[::-1], zmin=-1, zmax=1, zmid=0, colorscale=DIVERGING,
                                         showscale=(i == 0 and j == 0),
                                         hovertemplate=f"{m}<br>%{{z:.2f}} of max |attr|<extra></extra>"),
                              row=i + 1, col=j + 2)
            if pred is not None:
                fig.update_yaxes(title_text=f"pred {int(pred[i])}", row=i + 1, col=1)
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False, scaleanchor=None)
        fig.update_layout(height=150 * n + 80, width=max(500, 120 * len(cols)),
                          title="Attributions (each panel scaled by its max |value|; red supports the prediction)")
        return fig
    tokens = meta.get("tokens")
    names = meta.get("feature_names")
    fig = make_subplots(rows=n, cols=1, vertical_spacing=0.08,
                        subplot_titles=[f"example {i}" + (f" (pred {pred[i]:.3g})" if pred is not None else "")
                                        for i in range(n)])
    for i in range(n):
        floor = shared_floor([ex[f"attr_{m}"][i] for m in methods])
        z = np.stack([_scaled(ex[f"attr_{m}"][i].ravel(), floor) for m in methods])  # (methods, units)
        u = z.shape[1]
        if modality == "tokens" and tokens:
            labels = [f"{k}:{t}" for k, t in enumerate(tokens[i])]
            if meta.get("pad_id") is not None:  # pads are no players (attribution 0): not drawn
                keep = np.flatnonzero(np.asarray(ex["input"][i]) != int(meta["pad_id"]))
                z, labels = z[:, keep], [labels[k] for k in keep]
            text = [[lab.split(":", 1)[1] for lab in labels]] * len(methods)
        else:
            labels = list(names) if names and len(names) == u else [f"f{k}" for k in range(u)]
            text = None
        fig.add_trace(go.Heatmap(z=z, x=labels, y=methods, zmin=-1, zmax=1, zmid=0, colorscale=DIVERGING,
                                 text=text, texttemplate="%{text}" if text else None, showscale=(i == 0),
                                 hovertemplate="%{y} %{x}: %{z:.2f} of max |attr|<extra></extra>"),
                      row=i + 1, col=1)
    fig.update_xaxes(title_text="token position" if modality == "tokens" else "feature")
    fig.update_yaxes(title_text="method")
    fig.update_layout(height=(60 + 22 * len(methods)) * n + 80,
                      title="Attributions (each row scaled by its max |value|; red supports the prediction)")
    return fig


def attention_figure(ex: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
    """Layers x heads attention maps of example 0, plus the rollout through each layer."""
    import plotly.graph_objects as go
    import torch
    from plotly.subplots import make_subplots

    from .attention import attention_rollout

    att = ex["attention"][0]  # (L, H, T, T)
    n_layer, n_head = att.shape[:2]
    causal = bool(meta.get("causal"))
    tokens = (meta.get("tokens") or [None])[0]
    labels = [f"{k}:{t}" for k, t in enumerate(tokens)] if tokens else None
    titles = []
    for layer in range(n_layer):
        titles += [f"L{layer} H{h}" for h in range(n_head)] + [f"rollout ≤ L{layer}"]
    fig = make_subplots(rows=n_layer, cols=n_head + 1, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.06)
    maps = [torch.as_tensor(att[layer][None]) for layer in range(n_layer)]
    for layer in range(n_layer):
        for h in range(n_head):
            fig.add_trace(go.Heatmap(z=att[layer, h], x=labels, y=labels, colorscale="Viridis", zmin=0, zmax=1,
                                     showscale=(layer == 0 and h == 0),
                                     hovertemplate="query %{y} → key %{x}: %{z:.2f}<extra></extra>"),
                          row=layer + 1, col=h + 1)
        roll = attention_rollout(maps[: layer + 1])[0].numpy()  # (T, T), tiny; display only, never raises
        fig.add_trace(go.Heatmap(z=roll, x=labels, y=labels, colorscale="Viridis", zmin=0, showscale=False,
                                 hovertemplate="rollout %{y} ← %{x}: %{z:.2f}<extra></extra>"),
                      row=layer + 1, col=n_head + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=220 * n_layer + 80, width=200 * (n_head + 1) + 80,
                      title="Attention per layer and head (rows: query, columns: key) and rollout "
                            "(mean over heads, + identity, rows renormalised)")
    return fig


def curves_figure(curves: dict[str, np.ndarray], mode: str, meta: dict[str, Any]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = [k for k in curves if k.startswith(f"{mode}__")]
    if not keys:
        return None
    reps = sorted({k.split("__")[2] for k in keys})
    methods = list(dict.fromkeys(k.split("__")[1] for k in keys))
    frac = curves.get("fractions")
    fig = make_subplots(rows=1, cols=len(reps), subplot_titles=[f"replacement: {r}" for r in reps],
                        shared_yaxes=True)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#393b79", "#637939"]
    for j, rep in enumerate(reps):
        for k, m in enumerate(methods):
            c = curves.get(f"{mode}__{m}__{rep}")
            if c is None:
                continue
            is_random = m == "random"
            fig.add_trace(go.Scatter(x=frac, y=c.mean(0), mode="lines", name=m, legendgroup=m,
                                     showlegend=(j == 0),
                                     line={"dash": "dash" if is_random else "solid",
                                           "color": "black" if is_random else palette[k % len(palette)]}),
                          row=1, col=j + 1)
        units = "real (non-pad) tokens" if meta.get("pad_id") is not None else "units"
        fig.update_xaxes(title_text=f"fraction of {units} {'removed' if mode == 'deletion' else 'inserted'}",
                         row=1, col=j + 1)
    unit = meta.get("curve_unit", "probability")
    fig.update_yaxes(title_text=f"target {unit}", row=1, col=1)
    better = "lower" if mode == "deletion" else "higher"
    fig.update_layout(height=380, title=f"{mode.capitalize()} curves (mean over examples; {better} area is better; "
                                        "dashed = random order)")
    return fig


def quality_table(metrics: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    methods = list(dict.fromkeys(m["tags"].get("method") for m in metrics
                                 if m["name"] == "method_coverage" and m.get("value") is not None))
    methods = [m for m in methods if m not in ("attention",)]
    if not methods:
        return None
    cells: list[list[str]] = [methods]
    for name, want, _ in QUALITY_COLUMNS:
        col = []
        for method in methods:
            hit = [m for m in metrics if m["name"] == name and m["tags"].get("method") == method
                   and all(m["tags"].get(k) == v for k, v in want.items())]
            if not hit:
                col.append("")
                continue
            m = hit[0]
            if m["value"] is None:
                col.append("n/a")
                continue
            txt = f"{m['value']:.3g}"
            if m.get("ci"):
                txt += f" [{m['ci'][0]:.2g}, {m['ci'][1]:.2g}]"
            verdict = m["tags"].get("verdict") or (m["tags"].get("fidelity") if name == "surrogate_r2" else None)
            if verdict and verdict not in ("ok", "passes"):
                txt += f" ⚠ {verdict}"
            col.append(txt)
        cells.append(col)
    keep = [0] + [i + 1 for i, col in enumerate(cells[1:]) if any(col)]
    header = ["method"] + [label for _, _, label in QUALITY_COLUMNS]
    fig = go.Figure(go.Table(header={"values": [header[i] for i in keep], "align": "left"},
                             cells={"values": [cells[i] for i in keep], "align": "left"}))
    fig.update_layout(height=80 + 30 * len(methods), title="Quality of each explanation method (95% CIs)")
    return fig
