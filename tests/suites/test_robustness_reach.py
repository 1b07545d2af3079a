"""What the recipes reach on digits (the README's table): the reference tiny CNN trained
15 epochs with the workbench trainer — standard, FGSM-RS, PGD-7 AT, TRADES (β=6) at
eps = 0.1 (L∞, pixels in [0, 1]) — evaluated on the whole digits test split with a
STRONGER attack than any training attack: the per-sample worst case of APGD-CE and APGD-T
(9 targets), 100 steps each.

Minutes of CPU, so it is opt-in:
    WORKBENCH_ROBUSTNESS_REACH=1 python -m pytest tests/suites/test_robustness_reach.py -s
Reference points from the issue (clean / APGD-CE+T): standard 97/53, FGSM-RS 98/76,
PGD-7 98/72, TRADES 97/78.
"""

from __future__ import annotations

import os

import pytest
import torch

from workbench.suites.robustness import functional as A
from workbench.torch_utils import env_flag

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not env_flag("WORKBENCH_ROBUSTNESS_REACH"),
                       reason="opt-in (minutes of CPU): set WORKBENCH_ROBUSTNESS_REACH=1"),
]

EPS = 0.1
VARIANTS = {
    "standard": ("standard", {}),
    "fgsm_rs": ("fgsm_rs", {"eps": EPS, "bounds": [0.0, 1.0]}),
    "pgd_at": ("pgd_at", {"eps": EPS, "steps": 7, "bounds": [0.0, 1.0]}),
    "trades": ("trades", {"eps": EPS, "beta": 6.0, "steps": 7, "bounds": [0.0, 1.0]}),
}


def test_adversarial_training_reach_on_digits():
    from workbench.config import Plan, RunSettings
    from workbench.registry import MODELS
    from workbench.runner import load_plan_dataset
    from workbench.train import TrainConfig, train_model

    torch.set_num_threads(int(os.environ.get("WORKBENCH_THREADS", "2")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_plan_dataset(Plan(run=RunSettings(), models=[]), "digits")
    x, y = data.test.x.to(device), data.test.y.to(device)
    rows = {}
    for name, (recipe, params) in VARIANTS.items():
        torch.manual_seed(0)
        module = MODELS.get("cnn")(data, size="tiny")
        cfg = TrainConfig(epochs=15, patience=None, recipe=recipe, recipe_params=params, seed=0)
        res = train_model(module, data, cfg, device=device)
        m = res.module.eval()
        clean = A.predict_logits(m, x).argmax(1) == y
        g = torch.Generator().manual_seed(0)
        x_ce = A.apgd(m, x, y, eps=EPS, steps=100, generator=g)
        c_ce = A.predict_logits(m, x_ce).argmax(1) == y
        x_t = A.apgd_targeted(m, x, y, eps=EPS, steps=100, n_targets=9, generator=g)
        c_t = A.predict_logits(m, x_t).argmax(1) == y
        x_pgd = A.pgd(m, x, y, eps=EPS, steps=20, generator=g)
        c_pgd = A.predict_logits(m, x_pgd).argmax(1) == y
        worst = clean & c_ce & c_t
        rows[name] = {"clean": float(clean.float().mean()), "pgd20": float(c_pgd.float().mean()),
                      "apgd_ce": float(c_ce.float().mean()), "apgd_t": float(c_t.float().mean()),
                      "worst": float(worst.float().mean()), "seconds": res.seconds, "best_epoch": res.best_epoch}
    base = rows["standard"]["seconds"]
    print(f"\ndigits, tiny CNN, 15 epochs, eps={EPS} L∞, n={len(y)} test images, device {device}")
    print(f"{'variant':<10}{'clean':>7}{'PGD-20':>8}{'APGD-CE':>9}{'APGD-T':>8}{'worst':>7}{'train s':>9}{'x std':>7}{'best ep':>8}")
    for name, r in rows.items():
        print(f"{name:<10}{r['clean']:>7.3f}{r['pgd20']:>8.3f}{r['apgd_ce']:>9.3f}{r['apgd_t']:>8.3f}"
              f"{r['worst']:>7.3f}{r['seconds']:>9.1f}{r['seconds'] / base:>7.1f}{r['best_epoch']:>8d}")
    for name in ("fgsm_rs", "pgd_at", "trades"):
        assert rows[name]["worst"] >= rows["standard"]["worst"] + 0.1, name
        assert rows[name]["clean"] >= 0.9, name
