"""Profiling overhead of the efficiency suite, printed as ratios.

For each reference model, three wall times:
  bare     the forward passes the latency sweep times, in a plain loop (warm-up + repeats
           per batch size, eval mode, no_grad): the irreducible cost of measuring latency;
  sweep    the suite with only the profile on (size, FLOP counting, task metric, latency
           sweep; memory, generation and compression off);
  suite    the whole suite with the chosen profile (memory, generation, compression).
The ratios sweep/bare and suite/bare are the suite's own overhead.

    python benchmarks/bench_efficiency.py                          # CPU, tiny models, quick profile
    python benchmarks/bench_efficiency.py --threads 2 --profile full
    python benchmarks/bench_efficiency.py --size base --device cuda --profile full

Models are freshly initialised reference architectures (weights do not change timing).
The first suite call in a process pays one-time imports (torch._dynamo via the FLOP
counter's dispatch mode, scipy.stats): a throw-away run happens before timing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from workbench.suites.efficiency.suite import EfficiencySuite
from workbench.data.base import Dataset, Split
from workbench.registry import MODELS
from workbench.suite import ModelHandle, RunContext


def _dataset(kind: str, n: int = 256, seq: int = 32) -> Dataset:
    g = torch.Generator().manual_seed(0)
    extra: dict = {}
    if kind == "image":
        x, y = torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
        extra, modality, task = {"num_classes": 10, "bounds": (0.0, 1.0)}, "image", "classification"
    elif kind == "tabular":
        x, y = torch.randn(n, 30, generator=g), torch.randint(0, 2, (n,), generator=g)
        extra, modality, task = {"num_classes": 2}, "tabular", "classification"
    elif kind == "tokens":
        x, y = torch.randint(0, 64, (n, seq), generator=g), torch.randint(0, 2, (n,), generator=g)
        extra, modality, task = {"num_classes": 2, "vocab_size": 64}, "tokens", "classification"
    else:
        x = torch.randint(0, 64, (n, seq), generator=g)
        y = torch.roll(x, -1, dims=1)
        extra, modality, task = {"vocab_size": 64}, "lm", "lm"
    s = Split(x, y)
    return Dataset(name=kind, modality=modality, task=task, train=s, val=s, test=s, **extra)


CASES = {"mlp": "tabular", "cnn": "image", "lstm": "tokens", "transformer": "tokens", "gpt": "lm"}
OUTPUT = {"lm": "lm_logits"}


def _run_suite(suite: EfficiencySuite, handle: ModelHandle, data: Dataset, device: torch.device) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(run_id="bench", run_dir=Path(tmp), seed=0, device=device, suite="efficiency",
                         model_name=handle.name, dataset_name=data.name, log=lambda m: None)
        t0 = time.perf_counter()
        res = suite.run(handle, data, ctx)
        dt = time.perf_counter() - t0
    assert res.status == "ok", res.reason
    return dt


def _bare(module: torch.nn.Module, data: Dataset, params: EfficiencySuite.Params, device: torch.device) -> float:
    module.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for b in params.batch_sizes:
            xb = data.test.x[torch.arange(b) % len(data.test)].to(device)
            for _ in range(params.warmup + params.repeats):
                module(xb)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", default="quick", choices=["quick", "full"])
    ap.add_argument("--models", nargs="*", default=list(CASES))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    full = EfficiencySuite.from_config({}, profile=args.profile)
    sweep_only = EfficiencySuite.from_config({"memory": False, "generation": False, "compression": False},
                                             profile=args.profile)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device}, profile {args.profile}, "
          f"batch sizes {full.params.batch_sizes}, {full.params.warmup}+{full.params.repeats} calls each")
    warm = True
    print(f"{'model':<12} {'bare s':>8} {'sweep s':>8} {'sweep/bare':>10} {'suite s':>8} {'suite/bare':>10}")
    for arch in args.models:
        data = _dataset(CASES[arch])
        torch.manual_seed(0)
        module = MODELS.get(arch)(data, size=args.size).to(device)
        handle = ModelHandle(name=arch, module=module, arch=arch, task=data.task, output=OUTPUT.get(data.task, "logits"))
        if warm:  # one-time imports are not the suite's per-model cost
            _run_suite(sweep_only, handle, data, device)
            warm = False
        bare = _bare(module, data, full.params, device)
        sweep = _run_suite(sweep_only, handle, data, device)
        suite = _run_suite(full, handle, data, device)
        print(f"{arch:<12} {bare:8.3f} {sweep:8.3f} {sweep / bare:10.2f} {suite:8.3f} {suite / bare:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
