"""Plotly figures of the drift suite, drawn only from a result's saved `drift.json`;
shared by the HTML report and the dashboard through `DriftSuite.figures`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.suite import load_artifact


def _psi_cell(row: dict[str, Any]) -> str:
    """max PSI (its null-corrected value; its level-alpha lower bound), or why there is none."""
    if row.get("max_psi") is None:
        return "n/a: " + str(row.get("psi_reason") or "not recorded")
    extra = [f"{row[k]:.3f}" for k in ("max_psi_corrected", "psi_lower_bound") if row.get(k) is not None]
    return f"{row['max_psi']:.3f}" + (f" ({'; '.join(extra)})" if extra else "")


def drift_table_figure(rows: list[dict[str, Any]]) -> Any:
    """One row per compared set (shift "none" = the clean test sample): permutation p, max KS
    vs its calibrated threshold, max PSI (null-corrected; lower bound), BH-significant
    features and the verdict."""
    import plotly.graph_objects as go

    cols = {
        "shift": [r["shift"] for r in rows],
        "severity": [r["severity"] for r in rows],
        "perm. p": [f"{r['permutation_pvalue']:.3g}" for r in rows],
        "max KS": [f"{r['max_ks']:.3f}" for r in rows],
        "KS threshold (at n)": [f"{r['threshold']:.3f}" for r in rows],
        "max PSI (corrected; lower bound)": [_psi_cell(r) for r in rows],
        "features drifted (BH)": [f"{r['n_significant_features']}/{len(r['ks_statistic'])}" for r in rows],
        "drift": ["yes" if r["drift"] else ("stat. only" if r["statistically_significant"] else "no")
                  if r["drift"] is not None else "stat.; size unknown" for r in rows],
    }
    fig = go.Figure(go.Table(header={"values": list(cols)}, cells={"values": list(cols.values())}))
    fig.update_layout(title="Input drift vs training inputs (KS + BH, PSI, permutation-calibrated verdict)")
    return fig


def drift_figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    """All figures available for one drift result (its `to_dict()` form)."""
    rows = load_artifact(result, run_dir, "drift", ".json")
    return [("Input drift", drift_table_figure(rows))] if rows else []
