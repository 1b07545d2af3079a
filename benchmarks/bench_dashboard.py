"""Dashboard page render time at scale: a store with 1,000 runs plus two runs whose
models have 10,000 test examples each (apps/demo.py), every page rendered through
`streamlit.testing.v1.AppTest` (the script run: store reads, artifact reads, figure
building and serialisation; not the browser's drawing). Then the HTML report of a real
run in headless Chromium (--report; default: run plans/quickstart.toml once).

    python benchmarks/bench_dashboard.py                  # 1,000 runs, 10k examples
    python benchmarks/bench_dashboard.py --runs 200 --examples 2000 --repeats 3
    python benchmarks/bench_dashboard.py --report reports/<run_id>/results.json --no-pages

The report is timed as a reader meets it (median over --repeats fresh tabs): "open" is
from navigation until plotly.js is unpacked and every figure on the first screen is
drawn; "jump" is, for each result section reached from the table of contents, the time
until every figure on that screen is drawn (the slowest section is printed); "all drawn"
is until the figures off screen, drawn one at a time while the browser is idle, are all
drawn. Goals: open < 3 s, every jump < 1 s, file < 4 MB.

Prints, per page, the first (cold: caches empty, modules imported on first use) and the
median warm render time (caches filled, a new session as for a new browser tab), and the
number of plotly charts and the largest chart's points, against the goals: every page
warm < 1.5 s, cold < 3 s on 2 cores (the machine's load average is printed: on a shared,
overloaded box the times are inflated and say little).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (page, model): the regression model's metrics page draws its 10k-point scatter
WARM_GOAL_S, COLD_GOAL_S = 1.5, 3.0
PAGES = (("runs", "img_cnn"), ("overview", "img_cnn"), ("metrics", "img_cnn"), ("metrics", "reg_mlp"),
         ("robustness", "img_cnn"), ("uncertainty", "img_cnn"), ("efficiency", "img_cnn"), ("explain", "img_cnn"),
         ("explain", "tok_tr"), ("compare", "img_cnn"))


def _points(spec: dict) -> int:
    best = 0
    for t in spec.get("data", []):
        x = t.get("x")
        n = 0
        if isinstance(x, dict) and "bdata" in x:
            import base64

            import numpy as np

            n = len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize
        elif isinstance(x, list):
            n = len(x)
        best = max(best, n)
    return best


def render(page: str, model: str, timeout: float = 300) -> tuple[float, int, int, list[str]]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "apps" / "dashboard.py"), default_timeout=timeout)
    at.query_params.update(page=page, run="demo-a", other="demo-b", model=model)
    t0 = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t0
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    kinds = sorted({t.get("type", "?") for s in specs for t in s.get("data", []) if _points({"data": [t]}) > 2000})
    if at.exception:
        raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")
    return dt, len(specs), max((_points(s) for s in specs), default=0), kinds


REPORT_OPEN_GOAL_S, REPORT_JUMP_GOAL_S, REPORT_SIZE_GOAL = 3.0, 1.0, 4_000_000
VISIBLE_DRAWN_JS = """() => Array.from(document.querySelectorAll('div.fig')).every(d => {
  const r = d.getBoundingClientRect();
  return r.bottom < 0 || r.top > window.innerHeight || d.hasAttribute('data-drawn'); })"""


def _wait(page, check, timeout_s: float = 60.0) -> float:
    """Seconds until `check()` holds, polled every 10 ms."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("the report did not finish drawing in time")
        page.wait_for_timeout(10)
    return time.perf_counter() - t0


def time_report(html: Path, repeats: int = 3) -> dict:
    """{"open_s", "all_drawn_s", "jump_s" {anchor: s}, "figures", "size"} of report.html in
    headless Chromium (/usr/bin/chromium, network blocked), medians over `repeats` tabs."""
    from playwright.sync_api import sync_playwright

    url = html.resolve().as_uri()
    opens, alls, jumps = [], [], {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        try:
            for _ in range(repeats):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.route("**/*", lambda r: r.continue_() if r.request.url == url or r.request.url.startswith(
                    ("data:", "blob:")) else r.abort())
                t0 = time.perf_counter()
                page.goto(url, wait_until="load")
                _wait(page, lambda: page.get_attribute("body", "data-plotly") == "ready"
                      and page.evaluate(VISIBLE_DRAWN_JS))
                opens.append(time.perf_counter() - t0)
                _wait(page, lambda: page.get_attribute("body", "data-figures") == "drawn")
                alls.append(time.perf_counter() - t0)
                page.close()
                # jumps: a fresh tab per run, each section reached from the table of contents
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(url, wait_until="load")
                _wait(page, lambda: page.get_attribute("body", "data-plotly") == "ready")
                anchors = page.evaluate("Array.from(document.querySelectorAll('section.result')).map(s => s.id)")
                for a in reversed(anchors):  # from the bottom: ahead of the figures drawing in the background
                    t1 = time.perf_counter()
                    page.evaluate(f"document.getElementById('{a}').scrollIntoView()")
                    jumps.setdefault(a, []).append(time.perf_counter() - t1 + _wait(page, lambda: page.evaluate(
                        VISIBLE_DRAWN_JS)))
                n = page.locator("div.fig").count()
                page.close()
        finally:
            browser.close()
    return {"open_s": statistics.median(opens), "all_drawn_s": statistics.median(alls),
            "jump_s": {a: statistics.median(v) for a, v in jumps.items()}, "figures": n, "size": html.stat().st_size}


def report_html(spec: str | None) -> Path:
    """report.html to time: written fresh from a run's results.json (or an existing
    report.html), or from a new run of plans/quickstart.toml in a temporary directory."""
    from workbench.reporting import load_results, write_reports

    if spec and spec.endswith(".html"):
        return Path(spec)
    if not spec:
        import subprocess

        tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
        env = {**os.environ, "WORKBENCH_STORE": str(tmp / "store.sqlite"), "WORKBENCH_CACHE": str(tmp / "cache")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "workbench", "run", str(ROOT / "plans" / "quickstart.toml"),
                        "--out", str(tmp / "reports"), "--quiet"], env=env, cwd=tmp, check=False)
        spec = str(next((tmp / "reports").glob("*/results.json")))
        print(f"quickstart run for the report: {time.perf_counter() - t0:.0f} s")
    run, run_dir = load_results(spec)
    return write_reports(run, run_dir, formats="html", out_dir=tempfile.mkdtemp(prefix="bench-report-html-"))["html"]


def bench_report(spec: str | None, repeats: int) -> None:
    html = report_html(spec)
    r = time_report(html, repeats)
    slow = max(r["jump_s"].items(), key=lambda kv: kv[1]) if r["jump_s"] else ("-", 0.0)
    ok = (r["open_s"] < REPORT_OPEN_GOAL_S and slow[1] < REPORT_JUMP_GOAL_S and r["size"] < REPORT_SIZE_GOAL)
    print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"report.html: {r['size'] / 1e6:.2f} MB, {r['figures']} figures, {len(r['jump_s'])} sections; "
          f"open (first screen drawn) {r['open_s']:.2f} s; slowest section jump {slow[1]:.2f} s ({slow[0]}), "
          f"median jump {statistics.median(r['jump_s'].values() or [0.0]):.2f} s; every figure drawn (in the "
          f"background) {r['all_drawn_s']:.2f} s; goals (open < {REPORT_OPEN_GOAL_S:g} s, jump < "
          f"{REPORT_JUMP_GOAL_S:g} s, < {REPORT_SIZE_GOAL / 1e6:g} MB): {'met' if ok else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="extra light runs in the store")
    ap.add_argument("--examples", type=int, default=10_000, help="test examples of the two big runs")
    ap.add_argument("--explained", type=int, default=64, help="examples with stored attributions")
    ap.add_argument("--repeats", type=int, default=3, help="warm renders per page")
    ap.add_argument("--root", default=None, help="where to write the store (default: a temporary directory)")
    ap.add_argument("--report", default=None, help="results.json or report.html of a run (default: run the quickstart)")
    ap.add_argument("--no-report", action="store_true", help="skip the HTML report timing")
    ap.add_argument("--no-pages", action="store_true", help="skip the dashboard pages")
    a = ap.parse_args()

    if not a.no_pages:
        bench_pages(a)
    if not a.no_report:
        bench_report(a.report, a.repeats)


def bench_pages(a: argparse.Namespace) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    import streamlit as st

    logging.disable(logging.WARNING)  # AppTest outside a server warns "no runtime" on every run

    from workbench.apps.demo import write_demo_store

    root = Path(a.root or tempfile.mkdtemp(prefix="bench-dashboard-"))
    t0 = time.perf_counter()
    out = write_demo_store(root, n_examples=a.examples, n_explained=a.explained, extra_runs=a.runs)
    print(f"store: {out['store']} ({a.runs + 2} runs, {a.examples} examples per big model) "
          f"written in {time.perf_counter() - t0:.1f} s")
    os.environ["WORKBENCH_STORE"] = str(out["store"])

    print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'page (model)':<24} {'cold s':>8} {'warm s (median)':>16} {'charts':>7} {'max points':>11}  "
          f"goals (cold < {COLD_GOAL_S:g} s, warm < {WARM_GOAL_S:g} s)  large traces")
    total_warm = 0.0
    missed = []
    for page, model in PAGES:
        st.cache_data.clear()
        cold, n_charts, pts, kinds = render(page, model)
        warm = [render(page, model)[0] for _ in range(a.repeats)]
        med = statistics.median(warm)
        total_warm += med
        label = f"{page} ({model})"
        ok = cold < COLD_GOAL_S and med < WARM_GOAL_S
        if not ok:
            missed.append(label)
        print(f"{label:<24} {cold:8.2f} {med:16.2f} {n_charts:7d} {pts:11d}  {'met' if ok else 'MISSED':<38}"
              f"{', '.join(kinds) or '-'}")
    print(f"sum of warm medians: {total_warm:.2f} s; goals missed: {', '.join(missed) or 'none'}")


if __name__ == "__main__":
    main()
