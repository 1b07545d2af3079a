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
            ss.pop("_run_problem", None)
    if ss.get("run") not in ids:
        asked = st.query_params.get("run")
        found = data.resolve_run(path, asked, ids)
        if asked and not found:  # never show another run silently: say so, with the candidates
            kind, candidates = data.run_candidates(str(asked), ids)
            ss["_run_problem"] = {"asked": str(asked), "kind": kind, "candidates": candidates}
        ss["run"] = found or ids[0]
    labels = {r.run_id: f"{r.run_id} · {r.plan or '—'} · {r.status}" for r in runs.itertuples()}
    st.sidebar.selectbox("Run", ids, key="run", format_func=lambda r: labels.get(r, r),
                         on_change=lambda: ss.pop("_run_problem", None),
                         help="Runs in the store, newest first. The Runs page filters them.")
    if "_run_problem" in ss:
        return None
    st.query_params["run"] = ss["run"]
    return ss["run"]


def run_problem_note() -> bool:
    """When the link's `?run=` matched no single run: say so with the candidates (links)
    and return True; the page then shows no run rather than another one silently."""
    problem = st.session_state.get("_run_problem")
    if not problem:
        return False
    what = "matches several runs" if problem["kind"] == "ambiguous" else "matches no run in this store"
    ask = "Candidates" if problem["kind"] == "ambiguous" else "Did you mean one of these"
    lines = "\n".join(f"- [{esc(c)}]({deep_link(run=c, page=st.query_params.get('page'))})"
                      for c in problem["candidates"])
    st.warning(f"The link asks for run `{esc(problem['asked'])}`, which {what}. {ask}:\n\n{lines}"
               "\n\nOr pick a run in the sidebar.")
    return True


def current_run() -> RunView | None:
    """The run chosen in the sidebar, with its results; shows a note and returns None
    when the store is empty or missing."""
    path = data.store_path()
    if not store_exists(path):
        st.info(f"No run store at `{esc(path)}`. Run `workbench run plans/quickstart.toml` first, "
                "or start the dashboard with `workbench ui --store PATH`.")
        return None
    if run_problem_note():
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
        for r in rel:  # skipped by design (does not apply) is information; an error is a warning
            note = st.info if r["status"] == "skipped" else st.warning
            note(f"{suite} on {esc(r['model'])}: {esc(r['status'])} — {esc(r.get('reason') or 'no reason recorded')}")
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
    from workbench.reporting.figures import figure_table

    n = 0
    for i, (title, fig) in enumerate(figs):
        if any(s in title for s in skip):
            continue
        table = figure_table(fig)  # a plotly table cuts rows at its height: show a real one
        layout_title = getattr(getattr(fig.layout, "title", None), "text", None)
        if table is not None or not layout_title:  # the suite's figure carries no title of its own
            st.markdown(f"**{esc(layout_title or title)}**")
        if table is not None:
            rows = len(table[1])  # tall enough for every row (up to a screen), so nothing hides below
            st.dataframe(pd.DataFrame(table[1], columns=table[0]), hide_index=True, key=f"{key}:{i}:table",
                         height=min(35 * (rows + 1) + 3, 1200))
        else:
            show_figure(fig, key=f"{key}:{i}")
        n += 1
    if not figs and not note:
        st.caption("This result saved no artifacts to draw.")
    return n


# Metric tables: what a reader needs first (value, CI, n), then what qualifies it; the raw
# numeric columns stay in the frame (sortable, read by tests) but the CI is shown as one text.
METRIC_COLUMNS = ["metric", "shown value", "95% CI", "n", "direction", "tags", "reason", "model", "suite", "dataset"]


def metric_display(df: pd.DataFrame) -> pd.DataFrame:
    """`data.metrics_frame` plus the text columns people read: the value with its unit,
    the 95% CI as "[low, high]" on the value's scale, the direction, and "" for nothing
    (never "None" or "nan")."""
    out = df.copy()
    out["shown value"] = [fmt_quantity(v, u) if v == v else "n/a" for v, u in zip(out["value"], out["unit"])]
    out["95% CI"] = [fmt_ci((lo, hi), v) for lo, hi, v in zip(out["ci_low"], out["ci_high"], out["value"])]
    out["direction"] = out["higher_is_better"].map({True: "↑ higher is better", False: "↓ lower is better"}).fillna("")
    for c in ("tags", "reason", "unit"):
        out[c] = out[c].fillna("")
    return out


def metrics_table(df: pd.DataFrame, key: str, page_size: int = 100) -> None:
    """Metrics (from `data.metrics_frame`) as a paginated table: metric, value, 95% CI and
    n first, then direction, tags and the reason of a missing value."""
    if df.empty:
        st.caption("No metrics.")
        return
    page = blank_missing(metric_display(paginate(df, key=f"{key}:page", page_size=page_size)), METRIC_COLUMNS)
    st.dataframe(page, hide_index=True, key=f"{key}:table", column_order=METRIC_COLUMNS, column_config={
        "shown value": st.column_config.TextColumn("value", help="with its unit"),
        "n": st.column_config.Column("n", help="examples (or repeats) behind the value"),
        "tags": st.column_config.TextColumn("tags", width="medium"),
    })


def blank_missing(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy where every missing cell (None, NaN, NA) of `columns` (default all) is "" so
    the table shows an empty cell, not "None". Such a numeric column becomes text formatted
    for people (4 significant digits, like the report); columns without a missing cell keep
    their dtype (and sort numerically)."""
    out = df.copy()
    for c in (columns if columns is not None else out.columns):
        if c not in out.columns:
            continue
        missing = out[c].isna()
        if not missing.any():
            continue
        if pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c]):
            out[c] = ["" if m else fmt(v) for v, m in zip(out[c], missing)]
        else:
            out[c] = out[c].astype(object).where(~missing, "")
    return out


def show_table(df: pd.DataFrame, key: str, **kwargs: Any) -> None:
    """st.dataframe without the index and with missing values as empty cells."""
    kwargs.setdefault("hide_index", True)
    st.dataframe(blank_missing(df), key=key, **kwargs)


_SI = ((1e9, "G"), (1e6, "M"), (1e3, "k"))
_SMALL = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def fmt_quantity(v: Any, unit: Any = None) -> str:
    """A value with its unit, for people: seconds as ms/µs, bytes as kB/MB/GB, FLOPs with
    k/M/G; otherwise the report's 4-significant-digit format (round-off shows as 0)."""
    from workbench.reporting.markdown import fmt_value

    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    u = str(unit or "")
    x = float(v)
    if u == "s" and x != 0:
        for f, p in _SMALL:
            if abs(x) >= f or f == 1e-9:
                return f"{x / f:.3g} {p}s"
    if (u == "bytes" or u.startswith("FLOP")) and abs(x) >= 1e3:
        base = "B" if u == "bytes" else u
        for f, p in _SI:
            if abs(x) >= f:
                return f"{x / f:.3g} {p}{base}"
    return fmt_value(x, u or None)


def fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    import numbers

    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        from workbench.reporting.markdown import fmt_value

        return fmt_value(float(v)) if digits == 4 else f"{float(v):.{digits}g}"
    return str(v)


def fmt_ci(ci: Any, value: Any = None) -> str:
    """"[low, high]" on the scale of the value (round-off bounds print as 0); "—" without."""
    from workbench.reporting.markdown import fmt_ci as _fmt_ci

    if ci is None or len(ci) != 2 or any(b is None or (isinstance(b, float) and b != b) for b in ci):
        return "—"
    v = None if value is None or (isinstance(value, float) and value != value) else float(value)
    return _fmt_ci([float(ci[0]), float(ci[1])], v)
