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

def bin_interval(accuracy: float | None, count: int) -> tuple[float, float] | None:
    """The 95% interval of one bin's accuracy: the suite's proportion CI (Clopper-Pearson)
    of round(accuracy x count) correct out of `count`; None for an empty bin."""
    from workbench.stats import proportion_ci

    if not count or accuracy is None:
        return None
    return proportion_ci(int(round(float(accuracy) * count)), int(count))


def reliability_figures(rel: dict[str, Any]) -> list[tuple[str, Any]]:
    """One figure per method: accuracy per equal-width confidence bin before and after
    temperature scaling, with each bin's 95% interval (a bin of 3 examples is a wide bar,
    not a full one) and its example count written on it; below, the examples per bin."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out = []
    temps = rel.get("temperature", {})
    for method, per_cal in rel.get("methods", {}).items():
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.05)
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                 line={"color": "grey", "dash": "dash"}), 1, 1)
        for cal, color in (("none", "#636efa"), ("temperature", "#ef553b")):
            d = (per_cal.get(cal) or {}).get("uniform")
            if not d:
                continue
            keep = [i for i, c in enumerate(d["count"]) if c]  # empty bins have no accuracy to draw
            lo_b = [d["lower"][i] for i in keep]
            hi_b = [d["upper"][i] for i in keep]
            centers = [(a + b) / 2 for a, b in zip(lo_b, hi_b)]
            acc = [d["accuracy"][i] if d["accuracy"][i] is not None else 0.0 for i in keep]
            counts = [int(d["count"][i]) for i in keep]
            ci = [bin_interval(a, c) or (a, a) for a, c in zip(acc, counts)]
            label = "before" if cal == "none" else f"after temperature scaling (T={temps.get(method, float('nan')):.3g})"
            width = [(b - a) * 0.45 for a, b in zip(lo_b, hi_b)]
            offset = [-w if cal == "none" else 0 for w in width]
            conf = [d["confidence"][i] if d["confidence"][i] is not None else np.nan for i in keep]
            fig.add_trace(go.Bar(
                x=centers, y=acc, name=label, legendgroup=cal, width=width, offset=offset, marker_color=color,
                opacity=0.8, text=[f"n={c}" for c in counts], textposition="outside", textfont={"size": 9},
                error_y={"type": "data", "symmetric": False, "array": [h - a for a, (_, h) in zip(acc, ci)],
                         "arrayminus": [a - lo for a, (lo, _) in zip(acc, ci)], "thickness": 1, "width": 2},
                customdata=np.stack([counts, conf, [c[0] for c in ci], [c[1] for c in ci]], -1),
                hovertemplate="accuracy %{y:.3f} [%{customdata[2]:.3f}, %{customdata[3]:.3f}]<br>"
                              "n=%{customdata[0]}<br>mean confidence %{customdata[1]:.3f}<extra></extra>",
            ), 1, 1)
            fig.add_trace(go.Bar(x=centers, y=counts, width=width, offset=offset, marker_color=color, opacity=0.8,
                                 legendgroup=cal, showlegend=False, hovertemplate="n=%{y}<extra></extra>"), 2, 1)
        fig.update_layout(barmode="overlay", height=520, margin={"t": 40})
        fig.update_yaxes(title_text="accuracy (95% CI per bin)", range=[0, 1.1], row=1, col=1)
        fig.update_yaxes(title_text="examples (log)", type="log", dtick=1, row=2, col=1)
        fig.update_xaxes(title_text="confidence (equal-width bins)", range=[0, 1], row=2, col=1)
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
    fig.update_layout(barmode="overlay")
    fig.update_yaxes(title_text="examples")
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
