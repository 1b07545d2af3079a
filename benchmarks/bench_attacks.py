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

The second table also times the suite's default attack configs (`RobustnessSuite.Params`:
PGD-20 from a random start, APGD-CE 50 steps; here on all points, the suite attacks only
the clean-correct ones) and two ways of skipping the backward of rows the forward has just
found fooled (their loss masked out of the same graph; the forward re-run on the rest), then
prints the WORK each early stop spends against its floor: rows through the model (forward)
and rows with a graph (backward) if every fooled point stopped right at its first success
(first fooling iterate t: t+1 forwards, t backwards), from the first-success histogram of
the same attack without early stop.
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


def pgd_split_backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                       steps: int, reforward: bool) -> torch.Tensor:
    """Early-stopped PGD (no random start; per point the first fooling iterate, else the
    last: the same points as `A.pgd(..., random_start=False)`) whose backward skips the rows
    this step's forward found fooled: by masking their loss out of the same graph, or
    (`reforward`) by running the forward again on the rest when a row fell."""
    out, rows, xa, x0, ya = x.clone(), torch.arange(len(y)), x.clone(), x, y
    with A.attack_mode(model):  # eval + frozen parameters, as the workbench's own attack
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            z = model(xa)
            new = z.argmax(1) != ya
            out[rows[new]] = xa[new].detach()
            keep = ~new
            if not bool(keep.any()):
                return out
            if reforward and bool(new.any()):
                xk = xa[keep].detach().requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(model(xk), ya[keep], reduction="sum"), xk)
            else:
                (g,) = torch.autograd.grad(F.cross_entropy(z[keep], ya[keep], reduction="sum"), xa)
                g = g[keep]
            x0, ya, rows = x0[keep], ya[keep], rows[keep]
            with torch.no_grad():
                xa = torch.min(torch.max(xa[keep] + alpha * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    out[rows] = xa.detach()
    return out


def suite_defaults() -> dict[str, object]:
    """The attack settings `RobustnessSuite` runs by default (its Params and `A.pgd`'s own defaults)."""
    import inspect

    from workbench.suites.robustness.suite import RobustnessSuite

    p = RobustnessSuite.Params()
    return {"pgd_steps": p.pgd_steps, "apgd_steps": p.apgd_steps, "restarts": p.restarts,
            "random_start": inspect.signature(A.pgd).parameters["random_start"].default}


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
        out["  masked backward"] = lambda m, x, y: pgd_split_backward(m, x, y, eps, alpha, steps, reforward=False)
        out["  re-forward rest"] = lambda m, x, y: pgd_split_backward(m, x, y, eps, alpha, steps, reforward=True)
        out["workbench apgd_ce"] = lambda m, x, y: A.apgd(m, x, y, eps=eps, steps=steps, batch_size=batch,
                                                          generator=torch.Generator().manual_seed(0))
        out["  early_stop=False "] = lambda m, x, y: A.apgd(m, x, y, eps=eps, steps=steps, batch_size=batch,
                                                            early_stop=False, generator=torch.Generator().manual_seed(0))
        d = suite_defaults()

        def suite_pgd(es: bool) -> Callable:
            return lambda m, x, y: A.pgd(m, x, y, eps=eps, steps=d["pgd_steps"], restarts=d["restarts"],
                                         random_start=d["random_start"], batch_size=batch, early_stop=es,
                                         generator=torch.Generator().manual_seed(0))

        def suite_apgd(es: bool) -> Callable:
            return lambda m, x, y: A.apgd(m, x, y, eps=eps, steps=d["apgd_steps"], restarts=d["restarts"],
                                          batch_size=batch, early_stop=es, generator=torch.Generator().manual_seed(0))

        out[SUITE_PGD], out[SUITE_PGD_OFF] = suite_pgd(True), suite_pgd(False)
        out[SUITE_APGD], out[SUITE_APGD_OFF] = suite_apgd(True), suite_apgd(False)
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


SUITE_PGD, SUITE_PGD_OFF = "suite default pgd", "  early_stop=False  "
SUITE_APGD, SUITE_APGD_OFF = "suite default apgd_ce", "  early_stop=False   "
# early-stopped method -> the same attack without early stop (same points): the work compared
PAIRS = {"workbench pgd": "  early_stop=False", "workbench apgd_ce": "  early_stop=False ",
         SUITE_PGD: SUITE_PGD_OFF, SUITE_APGD: SUITE_APGD_OFF}


def forward_rows(fn: Callable, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> int:
    """How many input rows `fn` sends through the model (forward passes x their batch size)."""
    return work(fn, model, x, y, batch)[0]


def work(fn: Callable, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
         batch: int) -> tuple[int, int, torch.Tensor, int]:
    """(forward rows, backward rows (forward rows whose input carries a graph), first
    success (N,): per point the first pass whose prediction is wrong, -1 if none, and the
    number of passes with a graph per batch). The first success is meaningful only for a
    run whose every pass sees every row of its batch (an attack without early stop)."""
    fwd, bwd, passes = [0], [0], []

    def hook(_m: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        fwd[0] += args[0].shape[0]
        bwd[0] += args[0].shape[0] if args[0].requires_grad else 0
        passes.append((out.detach().argmax(1), bool(args[0].requires_grad)))

    firsts, n_grad = [], 0
    h = model.register_forward_hook(hook)
    try:
        for i in range(0, len(y), batch):
            passes.clear()
            yb = y[i : i + batch]
            fn(model, x[i : i + batch], yb)
            same = [p for p, _ in passes if p.shape == yb.shape]
            wrong = torch.stack(same) != yb if same else torch.zeros(1, len(yb), dtype=torch.bool)
            firsts.append(torch.where(wrong.any(0), wrong.float().argmax(0).long(), torch.full_like(yb, -1)))
            n_grad = sum(g for _, g in passes)
    finally:
        h.remove()
    return fwd[0], bwd[0], torch.cat(firsts).cpu(), n_grad


def floor_rows(first: torch.Tensor, n_passes: int, n_grad: int) -> tuple[int, int]:
    """Rows an attack needs at the least to return the same points as its run without early
    stop (which made `n_passes` forward passes, `n_grad` of them with a backward): a point
    first fooled at pass t needs passes 0..t forward and 0..t-1 backward; any other point
    all of them."""
    fooled = first >= 0
    t = first[fooled]
    standing = int((~fooled).sum())
    return int((t + 1).sum()) + n_passes * standing, int(t.sum()) + n_grad * standing


def histogram(first: torch.Tensor) -> str:
    """'t:count' for every first-success pass t seen, then the points never fooled."""
    counts = torch.bincount(first[first >= 0], minlength=1) if bool((first >= 0).any()) else torch.zeros(0)
    parts = [f"{t}:{int(c)}" for t, c in enumerate(counts.tolist()) if c]
    return " ".join(parts) + f"  never: {int((first < 0).sum())}"


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
    for on, off in PAIRS.items():
        if off in outs:
            same = torch.equal(A.predict_logits(model, outs[on]).argmax(1) != y,
                               A.predict_logits(model, outs[off]).argmax(1) != y)
            print(f"{on} vs early_stop=False: identical points: {torch.equal(outs[on], outs[off])}, per-example "
                  f"success: {same}; wall ratio {statistics.median(wall[on]) / statistics.median(wall[off]):.2f}x, "
                  f"CPU {statistics.median(cpu[on]) / statistics.median(cpu[off]):.2f}x")
    for name in ("  masked backward", "  re-forward rest"):
        if name in outs:
            print(f"pgd, {name.strip()}: same points as workbench pgd: {torch.equal(outs[name], outs['workbench pgd'])}; "
                  f"wall ratio to workbench pgd {statistics.median(wall[name]) / statistics.median(wall['workbench pgd']):.2f}x,"
                  f" CPU {statistics.median(cpu[name]) / statistics.median(cpu['workbench pgd']):.2f}x, forward rows "
                  f"{forward_rows(runnable[name], model, x, y, args.batch_size):,}")
    if not others:
        floors(model, x, y, runnable, args.batch_size, args.steps)


def floors(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, runnable: dict[str, Callable], batch: int,
           steps: int) -> None:
    """Each early stop's work against its floor (see `floor_rows`), and the first successes."""
    d = suite_defaults()
    configs = {"workbench pgd": f"PGD-{steps}, no random start (this table)",
               "workbench apgd_ce": f"APGD-CE-{steps} (this table)",
               SUITE_PGD: f"PGD-{d['pgd_steps']}, random start {d['random_start']}, restarts {d['restarts']} (suite default)",
               SUITE_APGD: f"APGD-CE-{d['apgd_steps']}, restarts {d['restarts']} (suite default)"}
    print("\nwork vs its floor (rows through the model; backward = rows with a graph); ratios to the same attack "
          "without early stop, which returns the same points")
    print(f"{'attack':<52}{'forward':>16}{'floor':>16}{'backward':>16}{'floor':>16}")
    for on, label in configs.items():
        off = PAIRS[on]
        if on not in runnable or off not in runnable:
            continue
        f_on, b_on, _, _ = work(runnable[on], model, x, y, batch)
        f_off, b_off, first, n_grad = work(runnable[off], model, x, y, batch)
        cell = lambda r, ref: f"{r:,} ({r / ref:.2f}x)"  # noqa: E731
        if f_off % len(y):  # not a whole number of passes over the points (restarts): no simple floor
            print(f"{label:<52}{cell(f_on, f_off):>16}{'n/a':>16}{cell(b_on, b_off):>16}{'n/a':>16}")
        else:
            f_floor, b_floor = floor_rows(first, f_off // len(y), n_grad)
            print(f"{label:<52}{cell(f_on, f_off):>16}{cell(f_floor, f_off):>16}{cell(b_on, b_off):>16}"
                  f"{cell(b_floor, b_off):>16}")
        print(f"    without early stop {f_off:,} forward / {b_off:,} backward rows; first fooling pass t "
              f"(0 = start): {histogram(first)}")
        if on == "workbench pgd":
            plain = work(runnable["plain loop"], model, x, y, batch)[2]
            print(f"    (the plain loop's first successes are the same: {torch.equal(plain, first)}; "
                  f"floor vs the plain loop: {f_floor / (steps * len(y)):.2f}x forward, "
                  f"{b_floor / (steps * len(y)):.2f}x backward)")


if __name__ == "__main__":
    main()
