"""Gradient-masking checks on deliberately masked models: logits scaled by 1e4 (saturated
softmax) and inputs quantised to 4 levels must both be flagged, the standard model not."""

from __future__ import annotations

import pytest
import torch

from workbench.suites.robustness.masking import CHECKS, check_increasing, gradient_masking_checks
from workbench.suites.robustness.testing import QuantizedInput, ScaledLogits, digits_dataset, trained_digits_cnn
from workbench.torch_utils import ModuleState

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(shared_cache):
    cnn = trained_digits_cnn(shared_cache)
    d = digits_dataset()
    return cnn, d.test.x[:150], d.test.y[:150]


def _run(model, x, y):
    before = ModuleState.capture(model)
    rep = gradient_masking_checks(model, x, y, eps=0.1, num_classes=10, pgd_steps=10, apgd_steps=20,
                                  apgd_targets=3, queries=100, generator=torch.Generator().manual_seed(0))
    assert before.diff(model) == []
    return rep, {c.check: c for c in rep.checks}


def test_standard_model_is_not_flagged(setup):
    cnn, x, y = setup
    rep, checks = _run(cnn, x, y)
    assert [c.check for c in rep.checks] == list(CHECKS)
    flagged = [c.check + ": " + c.reason for c in rep.checks if c.flagged]
    assert flagged == []
    assert checks["accuracy_increases_with_eps"].flagged is None  # no curves given: not run, with a reason
    assert checks["accuracy_increases_with_eps"].reason
    # the extra attacks are reported for the caller's worst case, clean-wrong points count as wrong
    assert set(rep.correct) >= {"pgd_more_iterations", "pgd_unbounded", "random_search", "random_noise"}
    assert "clean" not in rep.correct
    assert rep.accuracy["pgd_unbounded"] <= 0.1


def test_saturated_logits_are_flagged(setup):
    cnn, x, y = setup
    rep, checks = _run(ScaledLogits(cnn, 1e4), x, y)
    assert rep.n_flags >= 2
    assert checks["zero_gradient"].flagged
    assert checks["dlr_much_stronger_than_ce"].flagged
    assert checks["unbounded_eps_not_chance"].flagged
    assert "APGD-T" in checks["dlr_much_stronger_than_ce"].reason


def test_quantised_inputs_are_flagged(setup):
    cnn, x, y = setup
    rep, checks = _run(QuantizedInput(cnn, 4), x, y)
    assert rep.n_flags >= 2
    assert checks["zero_gradient"].flagged
    assert checks["zero_gradient"].values["fraction"] == 1.0
    assert checks["black_box_beats_white_box"].flagged
    assert checks["unbounded_eps_not_chance"].flagged


def test_known_results_are_reused_not_recomputed(setup):
    cnn, x, y = setup
    n = len(y)
    fake = {"clean": torch.ones(n, dtype=torch.bool), "fgsm": torch.zeros(n, dtype=torch.bool),
            "pgd": torch.ones(n, dtype=torch.bool)}
    rep = gradient_masking_checks(cnn, x, y, eps=0.1, num_classes=10, known=fake, pgd_steps=2, apgd_steps=2,
                                  apgd_targets=1, queries=2)
    checks = {c.check: c for c in rep.checks}
    # PGD (given as 100%) is weaker than FGSM (given as 0%): flagged from the known numbers
    assert checks["pgd_weaker_than_fgsm"].flagged
    assert "pgd" not in rep.correct and "fgsm" not in rep.correct


def test_monotonicity_check_on_hand_made_curves():
    tol = 0.02
    down = {"pgd": [(0.05, 0.9), (0.1, 0.5), (0.2, 0.1)]}
    up = {"pgd": [(0.05, 0.9), (0.1, 0.5), (0.2, 0.6)]}
    small_wiggle = {"pgd": [(0.05, 0.9), (0.1, 0.5), (0.2, 0.51)]}
    fgsm_only = {"fgsm": [(0.05, 0.9), (0.1, 0.95)]}
    assert check_increasing(down, tol).flagged is False
    rep = check_increasing(up, tol)
    assert rep.flagged and "pgd" in rep.reason and rep.values["largest_rise"] == pytest.approx(0.1)
    assert check_increasing(small_wiggle, tol).flagged is False
    assert check_increasing(fgsm_only, tol).flagged is None
    # order of the points does not matter
    assert check_increasing({"pgd": [(0.2, 0.6), (0.05, 0.9), (0.1, 0.5)]}, tol).flagged


def test_transfer_attack_from_an_independent_copy_joins_the_black_box_check(setup, shared_cache):
    cnn, x, y = setup
    copy = trained_digits_cnn(shared_cache, seed=1)
    rep = gradient_masking_checks(cnn, x[:80], y[:80], eps=0.1, num_classes=10, pgd_steps=5, apgd_steps=8,
                                  apgd_targets=2, queries=20, transfer_model=copy,
                                  generator=torch.Generator().manual_seed(0))
    check = {c.check: c for c in rep.checks}["black_box_beats_white_box"]
    assert "transfer" in rep.correct and "transfer" in check.values
    # a transferred attack is weaker than attacking the model itself, yet does something
    assert rep.accuracy["pgd"] <= rep.accuracy["transfer"] < rep.accuracy["clean"]
    assert check.flagged is False
