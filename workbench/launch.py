"""`workbench train --nproc N`: the torchrun launch and its failure report.

The ranks run `python -m workbench.distributed` (see that module for what they do). Their
stderr and torchrun's go to `<cache>/logs/train-<time>-<pid>/torchrun.log`, never to the
terminal; a failing rank writes its traceback to `rank<R>.log` and a record to
`rank<R>.error.json` there. On failure this process prints the earliest rank's message on
one `workbench: error:` line that names the directory, and exits with the rank's code:

    0  every model trained, passed its checks and was cached
    2  a rank failed with a workbench error (bad plan, data or model, non-finite loss,
       ranks that ended with different weights or buffers), or bad arguments
    3  anything else: an unexpected exception in a rank, a rank killed (signal, out of
       memory) without a record, or torchrun itself failing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError

EXIT_OK, EXIT_USAGE, EXIT_INTERNAL = 0, 2, 3


def failure_line(record: dict[str, Any], logs: Path) -> str:
    """One line for a rank's failure record (see `_worker_main`)."""
    model = f" training {record['model']!r}" if record.get("model") else ""
    message = " ".join(str(record.get("message", "")).split())  # one line
    return (f"rank {record['rank']} of {record['world_size']} failed{model}: {record['type']}: {message} "
            f"(rank tracebacks in {logs})")


def first_failure(logs: Path) -> dict[str, Any] | None:
    """The earliest failure record the ranks wrote into `logs` (the root cause: a rank that
    fails because a peer died fails later), or None when no rank wrote one."""
    records = []
    for p in sorted(logs.glob("rank*.error.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return min(records, key=lambda r: (float(r.get("time", math.inf)), int(r.get("rank", 0)))) if records else None


# ----------------------------------------------------------------- `workbench train`


def launch_command(plan_json: Path, models: list[str], nproc: int, device: str, cache_dir: Path,
                   logs: Path | None = None) -> list[str]:
    """The torchrun command line `workbench train --nproc N` runs."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
           "-m", "workbench.distributed", "--plan", str(plan_json), "--device", device, "--cache", str(cache_dir)]
    if logs is not None:
        cmd += ["--error-dir", str(logs)]
    for m in models:
        cmd += ["--model", m]
    return cmd


def train_command(args: argparse.Namespace) -> int:
    """`workbench train PLAN [--model NAME] [--set K=V] [--nproc N] [--device ...]`.

    --nproc 1: train in this process through the training cache, the same entries
    `workbench run` uses. --nproc N > 1: torchrun DDP (see module docstring); the
    checkpoints are cached under their own key and printed. Exit codes: 0 ok, 2 a rank
    failed with a workbench error (or bad arguments), 3 any other failure."""
    from workbench.config import load_plan
    from workbench.runner import Environment, plan_to_raw
    from workbench.torch_utils import resolve_device

    plan = load_plan(args.plan, list(getattr(args, "set", []) or []))
    nproc = getattr(args, "nproc", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"Expected --nproc to be an int >= 1, got {nproc!r}.")
    wanted = list(getattr(args, "model", []) or [])
    for m in wanted:
        plan.model(m)  # unknown names fail with did-you-mean
    names = []
    for spec in plan.models:
        if wanted and spec.name not in wanted:
            continue
        if not spec.arch and not spec.factory:
            print(f"  {spec.name}: checkpoint only, nothing to train (skipped)")
            continue
        names.append(spec.name)
    if not names:
        raise ConfigError("No trainable models selected: give models with `arch` or `factory`.")
    device_name = getattr(args, "device", None) or plan.run.device
    cache_dir = Path(plan.run.cache or os.environ.get("WORKBENCH_CACHE", ".workbench/cache")).resolve()

    if nproc == 1:
        env = Environment(plan=plan, device=resolve_device(device_name), cache_dir=cache_dir,
                          log=lambda m: print(m, flush=True), progress=plan.run.progress)
        for name in names:
            env.model(name)
        return EXIT_OK

    import torch

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = device_name.split(":")[0]
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was requested but torch.cuda.is_available() is False; use --device cpu.")
        if nproc > torch.cuda.device_count():
            raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs on this node; it has {torch.cuda.device_count()}.")
    elif device_type != "cpu":
        raise ConfigError(f"Expected --device in ('auto', 'cpu', 'cuda'), got {device_name!r}.")
    if not torch.distributed.is_available():
        raise ConfigError("This torch build has no torch.distributed; DDP training is not possible.")
    raw = plan_to_raw(plan)
    payload = json.dumps({**raw, "_source": plan.source}, sort_keys=True, default=str)
    plan_dir = cache_dir / "plans"
    plan_dir.mkdir(parents=True, exist_ok=True)
    plan_json = plan_dir / f"plan-{hashlib.sha256(payload.encode()).hexdigest()[:16]}.json"
    plan_json.write_text(payload)
    logs = cache_dir / "logs" / f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = launch_command(plan_json, names, nproc, device_type, cache_dir, logs)
    print(f"launching {nproc} processes ({'nccl' if device_type == 'cuda' else 'gloo'}): {' '.join(cmd)}", flush=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    stderr_log = logs / "torchrun.log"
    with open(stderr_log, "wb") as err:  # torchrun's and the ranks' stderr: no traceback flood
        rc = subprocess.call(cmd, env=env, stderr=err)
    if rc == 0:
        if stderr_log.stat().st_size == 0:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"  messages of torchrun and the ranks on stderr: {stderr_log}", flush=True)
        return EXIT_OK
    record = first_failure(logs)
    if record is None:
        print(f"workbench: error: torchrun exited with status {rc} and no rank reported an error (a rank was "
              f"killed, or torchrun itself failed); see {stderr_log}", file=sys.stderr)
        return EXIT_INTERNAL
    print(f"workbench: error: {failure_line(record, logs)}", file=sys.stderr)
    code = record.get("exit_code")
    return code if code in (EXIT_USAGE, EXIT_INTERNAL) else EXIT_INTERNAL
