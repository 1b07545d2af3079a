"""A third-party suite gets everything a built-in suite gets, with no edit to the core.

The example plug-in (tests/plugins/wb_example_suite: its own pyproject.toml declaring the
"workbench.suites" entry point) is installed by entry point for this test (see
tests/plugins/example_plugin.py), then: it is listed by `workbench list suites` (a
subprocess), runs in a plan, reaches the Markdown and HTML headline and the HTML figures,
a gate rule with `significant` tests it on its per-example data (the `per_example` hook),
it passes the contract checks, and its shards combine to its unsharded result. (On Ray:
tests/test_ray_executor.py runs it too.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins"))
from example_plugin import NAME, installed  # noqa: E402

from workbench.config import build_plan  # noqa: E402
from workbench.gates import evaluate_gates  # noqa: E402
from workbench.registry import SUITES  # noqa: E402
from workbench.reporting import write_reports  # noqa: E402
from workbench.reporting.markdown import headline_rows, summary_markdown  # noqa: E402
from workbench.runner import run_plan  # noqa: E402
from workbench.store import Store  # noqa: E402

QUIET = lambda m: None  # noqa: E731


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    with installed(tmp_path_factory.mktemp("plugin")) as env:
        yield env


def _plan(root: Path, epochs: int) -> dict:
    return {
        "run": {"name": f"plugin-{epochs}", "seed": 0, "device": "cpu", "out": str(root / "reports"),
                "progress": False, "cache": str(root / "cache"), "store": str(root / "store.sqlite"),
                "suites": ["metrics", NAME]},
        "models": [{"name": "digits_mlp", "arch": "mlp", "dataset": "digits", "train": {"epochs": epochs}}],
        "suites": {"metrics": {"n_boot": 50}, NAME: {"n_samples": 120, "n_boot": 50}},
    }


def test_not_registered_without_the_plugin():
    assert NAME not in SUITES.names()  # so the tests below do see the entry point at work


def test_listed_by_the_cli(plugin):
    exe = shutil.which("workbench", path=str(Path(sys.executable).parent))
    out = subprocess.run([exe, "list", "suites"], env=plugin, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith(NAME))
    assert "[classification]" in line and "top-2 accuracy" in line
    assert NAME in SUITES.names() and SUITES.get(NAME).__module__ == "wb_example_suite.suite"


@pytest.mark.slow
def test_headline_gate_and_figures(plugin, tmp_path):
    root = tmp_path
    runs = {}
    for epochs in (1, 8):
        out = run_plan(build_plan(_plan(root, epochs)), store=Store(root / "store.sqlite"), log=QUIET)
        assert [r.status for r in out.run.results] == ["ok", "ok"], [r.reason for r in out.run.results]
        runs[epochs] = out
    cand, base = runs[1], runs[8]
    d = cand.run.to_dict()

    rows = [r for r in headline_rows(d) if r["suite"] == NAME]
    assert [r["metric"] for r in rows] == ["top2_accuracy", "margin"]
    res = next(r for r in cand.run.results if r.suite == NAME)
    assert rows[0]["value"] == res.metric("top2_accuracy").value
    md = summary_markdown(d)
    assert "top2\\_accuracy" in md and "margin" in md
    html = write_reports(cand.run, cand.run_dir, formats="html", out_dir=tmp_path / "html")["html"].read_text()
    assert "Logit margin per example" in html and "top2_accuracy" in html

    # per-example data through the plug-in's hook: the mean is the reported metric
    per = SUITES.get(NAME).per_example(res.to_dict(), cand.run_dir)
    assert per["margin"].mean() == pytest.approx(res.metric("margin").value, rel=1e-12)
    assert set(np.unique(per["top2_accuracy"])) <= {0.0, 1.0}

    bres = next(r for r in base.run.results if r.suite == NAME)
    assert res.metric("margin").value < bres.metric("margin").value  # the drop the test below tests
    o = evaluate_gates(d, [f"margin{{suite={NAME}}} max_drop 0 significant",
                           f"top2_accuracy{{suite={NAME}}} max_drop 1 significant"],
                       baseline=base.run, run_dir=cand.run_dir, baseline_dir=base.run_dir)
    margin, top2 = o.results
    assert margin.test == "bootstrap" and margin.ci is not None and margin.status in ("pass", "fail"), margin.message
    assert margin.status == ("fail" if margin.ci[0] > 0 else "pass")
    assert top2.status == "pass"  # a drop of at most 1 always passes, without a test
    # with the hook's per-example data missing, the rule says so instead of passing
    (cand.run_dir / res.artifacts["per_example"]).unlink()
    o = evaluate_gates(d, [f"margin{{suite={NAME}}} max_drop 0 significant"], baseline=base.run,
                       run_dir=cand.run_dir, baseline_dir=base.run_dir)
    assert o.results[0].status == "error" and "no per-example data" in o.results[0].message


@pytest.mark.slow
def test_contract_and_exact_shards(plugin, tmp_path):
    """The conformance checks of tests/test_suite_contract.py, on the plug-in."""
    import test_suite_contract as C
    import torch

    from workbench.config import ModelSpec, Plan, RunSettings
    from workbench.runner import build_handle, load_plan_dataset
    from workbench.torch_utils import ModuleState

    data = load_plan_dataset(Plan(run=RunSettings(), models=[]), "digits")
    spec = ModelSpec(name="cnn-digits", dataset="digits", arch="cnn", options={}, train={"epochs": 1})
    handle = build_handle(spec, data, device=torch.device("cpu"), cache_dir=tmp_path / "cache", run_seed=0,
                          log=QUIET)
    before = ModuleState.capture(handle.module)
    res = C._suite(NAME).run(handle, data, C._ctx(NAME, handle, data, tmp_path / "run"))
    assert before.diff(handle.module) == []
    assert res.status == "ok" and res.metric("margin").n == 32  # max_samples of the contract context
    C._check_hooks(NAME, res, tmp_path / "run")
    C._check_sharding(NAME, res, tmp_path / "run", handle, data, tmp_path)
    # and by hand: every example's margin is the true logit minus the best other one
    with torch.no_grad():
        logits = handle.module(data.test.x[:32]).double()
    y = data.test.y[:32].long()
    others = logits.clone()
    others[torch.arange(32), y] = -torch.inf
    expected = logits[torch.arange(32), y] - others.max(dim=1).values
    per = SUITES.get(NAME).per_example(json.loads(json.dumps(res.to_dict())), tmp_path / "run")
    np.testing.assert_allclose(per["margin"], expected.numpy(), rtol=1e-5, atol=1e-5)


def test_readme_guide_describes_this_plugin():
    """README's "Adding a suite" shows the example plug-in: the same entry point as its
    pyproject.toml, and every hook the guide overrides is overridden by the tested plug-in."""
    import re

    from example_plugin import PROJECT

    from workbench.suite import Suite

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    guide = readme[readme.index("## Adding a suite"):readme.index("## Reports and CI gating")]
    declared = (PROJECT / "pyproject.toml").read_text()
    entry = re.search(r'^example_margin = "([\w.:]+)"', declared, re.M).group(1)
    assert f'example_margin = "{entry}"' in guide
    module, _, attr = entry.partition(":")
    sys.path.insert(0, str(PROJECT))
    try:
        import importlib

        cls = getattr(importlib.import_module(module), attr)
    finally:
        sys.path.remove(str(PROJECT))
        for name in [m for m in sys.modules if m.split(".")[0] == "wb_example_suite"]:
            del sys.modules[name]
    shown = set(re.findall(r"^    def (\w+)\(", guide, re.M)) | set(re.findall(r"^    (\w+) = ", guide, re.M))
    hooks = {"headline_metrics", "per_example", "figures", "shards", "run_shard", "combine", "run"}
    assert hooks <= shown, hooks - shown
    for hook in hooks:
        assert getattr(cls, hook) is not getattr(Suite, hook), f"the plug-in does not override {hook}"
