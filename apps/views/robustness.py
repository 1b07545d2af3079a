"""Robustness: accuracy-vs-eps per attack (standard and adversarially trained variants on
one chart), gradient-masking flags, corruption curves and the drift table (the suite's own
figures), plus an interactive adversarial gallery: one example's clean input,
perturbation, adversarial input and class probabilities before and after."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from workbench.apps import data
from workbench.apps.views import common


def _name(class_names: list[str], k: int) -> str:
    return class_names[k] if 0 <= k < len(class_names) else str(k)


def gallery_example_figure(ex: dict[str, np.ndarray], i: int) -> Any:
    """Example i of `adversarial_examples.npz`: images as clean / perturbation (diverging,
    centred at zero) / adversarial heatmaps; tabular as per-feature perturbation bars;
    tokens as per-position relative perturbation."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if "clean" in ex and ex["clean"].ndim == 4:
        from workbench.reporting.figures import signed_scale

        clean, pert, adv = ex["clean"][i, 0], ex["perturbation"][i, 0], ex["adversarial"][i, 0]
        scale, note = signed_scale(pert, reference=clean)
        fig = make_subplots(rows=1, cols=3, subplot_titles=("clean", "perturbation (red +, blue −)", "adversarial"),
                            horizontal_spacing=0.04)
        fig.add_trace(go.Heatmap(z=clean, colorscale="gray", showscale=False, name="clean"), 1, 1)
        # the colour bar goes below the maps, never over the adversarial image
        fig.add_trace(go.Heatmap(z=pert, name="perturbation", colorbar={"title": "Δ", "orientation": "h", "y": -0.15,
                                                                         "len": 0.3, "x": 0.5, "thickness": 12},
                                 **scale), 1, 2)
        fig.add_trace(go.Heatmap(z=adv, colorscale="gray", showscale=False, name="adversarial"), 1, 3)
        fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
        fig.update_xaxes(showticklabels=False)
        fig.update_layout(margin={"b": 80}, title=note)
        return fig
    if "position_perturbation" in ex:
        z = ex["position_perturbation"][i]
        toks = ex["tokens"][i].astype(str)
        fig = go.Figure(go.Bar(x=np.arange(z.size), y=z, text=toks, name="relative L2 per position"))
        fig.update_layout(xaxis_title="position (token id shown)", yaxis_title="relative L2 perturbation (‖δ‖ / ‖x‖)")
        return fig
    pert = ex["perturbation"][i].reshape(-1)
    fig = go.Figure(go.Bar(x=np.arange(pert.size), y=pert, name="perturbation"))
    fig.update_layout(xaxis_title="feature", yaxis_title="Δ (adversarial − clean)")
    return fig


def probability_figure(ex: dict[str, np.ndarray], i: int, class_names: list[str]) -> Any:
    """Class probabilities of example i before and after the attack (grouped bars)."""
    import plotly.graph_objects as go

    k = ex["probs_clean"].shape[1]
    names = [_name(class_names, c) for c in range(k)]
    fig = go.Figure([
        go.Bar(x=names, y=ex["probs_clean"][i], name="before (clean)"),
        go.Bar(x=names, y=ex["probs_adversarial"][i], name="after (adversarial)"),
    ])
    fig.update_layout(barmode="group", yaxis_title="probability", yaxis_range=[0, 1], xaxis_title="class")
    fig.update_xaxes(type="category")
    return fig


def render() -> None:
    st.title("Robustness")
    run = common.current_run()
    if run is None:
        return
    common.run_caption(run)
    if not common.suite_status_note(run.results, "robustness"):
        return
    model = common.pick_model(data.models_with(run.results, "robustness"), key="robustness:model")
    result = data.find_result(run.results, "robustness", model)
    if not common.suite_status_note([result], "robustness", model):
        return
    summary = data.read_artifact(run.run_dir, result, "robustness_summary") or {}
    class_names = [str(c) for c in summary.get("class_names") or []]
    variants = summary.get("variants") or {}
    if variants:
        st.subheader("Variants")
        common.show_table(pd.DataFrame([{
            "variant": v, "clean accuracy": s.get("clean_accuracy"), "n": s.get("n"),
            "trained with": s.get("trained_with", ""), "training s": s.get("train_seconds"),
            "error": s.get("error", ""),
        } for v, s in variants.items()]), hide_index=True, key="robustness:variants")
    for note in summary.get("notes") or []:
        st.caption(common.esc(note))

    common.show_suite_figures(run, result, key=f"robustness:{model}")

    ex = data.read_artifact(run.run_dir, result, "adversarial_examples")
    st.subheader("Adversarial example explorer")
    if not ex or not len(ex.get("label", [])):
        st.caption("No adversarial examples were saved (n_examples = 0, or no attack ran).")
    else:
        k = len(ex["label"])
        i = int(st.number_input(f"Adversarial example (0–{k - 1})", min_value=0, max_value=k - 1, value=0,
                                key=f"robustness:{model}:example"))
        y, pc, pa = int(ex["label"][i]), int(ex["pred_clean"][i]), int(ex["pred_adversarial"][i])
        st.markdown(
            f"true **{common.esc(_name(class_names, y))}** · before: **{common.esc(_name(class_names, pc))}** "
            f"(p={ex['probs_clean'][i][pc]:.3f}) · after: **{common.esc(_name(class_names, pa))}** "
            f"(p={ex['probs_adversarial'][i][pa]:.3f})" + (" · fooled" if pc == y and pa != y else ""))
        c1, c2 = st.columns(2)
        with c1:
            common.show_figure(gallery_example_figure(ex, i), key=f"robustness:{model}:gallery")
        with c2:
            common.show_figure(probability_figure(ex, i, class_names), key=f"robustness:{model}:probs")

    drift = data.read_artifact(run.run_dir, result, "drift")
    if drift:
        st.subheader("Drift (table)")
        cols = ["shift", "severity", "permutation_pvalue", "max_ks", "threshold", "max_psi", "max_psi_corrected",
                "psi_lower_bound", "n_significant_features", "drift", "statistically_significant", "psi_reason"]
        cols = [c for c in cols if any(c in r for r in drift)]  # an older run's table has fewer columns
        common.show_table(pd.DataFrame([{c: r.get(c) for c in cols} for r in drift]), hide_index=True,
                     key="robustness:drift")
