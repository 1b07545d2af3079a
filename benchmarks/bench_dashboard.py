"""Dashboard page render time at scale: a store with 1,000 runs plus two runs whose
models have 10,000 test examples each (apps/demo.py), every page rendered through
`streamlit.testing.v1.AppTest` (the script run: store reads, artifact reads, figure
building and serialisation; not the browser's drawing).

    python benchmarks/bench_dashboard.py                  # 1,000 runs, 10k examples
    python benchmarks/bench_dashboard.py --runs 200 --examples 2000 --repeats 3

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="extra light runs in the store")
    ap.add_argument("--examples", type=int, default=10_000, help="test examples of the two big runs")
    ap.add_argument("--explained", type=int, default=64, help="examples with stored attributions")
    ap.add_argument("--repeats", type=int, default=3, help="warm renders per page")
    ap.add_argument("--root", default=None, help="where to write the store (default: a temporary directory)")
    a = ap.parse_args()

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
