"""Plotly figures of the robustness suite, drawn only from a result's saved artifacts
(`robustness_summary.json`, `adversarial_examples.npz`, `token_substitutions.npz`,
`masking_flags.json`); shared by the HTML report and the dashboard through
`RobustnessSuite.figures`. Missing artifacts simply give fewer figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from workbench.reporting.figures import magnitude_scale, signed_scale
from workbench.suite import load_artifact

_DASH = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]


def _json(result: dict[str, Any], run_dir: Path, name: str) -> Any:
    return load_artifact(result, run_dir, name, ".json")


def _npz(result: dict[str, Any], run_dir: Path, name: str) -> dict[str, np.ndarray] | None:
    return load_artifact(result, run_dir, name, ".npz")

def accuracy_vs_eps_figure(summary: dict[str, Any]) -> Any:
    """Robust accuracy against eps, one line per attack (colour) and variant (dash), with
    95% Wilson bands as error bars; standard and adversarially trained models on one chart."""
    import plotly.graph_objects as go

    fig = go.Figure()
    variants = summary.get("variants", {})
    for vi, (variant, vs) in enumerate(variants.items()):
        for attack, c in (vs.get("curves") or {}).items():
            acc = np.asarray(c["accuracy"], dtype=float)
            lo = acc - np.asarray(c["ci_low"], dtype=float)
            hi = np.asarray(c["ci_high"], dtype=float) - acc
            fig.add_trace(go.Scatter(
                x=c["eps"], y=acc, mode="lines+markers", name=f"{variant}: {attack}",
                line={"dash": _DASH[vi % len(_DASH)], "width": 4 if attack == "worst_case" else 2},
                error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo, "thickness": 1},
            ))
        if "clean_accuracy" in vs:
            fig.add_trace(go.Scatter(x=[0.0], y=[vs["clean_accuracy"]], mode="markers", name=f"{variant}: clean",
                                     marker={"symbol": "star", "size": 11}))
    space = " (embedding space, eps relative)" if any(v.get("space") == "embedding" for v in variants.values()) else ""
    fig.update_layout(title=f"Robust accuracy vs eps ({summary.get('norm', '')}){space}",
                      xaxis_title="eps", yaxis_title="accuracy under attack", yaxis_range=[0, 1.02])
    return fig


def masking_table_figure(flags: dict[str, list[dict[str, Any]]]) -> Any:
    """Gradient-masking checks per variant: flagged / passed / not run, with the evidence."""
    import plotly.graph_objects as go

    variant, check, status, reason = [], [], [], []
    for v, checks in flags.items():
        for c in checks:
            variant.append(v)
            check.append(c["check"])
            status.append("FLAGGED" if c["flagged"] else ("passed" if c["flagged"] is False else "not run"))
            reason.append(c["reason"])
    fig = go.Figure(go.Table(
        columnwidth=[1, 2, 1, 5],
        header={"values": ["variant", "check", "status", "evidence"]},
        cells={"values": [variant, check, status, reason]},
    ))
    fig.update_layout(title="Gradient-masking checks")
    return fig


def gallery_figure(ex: dict[str, np.ndarray], class_names: list[str]) -> Any:
    """Adversarial examples. Images: rows clean / perturbation / adversarial with the true
    label and the predictions (probability) before and after. Tabular: perturbation per
    feature. Tokens: relative perturbation norm per position."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    name = lambda i: class_names[int(i)] if 0 <= int(i) < len(class_names) else str(int(i))  # noqa: E731
    k = len(ex["label"])
    titles = [
        f"y={name(ex['label'][i])}: {name(ex['pred_clean'][i])} ({ex['probs_clean'][i].max():.2f}) → "
        f"{name(ex['pred_adversarial'][i])} ({ex['probs_adversarial'][i].max():.2f})" for i in range(k)
    ]
    if "clean" in ex and ex["clean"].ndim == 4:
        fig = make_subplots(rows=3, cols=k, subplot_titles=titles + [""] * (2 * k),
                            horizontal_spacing=0.01, vertical_spacing=0.06)
        for i in range(k):
            clean, pert, adv = ex["clean"][i, 0], ex["perturbation"][i, 0], ex["adversarial"][i, 0]
            scale, _ = signed_scale(pert, reference=clean)  # red adds to the pixel, blue removes
            fig.add_trace(go.Heatmap(z=clean, colorscale="gray", showscale=False, zmin=0, zmax=max(1.0, clean.max())), 1, i + 1)
            fig.add_trace(go.Heatmap(z=pert, showscale=False, **scale), 2, i + 1)
            fig.add_trace(go.Heatmap(z=adv, colorscale="gray", showscale=False, zmin=0, zmax=max(1.0, adv.max())), 3, i + 1)
        fig.update_yaxes(autorange="reversed", showticklabels=False)
        fig.update_xaxes(showticklabels=False)
        fig.update_annotations(font_size=9)
        fig.update_layout(title="Adversarial examples: clean / perturbation (red +, blue −) / adversarial", height=420)
        return fig
    if "position_perturbation" in ex:
        z = ex["position_perturbation"]
        text = ex["tokens"].astype(str)
        scale, note = magnitude_scale(z, reference=1.0)  # a relative norm: its scale is 1
        fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", y=titles,
                                   colorbar={"title": "relative L2"}, **scale))
        title = "Adversarial examples in embedding space: perturbation per position (token ids shown)"
        fig.update_layout(title=title + (f"<br><sub>{note}</sub>" if note else ""), xaxis_title="position",
                          yaxis_title="example: label, prediction before → after")
        return fig
    pert = ex["perturbation"].reshape(k, -1)
    clean = ex["clean"].reshape(k, -1) if "clean" in ex else None
    scale, note = signed_scale(pert, reference=clean)
    fig = go.Figure(go.Heatmap(z=pert, y=titles, colorbar={"title": "Δ (adv − clean)"}, **scale))
    title = "Adversarial examples: perturbation per feature (red +, blue −)"
    fig.update_layout(title=title + (f"<br><sub>{note}</sub>" if note else ""), xaxis_title="feature index",
                      yaxis_title="example: label, prediction before → after")
    return fig


def token_substitution_figure(ex: dict[str, np.ndarray], class_names: list[str]) -> Any:
    """Token substitutions in place: one row per sequence, one cell per position showing the
    token (clean -> substituted where the search changed it), changed cells highlighted; the
    row title gives the label, the predictions before and after and the substitutions used."""
    import plotly.graph_objects as go

    name = lambda i: class_names[int(i)] if 0 <= int(i) < len(class_names) else str(int(i))  # noqa: E731
    tok = ex.get("token_text", ex["tokens"]).astype(str)
    sub = ex.get("substituted_text", ex["substituted"]).astype(str)
    changed = ex["changed"].astype(bool)
    text = np.where(changed, np.char.add(np.char.add(tok, " → "), sub), tok)
    rows = [f"#{i} y={name(ex['label'][i])}: {name(ex['pred_clean'][i])} → {name(ex['pred_substituted'][i])} "
            f"({int(changed[i].sum())} subst.)" for i in range(len(tok))]
    fig = go.Figure(go.Heatmap(z=changed.astype(float), text=text, texttemplate="%{text}", y=rows, zmin=0, zmax=1,
                               colorscale=[[0, "#f7f7f7"], [1, "#f4a582"]], showscale=False))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Token substitutions (HotFlip search, checked by a real forward): changed tokens highlighted",
                      xaxis_title="position", yaxis_title="example", height=120 + 40 * len(rows))
    return fig


def robustness_figures(result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
    """All figures available for one robustness result (its `to_dict()` form)."""
    out: list[tuple[str, Any]] = []
    summary = _json(result, run_dir, "robustness_summary")
    if summary and summary.get("variants"):
        out.append(("Robust accuracy vs eps", accuracy_vs_eps_figure(summary)))
    flags = _json(result, run_dir, "masking_flags")
    if flags:
        out.append(("Gradient-masking checks", masking_table_figure(flags)))
    ex = _npz(result, run_dir, "adversarial_examples")
    if ex is not None and len(ex.get("label", [])):
        out.append(("Adversarial examples", gallery_figure(ex, (summary or {}).get("class_names") or [])))
    subs = _npz(result, run_dir, "token_substitutions")
    if subs is not None and len(subs.get("tokens", [])):
        out.append(("Token substitutions", token_substitution_figure(subs, (summary or {}).get("class_names") or [])))
    return out
