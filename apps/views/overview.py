"""Overview of one run: provenance (plan, seed, versions, device, git SHA), the gate
verdicts, every suite result's status and every metric with its CI and n."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from workbench.apps import data
from workbench.apps.views import common

GATE_COLOUR = {"pass": "green", "fail": "red", "error": "orange"}


def provenance_rows(info: dict) -> list[tuple[str, str]]:
    """(field, value) pairs shown at the top of the overview."""
    prov = info.get("provenance") or {}
    plan = prov.get("plan") or {}
    dev = prov.get("device_info") or {}
    device = str(prov.get("device") or info.get("device") or "—")
    if dev.get("name"):
        device += f" ({dev['name']})"
    return [
        ("run id", info["run_id"]),
        ("plan", str((plan.get("run") or {}).get("name") or info.get("plan_name") or "—")),
        ("plan file", str(prov.get("plan_source") or "—")),
        ("status", str(info.get("status"))),
        ("created", str(info.get("created_at"))),
        ("finished", str(info.get("finished_at") or "—")),
        ("seed", str(prov.get("seed", info.get("seed")))),
        ("profile", str(prov.get("profile") or "—")),
        ("device", device),
        ("git SHA", str(prov.get("git_sha") or info.get("git_sha") or "unknown (not a git checkout)")),
        ("run directory", str(info.get("run_dir") or "—")),
    ]


def gate_table(outcome: dict, key: str) -> None:
    """One row per rule of a `GateOutcome.to_dict()`."""
    cols = ("rule", "status", "observed", "threshold", "baseline", "p_value", "message")
    common.show_table(pd.DataFrame([{k: r.get(k) for k in cols} for r in outcome.get("rules", [])], columns=list(cols)),
                 hide_index=True, key=key)


def render() -> None:
    st.title("Overview")
    run = common.current_run()
    if run is None:
        return
    common.run_caption(run)
    prov = run.info.get("provenance") or {}

    st.subheader("Provenance")
    common.show_table(pd.DataFrame(provenance_rows(run.info), columns=["field", "value"]), hide_index=True,
                 key="overview:provenance")
    c1, c2 = st.columns(2)
    versions = prov.get("versions") or {}
    with c1:
        st.markdown("**Versions**")
        if versions:
            common.show_table(pd.DataFrame(sorted(versions.items()), columns=["package", "version"]), hide_index=True,
                         key="overview:versions")
        else:
            st.caption("not recorded")
    with c2:
        timings = prov.get("timings_s") or {}
        st.markdown("**Timings (s)**")
        if timings:
            common.show_table(pd.DataFrame(sorted(timings.items()), columns=["step", "seconds"]), hide_index=True,
                         key="overview:timings")
        else:
            st.caption("not recorded (the run has not finished)")
    with st.expander("Resolved plan"):
        st.code(json.dumps(prov.get("plan") or {}, indent=2, default=str), language="json")

    st.subheader("Gate")
    outcome = data.gate_outcome(run.run_dir)
    status = run.info.get("gate_status") or (outcome or {}).get("status")
    if status:
        colour = GATE_COLOUR.get(str(status), "gray")
        st.markdown(f"Gate status: :{colour}[**{common.esc(status)}**]")
    if outcome and outcome.get("rules"):
        gate_table(outcome, key="overview:gate")
    else:
        if not status:
            st.caption("No gate verdicts were written for this run (gate.json).")
        now_key = f"overview:gate_now:{run.run_id}"
        if st.button("Evaluate the plan's gate rules now", key=f"{now_key}:button",
                     help="Absolute rules of the run's own [gates] table, with workbench.gates.evaluate_gates"):
            from workbench.apps import compute

            with st.spinner("Evaluating gates…"):
                try:
                    st.session_state[now_key] = compute.evaluate_run_gates(run.path, run.run_id) or {
                        "note": "The run's plan has no [gates] rules."}
                except Exception as exc:  # a broken rule table is shown, not raised
                    st.session_state[now_key] = {"note": f"{type(exc).__name__}: {exc}"}
        got = st.session_state.get(now_key)
        if got and "note" in got:
            st.caption(common.esc(got["note"]))
        elif got:
            st.markdown(f"Evaluated now: **{common.esc(got.get('status'))}** (not saved)")
            gate_table(got, key="overview:gate_now")

    st.subheader("Suite results")
    if not run.results:
        st.info("This run has no results yet.")
        return
    res = pd.DataFrame([{
        "suite": r["suite"], "model": r["model"], "dataset": r["dataset"], "status": r["status"],
        "reason": r.get("reason") or "", "metrics": len(r.get("metrics", [])),
        "seconds": r.get("duration_s"), "artifacts": ", ".join(sorted(r.get("artifacts") or {})),
    } for r in run.results])
    common.show_table(res, hide_index=True, key="overview:results")

    st.subheader("Metrics")
    mf = data.metrics_frame(run.results)
    c1, c2, c3 = st.columns(3)
    suites = c1.multiselect("Suite", sorted(mf["suite"].unique()), key="overview:suites")
    models = c2.multiselect("Model", sorted(mf["model"].unique()), key="overview:models")
    text = c3.text_input("Metric or tag contains", key="overview:text")
    if suites:
        mf = mf[mf["suite"].isin(suites)]
    if models:
        mf = mf[mf["model"].isin(models)]
    if text:
        mf = mf[mf["metric"].str.contains(text, regex=False) | mf["tags"].str.contains(text, regex=False)]
    st.caption("Every metric with its 95% confidence interval (where it makes sense) and n; a missing value "
               "always comes with the reason.")
    common.metrics_table(mf, key="overview:metrics", page_size=100)
