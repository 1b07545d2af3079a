"""Plotly figures of one efficiency result, drawn only from its saved artifacts
(`flops.json`, `latency.npz`, `compression.json`, `summary.json`); nothing is recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from workbench.suite import load_artifact


def _load(result: dict[str, Any], run_dir: Path, name: str) -> Any:
    return load_artifact(result, run_dir, name)

def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def compression_table(rows: list[dict[str, Any]]) -> Any:
    """A table of the variants: task metric, latency, size, FLOPs, Pareto flag."""
    import plotly.graph_objects as go

    metric = rows[0]["metric_name"] if rows else "metric"
    header = ["variant", "sparsity", metric, "latency p50 (ms)", "size", "FLOPs", "non-zero FLOPs", "Pareto"]
    cols = [
        [r["variant"] for r in rows],
        ["" if r["sparsity"] is None else f"{r['sparsity']:.2f}" for r in rows],
        [f"{r['metric']:.4f}" for r in rows],
        [f"{1e3 * r['latency_p50_s']:.3f}" for r in rows],
        [_fmt_bytes(r["size_bytes"]) for r in rows],
        [f"{r['flops']:,}" + ("" if r.get("flops_complete", True) else " (partial)") for r in rows],
        [f"{r['nonzero_flops']:,}" for r in rows],
        ["★" if r.get("pareto") else "" for r in rows],
    ]
    fig = go.Figure(go.Table(header={"values": header}, cells={"values": cols}))
    fig.update_layout(margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def pareto_chart(rows: list[dict[str, Any]]) -> Any:
    """Task metric against latency, size and non-zero FLOPs; Pareto-optimal variants filled."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metric = rows[0]["metric_name"] if rows else "metric"
    axes = [("latency_p50_s", "latency p50 (s)"), ("size_bytes", "size (bytes)"), ("nonzero_flops", "non-zero FLOPs")]
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=[a[1] for a in axes])
    labels = [r["variant"] + ("" if r["sparsity"] is None else f" {r['sparsity']:.2f}") for r in rows]
    for j, (key, title) in enumerate(axes, start=1):
        for on_front in (True, False):
            sel = [i for i, r in enumerate(rows) if bool(r.get("pareto")) == on_front]
            if not sel:
                continue
            err = [r["metric_ci"] for r in rows]
            fig.add_trace(go.Scatter(
                x=[rows[i][key] for i in sel], y=[rows[i]["metric"] for i in sel], text=[labels[i] for i in sel],
                mode="markers+text", textposition="top center",
                marker={"size": 10, "symbol": "circle" if on_front else "circle-open"},
                error_y={"type": "data", "symmetric": False,
                         "array": [(err[i][1] - rows[i]["metric"]) if err[i] else 0 for i in sel],
                         "arrayminus": [(rows[i]["metric"] - err[i][0]) if err[i] else 0 for i in sel]},
                name="Pareto-optimal" if on_front else "dominated", showlegend=(j == 1), legendgroup=str(on_front),
            ), row=1, col=j)
        fig.update_xaxes(title_text=title, type="log", row=1, col=j)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    return fig


def latency_chart(latency: dict[str, Any]) -> Any:
    """p50 latency per example vs batch size, with p95/p99 (log-log)."""
    import plotly.graph_objects as go

    b = np.asarray(latency["batch_sizes"], dtype=float)
    s = np.asarray(latency["samples_s"], dtype=float)  # (K, repeats)
    fig = go.Figure()
    for q, dash in ((50, "solid"), (95, "dash"), (99, "dot")):
        v = np.quantile(s, q / 100, axis=1)
        fig.add_trace(go.Scatter(x=b, y=v, mode="lines+markers", name=f"p{q} per batch", line={"dash": dash}))
    fig.update_layout(xaxis={"title": "batch size", "type": "log"}, yaxis={"title": "latency per call (s)", "type": "log"})
    return fig


def module_flops_chart(flops: dict[str, Any], top: int = 25) -> Any:
    """FLOPs per leaf module (forward, and forward+backward when counted)."""
    import plotly.graph_objects as go

    fwd = (flops.get("forward") or {}).get("by_module", {})
    fb = (flops.get("forward_backward") or {}).get("by_module", {}) if flops.get("forward_backward") else {}
    names = [k for k in fwd if k and not any(o != k and o.startswith(k + ".") for o in fwd)]
    names = sorted(names, key=lambda k: -fwd[k])[:top]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=names, x=[fwd[k] for k in names], orientation="h", name="forward"))
    if fb:
        fig.add_trace(go.Bar(y=names, x=[fb.get(k, 0) for k in names], orientation="h", name="forward+backward"))
    fig.update_layout(barmode="group", xaxis={"title": "FLOPs (2·MAC)"}, yaxis={"autorange": "reversed", "title": "module"},
                      height=max(300, 28 * len(names) + 120))
    return fig


def efficiency_figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    """(title, figure) pairs for the report and the dashboard."""
    figs: list[tuple[str, Any]] = []
    comp = _load(result, run_dir, "compression")
    if comp and comp.get("rows"):
        figs.append(("Compression variants", compression_table(comp["rows"])))
        figs.append(("Task metric vs cost (Pareto frontier filled)", pareto_chart(comp["rows"])))
    lat = _load(result, run_dir, "latency")
    if lat is not None:
        figs.append(("Latency vs batch size", latency_chart(lat)))
    flops = _load(result, run_dir, "flops")
    if flops and flops.get("forward"):
        b = flops.get("batch_size")
        figs.append((f"FLOPs per module (batch {b})", module_flops_chart(flops)))
    return figs
