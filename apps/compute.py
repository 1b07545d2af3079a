"""The only computation the dashboard does, and only when a user presses a button:
explain one test example now, with the explain suite's own code, on the run's model
rebuilt from its plan and loaded from the training cache.

Nothing is ever trained here: `find_cached_model` looks for the cache entry first and,
when it is missing, `explain_example` raises `RebuildError` with the reason (the page
shows it). No Streamlit import: tested directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError


class RebuildError(WorkbenchError, RuntimeError):
    """The run's model cannot be rebuilt here without training (or at all)."""


def _plan(info: Mapping[str, Any]) -> Any:
    from workbench.config import build_plan

    raw = (info.get("provenance") or {}).get("plan")
    if not raw:
        raise RebuildError("the run's provenance has no resolved plan, so its model cannot be rebuilt")
    return build_plan(json.loads(json.dumps(raw)), source=f"run {info.get('run_id')} provenance")


def cache_dirs(plan: Any, store_path: str | None) -> list[Path]:
    """Where the training cache may be: the plan's `cache`, $WORKBENCH_CACHE, `cache/`
    beside the store, `.workbench/cache` under the current directory (in that order)."""
    out: list[Path] = []
    for c in (plan.run.cache, os.environ.get("WORKBENCH_CACHE"),
              str(Path(store_path).parent / "cache") if store_path else None, ".workbench/cache"):
        if c and Path(c) not in out:
            out.append(Path(c))
    return out


def find_cached_model(plan: Any, spec: Any, data: Any, store_path: str | None) -> tuple[Path | None, str | None]:
    """(cache directory holding the trained weights, None) or (None, why not). A model
    that needs no training (a checkpoint, or a factory without `train`) needs no cache."""
    from workbench.train import TrainConfig, cache_key

    if spec.checkpoint:
        if Path(spec.checkpoint).is_file():
            return None, None
        return None, f"its checkpoint {spec.checkpoint} is not on this machine"
    if not (spec.arch or spec.train):
        return None, None
    train = dict(spec.train)
    train.setdefault("seed", plan.run.seed)
    cfg = TrainConfig.from_dict(train)
    if spec.arch:
        s = {"arch": spec.arch, "size": spec.size, "options": spec.options, "overrides": {}}
    else:
        s = {"factory": spec.factory, "options": spec.options, "overrides": {}}
    name = f"{s.get('arch', 'model')}-{cache_key(s, data, cfg)}.pt"
    dirs = cache_dirs(plan, store_path)
    for d in dirs:
        if (d / name).is_file():
            return d, None
    return None, (f"its trained weights ({name}) are in none of the training caches "
                  f"{', '.join(str(d) for d in dirs)}; the dashboard never trains")


def explain_example(info: Mapping[str, Any], result: Mapping[str, Any], index: int, *,
                    store_path: str | None = None) -> dict[str, Any]:
    """Run the explain suite on test example `index` alone, with the run's explain
    configuration (quality checks reduced to completeness), on the model loaded from the
    training cache. Returns {"examples": arrays of one example (keys as examples.npz),
    "meta", "quality", "metrics" (records as dicts), "seconds", "cache_dir"}.
    Raises RebuildError when the model cannot be rebuilt without training."""
    import torch

    from workbench.suites.explain.suite import ExplainSuite
    from workbench.runner import build_handle, load_plan_dataset
    from workbench.suite import RunContext

    from workbench.config import user_code_references

    t0 = time.perf_counter()
    refs = user_code_references((info.get("provenance") or {}).get("plan") or {})
    if refs:  # code is imported only from a plan the user hands over, never from the store
        raise RebuildError(
            "this run's plan names user code (" + "; ".join(refs) + "); the dashboard does not import code "
            "named in the store. Re-run the explain suite with your plan file instead."
        )
    plan = _plan(info)
    model = str(result["model"])
    try:
        spec = plan.model(model)
    except WorkbenchError as exc:
        raise RebuildError(str(exc)) from exc
    data = load_plan_dataset(plan, spec.dataset)
    if not 0 <= int(index) < len(data.test):
        raise RebuildError(f"Expected an example index in [0, {len(data.test) - 1}], got {index}.")
    cache_dir, reason = find_cached_model(plan, spec, data, store_path)
    if reason:
        raise RebuildError(f"Model {model!r} cannot be rebuilt here: {reason}.")
    handle = build_handle(spec, data, device=torch.device("cpu"), cache_dir=cache_dir, run_seed=plan.run.seed,
                          log=lambda m: None)
    cfg = {k: v for k, v in (result.get("config") or {}).items()}
    cfg.update(n_examples=1, quality=["completeness"], sanity_sampling=False)
    fields = {f.name for f in dataclasses.fields(ExplainSuite.Params)}
    suite = ExplainSuite(ExplainSuite.Params(**{k: v for k, v in cfg.items() if k in fields}))
    one = dataclasses.replace(data, test=data.test.subset(slice(int(index), int(index) + 1)))
    why = suite.applicable(handle, one)
    if why:
        raise RebuildError(why)
    with tempfile.TemporaryDirectory(prefix="workbench-explain-") as tmp:
        ctx = RunContext(run_id=str(info.get("run_id")), run_dir=Path(tmp), seed=int(result.get("seed") or 0),
                         device=torch.device("cpu"), suite="explain", model_name=model, dataset_name=data.name,
                         batch_size=plan.run.batch_size, profile=plan.run.profile, log=lambda m: None)
        res = suite.run(handle, one, ctx)
        out: dict[str, Any] = {"metrics": [m.to_dict() for m in res.metrics], "cache_dir": str(cache_dir or ""),
                               "index": int(index)}
        for name, rel in res.artifacts.items():
            p = Path(tmp) / rel
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    out[name] = {k: z[k] for k in z.files}
            else:
                out[name] = json.loads(p.read_text())
    out["seconds"] = time.perf_counter() - t0
    return out


def evaluate_run_gates(store_path: str, run_id: str, baseline_id: str | None = None) -> dict[str, Any] | None:
    """The run's own `[gates]` rules (from its resolved plan) evaluated now with
    workbench.gates.evaluate_gates: absolute rules only, or every rule against
    `baseline_id` as the baseline run. None when the plan has no gates.
    Returns `GateOutcome.to_dict()`."""
    from workbench.gates import evaluate_gates, gates_from_run
    from workbench.store import Store

    store = Store(store_path)
    run = store.load_run(run_id)
    cfg = gates_from_run(run)
    if cfg is None or not cfg.rules:
        return None
    run_dir = (store.run_info(run_id) or {}).get("run_dir")
    if baseline_id is None:
        return evaluate_gates(run, cfg.absolute_only(), run_dir=run_dir).to_dict()
    base = store.load_run(baseline_id)
    base_dir = (store.run_info(baseline_id) or {}).get("run_dir")
    return evaluate_gates(run, cfg, baseline=base, run_dir=run_dir, baseline_dir=base_dir).to_dict()
