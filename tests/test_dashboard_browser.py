"""The dashboard in a real headless Chromium: every page renders its plots, the
per-example explorer reacts to a click on a chart point and to its number box, nothing
is fetched from outside 127.0.0.1, no console error, and a `<script>` class name in the
fixture run never runs (no dialog opens). Screenshots land in test-artifacts/dashboard/.

Needs Debian's chromium (/usr/bin/chromium; `make browser` installs it) and the
`playwright` Python package; never `playwright install` (it downloads a browser).
Skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from workbench.apps.demo import EVIL, write_demo_store

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
from tests.helpers import CHROMIUM, CHROMIUM_FLAGS as FLAGS, sync_playwright_or_skip
SHOTS = ROOT / "test-artifacts" / "dashboard"
# page -> least number of plotly charts it draws for run demo-a (model img_cnn)
MIN_PLOTS = {"runs": 0, "overview": 0, "metrics": 2, "robustness": 4, "uncertainty": 4, "efficiency": 4,
             "explain": 3, "compare": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    sync_playwright_or_skip()
    store = write_demo_store(tmp_path_factory.mktemp("browser-store"), n_examples=60, n_explained=8)["store"]
    port = _free_port()
    env = {**os.environ, "WORKBENCH_STORE": str(store), "OMP_NUM_THREADS": "1"}
    log = tmp_path_factory.mktemp("browser-log") / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "apps" / "dashboard.py"), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.1)
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {log.read_text()[-2000:]}")
        else:
            pytest.fail(f"streamlit did not answer on {url}: {log.read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _settle(page, timeout_s: float = 90.0) -> None:
    """Wait until Streamlit has finished the script run (and drawn its plots)."""
    page.wait_for_timeout(300)
    deadline = time.monotonic() + timeout_s
    ready = "[data-testid=stApp][data-test-connection-state=CONNECTED][data-test-script-state=notRunning]"
    while time.monotonic() < deadline:
        if page.locator(ready).count() and not page.locator("[data-testid=stSkeleton]").count():
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError("the Streamlit script did not finish in time")
    page.wait_for_timeout(400)


def _wait_url(page, fragment: str, timeout_s: float = 30.0) -> None:
    """Wait for a rerun triggered by a click/typing to reach the URL (query params)."""
    deadline = time.monotonic() + timeout_s
    while fragment not in page.url and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    _settle(page)


def _plots(page, at_least: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = page.locator(".js-plotly-plot .main-svg").count() and page.locator(".js-plotly-plot").count()
        if n >= at_least:
            return n
        page.wait_for_timeout(100)
    return page.locator(".js-plotly-plot").count()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    h = page.evaluate("(document.querySelector('[data-testid=stMain]') || document.body).scrollHeight")
    page.set_viewport_size({"width": 1400, "height": int(min(max(h, 800), 12000))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})


def test_dashboard_in_chromium(server):
    sync_playwright = sync_playwright_or_skip()
    blocked, console_errors, page_errors, dialogs = [], [], [], []

    def route(r):
        if r.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.route("**/*", route)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            counts = {}
            t0 = time.monotonic()
            # one deep link loads the app; the other pages are reached through the sidebar
            page.goto(f"{server}/?page=runs&run=demo-a&model=img_cnn&other=demo-b", wait_until="load")
            for name, least in MIN_PLOTS.items():
                if name != "runs":
                    page.locator("[data-testid=stSidebarNavLink]", has_text=
                                 {"compare": "Compare"}.get(name, name.capitalize())).first.click()
                _settle(page)
                counts[name] = _plots(page, least)
                assert counts[name] >= least, (name, counts[name])
                assert page.locator("h1").first.inner_text().startswith(
                    {"compare": "Compare"}.get(name, name.capitalize())), name
                assert "page=" + name in page.url and "run=demo-a" in page.url, page.url
                assert not page.locator("[data-testid=stException]").count(), name
                if name == "robustness":  # a run note carries a <script> class name: shown as text, never run
                    assert EVIL in page.inner_text("body")
                    assert not page.evaluate("Array.from(document.scripts).some(s => s.text.includes('alert(1)'))")
                _shot(page, name)
                print(f"{name}: {counts[name]} plots, {time.monotonic() - t0:.1f} s", flush=True)

            # the per-example explorer: hover a point of the picker to read its index, click it
            page.goto(f"{server}/?page=explain&run=demo-a&model=img_cnn&example=0", wait_until="load")
            _settle(page)
            _plots(page, 3)
            picker = page.locator(".js-plotly-plot").first
            point = picker.locator(".scatterlayer .trace").nth(1).locator("path.point").nth(2)  # a "wrong" example
            point.scroll_into_view_if_needed()
            bb = point.bounding_box()
            cx, cy = bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2
            page.mouse.move(cx, cy)
            page.wait_for_timeout(300)
            hover = page.locator(".hoverlayer .hovertext tspan.line").first.text_content() or ""
            clicked = int(re.search(r"example (\d+)", hover).group(1))
            page.mouse.click(cx, cy)
            _wait_url(page, f"example={clicked}")
            assert f"example={clicked}" in page.url, (clicked, page.url)
            box = page.get_by_label("Test example")
            assert box.input_value() == str(clicked)
            star = page.evaluate("() => { const gd = document.querySelector('.js-plotly-plot');"
                                 " const t = (gd._fullData || []).find(d => d.name === 'selected');"
                                 " return t ? Array.from(t.customdata) : null; }")
            assert star == [clicked]
            stored = clicked < 8
            assert (page.locator(".js-plotly-plot").count() >= 3) == stored
            _shot(page, "explain-clicked")
            # type an index with stored attributions: the attribution maps come back
            box.fill("5")
            box.press("Enter")
            _wait_url(page, "example=5")
            assert "example=5" in page.url
            assert _plots(page, 3) >= 3
            titles = page.evaluate("() => Array.from(document.querySelectorAll('.gtitle, .annotation-text'))"
                                   ".map(e => e.textContent || '')")
            assert {"saliency", "integrated_gradients", "occlusion"} <= {t.strip() for t in titles}
            # the token model: attention heads grid and rollout
            page.goto(f"{server}/?page=explain&run=demo-a&model=tok_tr&example=1", wait_until="load")
            _settle(page)
            assert _plots(page, 4) >= 4
            _shot(page, "explain-tokens")
        finally:
            browser.close()

    assert not blocked, f"non-local requests: {blocked}"
    assert not dialogs, f"a dialog opened (script ran?): {dialogs}"
    assert not page_errors, page_errors
    assert not console_errors, console_errors
