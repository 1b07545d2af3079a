"""Cost of randomized-smoothing certification: the workbench's batched `sample_noise` /
`certify` against a plain loop of forwards written here (Cohen et al.'s reference
`_sample_noise`: repeat the example `batch` times, add noise, forward, count).

    python benchmarks/bench_certify.py                       # digits CNN, n = 1,000, CPU
    python benchmarks/bench_certify.py --n 100000 --batch-size 1000 --device cuda

Two workloads, each timed as the median over --repeats interleaved runs (load drifts on a
shared machine hit both alike), wall and process-CPU time:
  one example     certifying one image with n0 + n samples costs ceil(n0/B) + ceil(n/B)
                  forwards in both; target: workbench <= 1.1x the plain loop.
  many examples   certifying --examples images: the plain loop goes example by example,
                  the workbench packs several examples' noisy copies into each forward
                  when n is not a multiple of the batch, so it is never slower.
The counts are compared too: both draw their noise from a generator with the same seed in
the same order, so they must agree exactly for one example.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.suites.certify import functional as C  # noqa: E402
from workbench.suites.robustness.testing import digits_dataset, trained_digits_cnn  # noqa: E402


@torch.no_grad()
def plain_counts(model: torch.nn.Module, x: torch.Tensor, num: int, batch: int, sigma: float,
                 gen: torch.Generator, classes: int) -> torch.Tensor:
    """Cohen et al.'s `_sample_noise` for one example x (1, ...): counts (K,)."""
    counts = torch.zeros(classes, dtype=torch.long, device=x.device)
    remaining = num
    while remaining:
        b = min(batch, remaining)
        rows = x.repeat((b, *([1] * (x.dim() - 1))))
        noise = torch.randn(rows.shape, generator=gen, device=gen.device).to(rows.device) * sigma
        pred = model(rows + noise).argmax(1)
        counts += torch.bincount(pred, minlength=classes)
        remaining -= b
    return counts


def plain_certify(model: torch.nn.Module, x: torch.Tensor, n0: int, n: int, batch: int, sigma: float,
                  gen: torch.Generator, classes: int) -> list[torch.Tensor]:
    """The plain loop's work for CERTIFY on each example: n0 selection then n estimation samples."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        out.append(plain_counts(model, xi, n0, batch, sigma, gen, classes))
        out.append(plain_counts(model, xi, n, batch, sigma, gen, classes))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", default="/tmp/workbench-bench-cache")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = digits_dataset()
    model = trained_digits_cnn(Path(args.cache)).to(device).eval()
    x = data.test.x[: args.examples].to(device)
    k, b = 10, args.batch_size
    forwards = math.ceil(args.n0 / b) + math.ceil(args.n / b)
    print(f"CERTIFY n0={args.n0} n={args.n} sigma={args.sigma} batch {b} on the digits CNN, device {device}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    # exactness: one example, the same generator seed, the same draw order
    g1 = torch.Generator(device=device).manual_seed(0)
    g2 = torch.Generator(device=device).manual_seed(0)
    ours = C.sample_noise(model, x[:1], num=args.n, sigma=args.sigma, batch_size=b, generator=g1, num_classes=k)[0]
    ref = plain_counts(model, x[:1], args.n, b, args.sigma, g2, k)
    print(f"counts equal to the plain loop's for one example: {bool(torch.equal(ours, ref))}")

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    workloads = {
        "one example": (
            lambda: plain_certify(model, x[:1], args.n0, args.n, b, args.sigma, gen(), k),
            lambda: C.certify(model, x[:1], sigma=args.sigma, n0=args.n0, n=args.n, alpha=0.001, batch_size=b,
                              generator=gen(), num_classes=k),
        ),
        f"{len(x)} examples": (
            lambda: plain_certify(model, x, args.n0, args.n, b, args.sigma, gen(), k),
            lambda: C.certify(model, x, sigma=args.sigma, n0=args.n0, n=args.n, alpha=0.001, batch_size=b,
                              generator=gen(), num_classes=k),
        ),
    }
    print(f"{'workload':<14}{'forwards (plain / workbench)':>30}{'plain wall s':>14}{'workbench':>11}{'ratio':>7}"
          f"{'plain cpu s':>13}{'workbench':>11}{'ratio':>7}")
    for name, (plain, ours_fn) in workloads.items():
        plain(), ours_fn()  # warm-up
        wall: dict[str, list[float]] = {"plain": [], "ours": []}
        cpu: dict[str, list[float]] = {"plain": [], "ours": []}
        for _ in range(args.repeats):
            for key, fn in (("plain", plain), ("ours", ours_fn)):
                w, c = timed(fn, device)
                wall[key].append(w)
                cpu[key].append(c)
        m = len(x) if name != "one example" else 1
        ours_forwards = math.ceil(m * args.n0 / b) + math.ceil(m * args.n / b)
        wp, wo = statistics.median(wall["plain"]), statistics.median(wall["ours"])
        cp, co = statistics.median(cpu["plain"]), statistics.median(cpu["ours"])
        print(f"{name:<14}{f'{m * forwards} / {ours_forwards}':>30}{wp:>14.4f}{wo:>11.4f}{wo / wp:>6.2f}x"
              f"{cp:>13.4f}{co:>11.4f}{co / cp:>6.2f}x")
    print("target: one-example ratio <= 1.1x")


if __name__ == "__main__":
    main()
