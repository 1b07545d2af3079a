"""Evaluating a Hugging Face model through the workbench vs plain `transformers` inference.

The MiniLM plan's model (all-MiniLM-L6-v2, frozen, with its trained linear probe) on the
plan's test inputs (206 docstrings, 32 tokens). Printed, in examples per second:

  plain      transformers alone: AutoModel(input_ids, attention_mask) -> masked mean -> the
             same head, batches of --batch, torch.no_grad (what a user would write)
  adapter    the workbench's HFTokenModel forward on the same batches (what every suite calls)
  metrics    the metrics suite's whole run (predictions, bootstrap CIs, artifacts)
  uncertainty the uncertainty suite's whole run (quick profile: single, MC dropout x10,
             ensemble of 3 probes sharing the encoder, temperature scaling, ...)

The suites run the encoder many times (the uncertainty suite on val + test, x10 for MC
dropout, per member), so their rate is given per encoder pass: the encoder's forward is
wrapped with a counter of the examples it processed (and of those run with dropout layers
on), and "encoder ex/s" = counted examples / wall time of the suite. The ratio is the suite's
wall time over what plain transformers takes for the same passes (the plain rate, and for
MC-dropout passes the plain rate with dropout layers on, "plain+drop"): the workbench's
overhead over the plain forward (target <= 1.2 for metrics and uncertainty). The time spent
inside the encoder is also measured, which splits that overhead into slower forwards (batch
sizes, the adapter) and work outside the model (bootstrap CIs, fitting, probe heads of the
ensemble trained on the first run, artifacts).

    pip install -e ".[hf,minilm]"
    python benchmarks/bench_hf.py                 # 2 threads, batch 64
    python benchmarks/bench_hf.py --threads 1

Times: the best of --repeats runs (the box is shared: the best is the least disturbed);
suites run --suite-repeats times (default once: the uncertainty suite takes minutes on CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _load(plan_path: str, cache: Path) -> tuple[Any, Any, Any]:
    from workbench.config import load_plan

    try:
        from workbench.build import build_handle, load_plan_dataset
    except ImportError:  # older layout
        from workbench.runner import build_handle, load_plan_dataset  # type: ignore[no-redef]
    plan = load_plan(plan_path)
    spec = plan.models[0]
    data = load_plan_dataset(plan, spec.dataset)
    handle = build_handle(spec, data, device=torch.device("cpu"), cache_dir=cache, run_seed=plan.run.seed,
                          log=lambda s: None)
    return plan, data, handle


def _best(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class _Counter:
    """Counts the examples the encoder's forward processes."""

    def __init__(self, hf: Any) -> None:
        self.hf, self.n, self.seconds, self.orig = hf, 0, 0.0, hf.forward
        self.n_dropout = 0  # examples run with dropout on (MC dropout)
        self.dropouts = [m for m in hf.modules() if isinstance(m, torch.nn.Dropout)]

    def __enter__(self) -> "_Counter":
        def counted(*args: Any, **kwargs: Any) -> Any:
            x = kwargs.get("inputs_embeds", kwargs.get("input_ids"))
            self.n += int(x.shape[0])
            if any(m.training for m in self.dropouts):
                self.n_dropout += int(x.shape[0])
            t0 = time.perf_counter()
            try:
                return self.orig(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        self.hf.forward = counted
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.hf.forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default=str(Path(__file__).resolve().parents[1] / "plans" / "minilm.toml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs of the plain and adapter loops")
    ap.add_argument("--suite-repeats", type=int, default=1, help="timed runs of each suite (minutes each on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from workbench.suite import RunContext
    from workbench.registry import SUITES

    with tempfile.TemporaryDirectory() as tmp:
        plan, data, handle = _load(args.plan, Path(tmp) / "cache")
        m = handle.module
        x = data.test.x
        n = int(x.shape[0])
        hf, head = m.hf, m.head

        @torch.no_grad()
        def plain() -> None:
            for i in range(0, n, args.batch):
                ids = x[i : i + args.batch]
                mask = (ids != m.config.pad_id).long()
                h = hf(input_ids=ids, attention_mask=mask).last_hidden_state
                w = mask.unsqueeze(-1).float()
                head((h * w).sum(1) / w.sum(1))

        @torch.no_grad()
        def adapter() -> None:
            for i in range(0, n, args.batch):
                m(x[i : i + args.batch])

        def plain_dropout() -> None:  # the fair reference for MC-dropout passes: dropout layers on
            for d in (mm for mm in hf.modules() if isinstance(mm, torch.nn.Dropout)):
                d.train()
            try:
                plain()
            finally:
                hf.eval()

        plain(), adapter()  # warm-up
        # interleaved, best of --repeats each: load changes on a shared box hit all paths alike
        best = {"plain": float("inf"), "plain_dropout": float("inf"), "adapter": float("inf")}
        for _ in range(args.repeats):
            for key, fn in (("plain", plain), ("plain_dropout", plain_dropout), ("adapter", adapter)):
                best[key] = min(best[key], _best(fn, 1))
        t_plain, t_plain_dropout, t_adapter = best["plain"], best["plain_dropout"], best["adapter"]
        rate = n / t_plain
        print(f"MiniLM probe, {n} test texts x {x.shape[1]} tokens, batch {args.batch}, {args.threads} threads")
        print(f"{'path':<12} {'ex/s':>9} {'encoder ex/s':>13} {'plain / it':>11}")
        print(f"{'plain':<12} {rate:9.1f} {rate:13.1f} {1.0:11.2f}")
        print(f"{'plain+drop':<12} {n / t_plain_dropout:9.1f} {n / t_plain_dropout:13.1f} "
              f"{t_plain_dropout / t_plain:11.2f}   (dropout layers on, as MC dropout runs them)")
        print(f"{'adapter':<12} {n / t_adapter:9.1f} {n / t_adapter:13.1f} {t_adapter / t_plain:11.2f}")
        for name in ("metrics", "uncertainty"):
            suite = SUITES.get(name).from_config(plan.suites.get(name, {}), profile=plan.run.profile)
            best = None
            for r in range(args.suite_repeats):
                ctx = RunContext(run_id="bench", run_dir=Path(tmp) / f"{name}{r}", seed=0, device=torch.device("cpu"),
                                 suite=name, model_name=handle.name, dataset_name=data.name,
                                 max_samples=plan.run.max_samples, batch_size=args.batch, profile=plan.run.profile,
                                 log=lambda s: None)
                with _Counter(hf) as c:
                    t0 = time.perf_counter()
                    res = suite.run(handle, data, ctx)
                    t = time.perf_counter() - t0
                if res.status != "ok":
                    raise SystemExit(f"{name} suite: {res.status}: {res.reason}")
                if best is None or t < best[0]:
                    best = (t, c.n, c.seconds, c.n_dropout)
            t, counted, in_encoder, n_drop = best
            enc_rate = counted / t
            # what plain transformers would take for the same passes (dropout on where the suite had it on)
            t_ref = (counted - n_drop) * t_plain / n + n_drop * t_plain_dropout / n
            print(f"{name:<12} {n / t:9.1f} {enc_rate:13.1f} {t / t_ref:11.2f}   "
                  f"({counted} encoder examples, {n_drop} with dropout on, in {t:.2f} s; {in_encoder:.2f} s inside "
                  f"the encoder = {in_encoder / t_ref:.2f}x the plain forwards)")


if __name__ == "__main__":
    main()
