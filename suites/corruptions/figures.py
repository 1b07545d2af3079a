"""Plotly figures of the corruptions suite, drawn only from a result's saved artifacts
(`corruptions.json`); shared by the HTML report and the dashboard through
`CorruptionsSuite.figures`. A missing artifact simply gives no figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.suite import load_artifact


def corruption_figure(rows: list[dict[str, Any]]) -> Any:
    """Accuracy (classification) or MSE (regression) against severity per corruption;
    severity 0 is the clean test sample."""
    import plotly.graph_objects as go

    key = "accuracy" if any("accuracy" in r for r in rows) else "mse"
    clean = next((r for r in rows if r["corruption"] == "none"), None)
    fig = go.Figure()
    for name in dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "none"):
        pts = sorted((r for r in rows if r["corruption"] == name), key=lambda r: r["severity"])
        if clean is not None:
            pts = [clean, *pts]
        fig.add_trace(go.Scatter(
            x=[r["severity"] for r in pts], y=[r.get(key) for r in pts], mode="lines+markers", name=name,
            hovertext=[f"gap {r['generalization_gap']:.3f}, n={r['n']}" for r in pts],
        ))
    title = "Accuracy" if key == "accuracy" else "Mean squared error"
    fig.update_layout(title=f"{title} under corruption (severity 0 = clean)", xaxis_title="severity",
                      yaxis_title=key, **({"yaxis_range": [0, 1.02]} if key == "accuracy" else {}))
    return fig


def corruption_figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    """All figures available for one corruptions result (its `to_dict()` form)."""
    rows = load_artifact(result, run_dir, "corruptions", ".json")
    return [("Task metric under corruption", corruption_figure(rows))] if rows else []
