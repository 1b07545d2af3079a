"""The core asks suites through their hooks and never names one: no module outside a
suite's own folder imports a registered suite's package, looks one up by a literal name,
or compares a suite name with a literal. (Headline metrics are checked to be emitted by
tests/test_suite_contract.py; reports and gates take them from the suites.)"""

from __future__ import annotations

import re
from pathlib import Path

from workbench.registry import SUITES

ROOT = Path(__file__).resolve().parents[1]

# Known exceptions, each with its reason; anything else that names a suite fails.
ALLOWED = {
    ("workbench/train.py", "robustness"): "training recipes (adversarial training) are registered by path in "
                                           "train.RECIPES, not yet through an entry-point group",
    ("workbench/train.py", "certify"): "the Gaussian-noise training recipe, registered by path in train.RECIPES",
    ("apps/compute.py", "explain"): "the dashboard's explain-now action runs the explain suite on demand",
}


def _pattern(names: list[str]) -> re.Pattern:
    alt = "|".join(map(re.escape, names))
    return re.compile(
        rf"""workbench\.suites\.(?P<a>{alt})\b"""              # importing a suite's package
        rf"""|SUITES\.get\(\s*["'](?P<b>{alt})["']"""           # looking one up by a literal name
        rf"""|suite\w*\s*==\s*["'](?P<c>{alt})["']"""           # suite == "robustness"
        rf"""|["'](?P<d>{alt})["']\s*==\s*\w*suite"""
    )


def test_no_core_module_names_a_suite():
    names = SUITES.names()
    assert {"metrics", "robustness", "explain"} <= set(names)
    pat = _pattern(names)
    found = []
    for top in ("workbench", "apps"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for m in pat.finditer(line):
                    name = next(g for g in m.groups() if g)
                    if (rel, name) not in ALLOWED:
                        found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "core modules name a suite (use the Suite hooks instead):\n" + "\n".join(found)


def test_the_check_can_fail():
    pat = _pattern(["metrics", "robustness"])
    for line in ('from workbench.suites.metrics.suite import MetricsSuite', 'SUITES.get("robustness")',
                 'if suite == "metrics":', 'if "robustness" == res_suite:'):
        assert pat.search(line), line
    assert not pat.search('res.get("metrics", [])') and not pat.search('"suites.robustness.eps"')
