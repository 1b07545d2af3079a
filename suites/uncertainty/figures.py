"""Plotly figures of one uncertainty result, drawn from its saved artifacts only
(shared by the HTML report and the dashboard; nothing is recomputed).

Artifacts read (see README "Artifacts"): reliability.json, per_example.npz,
risk_coverage.npz, ood_roc.json, interval_coverage.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from workbench.suite import load_artifact

_SEP = "__"
_COLORS = {"single": "#636efa", "mc_dropout": "#ef553b", "ensemble": "#00cc96"}
_DASH = {"max_prob": "solid", "entropy": "dash", "mutual_information": "dot",
         "total_variance": "solid", "epistemic_variance": "dot", "aleatoric_variance": "dash"}


def _load(result: dict[str, Any], run_dir: Path, name: str) -> Any:
    return load_artifact(result, run_dir, name)

def reliability_figures(rel: dict[str, Any]) -> list[tuple[str, Any]]:
    """One figure per method: accuracy per equal-width confidence bin before and after
    temperature scaling, against the diagonal of perfect calibration."""
    import plotly.graph_objects as go

    out = []
    temps = rel.get("temperature", {})
    for method, per_cal in rel.get("methods", {}).items():
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                 line={"color": "grey", "dash": "dash"}))
        for cal, color in (("none", "#636efa"), ("temperature", "#ef553b")):
            d = (per_cal.get(cal) or {}).get("uniform")
            if not d:
                continue
            centers = [(lo + hi) / 2 for lo, hi in zip(d["lower"], d["upper"])]
            label = "before" if cal == "none" else f"after temperature scaling (T={temps.get(method, float('nan')):.3g})"
            fig.add_trace(go.Bar(
                x=centers, y=[a if a is not None else 0 for a in d["accuracy"]], name=label,
                width=[(hi - lo) * 0.45 for lo, hi in zip(d["lower"], d["upper"])],
                offset=[-(hi - lo) * 0.45 if cal == "none" else 0 for lo, hi in zip(d["lower"], d["upper"])],
                marker_color=color, opacity=0.8,
                customdata=np.stack([d["count"], [c if c is not None else np.nan for c in d["confidence"]]], -1),
                hovertemplate="accuracy %{y:.3f}<br>n=%{customdata[0]}<br>mean confidence %{customdata[1]:.3f}<extra></extra>",
            ))
        fig.update_layout(xaxis_title="confidence (equal-width bins)", yaxis_title="accuracy",
                          xaxis_range=[0, 1], yaxis_range=[0, 1], barmode="overlay")
        out.append((f"Reliability diagram ({method}): before / after temperature scaling", fig))
    return out


def decomposition_figure(per_example: dict[str, np.ndarray], unit: str) -> tuple[str, Any] | None:
    """Histograms of per-example aleatoric and epistemic uncertainty, one colour per method."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    methods = sorted({k.split(_SEP)[0] for k in per_example if k.endswith(_SEP + "epistemic")})
    if not methods:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("aleatoric", "epistemic"))
    for col, q in ((1, "aleatoric"), (2, "epistemic")):
        values = {m: per_example[f"{m}{_SEP}{q}"] for m in methods if f"{m}{_SEP}{q}" in per_example}
        if not values:
            continue
        lo = float(min(v.min() for v in values.values()))
        hi = float(max(v.max() for v in values.values()))
        bins = {"start": lo, "end": hi, "size": (hi - lo) / 40 or 1.0}  # the same bins for every method
        for method, v in values.items():
            fig.add_trace(go.Histogram(x=v, name=method, legendgroup=method, showlegend=col == 1, xbins=bins,
                                       marker_color=_COLORS.get(method), opacity=0.6), row=1, col=col)
    fig.update_layout(barmode="overlay", yaxis_title="examples")
    fig.update_xaxes(title_text=unit)
    return "Aleatoric and epistemic uncertainty per test example", fig


def risk_coverage_figure(risk: dict[str, np.ndarray], risk_label: str) -> tuple[str, Any]:
    import plotly.graph_objects as go

    fig = go.Figure()
    for key in sorted(risk):
        if not key.endswith(_SEP + "coverage"):
            continue
        method, cal, _ = key.split(_SEP)
        cov, rsk = risk[key], risk[f"{method}{_SEP}{cal}{_SEP}risk"]
        step = max(1, cov.size // 400)  # thin long curves; keep the last point
        idx = np.unique(np.r_[np.arange(0, cov.size, step), cov.size - 1])
        fig.add_trace(go.Scatter(x=cov[idx], y=rsk[idx], mode="lines",
                                 name=f"{method} (AURC {rsk.mean():.4g}{', temperature' if cal == 'temperature' else ''})",
                                 line={"color": _COLORS.get(method), "dash": "dash" if cal == "temperature" else "solid"}))
    fig.update_layout(xaxis_title="coverage (fraction of most confident kept)", yaxis_title=risk_label, xaxis_range=[0, 1])
    return "Risk–coverage (selective prediction)", fig


def ood_figures(roc: dict[str, Any]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    out = []
    for ood, per_method in roc.items():
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"color": "grey", "dash": "dash"}))
        for method, per_score in per_method.items():
            for score, det in per_score.items():
                fig.add_trace(go.Scatter(
                    x=det["fpr"], y=det["tpr"], mode="lines",
                    name=f"{method} / {score} (AUROC {det['auroc']:.3f})",
                    line={"color": _COLORS.get(method), "dash": _DASH.get(score, "solid")},
                ))
        fig.update_layout(xaxis_title="false positive rate (in-distribution flagged)", yaxis_title="true positive rate (OOD flagged)")
        out.append((f"OOD detection ROC: test vs {ood}", fig))
    return out


def interval_coverage_figure(curves: dict[str, Any]) -> tuple[str, Any] | None:
    import plotly.graph_objects as go

    if not curves:
        return None
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="ideal", line={"color": "grey", "dash": "dash"}))
    for method, c in curves.items():
        fig.add_trace(go.Scatter(x=c["nominal"], y=c["empirical"], mode="lines+markers", name=method,
                                 line={"color": _COLORS.get(method)}))
    fig.update_layout(xaxis_title="nominal coverage of the central Gaussian interval", yaxis_title="empirical coverage",
                      xaxis_range=[0, 1], yaxis_range=[0, 1])
    return "Predictive-interval coverage (regression)", fig


def figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    """All figures of one result (its `to_dict()` form), in report order."""
    if result.get("status") != "ok":
        return []
    out: list[tuple[str, Any]] = []
    rel = _load(result, run_dir, "reliability")
    if rel:
        out += reliability_figures(rel)
    per_example = _load(result, run_dir, "per_example")
    regression = _load(result, run_dir, "interval_coverage") is not None
    if per_example:
        fig = decomposition_figure(per_example, "variance (squared target units)" if regression else "nats")
        if fig:
            out.append(fig)
    risk = _load(result, run_dir, "risk_coverage")
    if risk:
        out.append(risk_coverage_figure(risk, "mean squared error of kept" if regression else "error rate of kept"))
    roc = _load(result, run_dir, "ood_roc")
    if roc:
        out += ood_figures(roc)
    if regression:
        fig = interval_coverage_figure(_load(result, run_dir, "interval_coverage"))
        if fig:
            out.append(fig)
    return out
