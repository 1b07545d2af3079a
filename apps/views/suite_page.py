"""A page for any registered suite that has no page of its own (a third-party plug-in,
or a built-in without a dedicated view): its figures (`Suite.figures`, as in the HTML
report) for the picked model, then its metrics with value, 95% CI and n."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from workbench.apps import data
from workbench.apps.views import common

# Suites whose page is a dedicated view (apps/views/<name>.py); every other registered suite
# gets the generic page below.
DEDICATED = frozenset({"metrics", "robustness", "uncertainty", "efficiency", "explain"})


def generic_suites() -> list[str]:
    """Registered suites without a dedicated page, sorted; a plug-in that fails to load is
    left out here (the registry reports it elsewhere)."""
    from workbench.registry import SUITES

    try:
        names = list(SUITES.names())
    except Exception:  # a broken entry point must not take the dashboard down
        return []
    return sorted(n for n in names if n not in DEDICATED)


def url_path(suite: str) -> str:
    """The page's URL path (and `?page=` value): "suite-<name>"."""
    return "suite-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in suite)


def title(suite: str) -> str:
    """The page's title in the navigation and its heading."""
    return suite.replace("_", " ").capitalize()


def nav() -> list[tuple[str, str]]:
    """(url path, title) of every page, in navigation order: the fixed pages, one generic
    page per registered suite without a page of its own, then Compare."""
    fixed = list(common.PAGES)
    return fixed[:-1] + [(url_path(s), title(s)) for s in generic_suites()] + fixed[-1:]


def render_suite(suite: str) -> None:
    st.title(title(suite))
    run = common.current_run()
    if run is None:
        return
    common.run_caption(run)
    if not common.suite_status_note(run.results, suite):
        return
    model = common.pick_model(data.models_with(run.results, suite), key=f"{url_path(suite)}:model")
    result = data.find_result(run.results, suite, model)
    if not common.suite_status_note([result], suite, model):
        return
    common.show_suite_figures(run, result, key=f"{url_path(suite)}:{model}")
    st.subheader("Metrics")
    common.metrics_table(data.metrics_frame([result]), key=f"{url_path(suite)}:metrics")


def make_render(suite: str) -> Callable[[], None]:
    def render() -> None:
        render_suite(suite)

    render.__name__ = f"render_{url_path(suite).replace('-', '_')}"
    return render
