"""Install the example plug-in (tests/plugins/wb_example_suite) the way pip would, as far
as the workbench can tell: a `.dist-info` folder whose entry_points.txt is written from the
plug-in's own pyproject.toml, in a temporary site directory, plus the plug-in's source on
the path. Nothing in the workbench is edited or told about it.

    with installed(tmp_path) as env:   # env: {"PYTHONPATH": ...} for subprocesses
        ...                            # SUITES lists "example_margin" here and in them

The plug-in's module: `wb_example_suite.suite` (class `MarginSuite`, suite name
"example_margin"), source in tests/plugins/wb_example_suite/wb_example_suite/suite.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PROJECT = Path(__file__).resolve().parent / "wb_example_suite"
NAME = "example_margin"


def write_dist_info(site: Path) -> Path:
    """Write `<dist>-<version>.dist-info` (METADATA, entry_points.txt) under `site`."""
    meta = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    dist = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    lines = []
    for group, eps in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
        lines.append("")
    (dist / "entry_points.txt").write_text("\n".join(lines))
    return dist


@contextmanager
def installed(tmp: Path) -> Iterator[dict[str, str]]:
    """The plug-in installed for this process (sys.path, the SUITES registry rescanned)
    and for subprocesses started with the returned environment; removed afterwards."""
    from workbench.registry import SUITES

    site = Path(tmp) / "site"
    write_dist_info(site)
    paths = [str(site), str(PROJECT)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    sys.path[:0] = paths
    SUITES.refresh()
    try:
        yield env
    finally:
        for p in paths:
            while p in sys.path:
                sys.path.remove(p)
        for mod in [m for m in sys.modules if m == "wb_example_suite" or m.startswith("wb_example_suite.")]:
            del sys.modules[mod]
        SUITES.refresh()
