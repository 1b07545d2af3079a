"""Plotly figures of the certify suite, drawn only from a result's saved artifact
(`certify_summary.json`); shared by the HTML report and the dashboard through
`CertifySuite.figures`. A missing artifact gives no figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workbench.suite import load_artifact

_DASH = {"standard": "dash", "gaussian_noise": "solid"}
_SYMBOL = {"standard": "circle-open", "gaussian_noise": "diamond-open"}
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _sigma_colour(sigmas: list[float], s: float) -> str:
    return _COLOURS[sigmas.index(s) % len(_COLOURS)] if s in sigmas else _COLOURS[-1]


def certified_accuracy_figure(summary: dict[str, Any]) -> Any:
    """Certified accuracy against the L2 radius, one line per (variant, sigma) with 95%
    Clopper–Pearson error bars; the smoothed classifier's accuracy under the PGD attack on
    g as open markers (certified accuracy must stay at or below them up to Monte Carlo
    error); the largest radius n samples can certify as a dotted vertical line per sigma."""
    import plotly.graph_objects as go

    fig = go.Figure()
    sigmas = sorted(float(s) for s in summary.get("sigmas", []))
    for variant, per_sigma in (summary.get("variants") or {}).items():
        for key, row in per_sigma.items():
            s = float(key)
            colour = _sigma_colour(sigmas, s)
            c = row.get("curve") or {}
            if c.get("radius"):
                acc = np.asarray(c["accuracy"], dtype=float)
                fig.add_trace(go.Scatter(
                    x=c["radius"], y=acc, mode="lines+markers", name=f"{variant}, σ={s:g}: certified",
                    line={"dash": _DASH.get(variant, "dot"), "color": colour},
                    error_y={"type": "data", "symmetric": False, "thickness": 1,
                             "array": np.asarray(c["ci_high"], dtype=float) - acc,
                             "arrayminus": acc - np.asarray(c["ci_low"], dtype=float)},
                ))
            e = row.get("empirical") or {}
            if e.get("radius"):
                n_att = summary.get("n_attacked")
                hover = [f"accuracy of g under PGD on g: {a:.3f}<br>certified on the same examples: {c:.3f}"
                         for a, c in zip(e["accuracy"], e.get("certified") or [float("nan")] * len(e["accuracy"]))]
                fig.add_trace(go.Scatter(
                    x=e["radius"], y=e["accuracy"], mode="markers", hovertext=hover, hoverinfo="text+name",
                    name=f"{variant}, σ={s:g}: under PGD on g" + (f" ({n_att} attacked)" if n_att else ""),
                    marker={"symbol": _SYMBOL.get(variant, "square-open"), "size": 10, "color": colour},
                ))
    for s in sigmas:
        r_max = next((row.get("max_certifiable_radius") for per in (summary.get("variants") or {}).values()
                      for k, row in per.items() if float(k) == s), None)
        if r_max is not None:
            fig.add_vline(x=r_max, line={"dash": "dot", "color": _sigma_colour(sigmas, s), "width": 1},
                          annotation_text=f"R_max σ={s:g}", annotation_position="top")
    units = summary.get("radius_units", "")
    fig.update_layout(
        title=f"Certified accuracy vs L2 radius (n={summary.get('n')}, α={summary.get('alpha')}, "
              f"{summary.get('n_examples')} examples)",
        xaxis_title=f"L2 radius ({units})", yaxis_title="certified accuracy", yaxis_range=[0, 1.02],
    )
    return fig


def consistency_table_figure(summary: dict[str, Any]) -> Any | None:
    """One row per (variant, sigma, radius) checked: examples certified, how many the attack
    moved to a wrong class (Monte Carlo), the smallest p-value and the flag."""
    import plotly.graph_objects as go

    rows = []
    for variant, per_sigma in (summary.get("variants") or {}).items():
        for key, row in per_sigma.items():
            for c in row.get("consistency") or []:
                rows.append((variant, key, c))
    if not rows:
        return None
    cols = {
        "variant": [v for v, _, _ in rows],
        "σ": [k for _, k, _ in rows],
        "radius": [f"{c['radius']:g}" for _, _, c in rows],
        "certified": [c.get("certified", 0) for _, _, c in rows],
        "certified but wrong under attack": [c.get("certified_but_attacked_wrong", "") for _, _, c in rows],
        "min p": [f"{c['min_p_value']:.3g}" if "min_p_value" in c else "" for _, _, c in rows],
        "flag": ["—" if c.get("flagged") is None else ("FLAG" if c["flagged"] else "ok") for _, _, c in rows],
    }
    fig = go.Figure(go.Table(header={"values": list(cols)}, cells={"values": list(cols.values())}))
    fig.update_layout(title="Consistency: certificates against PGD on the smoothed classifier")
    return fig


def certify_figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    summary = load_artifact(result, run_dir, "certify_summary", ".json")
    if not summary:
        return []
    out = [("Certified accuracy vs radius", certified_accuracy_figure(summary))]
    table = consistency_table_figure(summary)
    if table is not None:
        out.append(("Certification consistency check", table))
    return out
