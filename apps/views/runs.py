"""Runs: the store's history with filters (model, dataset, plan, status, gate, date),
a paginated table, and buttons that open a run on another page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from workbench.apps import data
from workbench.apps.views import common

PAGE_SIZE = 50
GATE_LABEL = {"pass": "pass", "fail": "FAIL", "error": "error", "": "—"}  # text: emoji need an emoji font


def filter_runs(df: pd.DataFrame, *, models: Sequence[str] = (), datasets: Sequence[str] = (),
                plans: Sequence[str] = (), statuses: Sequence[str] = (), gates: Sequence[str] = (),
                since: dt.date | None = None, until: dt.date | None = None) -> pd.DataFrame:
    """Rows of `data.runs_frame` matching every given filter (an empty filter keeps all):
    a run matches `models` / `datasets` when it has at least one of them; `since` and
    `until` are inclusive UTC dates of `created_at`."""
    keep = pd.Series(True, index=df.index)
    if models:
        want = set(models)
        keep &= df["models"].map(lambda ms: bool(want.intersection(ms)))
    if datasets:
        want_d = set(datasets)
        keep &= df["datasets"].map(lambda ds: bool(want_d.intersection(ds)))
    if plans:
        keep &= df["plan"].isin(list(plans))
    if statuses:
        keep &= df["status"].isin(list(statuses))
    if gates:
        keep &= df["gate"].isin(list(gates))
    day = df["created_at"].dt.date
    if since is not None:
        keep &= day >= since
    if until is not None:
        keep &= day <= until
    return df[keep.fillna(False).astype(bool)]


def _options(df: pd.DataFrame, col: str) -> list[str]:
    if col in ("models", "datasets", "suites"):
        return sorted({v for vs in df[col] for v in vs})
    return sorted(v for v in df[col].dropna().unique().tolist())


def render() -> None:
    st.title("Runs")
    path = data.store_path()
    if not common.store_exists(path):
        st.info(f"No run store at `{common.esc(path)}`. Run `workbench run plans/quickstart.toml` first.")
        return
    df = data.cached_runs(path)
    if df.empty:
        st.info("The store has no runs yet. Run `workbench run plans/quickstart.toml` first.")
        return

    common.run_problem_note()
    c1, c2, c3 = st.columns(3)
    models = c1.multiselect("Model", _options(df, "models"), key="runs:models")
    datasets = c2.multiselect("Dataset", _options(df, "datasets"), key="runs:datasets")
    plans = c3.multiselect("Plan", _options(df, "plan"), key="runs:plans")
    c4, c5, c6 = st.columns(3)
    statuses = c4.multiselect("Status", _options(df, "status"), key="runs:status")
    gates = c5.multiselect("Gate", ["pass", "fail", "error", ""], key="runs:gate",
                           format_func=lambda g: GATE_LABEL.get(g, g))
    days = df["created_at"].dropna().dt.date
    since = until = None
    if len(days):
        lo, hi = days.min(), days.max()
        picked = c6.date_input("Created between", value=(lo, hi), min_value=lo, max_value=hi, key="runs:dates")
        if isinstance(picked, (tuple, list)) and len(picked) == 2:
            since, until = picked
        elif isinstance(picked, (tuple, list)) and len(picked) == 1:
            since = picked[0]

    shown = filter_runs(df, models=models, datasets=datasets, plans=plans, statuses=statuses, gates=gates,
                        since=since, until=until)
    st.caption(f"{len(shown)} of {len(df)} runs match")
    if shown.empty:
        st.info("No run matches these filters.")
        return
    page = common.paginate(shown, key="runs:page", page_size=PAGE_SIZE)
    table = page.assign(
        gate=page["gate"].map(lambda g: GATE_LABEL.get(g, g)),
        models=page["models"].map(", ".join), datasets=page["datasets"].map(", ".join),
        suites=page["suites"].map(", ".join),
    )
    common.show_table(table, hide_index=True, key="runs:table", column_config={
        "created_at": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    })

    st.subheader("Open a run")
    ids = page["run_id"].tolist()
    current = st.session_state.get("run")
    pick = st.selectbox("Run", ids, index=ids.index(current) if current in ids else 0, key="runs:open")
    b1, b2, b3, b4 = st.columns(4)
    if b1.button("Overview", key="runs:go_overview"):
        common.go("overview", run=pick)
    if b2.button("Metrics", key="runs:go_metrics"):
        common.go("metrics", run=pick)
    if b3.button("Explain", key="runs:go_explain"):
        common.go("explain", run=pick)
    if b4.button("Compare with the sidebar run", key="runs:go_compare", disabled=not current or current == pick):
        common.go("compare", run=current, other=pick)
    st.caption("Deep link to this run's overview: " + common.esc(common.deep_link(run=pick, page="overview")))
