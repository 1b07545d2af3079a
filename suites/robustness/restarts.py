"""Spread of attacks with random starts over their restarts.

An attack that starts at a random point of the eps-ball (PGD, APGD, APGD-T, random search)
gives a different robust accuracy for each start: on the reference digits CNN one PGD
restart moved it by about ±1.5 points across seeds, while the reported CI is only the
sampling CI over examples. With `restarts` = R > 1 the suite keeps, per example, the worst
case over the R restarts (`robust_accuracy`); beside it, this module reports how much one
restart varies: the attack is also run R times independently (one start each, seeds
distinct), and

- `restart_spread`: SD over the R runs of their robust accuracy (n = R runs), with the
  lowest and highest in the summary;
- `restart_worst_case_accuracy`: per example correct only if it survived all R independent
  runs (the worst case over restarts), with its proportion CI.

With one restart the spread is not measured: a null `restart_spread` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from workbench.records import MetricRecord

RANDOM_START_ATTACKS = ("pgd", "apgd_ce", "apgd_dlr", "apgd_t", "random_search")


def independent_restarts(run_once: Callable[[int], torch.Tensor], restarts: int) -> np.ndarray:
    """(R, N) bool: `run_once(r)` -> (N,) correctness under the attack's r-th independent
    single-start run, for r in 0..R-1."""
    return np.stack([np.asarray(run_once(r).cpu().numpy(), dtype=bool) for r in range(restarts)])


def restart_records(per_restart: np.ndarray | None, tags: dict[str, Any], *,
                    restarts: int) -> tuple[list[MetricRecord], dict[str, Any]]:
    """The records and summary row of one (attack, eps): see the module docstring."""
    from workbench.stats import PROPORTION_METHOD, proportion_ci

    rtags = {**tags, "restarts": int(restarts)}
    if per_restart is None or per_restart.shape[0] < 2:
        reason = (f"one random start per point (restarts = {restarts}): the spread over starts is not measured; "
                  "set restarts >= 2")
        return [MetricRecord.unavailable("restart_spread", reason, higher_is_better=False, unit="fraction",
                                         tags=rtags)], {"restarts": int(restarts), "reason": reason}
    acc = per_restart.mean(axis=1)  # (R,)
    worst = per_restart.all(axis=0)  # (N,) survived every run
    n, k = int(worst.size), int(worst.sum())
    records = [
        MetricRecord(name="restart_spread", value=float(acc.std(ddof=1)), higher_is_better=False,
                     unit="fraction", n=int(acc.size), tags={**rtags, "statistic": "SD of robust accuracy over runs"}),
        MetricRecord(name="restart_worst_case_accuracy", value=k / n, higher_is_better=True, unit="fraction", n=n,
                     ci=proportion_ci(k, n), tags={**rtags, "ci_method": PROPORTION_METHOD}),
    ]
    summary = {"restarts": int(restarts), "accuracy_per_run": acc.tolist(), "min": float(acc.min()),
               "max": float(acc.max()), "sd": float(acc.std(ddof=1)), "worst_of_independent": k / n}
    return records, summary


def attack_restart_records(attack: str, model: Any, xin: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                           clean: torch.Tensor, eps_abs: float, bounds: Any, p: Any, seed: int, bs: int,
                           tags: dict[str, Any]) -> tuple[list[MetricRecord], dict[str, Any]]:
    """Run `attack` p.restarts times with one random start each (seeds seed + 1000 r) on
    the points the suite attacks and return `restart_records`; clean-wrong points count
    as not robust in every run, as in `robust_accuracy`."""
    import dataclasses

    from workbench.suites.robustness import functional as A
    from workbench.suites.robustness.suite import _run_attack

    if p.restarts < 2 or attack not in RANDOM_START_ATTACKS:
        return restart_records(None, tags, restarts=p.restarts)
    single = dataclasses.replace(p, restarts=1)

    def run_once(r: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(seed) + 1000 * (r + 1))
        c = clean.clone()
        if idx.numel() > 0:
            x_adv = _run_attack(attack, A.restrict(model, idx), xin[idx], y[idx], eps_abs, bounds, single, gen, bs)
            c[idx.cpu()] = (A.predict_logits(A.restrict(model, idx), x_adv, batch_size=bs).argmax(1) == y[idx]).cpu()
        return c

    return restart_records(independent_restarts(run_once, p.restarts), tags, restarts=p.restarts)
