"""Tiny seeded datasets and models for core tests (independent of the built-ins)."""

from __future__ import annotations

import torch
from torch import nn

from workbench.data.base import Dataset, Split


def blobs(n: int = 240, features: int = 4, classes: int = 3, seed: int = 0) -> Dataset:
    """Well-separated Gaussian blobs: any reasonable classifier reaches ~100%."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 4
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, features, generator=g)
    parts = [slice(0, n * 6 // 10), slice(n * 6 // 10, n * 8 // 10), slice(n * 8 // 10, n)]
    splits = [Split(x[p].float(), y[p].long()) for p in parts]
    return Dataset(name="blobs", modality="tabular", task="classification", train=splits[0], val=splits[1],
                   test=splits[2], num_classes=classes, class_names=tuple(f"c{i}" for i in range(classes)),
                   seed=seed)


class TinyMLP(nn.Module):
    output_kind = "logits"

    def __init__(self, features: int = 4, classes: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, K)
        return self.net(x)


def make_tiny_mlp(features: int = 4, classes: int = 3) -> nn.Module:
    """A user factory as a plan would name it: tests.helpers:make_tiny_mlp."""
    return TinyMLP(features, classes)


def make_blobs(seed: int = 0) -> Dataset:
    return blobs(seed=seed)


# Real-browser tests: Debian's chromium driven by Python playwright (never `playwright install`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def sync_playwright_or_skip():  # type: ignore[no-untyped-def]
    """playwright's `sync_playwright`, or a pytest skip saying what is missing."""
    import shutil
    from pathlib import Path

    import pytest

    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} not found: run `make browser` (apt-get install -y chromium fonts-liberation)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python package `playwright` not installed: `pip install playwright` (no `playwright install`)")
    return sync_playwright


# --------------------------------------------------------------------------- browser helpers
# Shared by the real-browser tests and scripts/screenshots.py.

LOOPBACK = ("http://127.0.0.1", "ws://127.0.0.1", "http://localhost", "ws://localhost", "data:", "blob:")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(cmd: list[str], env: dict[str, str], port: int, log_path: str, cwd: str | None = None):  # type: ignore[no-untyped-def]
    """Start a dashboard command and wait until it answers on 127.0.0.1:`port`; returns the
    process (terminate it when done). Raises RuntimeError with the log tail otherwise."""
    import subprocess
    import time
    import urllib.request

    out = open(log_path, "wb")  # noqa: SIM115 - closed with the process by the caller's terminate
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=1).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.terminate()
    from pathlib import Path

    raise RuntimeError(f"the dashboard did not start ({' '.join(cmd)}): {Path(log_path).read_text()[-2000:]}")


def stop(proc) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def settle(page, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until Streamlit has finished the script run and drawn its plots."""
    import time

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


# Text that means a value was lost on the way to the reader.
BAD_TEXT = r"(?<![\w.])(None|nan|NaN|undefined)(?![\w(])"

EMPTY_PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(gd => {
  const has = a => a && (a.length > 0 || (a.bdata && a.bdata.length > 0));
  const traces = gd.data || [];
  return !traces.some(t => t.visible !== false &&
    (has(t.x) || has(t.y) || has(t.z) || has(t.values) || has(t.r) || (t.cells && t.cells.values)));
}).map(gd => (gd.layout && gd.layout.title && gd.layout.title.text) || gd.id || '(untitled)')"""

PLOT_TEXT_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot svg text'))
  .map(t => t.textContent || '').filter(t => t.trim())"""


def page_problems(page, root: str = "body") -> list[str]:  # type: ignore[no-untyped-def]
    """What a reader should never see on a page: an exception or error/warning box,
    "None"/"nan" text (in the page or inside a plot), a figure with nothing drawn."""
    import re

    out = []
    for sel, what in (("[data-testid=stException]", "exception"), ("[data-testid=stAlertContentError]", "error box"),
                      ("[data-testid=stAlertContentWarning]", "warning box"), (".note", "report note")):
        for t in page.locator(sel).all_inner_texts():
            out.append(f"{what}: {t[:300]}")
    text = page.inner_text(root)
    for m in re.finditer(BAD_TEXT, text):
        out.append(f"text {m.group(0)!r} in …{text[max(0, m.start() - 80):m.end() + 40]!r}…")
    for t in page.evaluate(PLOT_TEXT_JS):
        if re.search(BAD_TEXT, t):
            out.append(f"plot text {t!r}")
    for title in page.evaluate(EMPTY_PLOTS_JS):
        out.append(f"empty figure {title!r}")
    return out
