"""Adversarial training cost: seconds per training epoch of each recipe against standard
training, on the same model, data, batches and optimiser.

    python benchmarks/bench_adv_training.py                    # digits, reference SmallCNN, CPU, 1 thread
    python benchmarks/bench_adv_training.py --epochs 5 --threads 2 --device cuda

For each recipe ("standard", "fgsm_rs", "pgd_at", "trades" at eps = --eps L-inf, the
robustness suite's defaults: FGSM-RS alpha = 1.25 eps, PGD-7 and TRADES 7 steps) it times
--epochs epochs of training steps (recipe batch loss, backward, Adam step) and, apart, the
recipe's end-of-epoch validation attack (PGD-10 and FGSM on --val-samples points, which the
trainer runs to keep the most robust epoch). Epochs of the recipes are interleaved so load
drift on a shared machine hits all alike. The table gives the median seconds per epoch
(wall and process CPU) and the ratio to standard training: training steps alone, and
steps + validation (what a workbench training epoch costs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.suites.robustness.testing import SmallCNN, digits_dataset  # noqa: E402
from workbench.suites.robustness.training import (  # noqa: E402
    FGSMRandomStartTraining,
    PGDAdversarialTraining,
    TRADESTraining,
)

RECIPES = ("standard", "fgsm_rs", "pgd_at", "trades")


class StandardTraining:
    """Plain cross-entropy on the clean batch (no validation attack)."""

    def batch_loss(self, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Any) -> torch.Tensor:
        return loss_fn(module(x), y)

    def epoch_end(self, module: torch.nn.Module, data: Any, epoch: int, device: torch.device) -> dict[str, float]:
        return {}


def make_recipe(name: str, eps: float, val_samples: int) -> Any:
    common = {"eps": eps, "bounds": (0.0, 1.0), "val_samples": val_samples}
    return {"standard": StandardTraining, "fgsm_rs": FGSMRandomStartTraining, "pgd_at": PGDAdversarialTraining,
            "trades": TRADESTraining}[name](**({} if name == "standard" else common))


def time_epoch(module: torch.nn.Module, recipe: Any, data: Any, opt: torch.optim.Optimizer, batch_size: int,
               gen: torch.Generator, device: torch.device, epoch: int) -> tuple[float, float, float, float]:
    """(steps wall s, steps CPU s, validation wall s, validation CPU s) of one epoch."""
    x, y = data.train.x.to(device), data.train.y.to(device)
    perm = torch.randperm(len(y), generator=gen)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    module.train()
    for i in range(0, len(y), batch_size):
        b = perm[i : i + batch_size].to(device)
        loss = recipe.batch_loss(module, x[b], y[b], lambda out, yy: F.cross_entropy(out.float(), yy))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    w1, c1 = time.perf_counter(), time.process_time()
    module.eval()
    recipe.epoch_end(module, data, epoch, device)
    sync()
    w2, c2 = time.perf_counter(), time.process_time()
    return w1 - w0, c1 - c0, w2 - w1, c2 - c1


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per recipe (median reported)")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--val-samples", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = digits_dataset()
    state: dict[str, Any] = {}
    for name in RECIPES:
        torch.manual_seed(0)
        module = SmallCNN().to(device)
        state[name] = (module, make_recipe(name, args.eps, args.val_samples),
                       torch.optim.Adam(module.parameters(), lr=3e-3), torch.Generator().manual_seed(0))
    times: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in RECIPES}
    for epoch in range(args.epochs + 1):  # epoch 0 warms up (allocator, first-call costs): not timed
        for name in RECIPES:
            module, recipe, opt, gen = state[name]
            t = time_epoch(module, recipe, data, opt, args.batch_size, gen, device, epoch)
            if epoch > 0:
                times[name].append(t)
    med = {n: [statistics.median(col) for col in zip(*rows)] for n, rows in times.items()}
    base_steps, base_steps_cpu = med["standard"][0], med["standard"][1]
    base_total = med["standard"][0] + med["standard"][2]
    print(f"digits train split ({len(data.train)} images), SmallCNN, batch {args.batch_size}, eps {args.eps:g} L-inf, "
          f"{args.threads} thread(s), {device}; median of {args.epochs} epochs")
    print(f"{'recipe':<10} {'steps s/epoch':>14} {'x standard':>11} {'CPU s':>7} {'x standard':>11} "
          f"{'validation s':>13} {'steps+val s':>12} {'x standard':>11}")
    out: dict[str, dict[str, float]] = {}
    for n in RECIPES:
        steps, steps_cpu, val, _ = med[n]
        ratio, ratio_total = steps / base_steps, (steps + val) / base_total
        out[n] = {"steps_s": steps, "steps_cpu_s": steps_cpu, "validation_s": val, "ratio_steps": ratio,
                  "ratio_cpu": steps_cpu / base_steps_cpu, "ratio_with_validation": ratio_total}
        print(f"{n:<10} {steps:>14.3f} {ratio:>10.1f}x {steps_cpu:>7.3f} {steps_cpu / base_steps_cpu:>10.1f}x "
              f"{val:>13.3f} {steps + val:>12.3f} {ratio_total:>10.1f}x")
    return out


if __name__ == "__main__":
    main()
