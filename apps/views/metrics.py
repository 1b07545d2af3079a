"""Metrics: confusion matrix, per-class scores, regression residuals, LM perplexity (the
metrics suite's own figures), per-class table with CIs and LM generations."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.apps import data
from workbench.apps.views import common


def per_class_frame(result: dict) -> pd.DataFrame:
    """precision / recall / f1 per class, with their CIs and n (one row per class)."""
    rows: dict[str, dict] = {}
    for m in result.get("metrics", []):
        cls = (m.get("tags") or {}).get("class")
        if cls is None or m["name"] not in ("precision", "recall", "f1"):
            continue
        row = rows.setdefault(str(cls), {"class": str(cls)})
        row[m["name"]] = m.get("value")
        ci = m.get("ci")
        row[f"{m['name']} CI"] = common.fmt_ci(ci)
        row[f"{m['name']} n"] = m.get("n")
    cols = ["class"] + [f"{k}{s}" for k in ("precision", "recall", "f1") for s in ("", " CI", " n")]
    return pd.DataFrame(list(rows.values()), columns=cols)


def render() -> None:
    st.title("Metrics")
    run = common.current_run()
    if run is None:
        return
    common.run_caption(run)
    if not common.suite_status_note(run.results, "metrics"):
        return
    models = data.models_with(run.results, "metrics")
    model = common.pick_model(models, key="metrics:model")
    result = data.find_result(run.results, "metrics", model)
    if not common.suite_status_note([result], "metrics", model):
        return
    headline = data.metrics_frame([result])
    headline = headline[~headline["tags"].str.contains("class=", regex=False)]
    st.subheader("Headline metrics")
    common.metrics_table(headline, key="metrics:headline", page_size=50)

    common.show_suite_figures(run, result, key=f"metrics:{model}")

    pc = per_class_frame(result)
    if not pc.empty:
        st.subheader("Per-class scores (with 95% CIs)")
        page = common.paginate(pc, key="metrics:perclass:page", page_size=50)
        common.show_table(page, hide_index=True, key="metrics:perclass")

    gens = data.read_artifact(run.run_dir, result, "generations")
    if gens and gens.get("hypotheses"):
        st.subheader("Generations (greedy)")
        df = pd.DataFrame({"row": gens.get("rows"), "prompt": gens.get("prompts"), "reference": gens.get("references"),
                           "generated": gens.get("hypotheses"), "rouge_l": gens.get("rouge_l")})
        st.caption(f"BLEU signature: {common.esc(gens.get('bleu_signature'))}")
        common.show_table(common.paginate(df, key="metrics:gens:page", page_size=20), hide_index=True,
                     key="metrics:gens")
