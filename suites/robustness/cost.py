"""The robustness suite's model passes, for `workbench.estimate` (no model call is made).
Upper end: attacks stop stepping examples already fooled (`early_stop`), so a model that
falls quickly costs less; only clean-correct points are attacked, taken here as all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.estimate import Work, passes, training_work

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.suite import ModelHandle, RunContext


def attack_steps(attack: str, p: Any) -> tuple[float, float]:
    """(backward, forward) passes per attacked example of one attack at one eps."""
    r = p.restarts
    return {
        "fgsm": (1.0, 1.0),
        "pgd": (p.pgd_steps * r, 1.0),
        "apgd_ce": (p.apgd_steps * r, 1.0),
        "apgd_dlr": (p.apgd_steps * r, 1.0),
        "apgd_t": (p.apgd_steps * p.apgd_targets * r, 1.0),
        "random_search": (0.0, float(p.random_search_queries)),
    }[attack]


def robustness_cost(p: Any, model: "ModelHandle", data: "Dataset", ctx: "RunContext") -> list[Work]:
    n = ctx.limit(len(data.test), p.n_samples)
    bs = ctx.batch_size
    eps_grid = len([e for e in p.eps if e > 0])
    variants = 1 + (len(p.adversarial_training) if model.trainer is not None else 0)
    work: list[Work] = []
    for attack in p.attacks:
        bwd, fwd = attack_steps(attack, p)
        driver = {"pgd": "pgd_steps", "fgsm": "eps", "random_search": "random_search_queries"}.get(attack, "apgd_steps")
        work += passes("backward", variants * eps_grid * n * bwd, bs, driver)
        work += passes("forward", variants * eps_grid * n * fwd, bs, driver)
    if p.masking_checks:  # PGD, APGD-CE and APGD-T (<= 3 targets) and a random search, once per variant
        masking_bwd = p.pgd_steps * p.restarts + p.apgd_steps * (1 + min(p.apgd_targets, 3))
        work += passes("backward", variants * n * masking_bwd, bs, "masking_checks")
        work += passes("forward", variants * n * p.random_search_queries, bs, "masking_checks")
    if model.trainer is not None:
        for recipe in p.adversarial_training:
            cfg = dict(model.train_config or {}, recipe=recipe)
            if p.training_epochs:
                cfg["epochs"] = p.training_epochs
            work += training_work(len(data.train), len(data.val), cfg, driver="adversarial_training")
        if p.transfer_attack and p.masking_checks:
            work += training_work(len(data.train), len(data.val), model.train_config or {}, driver="transfer_attack")
    if data.modality == "tokens" and p.substitutions:
        work += passes("backward", n * max(p.substitutions), bs, "substitutions")
        work += passes("forward", n * max(p.substitutions) * p.hotflip_candidates, bs, "hotflip_candidates")
    return work
