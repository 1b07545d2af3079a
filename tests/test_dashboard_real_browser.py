"""The dashboard on a REAL quickstart run (trained models, every suite), in headless
Chromium, started both documented ways:

- by hand, `python -m streamlit run apps/dashboard.py` with no telemetry flag: the shipped
  apps/.streamlit/config.toml must keep every request on the machine;
- `workbench ui`.

Every page is visited for every model of the run; each must show no exception, error or
warning box, no "None"/"nan" text (in the page or inside a plot) and no empty figure, and
the browser must make no request that leaves 127.0.0.1. A page whose suite did not run for
a model (robustness on the LM) shows an info note, which is allowed.

Slow (runs the quickstart once per session, then ~50 page loads): marked slow and browser.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    LOOPBACK,
    free_port,
    page_problems,
    settle,
    start_streamlit,
    stop,
    sync_playwright_or_skip,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "dashboard-real"


def _pages() -> list[tuple[str, str]]:
    from workbench.apps.views import suite_page

    return suite_page.nav()


def _pick_model(page, model: str) -> bool:  # type: ignore[no-untyped-def]
    """Choose `model` in the page's Model combo box (a rerun, not a reload); False when the
    page offers no such model (its suite has no result for it)."""
    box = page.locator("[data-testid=stMain] [data-testid=stSelectbox] input[role=combobox][aria-label=Model]")
    if not box.count():
        return False
    if box.input_value() == model:
        return True
    box.click()
    box.fill(model)
    option = page.get_by_role("option", name=model, exact=True)
    try:
        option.wait_for(timeout=3000)
    except Exception:
        page.keyboard.press("Escape")
        return False
    option.click()
    settle(page)
    deadline = time.monotonic() + 15
    while box.input_value() != model and time.monotonic() < deadline:  # the rerun redraws the box
        page.wait_for_timeout(200)
    if box.input_value() != model:  # a click lost on a loaded machine: open the model by its deep link
        url = re.sub(r"([?&])model=[^&]*", r"\1", page.url)
        page.goto(url + ("&" if "?" in url else "?") + f"model={model}", wait_until="load")
        settle(page)
    assert box.input_value() == model, (model, box.input_value(), page.url)
    return True


def _browse(url: str, run: dict, pages: list[tuple[str, str]], models: list[str], shots: bool
            ) -> tuple[list[str], list[str]]:
    """Visit every page (through the navigation) for every model (through the page's model
    picker); returns (problems, non-local requests)."""
    sync_playwright = sync_playwright_or_skip()
    problems: list[str] = []
    outside: list[str] = []

    def route(r):  # type: ignore[no-untyped-def]
        if r.request.url.startswith(LOOPBACK):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.route("**/*", route)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"{url}/?page=runs&run={run['run_id']}&other={run['run_id']}", wait_until="load")
            settle(page)
            for name, title in pages:
                t0 = time.monotonic()
                if name != "runs":
                    page.locator("[data-testid=stSidebarNavLink]", has_text=title).first.click()
                    settle(page)
                assert f"page={name}" in page.url and page.locator("h1").first.inner_text().startswith(title), \
                    (name, page.url)
                has_picker = bool(page.locator("[data-testid=stMain] [data-testid=stSelectbox] input[role=combobox][aria-label=Model]").count())
                for model in (models if has_picker else models[:1]):
                    if has_picker and not _pick_model(page, model):
                        continue
                    problems += [f"{name} / {model}: {p}" for p in page_problems(page, "[data-testid=stMain]")]
                    if shots:
                        SHOTS.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(SHOTS / f"{name}-{model}.png"))
                print(f"{name}: {time.monotonic() - t0:.1f} s", flush=True)
        finally:
            browser.close()
    return problems, outside


@pytest.fixture(scope="module")
def env(quickstart_run: dict) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")},
            "WORKBENCH_STORE": str(quickstart_run["store"]), "OMP_NUM_THREADS": "1"}


def test_every_page_for_every_model_started_by_hand(quickstart_run, env, tmp_path):
    """The manual start of apps/README.md, without any telemetry flag."""
    port = free_port()
    proc = start_streamlit([sys.executable, "-m", "streamlit", "run", "apps/dashboard.py",
                            "--server.port", str(port)], env, port, str(tmp_path / "st.log"), cwd=str(ROOT))
    try:
        problems, outside = _browse(f"http://127.0.0.1:{port}", quickstart_run, _pages(), quickstart_run["models"],
                                    shots=True)
    finally:
        stop(proc)
    assert not outside, f"requests left the machine: {sorted(set(outside))}"
    assert not problems, "\n".join(problems)


def test_workbench_ui_makes_only_loopback_requests(quickstart_run, env, tmp_path):
    """`workbench ui` from another directory (the installed package, its shipped config)."""
    sync_playwright_or_skip()
    port = free_port()
    proc = start_streamlit([sys.executable, "-m", "workbench", "--store", str(quickstart_run["store"]), "ui",
                            "--port", str(port)], env, port, str(tmp_path / "ui.log"), cwd=str(tmp_path))
    try:
        problems, outside = _browse(f"http://127.0.0.1:{port}", quickstart_run, _pages()[:3],
                                    quickstart_run["models"][:1], shots=False)
    finally:
        stop(proc)
    assert not outside, f"requests left the machine: {sorted(set(outside))}"
    assert not problems, "\n".join(problems)


def test_unknown_and_ambiguous_run_links_name_the_candidates(quickstart_run, env, tmp_path):
    sync_playwright = sync_playwright_or_skip()
    port = free_port()
    proc = start_streamlit([sys.executable, "-m", "streamlit", "run", "apps/dashboard.py", "--server.port", str(port)],
                           env, port, str(tmp_path / "st.log"), cwd=str(ROOT))
    run_id = quickstart_run["run_id"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/?page=metrics&run={run_id[:-3]}zzz", wait_until="load")
                settle(page)
                text = page.inner_text("[data-testid=stMain]")
            finally:
                browser.close()
    finally:
        stop(proc)
    assert "matches no run in this store" in text and run_id in text
    assert "Headline" not in text  # another run is not shown silently


def test_a_plugin_suite_gets_a_dashboard_page(tmp_path):
    """The example plug-in (tests/plugins), installed by entry point only, runs in a plan and
    gets its own page: its metrics and its `figures()`, with no dashboard code for it."""
    sync_playwright = sync_playwright_or_skip()
    sys.path.insert(0, str(ROOT / "tests" / "plugins"))
    from example_plugin import NAME, installed

    from workbench.apps.views import suite_page
    from workbench.config import build_plan
    from workbench.runner import run_plan
    from workbench.store import Store

    plan = {"run": {"name": "plugin-page", "seed": 0, "device": "cpu", "out": str(tmp_path / "reports"),
                    "progress": False, "cache": str(tmp_path / "cache"), "store": str(tmp_path / "store.sqlite"),
                    "suites": [NAME]},
            "models": [{"name": "digits_mlp", "arch": "mlp", "dataset": "digits", "train": {"epochs": 2}}],
            "suites": {NAME: {"n_samples": 120, "n_boot": 50}}}
    with installed(tmp_path / "plugin") as env:
        assert NAME in suite_page.generic_suites()
        run_plan(build_plan(plan), store=Store(tmp_path / "store.sqlite"), log=lambda m: None)
        port = free_port()
        env = {**env, "WORKBENCH_STORE": str(tmp_path / "store.sqlite")}
        proc = start_streamlit([sys.executable, "-m", "streamlit", "run", "apps/dashboard.py",
                                "--server.port", str(port)], env, port, str(tmp_path / "st.log"), cwd=str(ROOT))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.goto(f"http://127.0.0.1:{port}/?page={suite_page.url_path(NAME)}", wait_until="load")
                    settle(page)
                    heading = page.locator("h1").first.inner_text()
                    n_plots = page.locator(".js-plotly-plot").count()
                    n_tables = page.locator("[data-testid=stDataFrame]").count()
                    problems = page_problems(page, "[data-testid=stMain]")
                    nav = page.locator("[data-testid=stSidebarNavLink]").all_inner_texts()
                    text = page.inner_text("[data-testid=stMain]")
                finally:
                    browser.close()
        finally:
            stop(proc)
    assert heading == suite_page.title(NAME) and suite_page.title(NAME) in [t.strip() for t in nav], (heading, " / ".join(nav))
    assert n_plots >= 1 and n_tables >= 1, (n_plots, n_tables, text)  # its figures() and its metrics
    assert not problems, problems


def test_the_page_checks_catch_what_they_look_for():
    """page_problems is what the tests above rely on: it must see each defect it names."""
    sync_playwright = sync_playwright_or_skip()
    html = """<div data-testid="stAlertContentError">boom</div><p>value None here</p><p>score nan</p>
              <p>Nonetheless fine, nano fine, NaNny fine</p><div class="js-plotly-plot" id="empty"></div>"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.set_content(html)
            page.evaluate("document.getElementById('empty').data = [{type: 'scatter', x: [], y: []}]")
            found = page_problems(page)
        finally:
            browser.close()
    kinds = sorted(f.split(":")[0].split(" '")[0] for f in found)
    assert kinds == ["empty figure", "error box", "text", "text"], found
