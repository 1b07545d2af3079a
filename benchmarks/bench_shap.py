"""Shapley estimators side by side: accuracy against exact values and time per input.

    python benchmarks/bench_shap.py                 # digits CNN (M = 8 and 16 blocks) + tabular MLP (M = 8)
    python benchmarks/bench_shap.py --inputs 4 --threads 1

A tiny CNN is trained on sklearn's bundled 8x8 digits in the script (seconds). Players are
fixed blocks of pixels (M = 8: 2x4 blocks of 4x2 pixels; M = 16: 4x4 blocks of 2x2), or
the 8 features of a synthetic tabular task. The value function is the same for everyone:
Baseline Shapley, v(S) = f(x_S, 0_notS) on the logit of the predicted class (captum's
KernelShap computes exactly this; shap's KernelExplainer is given the all-absent row as
its background, so it does too). The reference is exact enumeration of all 2^M coalitions.

Compared at the same number of model evaluations per input (`--budget`):
  ours       workbench's batched, deduplicated Kernel SHAP sampler (suites/explain/shapley.py);
             exact enumeration whenever 2^M - 2 coalitions fit the budget
  captum     captum.attr.KernelShap (default perturbations_per_eval=1, and batched)
  shap       shap.KernelExplainer over player presence (nsamples = budget)
Error: mean over inputs of ||phi - phi_exact|| / ||phi_exact||. BLAS and torch run on
`--threads` threads for everyone (small least-squares solves are far faster on one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _block_groups(m: int) -> "torch.Tensor":  # noqa: F821
    import torch

    bh, bw = {8: (4, 2), 16: (2, 2)}[m]
    rows = torch.arange(8) // bh
    cols = torch.arange(8) // bw
    return (rows[:, None] * (8 // bw) + cols[None, :])[None]  # (1, 8, 8)


def _rel_err(a: "np.ndarray", b: "np.ndarray") -> float:  # noqa: F821
    import numpy as np

    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=8, help="inputs explained per setting")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads for every method")
    ap.add_argument("--budget", type=int, default=200, help="model evaluations per input at M = 8")
    ap.add_argument("--budget16", type=int, default=1000, help="model evaluations per input at M = 16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from workbench.suites.explain.gradients import ExplainedModel, untouched
    from workbench.suites.explain.shapley import exact_shapley, kernel_shapley, shap_kernel_explainer
    from workbench.suites.explain.testing import TinyCNN, TinyMLP, digits_dataset, quick_train, tabular_dataset

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    warnings.filterwarnings("ignore")
    import captum
    import shap
    from captum.attr import KernelShap

    print(f"torch {torch.__version__}  captum {captum.__version__}  shap {shap.__version__}  threads {args.threads}")
    t0 = time.perf_counter()
    digits = digits_dataset(args.seed)
    torch.manual_seed(args.seed)
    cnn = quick_train(TinyCNN(), digits, epochs=3, lr=1e-2, seed=args.seed)
    acc = float((cnn(digits.test.x).argmax(1) == digits.test.y).float().mean())
    tab = tabular_dataset(n=600, n_features=8, relevant=(0, 3, 5), seed=args.seed)
    mlp = quick_train(TinyMLP(8, 2), tab, epochs=10, lr=1e-2, seed=args.seed)
    print(f"trained digits CNN (test acc {acc:.3f}) and tabular MLP in {time.perf_counter() - t0:.1f} s\n")

    settings = [
        ("digits CNN, M=8 pixel blocks", cnn, digits.test.x[: args.inputs], _block_groups(8), args.budget),
        ("digits CNN, M=16 pixel blocks", cnn, digits.test.x[: max(2, args.inputs // 2)], _block_groups(16),
         args.budget16),
        ("tabular MLP, M=8 features", mlp, tab.test.x[: args.inputs], torch.arange(8), args.budget),
    ]
    header = f"{'method':34s} {'evals/input':>11s} {'ms/input':>9s} {'rel. error':>10s}"
    summary = []
    for title, model, xs, groups, budget in settings:
        print(f"== {title}: {len(xs)} inputs, budget {budget} evaluations per input")
        print(header)
        em = ExplainedModel(model, "logits")
        with untouched(model), torch.no_grad():
            targets = em(xs).argmax(1)
        m = int(groups.max()) + 1
        base = torch.zeros(1, *xs.shape[1:])
        rows: dict[str, tuple[float, float, int]] = {}

        def record(name: str, fn, evals: int) -> None:
            times, errs = [], []
            for i in range(len(xs)):
                t = time.perf_counter()
                phi = fn(i)
                times.append(time.perf_counter() - t)
                errs.append(_rel_err(np.asarray(phi, dtype=np.float64), exact[i]))
            rows[name] = (1000 * float(np.mean(times)), float(np.mean(errs)), evals)
            print(f"{name:34s} {evals:11d} {rows[name][0]:9.1f} {rows[name][1]:10.4f}")

        with untouched(model):
            kernel_shapley(em.scalar(int(targets[0])), xs[0], groups, base, n_coalitions=budget - 2, seed=0)  # warm-up
            t = time.perf_counter()
            exact = [exact_shapley(em.scalar(int(targets[i])), xs[i], groups, base, batch_size=4096).values
                     for i in range(len(xs))]
            ms_exact = 1000 * (time.perf_counter() - t) / len(xs)
            print(f"{'exact enumeration (reference)':34s} {2**m:11d} {ms_exact:9.1f} {0.0:10.4f}")
            if m <= 12:  # exact enumeration, at 2^M evaluations (the suite uses it when 2^M fits the budget)
                record("ours (exact enumeration)", lambda i: exact_shapley(
                    em.scalar(int(targets[i])), xs[i], groups, base).values, 2**m)
            record("ours (batched Kernel SHAP)", lambda i: kernel_shapley(
                em.scalar(int(targets[i])), xs[i], groups, base, n_coalitions=budget - 2,
                seed=args.seed + i).values, budget)
            ks = KernelShap(em)
            mask = groups.expand_as(xs[:1])

            def captum_run(i: int, ppe: int) -> np.ndarray:
                torch.manual_seed(args.seed + i)
                a = ks.attribute(xs[i : i + 1], baselines=base, target=int(targets[i]), feature_mask=mask,
                                 n_samples=budget, perturbations_per_eval=ppe)
                return np.array([float(a[0][mask[0] == g][0]) for g in range(m)])

            record("captum KernelShap", lambda i: captum_run(i, 1), budget)
            record("captum KernelShap (batched 50)", lambda i: captum_run(i, 50), budget)
            record("shap KernelExplainer", lambda i: shap_kernel_explainer(
                em.scalar(int(targets[i])), xs[i], groups, base, n_samples=budget, seed=args.seed + i).values,
                budget)
        ours = rows["ours (batched Kernel SHAP)"]
        cap = rows["captum KernelShap"]
        shp = rows["shap KernelExplainer"]
        print(f"-> ours vs captum: {cap[0] / ours[0]:.1f}x faster, {cap[1] / max(ours[1], 1e-12):.1f}x less error; "
              f"ours vs shap: {shp[0] / ours[0]:.1f}x faster, error ratio shap/ours {shp[1] / max(ours[1], 1e-12):.2f}")
        if "ours (exact enumeration)" in rows:
            ex = rows["ours (exact enumeration)"]
            print(f"-> exact enumeration ({2**m} evaluations) vs captum at {budget}: {cap[0] / ex[0]:.1f}x faster, "
                  f"error {ex[1]:.1e}")
        print()
        summary.append((title, cap[0] / ours[0], cap[1] / max(ours[1], 1e-12), shp[1] / max(ours[1], 1e-12)))
    print("summary (ratios > 1 favour ours):")
    print(f"{'setting':34s} {'speed vs captum':>16s} {'error captum/ours':>18s} {'error shap/ours':>16s}")
    for title, speed, err_c, err_s in summary:
        print(f"{title:34s} {speed:15.1f}x {err_c:17.2f}x {err_s:15.2f}x")


if __name__ == "__main__":
    main()
