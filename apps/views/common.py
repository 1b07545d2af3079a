"""Shared page plumbing: navigation and deep links, the current run, model pickers,
pagination, escaping and plotly rendering (WebGL for large point counts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from workbench.apps import data

# (url path, title). No per-page icons: an emoji needs an emoji font (boxes without one) and a
# `:material/...` icon makes the browser fetch a remote font. The app icon is set in dashboard.py.
PAGES: tuple[tuple[str, str], ...] = (
    ("runs", "Runs"),
    ("overview", "Overview"),
    ("metrics", "Metrics"),
    ("robustness", "Robustness"),
    ("uncertainty", "Uncertainty"),
    ("efficiency", "Efficiency"),
    ("explain", "Explain"),
    ("compare", "Compare"),
)
WEBGL_MIN_POINTS = 2000  # scatter traces with more points are drawn with WebGL (go.Scattergl)

_ESCAPE = {ord(c): "\\" + c for c in "\\`*_[]()#+-.!|~{}:$"}
_ESCAPE.update({ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;"})
_ESCAPE.update({ord(c): " " for c in "\r\n\t"})


def esc(value: Any) -> str:
    """Text from a run (model, class or plan names) made inert inside st.markdown: HTML
    specials become entities, Markdown and Streamlit directive characters are escaped."""
    return ("" if value is None else str(value)).translate(_ESCAPE)


# --------------------------------------------------------------------------- navigation

_pages: dict[str, Any] = {}


def register_pages(pages: Mapping[str, Any]) -> None:
    _pages.clear()
    _pages.update(pages)


def go(page: str, **query: Any) -> None:
    """Switch to a page with deep-link query parameters (a new `run` is applied before
    the sidebar's run picker is drawn on the next script run)."""
    if "run" in query and query["run"]:
        st.session_state["_open_run"] = str(query["run"])
    params = {k: str(v) for k, v in query.items() if v is not None}
    params["page"] = page
    st.switch_page(_pages[page], query_params=params)


def deep_link(**query: Any) -> str:
    """A relative URL for a view, e.g. `?run=ID&page=explain&example=3`."""
    from urllib.parse import urlencode

    return "?" + urlencode({k: v for k, v in query.items() if v is not None})


def qp_int(name: str) -> int | None:
    v = st.query_params.get(name)
    try:
        return int(v) if v is not None and v != "" else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- current run


@dataclass
class RunView:
    """The run a page shows: store path, id, store row (with provenance), results (dicts)."""

    path: str
    run_id: str
    info: dict[str, Any]
    results: list[dict[str, Any]]

    @property
    def run_dir(self) -> str | None:
        d = self.info.get("run_dir")
        return str(d) if d else None


def store_exists(path: str) -> bool:
    return Path(path).is_file()


def pick_run_sidebar(path: str) -> str | None:
    """The sidebar run picker; honours `?run=` (id, unique prefix or "latest") on the
    first load and `go(..., run=...)` afterwards. Returns the current run id."""
    ss = st.session_state
    if not store_exists(path):
        return None
    runs = data.cached_runs(path)
    ids = runs["run_id"].tolist()
    if not ids:
        return None
    if "_open_run" in ss:
        wanted = data.resolve_run(path, ss.pop("_open_run"), ids)
        if wanted:
            ss["run"] = wanted
    if ss.get("run") not in ids:
        ss["run"] = data.resolve_run(path, st.query_params.get("run"), ids) or ids[0]
    labels = {r.run_id: f"{r.run_id} · {r.plan or '—'} · {r.status}" for r in runs.itertuples()}
    st.sidebar.selectbox("Run", ids, key="run", format_func=lambda r: labels.get(r, r),
                         help="Runs in the store, newest first. The Runs page filters them.")
    st.query_params["run"] = ss["run"]
    return ss["run"]


def current_run() -> RunView | None:
    """The run chosen in the sidebar, with its results; shows a note and returns None
    when the store is empty or missing."""
    path = data.store_path()
    if not store_exists(path):
        st.info(f"No run store at `{esc(path)}`. Run `workbench run plans/quickstart.toml` first, "
                "or start the dashboard with `workbench ui --store PATH`.")
        return None
    run_id = st.session_state.get("run")
    if not run_id:
        st.info("The store has no runs yet. Run `workbench run plans/quickstart.toml` first.")
        return None
    info = data.cached_run_info(path, run_id)
    if info is None:
        st.warning(f"Run `{esc(run_id)}` is not in the store (deleted?).")
        return None
    return RunView(path=path, run_id=run_id, info=info, results=data.cached_results(path, info))


def run_caption(run: RunView) -> None:
    prov = run.info.get("provenance") or {}
    plan = (prov.get("plan") or {}).get("run", {}).get("name") or run.info.get("plan_name") or "—"
    st.caption(f"Run {esc(run.run_id)} · plan {esc(plan)} · {esc(run.info.get('status'))} · "
               f"created {esc(run.info.get('created_at'))}")


def pick_model(models: Sequence[str], key: str, label: str = "Model") -> str:
    """A model picker that starts from `?model=` (else the model last picked on any page)
    and writes the choice back to the URL."""
    ss = st.session_state
    models = list(models)
    if ss.get(key) not in models:
        wanted = st.query_params.get("model")
        if wanted not in models:
            wanted = ss.get("_model")
        ss[key] = wanted if wanted in models else models[0]
    choice = st.selectbox(label, models, key=key)
    ss["_model"] = choice
    st.query_params["model"] = choice
    return choice


def suite_status_note(results: list[Mapping[str, Any]], suite: str, model: str | None = None) -> bool:
    """Explain why a suite has nothing to show; True when there is an "ok" result."""
    rel = [r for r in results if r["suite"] == suite and (model is None or r["model"] == model)]
    if not rel:
        where = f" for model {esc(model)}" if model else ""
        st.info(f"The **{suite}** suite did not run in this run{where}. Add it to the plan's `suites` "
                f"(or run `workbench run PLAN --suites {suite}`) to see this page.")
        return False
    if all(r["status"] != "ok" for r in rel):
        for r in rel:
            st.warning(f"{suite} on {esc(r['model'])}: {esc(r['status'])} — {esc(r.get('reason'))}")
        return False
    return True


# --------------------------------------------------------------------------- tables and charts


def paginate(df: pd.DataFrame, key: str, page_size: int = 50) -> pd.DataFrame:
    """The current page of a long table (a page picker appears above more than one page)."""
    n = len(df)
    pages = max(1, math.ceil(n / page_size))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages}, {page_size} rows each)", min_value=1, max_value=pages,
                                   value=1, step=1, key=key))
    start = (page - 1) * page_size
    stop = min(n, start + page_size)
    if n:
        st.caption(f"rows {start + 1}–{stop} of {n}")
    return df.iloc[start:stop]


def to_webgl(fig: Any, min_points: int = WEBGL_MIN_POINTS) -> Any:
    """When a figure's scatter traces hold more than `min_points` points in all, redraw
    them as `go.Scattergl` (same data and style), so 10k-point charts stay responsive."""
    import plotly.graph_objects as go

    def points(trace: Any) -> int:
        pts = trace.x if getattr(trace, "x", None) is not None else getattr(trace, "y", None)
        return len(pts) if trace.type == "scatter" and pts is not None else 0

    if sum(points(t) for t in fig.data) <= min_points:
        return fig
    traces, changed = [], False
    for trace in fig.data:
        if trace.type == "scatter":
            spec = trace.to_plotly_json()
            spec.pop("type", None)
            for unsupported in ("cliponaxis", "hoveron", "fillpattern"):
                spec.pop(unsupported, None)
            try:
                trace = go.Scattergl(**spec)
                changed = True
            except ValueError:
                pass
        traces.append(trace)
    if changed:
        fig.data = ()
        fig.add_traces(traces)
    return fig


def show_figure(fig: Any, key: str, *, on_select: str | Callable[[], None] = "ignore",
                selection_mode: Any = ("points",)) -> Any:
    """Draw a plotly figure (WebGL for large scatters); returns the selection event when
    `on_select` is not "ignore"."""
    fig = to_webgl(fig)
    config = {"displaylogo": False}
    if on_select == "ignore":
        return st.plotly_chart(fig, key=key, config=config)
    return st.plotly_chart(fig, key=key, config=config, on_select=on_select, selection_mode=selection_mode)


def show_suite_figures(run: RunView, result: Mapping[str, Any], key: str, skip: Sequence[str] = ()) -> int:
    """The suite's own figures (shared with the HTML report); returns how many were drawn."""
    figs, note = data.suite_figures(result, run.run_dir)
    if note:
        st.warning(note)
    n = 0
    for i, (title, fig) in enumerate(figs):
        if any(s in title for s in skip):
            continue
        layout_title = getattr(getattr(fig.layout, "title", None), "text", None)
        if not layout_title:  # the suite's figure carries no title of its own
            st.markdown(f"**{esc(title)}**")
        show_figure(fig, key=f"{key}:{i}")
        n += 1
    if not figs and not note:
        st.caption("This result saved no artifacts to draw.")
    return n


def metrics_table(df: pd.DataFrame, key: str, page_size: int = 100) -> None:
    """Metrics (from `data.metrics_frame`) as a paginated table with CI and n."""
    if df.empty:
        st.caption("No metrics.")
        return
    page = paginate(df, key=f"{key}:page", page_size=page_size)
    st.dataframe(page, hide_index=True, key=f"{key}:table", column_config={
        "value": st.column_config.NumberColumn("value", format="%.5g"),
        "ci_low": st.column_config.NumberColumn("95% CI low", format="%.5g"),
        "ci_high": st.column_config.NumberColumn("95% CI high", format="%.5g"),
        "higher_is_better": st.column_config.CheckboxColumn("higher is better"),
    })


def fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}g}"
    return str(v)


def fmt_ci(ci: Any) -> str:
    if not ci or ci[0] is None or (isinstance(ci[0], float) and math.isnan(ci[0])):
        return "—"
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"
