"""The workbench dashboard (Streamlit): `workbench ui` or
`python -m streamlit run apps/dashboard.py` (from the repository; installed, the module is
`workbench.apps.dashboard`).

Reads the run store ($WORKBENCH_STORE, else .workbench/store.sqlite) and each run's
artifacts; computes nothing heavy on load. Deep links: `?run=ID&page=explain&model=M&example=3`
(`other=ID2` on the compare page). See apps/README.md.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="workbench", page_icon="🧪", layout="wide")

from workbench.apps import data  # noqa: E402
from workbench.apps.views import (  # noqa: E402
    common,
    compare,
    efficiency,
    explain,
    metrics,
    overview,
    robustness,
    runs,
    suite_page,
    uncertainty,
)

RENDER = {"runs": runs.render, "overview": overview.render, "metrics": metrics.render,
          "robustness": robustness.render, "uncertainty": uncertainty.render, "efficiency": efficiency.render,
          "explain": explain.render, "compare": compare.render}


def page_list() -> list[tuple[str, str, object]]:
    """(url path, title, render) of every page: the fixed ones, and one generic page per
    registered suite without a page of its own (plug-ins included), before Compare."""
    fixed = [(name, title, RENDER[name]) for name, title in common.PAGES]
    generic = [(suite_page.url_path(s), suite_page.title(s), suite_page.make_render(s))
               for s in suite_page.generic_suites()]
    return fixed[:-1] + generic + fixed[-1:]


@st.cache_resource(show_spinner=False)
def _preload_suites() -> object:
    """Import every registered suite once per server, off the page's critical path: some
    suite modules import torch (seconds), which the first visit to their page would
    otherwise wait for. Pages still import on demand; this only starts earlier."""
    import threading

    from workbench.registry import SUITES

    names = SUITES.names()  # the entry-point scan itself stays on this thread (the registry has no lock)

    def load() -> None:
        for name in names:
            try:
                SUITES.get(name)
            except Exception:  # a broken plug-in is reported on its own page
                pass

    thread = threading.Thread(target=load, name="workbench-preload-suites", daemon=True)
    thread.start()
    return thread


def main() -> None:
    _preload_suites()
    pages = {name: st.Page(render, title=title, url_path=name, default=(name == "runs"))
             for name, title, render in page_list()}
    common.register_pages(pages)
    current = st.navigation(list(pages.values()))
    name = next((k for k, p in pages.items() if p is current), "runs")
    wanted = st.query_params.get("page")
    if not st.session_state.get("_deep_link_done"):
        st.session_state["_deep_link_done"] = True
        if st.query_params.get("model"):
            st.session_state["_model"] = st.query_params.get("model")  # kept across pages
        if wanted in pages and wanted != name:
            st.switch_page(pages[wanted], query_params=dict(st.query_params))
    path = data.store_path()
    st.sidebar.caption(f"Store: {common.esc(path)}")
    common.pick_run_sidebar(path)
    st.query_params["page"] = name
    current.run()


main()
