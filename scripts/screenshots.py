"""Screenshots for the README, from a REAL run: the dashboard's main pages and report.html.

    python scripts/screenshots.py                       # runs plans/quickstart.toml first (~1 min)
    python scripts/screenshots.py --store PATH          # the newest run of an existing store

Writes docs/screenshots/<page>.png (1280 px wide, 256-colour PNG, each well under 300 KB).
Needs Debian's chromium (`make browser`) and the `playwright` Python package; never
`playwright install`. Nothing leaves the machine: non-loopback requests are refused.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_FLAGS,
    LOOPBACK,
    free_port,
    settle,
    start_streamlit,
    stop,
)

OUT = ROOT / "docs" / "screenshots"
WIDTH, HEIGHT = 1280, 1000
# (file name, page, model, height in CSS px): the pages a new reader wants to see.
SHOTS = (("overview", "overview", None, 1000), ("metrics", "metrics", "digits_cnn", 1100),
         ("robustness", "robustness", "digits_cnn", 1300), ("uncertainty", "uncertainty", "digits_cnn", 1300),
         ("efficiency", "efficiency", "digits_cnn", 1100), ("explain", "explain", "tokens_transformer", 1400))


def _png(raw: bytes, path: Path) -> int:
    """Save a screenshot as a 256-colour PNG (text and flat charts survive it unchanged)."""
    from PIL import Image

    img = Image.open(io.BytesIO(raw)).convert("RGB")
    img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    return path.stat().st_size


def _run_quickstart(root: Path) -> Path:
    store = root / "store.sqlite"
    env = {**os.environ, "WORKBENCH_STORE": str(store), "WORKBENCH_CACHE": str(root / "cache")}
    subprocess.run([sys.executable, "-m", "workbench", "run", str(ROOT / "plans" / "quickstart.toml"),
                    "--out", str(root / "reports"), "--quiet"], env=env, check=False)
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="an existing store (default: run the quickstart into a temporary one)")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from workbench.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="screenshots-"))
    store = Path(a.store) if a.store else _run_quickstart(tmp)
    run_id = Store(str(store)).runs(limit=1)[0]["run_id"]
    run_dir = Path(Store(str(store)).run_info(run_id)["run_dir"])
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "WORKBENCH_STORE": str(store)}
    proc = start_streamlit([sys.executable, "-m", "workbench", "ui", "--port", str(port)], env, port,
                           str(tmp / "ui.log"))

    def route(r):  # type: ignore[no-untyped-def]
        (r.continue_() if r.request.url.startswith(LOOPBACK) or r.request.url.startswith("file://") else r.abort())

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.route("**/*", route)
            for name, view, model, height in SHOTS:
                q = f"?page={view}&run={run_id}" + (f"&model={model}" if model else "")
                page.set_viewport_size({"width": WIDTH, "height": height})
                page.goto(f"http://127.0.0.1:{port}/{q}", wait_until="load")
                settle(page)
                page.wait_for_timeout(800)  # plotly's transitions
                size = _png(page.screenshot(), OUT / f"{name}.png")
                print(f"{name}: {size / 1000:.0f} kB")
            from workbench.reporting import load_results, write_reports

            run, rdir = load_results(run_dir / "results.json")
            html = write_reports(run, rdir, formats="html", out_dir=tmp / "report")["html"]
            page.set_viewport_size({"width": WIDTH, "height": 1300})
            page.goto(html.resolve().as_uri(), wait_until="load")
            while page.get_attribute("body", "data-plotly") != "ready":
                page.wait_for_timeout(50)
            page.locator("section.result").nth(4).scroll_into_view_if_needed()  # a suite with figures
            page.wait_for_timeout(1500)
            size = _png(page.screenshot(), OUT / "report.png")
            print(f"report: {size / 1000:.0f} kB")
            browser.close()
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
