"""Uncertainty: reliability diagrams before/after temperature scaling, aleatoric and
epistemic histograms, risk–coverage and OOD ROC curves (the uncertainty suite's own
figures) and its metrics with CIs."""

from __future__ import annotations

import streamlit as st

from workbench.apps import data
from workbench.apps.views import common


def render() -> None:
    st.title("Uncertainty")
    run = common.current_run()
    if run is None:
        return
    common.run_caption(run)
    if not common.suite_status_note(run.results, "uncertainty"):
        return
    model = common.pick_model(data.models_with(run.results, "uncertainty"), key="uncertainty:model")
    result = data.find_result(run.results, "uncertainty", model)
    if not common.suite_status_note([result], "uncertainty", model):
        return
    common.show_suite_figures(run, result, key=f"uncertainty:{model}")
    st.subheader("Metrics")
    common.metrics_table(data.metrics_frame([result]), key="uncertainty:metrics")
