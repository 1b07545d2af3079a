"""Deep-ensemble and MC-dropout evaluation speed, printed side by side as ratios.

Ensemble: `DeepEnsemble.predict` forced to vmap (stack_module_state + functional_call +
vmap) and in "auto" mode (what the suite uses: vmap on CUDA, the loop on CPU) against a
plain Python loop over the M members, and against the ideal of batching: ONE member's
forward on an M-times larger batch.
MC dropout: `mc_dropout_predict` batched (one forward of a T-times repeated batch) against
T separate passes (`batched=False`).

Goals (issue #3): ensemble <= 1.2x one member on an M-times larger batch on a GPU, and
never slower than the loop on CPU; MC dropout batched never slower than T passes.

    python benchmarks/bench_ensemble.py                      # CPU, tiny reference models
    python benchmarks/bench_ensemble.py --threads 1 --clock cpu     # a shared, loaded CPU box
    python benchmarks/bench_ensemble.py --size base --device cuda --batch 2048

Models are freshly initialised reference architectures (weights do not change timing),
in eval mode, under torch.no_grad. Times: the best of `--repeats` interleaved medians
from torch.utils.benchmark (robust to load changes on a shared machine).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.utils import benchmark

from workbench.suites.uncertainty.ensemble import DeepEnsemble, mc_dropout_predict
from workbench.data.base import Dataset, Split


def _dataset(kind: str, n: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    if kind == "image":
        x, y = torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
        extra = {"num_classes": 10, "bounds": (0.0, 1.0)}
        modality, task = "image", "classification"
    elif kind == "tabular":
        x, y = torch.randn(n, 30, generator=g), torch.randint(0, 2, (n,), generator=g)
        extra = {"num_classes": 2}
        modality, task = "tabular", "classification"
    else:
        x, y = torch.randint(0, 20, (n, 16), generator=g), torch.randint(0, 2, (n,), generator=g)
        extra = {"num_classes": 2, "vocab_size": 20}
        modality, task = "tokens", "classification"
    s = Split(x, y)
    return Dataset(name=kind, modality=modality, task=task, train=s, val=s, test=s, **extra)


CASES = {  # name -> (architecture, data kind)
    "mlp-tabular": ("mlp", "tabular"),
    "mlp-digits": ("mlp", "image"),
    "cnn-digits": ("cnn", "image"),
    "lstm-tokens": ("lstm", "tokens"),
    "transformer-tokens": ("transformer", "tokens"),
}


def _median(fn, min_run_time: float, clock: str = "wall") -> float:
    timer = time.process_time if clock == "cpu" else time.perf_counter
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=timer)
    return t.blocked_autorange(min_run_time=min_run_time).median


def _interleaved(fns: list, min_run_time: float, repeats: int, clock: str = "wall") -> list[float]:
    """Per function, the smallest of `repeats` medians, measured round-robin so that a
    change in machine load hits every function alike (a shared CPU is noisy)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _median(fn, min_run_time, clock))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--size", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--members", type=int, default=5, help="ensemble size M")
    ap.add_argument("--samples", type=int, default=20, help="MC-dropout passes T")
    ap.add_argument("--batch", type=int, default=512, help="inputs per evaluation N")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--min-run-time", type=float, default=0.5, help="seconds of timing per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best median is kept")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: process CPU time (use with --threads 1 on a shared, loaded machine)")
    args = ap.parse_args(argv)
    from workbench.registry import MODELS

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if args.clock == "cpu" and device.type == "cuda":
        ap.error("--clock cpu measures host CPU time only; use the wall clock on CUDA")
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, size {args.size}, "
          f"M={args.members}, T={args.samples}, N={args.batch}, clock {args.clock}")
    head = (f"{'case':<20} {'loop ms':>9} {'vmap ms':>9} {'vmap/loop':>9} {'auto':>5} {'auto/loop':>9} {'1xMN ms':>9}"
            f" {'vmap/1xMN':>9} | {'T-pass ms':>9} {'batched ms':>10} {'batch/T-pass':>12}")
    print(head)
    print("-" * len(head))
    for case in args.cases:
        arch, kind = CASES[case]
        data = _dataset(kind, args.batch)
        members = []
        for seed in range(args.members):
            torch.manual_seed(seed)
            members.append(MODELS.get(arch)(data, size=args.size).to(device).eval())
        x = data.test.x.to(device)
        big = torch.cat([x] * args.members)
        vm = DeepEnsemble(members, device=device, vectorize=True)
        auto = DeepEnsemble(members, device=device)  # what the suite uses

        @torch.no_grad()
        def loop() -> None:  # the same (M, N, K) tensor the ensemble returns
            torch.stack([m(x) for m in members])
            sync()

        def vectorised() -> None:
            vm.predict(x, max_rows=args.batch * args.members)
            sync()

        def automatic() -> None:  # default chunking, as in the suite
            auto.predict(x)
            sync()

        @torch.no_grad()
        def one_big() -> None:
            members[0](big)
            sync()

        def mc_batched() -> None:  # default rows per forward (default_max_rows), as in the suite
            mc_dropout_predict(members[0], x, samples=args.samples, device=device)
            sync()

        def mc_passes() -> None:
            mc_dropout_predict(members[0], x, samples=args.samples, device=device, batched=False, max_rows=args.batch)
            sync()

        vectorised()  # first call checks vmap against the loop and may fall back
        t_loop, t_vm, t_auto, t_big, t_pass, t_batch = _interleaved(
            [loop, vectorised, automatic, one_big, mc_passes, mc_batched], args.min_run_time, args.repeats, args.clock)
        print(f"{case:<20} {t_loop * 1e3:9.2f} {t_vm * 1e3:9.2f} {t_vm / t_loop:9.2f} {auto.path:>5} {t_auto / t_loop:9.2f}"
              f" {t_big * 1e3:9.2f} {t_vm / t_big:9.2f} | {t_pass * 1e3:9.2f} {t_batch * 1e3:10.2f} {t_batch / t_pass:12.2f}")
        if vm.fallback_reason:
            print(f"{'':<20} vmap fell back to the loop: {vm.fallback_reason[:100]}")
    print("ratios < 1: the vmap / auto / batched path is faster than the loop or T passes; vmap/1xMN = 1 is ideal batching.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
