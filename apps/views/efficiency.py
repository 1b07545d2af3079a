"""Efficiency: one table across the run's models (parameters, size, FLOPs, latency,
throughput, peak memory, task metric) with an accuracy-vs-cost Pareto chart, then each
model's own efficiency figures (compression variants, latency vs batch size, FLOPs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from workbench.apps import data
from workbench.apps.views import common

TASK_METRICS = ("accuracy", "r2", "perplexity")  # first found in the metrics suite, no class tag


def _is_model_itself(tags: Mapping[str, Any]) -> bool:
    """A measurement of the model as given, not of a compressed/pruned/distilled variant
    (the suite tags those `variant=...`; older runs and the demo tag them `study=compression`)."""
    return tags.get("study") != "compression" and str(tags.get("variant", "base")) == "base"


def _first(metrics: Sequence[Mapping[str, Any]], name: str, **tags: Any) -> Mapping[str, Any] | None:
    """The first metric `name` of the model itself whose tags include `tags`."""
    for m in metrics:
        t = m.get("tags") or {}
        if m["name"] == name and _is_model_itself(t) and all(t.get(k) == v for k, v in tags.items()):
            return m
    return None


def _task_metric(results: Sequence[Mapping[str, Any]], model: str) -> Mapping[str, Any] | None:
    r = data.find_result(list(results), "metrics", model)
    if r is None or r.get("status") != "ok":
        return None
    for name in TASK_METRICS:
        for m in r.get("metrics", []):
            t = m.get("tags") or {}
            if m["name"] == name and "class" not in t and t.get("units", "model") == "model" \
                    and m.get("value") is not None:
                return m
    return None


def efficiency_frame(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model with an "ok" efficiency result. Latency is the p50 of the sweep
    at its smallest batch size, in seconds per call; throughput the best of the sweep."""
    rows = []
    for r in results:
        if r["suite"] != "efficiency" or r["status"] != "ok":
            continue
        ms = r.get("metrics", [])
        sweep = [m for m in ms if m["name"] == "latency" and _is_model_itself(m.get("tags") or {})
                 and (m.get("tags") or {}).get("quantile") == "p50" and m.get("value") is not None]
        lat = min(sweep, key=lambda m: float((m.get("tags") or {}).get("batch_size", 0))) if sweep else None
        thr = [m for m in ms if m["name"] == "throughput" and _is_model_itself(m.get("tags") or {})
               and m.get("value") is not None]
        best = max(thr, key=lambda m: m["value"]) if thr else None
        params = _first(ms, "parameters", kind="total")
        size = _first(ms, "model_size", dtype="total") or _first(ms, "model_size")
        flops = _first(ms, "flops", **{"pass": "forward"})
        mem = _first(ms, "peak_memory", mode="inference") or _first(ms, "peak_memory")
        task = _task_metric(results, r["model"])
        rows.append({
            "model": r["model"], "dataset": r["dataset"],
            "parameters": params.get("value") if params else None,
            "size_bytes": size.get("value") if size else None,
            "flops_forward": flops.get("value") if flops else None,
            "flops_batch": (flops.get("tags") or {}).get("batch_size", flops.get("n")) if flops else None,
            "latency_p50_s": lat["value"] if lat else None,
            "latency_batch": (lat.get("tags") or {}).get("batch_size") if lat else None,
            "latency_ci": (f"[{common.fmt_quantity(lat['ci'][0], 's')}, {common.fmt_quantity(lat['ci'][1], 's')}]"
                           if lat and lat.get("ci") else "—"),
            "throughput_per_s": best["value"] if best else None,
            "peak_memory_bytes": mem.get("value") if mem else None,
            "task_metric": task["name"] if task else None,
            "task_value": task["value"] if task else None,
            "task_ci_low": (task.get("ci") or [None, None])[0] if task else None,
            "task_ci_high": (task.get("ci") or [None, None])[1] if task else None,
            "task_higher_is_better": task.get("higher_is_better") if task else None,
        })
    return pd.DataFrame(rows)


def efficiency_display(df: pd.DataFrame) -> pd.DataFrame:
    """`efficiency_frame` with the text columns people read (units, CIs, "" for nothing)."""
    out = df.copy()
    f = common.fmt_quantity
    out["task"] = [
        "" if name is None or v != v else f"{name} {common.fmt(v)} {common.fmt_ci((lo, hi), v)}".replace(" —", "")
        for name, v, lo, hi in zip(out["task_metric"], out["task_value"], out["task_ci_low"], out["task_ci_high"])]
    out["latency p50"] = ["" if v != v or v is None else f"{f(v, 's')} {ci} (batch {int(b)})".replace(" —", "")
                          for v, ci, b in zip(out["latency_p50_s"], out["latency_ci"], out["latency_batch"].fillna(0))]
    out["best throughput"] = [f(v, "") + " /s" if v == v and v is not None else "" for v in out["throughput_per_s"]]
    out["parameters "] = [f(v, "count") if v == v and v is not None else "" for v in out["parameters"]]
    out["size"] = [f(v, "bytes") if v == v and v is not None else "" for v in out["size_bytes"]]
    out["forward FLOPs"] = [f(v, "FLOPs") + (f" (batch {int(b)})" if b == b and b is not None else "")
                            if v == v and v is not None else "" for v, b in zip(out["flops_forward"], out["flops_batch"])]
    out["peak memory"] = [f(v, "bytes") if v == v and v is not None else "" for v in out["peak_memory_bytes"]]
    return out


DISPLAY_COLUMNS = ["model", "task", "latency p50", "best throughput", "parameters ", "size", "forward FLOPs",
                   "peak memory", "dataset"]


def pareto_mask(cost: Sequence[float], score: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """True where no other point has cost <= and score better-or-equal with one strict."""
    c = np.asarray(cost, dtype=float)
    s = np.asarray(score, dtype=float) * (1 if higher_is_better else -1)
    out = np.ones(c.size, dtype=bool)
    for i in range(c.size):
        dominated = (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        out[i] = not dominated.any()
    return out


def pareto_figures(df: pd.DataFrame) -> list[Any]:
    """One chart per task metric (never two metrics on one axis): the metric against
    latency p50 per call, models on the Pareto front filled, others open; CI error bars."""
    import plotly.graph_objects as go

    figs = []
    ok = df.dropna(subset=["latency_p50_s", "task_value"])
    for metric, g in ok.groupby("task_metric", sort=True):
        hib = bool(g["task_higher_is_better"].iloc[0]) if g["task_higher_is_better"].notna().any() else True
        front = pareto_mask(g["latency_p50_s"], g["task_value"], hib)
        hi = (g["task_ci_high"] - g["task_value"]).fillna(0).to_numpy()
        lo = (g["task_value"] - g["task_ci_low"]).fillna(0).to_numpy()
        fig = go.Figure(go.Scatter(
            x=g["latency_p50_s"].to_numpy(), y=g["task_value"].to_numpy(), text=g["model"].tolist(),
            mode="markers+text", textposition="top center", name=str(metric),
            marker={"size": 12, "symbol": ["circle" if f else "circle-open" for f in front]},
            error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
            customdata=front.astype(int),
            hovertemplate="%{text}<br>latency %{x:.3s}s<br>" + str(metric) + " %{y:.4g}<extra></extra>",
        ))
        better = "higher is better" if hib else "lower is better"
        fig.update_layout(title=f"Task metric vs latency: {metric} ({better}; filled: Pareto-optimal)",
                          xaxis={"title": "latency p50 per call at the smallest measured batch (s)", "type": "log"},
                          yaxis_title=f"{metric} (metrics suite, 95% CI)", showlegend=False, height=380)
        figs.append(fig)
    return figs


def render() -> None:
    st.title("Efficiency")
    run = common.current_run()
    if run is None:
        return
    common.run_caption(run)
    if not common.suite_status_note(run.results, "efficiency"):
        return
    table = efficiency_frame(run.results)
    if not table.empty:
        st.subheader("All models")
        common.show_table(efficiency_display(table), hide_index=True, key="efficiency:table",
                     column_order=DISPLAY_COLUMNS)
        st.caption("Latency is the median time per call at the smallest measured batch size, with its 95% CI; "
                   "the task metric comes from the metrics suite. Compressed variants are in each model's "
                   "figures below.")
        if table[["latency_p50_s", "task_value"]].notna().all(axis=1).any():
            for i, fig in enumerate(pareto_figures(table)):
                common.show_figure(fig, key=f"efficiency:pareto:{i}")
        else:
            st.caption("No model has both a latency and a metrics-suite score, so there is no accuracy-vs-cost chart.")
    model = common.pick_model(data.models_with(run.results, "efficiency"), key="efficiency:model")
    result = data.find_result(run.results, "efficiency", model)
    if not common.suite_status_note([result], "efficiency", model):
        return
    common.show_suite_figures(run, result, key=f"efficiency:{model}")
    st.subheader("Metrics")
    common.metrics_table(data.metrics_frame([result]), key="efficiency:metrics")
