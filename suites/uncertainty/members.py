"""How good each deep-ensemble member is, so that an ensemble of unequal members is seen.

A deep ensemble is M models of equal quality that differ only by their random seed. For a
model the workbench did not train (a user's checkpoint), its siblings are trained by the
workbench from the model's factory with the plan's `train` settings (defaults when none),
which need not be how the handed model was trained; a sibling far weaker than the handed
model turns the ensemble's "epistemic" disagreement into a measure of that gap. So every
member's test accuracy is recorded, and the siblings significantly less accurate than the
handed model (paired McNemar test on the same test rows) are counted and named.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.records import MetricRecord
from workbench.significance import mcnemar
from workbench.stats import PROPORTION_METHOD, proportion_ci

ALPHA = 0.05


def member_records(test_logits: torch.Tensor, y: torch.Tensor, seeds: Sequence[int | str],
                   alpha: float = ALPHA) -> list[MetricRecord]:
    """test_logits (M, N, K) of the ensemble's members on the test rows, y (N,) labels,
    seeds (M,) as recorded ("handed" for the model as given). Records: `member_accuracy`
    per member (Clopper–Pearson CI; tags member, seed) and, when member 0 is the handed
    model, `ensemble_weaker_members`: how many siblings are less accurate than it with
    McNemar p < alpha, the reason naming them and what to do."""
    correct = test_logits.argmax(-1) == y[None]  # (M, N)
    n = int(y.numel())
    out: list[MetricRecord] = []
    for i in range(correct.shape[0]):
        k = int(correct[i].sum())
        seed = seeds[i] if i < len(seeds) else "?"
        out.append(MetricRecord(name="member_accuracy", value=k / n, higher_is_better=True, unit="fraction", n=n,
                                ci=proportion_ci(k, n), tags={"method": "ensemble", "member": i, "seed": str(seed),
                                                              "ci_method": PROPORTION_METHOD}))
    if not seeds or seeds[0] != "handed" or correct.shape[0] < 2:
        return out
    handed = correct[0].numpy()
    acc0 = float(handed.mean())
    weaker = []
    for i in range(1, correct.shape[0]):
        c = correct[i].numpy()
        test = mcnemar(handed, c)
        if float(c.mean()) < acc0 and test.p_value < alpha:
            weaker.append(f"seed {seeds[i]} ({float(c.mean()):.3g}, McNemar p={test.p_value:.2g})")
    reason = None
    if weaker:
        reason = (f"{len(weaker)} of {correct.shape[0] - 1} siblings are less accurate than the handed model "
                  f"({acc0:.3g}): {', '.join(weaker)}. The workbench trained them from the model's factory with the "
                  "plan's `train` settings, not as the handed model was trained, so the ensemble's epistemic term "
                  "mixes this quality gap with uncertainty. Give the model a `train` table that matches its training.")
    out.append(MetricRecord(name="ensemble_weaker_members", value=float(len(weaker)), reason=reason,
                            higher_is_better=False, unit="members", n=n,
                            tags={"method": "ensemble", "test": "mcnemar", "alpha": alpha}))
    return out
