"""PGD-k speed: the workbench's `pgd` against a plain loop of k forward+backward passes
(written here), and against torchattacks and IBM ART when they are installed, side by side.

    python benchmarks/bench_attacks.py                      # digits test split, PGD-20, CPU
    python benchmarks/bench_attacks.py --steps 50 --device cuda --tile 20

Two tables: at --eps (0.1, most points fooled early) and at the eps where about half the
points are fooled by the plain loop (found by bisection; --half-eps to fix it), where the
early stop (issue 21: no steps spent on points already fooled) has the most to prove:
goal ≤ 0.6× the plain loop. "workbench pgd" is the default (early stop, per point the first
fooling iterate, else the last); "early_stop=False" returns the same points stepping every
point to the end; "keep=last" is the plain algorithm (the last iterate, max |Δ| = 0).

Every method runs the same attack (L∞, eps, step 2.5·eps/k, no random start) on the same
trained model in eval mode; the table gives the median wall time over --repeats runs, the
ratio to the plain loop (goal: workbench ≤ 1.05×) in wall and process-CPU time (runs are
interleaved so load drift on a shared machine hits all methods alike), the largest
difference of the adversarial examples from the plain loop's, and whether the method left
a TRAIN-mode model (dropout submodule in eval mode, BatchNorm statistics, a .grad) exactly
as found. The plain loop itself makes no attempt to (it runs the model in whatever mode it
is). Missing libraries are skipped with a message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.suites.robustness import functional as A  # noqa: E402
from workbench.suites.robustness.testing import SmallCNN, digits_dataset, trained_digits_cnn  # noqa: E402
from workbench.torch_utils import ModuleState  # noqa: E402


def plain_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
               steps: int) -> torch.Tensor:
    """The reference: k forward+backward passes, gradient w.r.t. the input only."""
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            xa = torch.min(torch.max(xa + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def methods(eps: float, alpha: float, steps: int, batch: int, others: bool = True) -> dict[str, Callable | str]:
    out: dict[str, Callable | str] = {
        "plain loop": lambda m, x, y: plain_loop(m, x, y, eps, alpha, steps),
        "workbench pgd": lambda m, x, y: A.pgd(m, x, y, eps=eps, steps=steps, step_size=alpha, random_start=False,
                                               batch_size=batch),
        "  early_stop=False": lambda m, x, y: A.pgd(m, x, y, eps=eps, steps=steps, step_size=alpha,
                                                    random_start=False, batch_size=batch, early_stop=False),
        "  keep=last": lambda m, x, y: A.pgd(m, x, y, eps=eps, steps=steps, step_size=alpha, random_start=False,
                                             batch_size=batch, keep="last"),
    }
    if not others:  # the half-fooled table: APGD-CE's early stop too (same steps; its 2·eps first step fools early)
        out["workbench apgd_ce"] = lambda m, x, y: A.apgd(m, x, y, eps=eps, steps=steps, batch_size=batch,
                                                          generator=torch.Generator().manual_seed(0))
        out["  early_stop=False "] = lambda m, x, y: A.apgd(m, x, y, eps=eps, steps=steps, batch_size=batch,
                                                            early_stop=False, generator=torch.Generator().manual_seed(0))
        return out
    try:
        import torchattacks

        def ta(m, x, y):
            return torchattacks.PGD(m, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)

        out[f"torchattacks {torchattacks.__version__}"] = ta
    except ImportError as exc:
        out["torchattacks"] = f"skipped: not installed ({exc}); pip install --no-deps torchattacks"
    try:
        import numpy as np
        from art import __version__ as art_version
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        def art(m, x, y):
            clf = PyTorchClassifier(model=m, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=10, clip_values=(0.0, 1.0), device_type=x.device.type)
            atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                                  num_random_init=0, batch_size=batch, verbose=False)
            return torch.from_numpy(atk.generate(x.cpu().numpy(), y=y.cpu().numpy())).to(x.device)

        out[f"ART {art_version}"] = art
    except ImportError as exc:
        out["ART"] = f"skipped: not installed ({exc}); pip install adversarial-robustness-toolbox"
    return out


def forward_rows(fn: Callable, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> int:
    """How many input rows `fn` sends through the model (forward passes x their batch size)."""
    seen = [0]
    h = model.register_forward_pre_hook(lambda _m, args: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    try:
        for i in range(0, len(y), batch):
            fn(model, x[i : i + batch], y[i : i + batch])
    finally:
        h.remove()
    return seen[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def side_effect_free(fn: Callable, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> str:
    """Run `fn` once on a fresh TRAIN-mode SmallCNN with BN statistics and a .grad, report changes."""
    torch.manual_seed(1)
    m = SmallCNN().to(device).train()
    with torch.no_grad():
        m(x[:32])
    m.fc.weight.grad = torch.ones_like(m.fc.weight)
    m.drop.eval()  # a submodule whose mode differs from its parent's
    before = ModuleState.capture(m)
    try:
        fn(m, x[:32], y[:32])
    except Exception as exc:  # report, do not crash the table
        return f"error: {type(exc).__name__}"
    diff = before.diff(m)
    if not diff:
        return "yes"
    labels = {"state": "BN stats/weights", "train": "train/eval flags", "requires_grad": "requires_grad",
              ".grad": "parameter .grad"}
    return "no: " + ", ".join(sorted({labels.get(d.split(" ")[0], d) for d in diff})) + " changed"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--half-eps", type=float, default=None, help="eps of the second table (default: bisection)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--tile", type=int, default=1, help="repeat the test split this many times (bigger workloads)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", default="/tmp/workbench-bench-cache")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = digits_dataset()
    model = trained_digits_cnn(Path(args.cache)).to(device).eval()
    x = data.test.x.repeat(args.tile, 1, 1, 1).to(device)
    y = data.test.y.repeat(args.tile).to(device)
    half = args.half_eps if args.half_eps is not None else half_fooled_eps(model, x, y, args.steps, args.batch_size)
    for eps, others in ((args.eps, True), (half, False)):
        table(model, x, y, eps, args, device, others)


def half_fooled_eps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> float:
    """The eps (bisection, 8 halvings in [0, 0.2]) at which the plain loop fools about half
    of the correctly classified points."""
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    xs, ys = x[ok][:512], y[ok][:512]
    lo, hi = 0.0, 0.2
    for _ in range(8):
        mid = (lo + hi) / 2
        xa = plain_loop(model, xs, ys, mid, 2.5 * mid / steps, steps)
        with torch.no_grad():
            fooled = float((model(xa).argmax(1) != ys).float().mean())
        lo, hi = (mid, hi) if fooled < 0.5 else (lo, mid)
    return round((lo + hi) / 2, 4)


def table(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, args: argparse.Namespace,
          device: torch.device, others: bool) -> None:
    alpha = 2.5 * eps / args.steps
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(f"\nPGD-{args.steps} L∞ eps={eps} on {len(y)} digits test images (clean accuracy {clean:.3f}), batch "
          f"{args.batch_size}, device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    runnable = {}
    for name, fn in methods(eps, alpha, args.steps, args.batch_size, others).items():
        if isinstance(fn, str):
            print(f"  {name}: {fn}")
        else:
            runnable[name] = fn

    def run(fn: Callable) -> torch.Tensor:
        model.eval()
        return torch.cat([fn(model, x[i : i + args.batch_size], y[i : i + args.batch_size])
                          for i in range(0, len(y), args.batch_size)])

    outs = {name: run(fn) for name, fn in runnable.items()}  # warm-up, and the outputs compared
    wall: dict[str, list[float]] = {n: [] for n in runnable}
    cpu: dict[str, list[float]] = {n: [] for n in runnable}
    for _ in range(args.repeats):  # interleaved, so load drifts on a shared machine hit every method alike
        for name, fn in runnable.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            run(fn)
            sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    ref = outs["plain loop"]
    w0, c0 = statistics.median(wall["plain loop"]), statistics.median(cpu["plain loop"])
    print(f"{'method':<22}{'wall s':>9}{'ratio':>7}{'cpu s':>9}{'ratio':>7}{'max |Δ| vs loop':>17}{'robust acc':>11}"
          "  leaves a train-mode model untouched")
    for name, fn in runnable.items():
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        acc = float((A.predict_logits(model, outs[name]).argmax(1) == y).float().mean())
        delta = float((outs[name] - ref).abs().max())
        print(f"{name:<22}{w:>9.4f}{w / w0:>6.2f}x{c:>9.4f}{c / c0:>6.2f}x{delta:>17.2e}{acc:>11.3f}  "
              f"{side_effect_free(fn, x, y, device)}")
    rows = {name: forward_rows(fn, model, x, y, args.batch_size) for name, fn in runnable.items()
            if name in ("plain loop", "workbench pgd", "workbench apgd_ce", "  early_stop=False ")}
    print("rows through the model (load-independent work): " + ", ".join(
        f"{n.strip()} {r:,} ({r / rows['plain loop']:.2f}x)" for n, r in rows.items()))
    for on, off in (("workbench pgd", "  early_stop=False"), ("workbench apgd_ce", "  early_stop=False ")):
        if off in outs:
            same = torch.equal(A.predict_logits(model, outs[on]).argmax(1) != y,
                               A.predict_logits(model, outs[off]).argmax(1) != y)
            print(f"{on.split()[1]} early stop vs early_stop=False: identical per-example success: {same}; max |Δ| "
                  f"{float((outs[on] - outs[off]).abs().max()):.2e}; wall ratio "
                  f"{statistics.median(wall[on]) / statistics.median(wall[off]):.2f}x")


if __name__ == "__main__":
    main()
