"""Plotly figures of the metrics suite, drawn from a result's metrics and saved artifacts.

Shared by the HTML report and the dashboard through `MetricsSuite.figures`; reads files
only (never recomputes a metric). Missing artifacts simply give fewer figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from workbench.suite import load_artifact


def _load_npz(result: dict[str, Any], run_dir: Path, name: str) -> dict[str, np.ndarray] | None:
    return load_artifact(result, run_dir, name, ".npz")

def _metrics(result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [m for m in result.get("metrics", []) if m.get("name") == name]


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str = "Confusion matrix") -> Any:
    """Heatmap of counts, rows = true class, columns = predicted class."""
    import plotly.graph_objects as go

    m = np.asarray(matrix)
    fig = go.Figure(go.Heatmap(
        z=m, x=class_names, y=class_names, colorscale="Blues", text=m, texttemplate="%{text}",
        hovertemplate="true %{y}<br>predicted %{x}<br>count %{z}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="predicted class", yaxis_title="true class",
                      yaxis_autorange="reversed")
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def per_class_figure(records: list[dict[str, Any]], metric: str = "f1") -> Any:
    """Bars of a per-class metric with asymmetric CI error bars."""
    import plotly.graph_objects as go

    names = [str(r["tags"].get("class")) for r in records]
    vals = [r["value"] if r["value"] is not None else np.nan for r in records]
    hi = [(r["ci"][1] - r["value"]) if r.get("ci") and r["value"] is not None else 0.0 for r in records]
    lo = [(r["value"] - r["ci"][0]) if r.get("ci") and r["value"] is not None else 0.0 for r in records]
    fig = go.Figure(go.Bar(
        x=names, y=vals, error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
        hovertext=[f"n={r.get('n')}" for r in records],
    ))
    fig.update_layout(title=f"Per-class {metric} (95% bootstrap CI)", xaxis_title="class", yaxis_title=metric,
                      yaxis_range=[0, 1.05])
    fig.update_xaxes(type="category")
    return fig


def regression_figures(y_true: np.ndarray, y_pred: np.ndarray, pred_var: np.ndarray | None = None) -> list[tuple[str, Any]]:
    """Predicted vs true scatter (with the y = x line) and a residual histogram."""
    import plotly.graph_objects as go

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    lo = float(np.nanmin([y_true.min(), y_pred.min()]))
    hi = float(np.nanmax([y_true.max(), y_pred.max()]))
    error_y = None
    if pred_var is not None:
        error_y = {"type": "data", "array": 1.96 * np.sqrt(np.asarray(pred_var, dtype=float)), "thickness": 0.5}
    scatter = go.Figure([
        go.Scatter(x=y_true, y=y_pred, mode="markers", name="examples", error_y=error_y, marker={"size": 5}),
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line={"dash": "dash"}),
    ])
    scatter.update_layout(title="Predicted vs true" + (" (bars: ±1.96 predicted σ)" if error_y else ""),
                          xaxis_title="true", yaxis_title="predicted")
    resid = go.Figure(go.Histogram(x=y_pred - y_true, nbinsx=40, name="residual"))
    resid.update_layout(title="Residuals (predicted − true)", xaxis_title="residual", yaxis_title="count")
    return [("Predicted vs true", scatter), ("Residuals", resid)]


def perplexity_figure(records: list[dict[str, Any]], floor: float | None) -> Any:
    """Perplexity with its document-bootstrap CI, and the exact floor when known."""
    import plotly.graph_objects as go

    labels = [r["tags"].get("split", "") for r in records]
    vals = [r["value"] for r in records]
    hi = [r["ci"][1] - r["value"] if r.get("ci") else 0.0 for r in records]
    lo = [r["value"] - r["ci"][0] if r.get("ci") else 0.0 for r in records]
    fig = go.Figure(go.Bar(x=[f"model ({s})" if s else "model" for s in labels], y=vals, name="perplexity",
                           error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}))
    if floor is not None:
        fig.add_hline(y=floor, line_dash="dash", annotation_text=f"floor {floor:.3g} (exact)")
    fig.update_layout(title="Perplexity (95% document bootstrap CI)", yaxis_title="perplexity (per token)",
                      xaxis_title="evaluated split", yaxis_rangemode="tozero")
    return fig


def metrics_figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    """All figures for one metrics-suite result (its `to_dict()` form)."""
    figs: list[tuple[str, Any]] = []
    if result.get("status") != "ok":
        return figs
    cm = _load_npz(result, run_dir, "confusion_matrix")
    if cm is not None:
        figs.append(("Confusion matrix", confusion_figure(cm["matrix"], [str(c) for c in cm["class_names"]])))
    f1 = [m for m in _metrics(result, "f1") if "class" in (m.get("tags") or {})]
    if f1:
        figs.append(("Per-class F1", per_class_figure(f1, "f1")))
    preds = _load_npz(result, run_dir, "predictions")
    if preds is not None and cm is None and "y_true" in preds:
        figs += regression_figures(preds["y_true"], preds["y_pred"], preds.get("pred_var"))
    ppl = [m for m in _metrics(result, "perplexity") if m.get("value") is not None]
    if ppl:
        floors = [m["value"] for m in _metrics(result, "perplexity_floor") if m.get("value") is not None]
        figs.append(("Perplexity", perplexity_figure(ppl, floors[0] if floors else None)))
    return figs
