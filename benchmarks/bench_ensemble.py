"""Deep-ensemble and MC-dropout evaluation speed, printed side by side as ratios.

Ensemble: `DeepEnsemble.predict` (vectorised: stack_module_state + functional_call + vmap,
or the loop it falls back to) against a plain Python loop over the M members, and against
the ideal of batching: ONE member's forward on an M-times larger batch.
MC dropout: `mc_dropout_predict` batched (one forward of a T-times repeated batch) against
T separate passes (`batched=False`).

Goals (issue #3): ensemble <= 1.2x one member on an M-times larger batch on a GPU, and
never slower than the loop on CPU; MC dropout batched never slower than T passes.

    python benchmarks/bench_ensemble.py                      # CPU, tiny reference models
    python benchmarks/bench_ensemble.py --size base --device cuda --batch 2048

Models are freshly initialised reference architectures (weights do not change timing),
in eval mode, under torch.no_grad. Times are medians from torch.utils.benchmark.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils import benchmark

from suites.uncertainty.ensemble import DeepEnsemble, mc_dropout_predict
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


def _median(fn, min_run_time: float) -> float:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--size", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--members", type=int, default=5, help="ensemble size M")
    ap.add_argument("--samples", type=int, default=20, help="MC-dropout passes T")
    ap.add_argument("--batch", type=int, default=512, help="inputs per evaluation N")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per measurement")
    args = ap.parse_args(argv)
    from workbench.registry import MODELS

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, size {args.size}, "
          f"M={args.members}, T={args.samples}, N={args.batch}")
    head = (f"{'case':<20} {'loop ms':>9} {'ens ms':>9} {'path':>5} {'ens/loop':>9} {'1xMN ms':>9} {'ens/1xMN':>9}"
            f" | {'T-pass ms':>9} {'batched ms':>10} {'batch/T-pass':>12}")
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
        ens = DeepEnsemble(members, device=device)

        @torch.no_grad()
        def loop() -> None:
            [m(x) for m in members]
            sync()

        def vectorised() -> None:
            ens.predict(x, max_rows=args.batch * args.members)
            sync()

        @torch.no_grad()
        def one_big() -> None:
            members[0](big)
            sync()

        def mc_batched() -> None:
            mc_dropout_predict(members[0], x, samples=args.samples, device=device, max_rows=args.batch * args.samples)
            sync()

        def mc_passes() -> None:
            mc_dropout_predict(members[0], x, samples=args.samples, device=device, batched=False, max_rows=args.batch)
            sync()

        vectorised()  # first call checks vmap against the loop and may fall back
        t_loop, t_ens, t_big = (_median(f, args.min_run_time) for f in (loop, vectorised, one_big))
        t_pass, t_batch = (_median(f, args.min_run_time) for f in (mc_passes, mc_batched))
        print(f"{case:<20} {t_loop * 1e3:9.2f} {t_ens * 1e3:9.2f} {ens.path:>5} {t_ens / t_loop:9.2f} {t_big * 1e3:9.2f}"
              f" {t_ens / t_big:9.2f} | {t_pass * 1e3:9.2f} {t_batch * 1e3:10.2f} {t_batch / t_pass:12.2f}")
        if ens.fallback_reason:
            print(f"{'':<20} fallback: {ens.fallback_reason[:110]}")
    print("ratios < 1 mean the vectorised / batched path is faster; ens/1xMN = 1 is ideal batching.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
