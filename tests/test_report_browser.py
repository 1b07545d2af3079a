"""report.html in a real headless Chromium, opened from file:// with the network blocked:
every figure renders, nothing is fetched, no console error, no injected script runs.

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` Python package (never
`playwright install`: it downloads a browser). Skipped with a reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from workbench.gates import evaluate_gates
from workbench.records import MetricRecord, RunRecord, SuiteResult
from workbench.reporting import write_reports

from tests.helpers import CHROMIUM, CHROMIUM_FLAGS as FLAGS, sync_playwright_or_skip

# every figure that intersects the viewport has been drawn
VISIBLE_DRAWN_JS = """() => Array.from(document.querySelectorAll('div.fig')).every(d => {
  const r = d.getBoundingClientRect();
  return r.bottom < 0 || r.top > window.innerHeight || d.hasAttribute('data-drawn'); })"""
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"

pytestmark = pytest.mark.browser


class LinesSuite:
    """Figures from a saved artifact: one line chart per row, one heatmap."""

    @classmethod
    def figures(cls, result, run_dir):
        import plotly.graph_objects as go

        with np.load(Path(run_dir) / result["artifacts"]["curve"]) as z:
            x, ys = z["x"], z["y"]
        out = [(f"Line {i} {EVIL}", go.Figure(go.Scatter(x=x, y=y, name=EVIL)).update_layout(title=f"line {i} {EVIL}"))
               for i, y in enumerate(ys)]
        out.append(("Heatmap", go.Figure(go.Heatmap(z=np.outer(x, x)))))
        return out


class BrokenSuite:
    @classmethod
    def figures(cls, result, run_dir):
        raise ValueError("cannot draw")


def _run(run_dir: Path, n_lines: int) -> RunRecord:
    (run_dir / "artifacts").mkdir(parents=True)
    x = np.linspace(0, 1, 50)
    np.savez(run_dir / "artifacts/curve.npz", x=x, y=np.stack([np.sin(3 * k * x) for k in range(n_lines)]))
    results = (
        SuiteResult(suite="lines", model=f"cnn {EVIL}", dataset="digits", status="ok",
                    artifacts={"curve": "artifacts/curve.npz"},
                    metrics=(MetricRecord(name="accuracy", value=0.9, higher_is_better=True, n=100, ci=(0.83, 0.95),
                                          tags={"class": EVIL}),)),
        SuiteResult(suite="broken", model="mlp", dataset="wine", status="ok",
                    metrics=(MetricRecord.unavailable("accuracy", f"reason {EVIL}"),)),
        SuiteResult(suite="explain", model="mlp", dataset="wine", status="skipped", reason=EVIL),
    )
    run = RunRecord(run_id="browser", created_at="2026-11-22T10:00:00+00:00",
                    provenance={"seed": 0, "device": "cpu", "plan": {"run": {"name": EVIL}}}, results=results)
    (run_dir / "results.json").write_text(json.dumps(run.to_dict()))
    return run


def _wait_ready(page, timeout_s: float = 60.0) -> None:
    """Until plotly.js is unpacked (figures near the screen then draw)."""
    deadline = time.monotonic() + timeout_s
    while page.get_attribute("body", "data-plotly") != "ready":
        assert time.monotonic() < deadline, "plotly.js was not unpacked in time"
        page.wait_for_timeout(20)


def _draw_all(page) -> None:
    """Scroll through the whole page, as a reader would, so that every lazy figure draws."""
    _wait_ready(page)
    y, height = 0, page.evaluate("document.body.scrollHeight")
    while y < height:
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(30)
        y += 600
        height = page.evaluate("document.body.scrollHeight")
    deadline = time.monotonic() + 60
    while page.locator("div.fig:not([data-drawn])").count():
        assert time.monotonic() < deadline, "some figures never drew"
        page.wait_for_timeout(50)


def test_report_renders_offline_in_chromium(tmp_path):
    sync_playwright = sync_playwright_or_skip()
    n_lines = 3
    run = _run(tmp_path / "run", n_lines)
    outcome = evaluate_gates(run, ["accuracy{suite=lines} >= 0.95"])
    path = write_reports(run, tmp_path / "run", formats="html", gate_outcome=outcome,
                         suites={"lines": LinesSuite, "broken": BrokenSuite})["html"]
    n_figs = n_lines + 1
    url = path.resolve().as_uri()
    assert '<script type="application/json" id="wb-template">' in path.read_text()
    blocked, console_errors, page_errors, dialogs = [], [], [], []

    def route(r):
        if r.request.url == url or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.route("**/*", route)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url, wait_until="load")
            _draw_all(page)
            # Poll from Python: wait_for_function evaluates a string in the page, which the
            # report's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
            for _ in range(300):
                if page.locator(".js-plotly-plot").count() >= n_figs:
                    break
                page.wait_for_timeout(100)
            page.wait_for_timeout(300)
            n_plots = page.locator(".js-plotly-plot").count()
            n_svg = page.locator(".js-plotly-plot .main-svg").count()
            heights = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                    ".map(e => e.getBoundingClientRect().height)")
            titles = page.locator(".gtitle").all_text_contents()
            notes = page.locator(".note").all_text_contents()
            body = page.inner_text("body")
            n_scripts_run = page.evaluate("document.querySelectorAll('script').length")
        finally:
            browser.close()
    assert n_plots == n_figs
    assert n_svg >= n_figs
    assert min(heights) >= 300, f"figures collapsed to heights {heights}"
    assert sorted(t.split(" ")[0] + " " + t.split(" ")[1] for t in titles if t.startswith("line")) == [
        f"line {i}" for i in range(n_lines)]
    assert blocked == [], f"the report tried to fetch {blocked}"
    assert console_errors == [] and page_errors == [], (console_errors, page_errors)
    assert dialogs == [], "an injected script ran"
    assert any("Figures of suite 'broken' could not be drawn: ValueError: cannot draw" in n for n in notes)
    assert "cnn <script>alert(1)</script>" in body  # shown as text, not run
    # packed plotly.js, the template, the figure specs, the loader, the unpacked plotly.js: nothing injected
    assert n_scripts_run == 1 + 1 + n_figs + 1 + 1
    assert "FAIL" in body and "is not >= 0.95" in body


@pytest.mark.slow
def test_quickstart_report_opens_fast_small_and_clean(quickstart_run, tmp_path):
    """report.html of a REAL quickstart run: under 4 MB, open (plotly unpacked, every
    figure on the first screen drawn) in under 3 s, every figure drawn in the background
    without scrolling and when scrolled to, no "None"/"nan" text, no note, no empty
    figure, no request, no console error."""
    from tests.helpers import BAD_TEXT, EMPTY_PLOTS_JS, PLOT_TEXT_JS

    sync_playwright = sync_playwright_or_skip()
    from workbench.reporting import load_results

    run, run_dir = load_results(quickstart_run["run_dir"] / "results.json")
    path = write_reports(run, run_dir, formats="html", out_dir=tmp_path)["html"]
    size = path.stat().st_size
    assert size < 4_000_000, f"report.html weighs {size:,} bytes"
    url = path.resolve().as_uri()
    blocked, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.route("**/*", lambda r: r.continue_() if r.request.url == url or r.request.url.startswith(
                ("data:", "blob:")) else (blocked.append(r.request.url), r.abort()))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.monotonic()
            page.goto(url, wait_until="load")
            _wait_ready(page)
            while not page.evaluate(VISIBLE_DRAWN_JS):
                assert time.monotonic() - t0 < 60, "the first screen's figures never drew"
                page.wait_for_timeout(10)
            opened = time.monotonic() - t0
            while page.get_attribute("body", "data-figures") != "drawn":  # the rest, drawn while idle
                assert time.monotonic() - t0 < 120, "the figures off screen never drew"
                page.wait_for_timeout(20)
            all_drawn = time.monotonic() - t0
            assert page.locator("div.fig:not([data-drawn])").count() == 0
            _draw_all(page)
            n = page.locator("div.fig").count()
            body = page.inner_text("body")
            notes = page.locator(".note").all_inner_texts()
            empty = page.evaluate(EMPTY_PLOTS_JS)
            plot_text = [t for t in page.evaluate(PLOT_TEXT_JS) if re.search(BAD_TEXT, t)]
        finally:
            browser.close()
    print(f"report: {size / 1e6:.2f} MB, {n} figures, open (first screen drawn) in {opened:.2f} s, every figure "
          f"drawn in the background by {all_drawn:.2f} s")
    # A time limit means something only on a machine that is not overloaded (the CI runner,
    # a developer's laptop); on a shared box at load 10+ the number is printed, not judged.
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    if load < 1.5:
        assert opened < 3.0, f"the report took {opened:.2f} s to open with its first screen drawn"
    else:
        warnings.warn(f"load {load:.1f} per core: the report's open time ({opened:.2f} s) was not judged")
    assert n > 20 and not empty, empty
    assert not re.findall(BAD_TEXT, body), re.findall(r".{40}" + BAD_TEXT + r".{20}", body)[:5]
    assert not plot_text and not notes, (plot_text, notes)
    assert not blocked and not errors, (blocked, errors)
