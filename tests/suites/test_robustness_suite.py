"""RobustnessSuite end to end on tiny hand-made models and datasets (image, tabular,
tokens): the results contract, identities between the reported numbers, side effects,
determinism, masking flags through the suite, adversarial-training variants side by
side, and figures. Token models through the embedding hook: tests/suites/test_robustness_tokens.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.suites.robustness.suite import RobustnessSuite
from workbench.suites.robustness.testing import (
    ScaledLogits,
    SmallCNN,
    digits_dataset,
    tabular_dataset,
    train_plain,
    trained_digits_cnn,
)
from workbench.errors import ConfigError
from workbench.suite import ModelHandle, RunContext
from workbench.torch_utils import ModuleState

torch.set_num_threads(1)
CPU = torch.device("cpu")
SMALL = {"n_samples": 60, "eps": [0.05, 0.1, 0.2], "pgd_steps": 5, "apgd_steps": 8, "apgd_targets": 2,
         "random_search_queries": 20, "n_examples": 4}


def _ctx(tmp_path: Path, seed: int = 0, name: str = "m") -> RunContext:
    return RunContext(run_id="t", run_dir=tmp_path, seed=seed, device=CPU, suite="robustness", model_name=name,
                      dataset_name="d", batch_size=64, log=lambda m: None)


def _handle(module: nn.Module, name: str = "m", trainer=None, task: str = "classification") -> ModelHandle:
    return ModelHandle(name=name, module=module, arch="custom", task=task, output="logits", trainer=trainer,
                       train_seconds=1.5)


def _suite(**overrides) -> RobustnessSuite:
    return RobustnessSuite.from_config({**SMALL, **overrides}, profile="quick")


def _m(res, name: str, **tags):
    return res.metric(name, **tags)


@pytest.fixture(scope="module")
def digits():
    return digits_dataset()


@pytest.fixture(scope="module")
def cnn(shared_cache):
    return trained_digits_cnn(shared_cache)


@pytest.fixture(scope="module")
def image_run(cnn, digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("robust-image")
    cnn.eval()
    before = ModuleState.capture(cnn)
    res = _suite().run(_handle(cnn), digits, _ctx(run_dir))
    assert before.diff(cnn) == []
    return res, run_dir


def test_params_validation_and_profiles():
    quick = RobustnessSuite.from_config({}, profile="quick").params
    full = RobustnessSuite.from_config({}, profile="full").params
    assert quick.pgd_steps == 10 and quick.apgd_steps == 20 and quick.apgd_targets == 3 and quick.restarts == 1
    assert len(quick.eps) == 3 and quick.adversarial_training == ()
    assert full.adversarial_training == ("fgsm_rs", "pgd_at", "trades") and full.apgd_steps >= 100
    assert _suite(eps=[0.2, 0.05]).params.eps == (0.05, 0.2)
    with pytest.raises(ConfigError, match="Did you mean 'apgd_ce'"):
        _suite(attacks=["apgd_cee"])
    with pytest.raises(ConfigError, match="eps"):
        _suite(eps=[-0.1])
    with pytest.raises(ConfigError, match="substitutions"):
        _suite(substitutions=[0, 2])
    with pytest.raises(ConfigError, match="Did you mean 'trades'"):
        _suite(adversarial_training=["trade"])
    with pytest.raises(ConfigError, match="Unknown parameter"):
        RobustnessSuite.from_config({"epsilon": [0.1]})
    with pytest.raises(ConfigError, match="Unknown parameter"):  # corruptions moved to their own suite
        _suite(corruptions=["blur"])


def test_not_applicable_to_regression_lm_or_non_logit_outputs(digits):
    reg = type(digits)(**{**digits.__dict__, "task": "regression"})
    suite = _suite()
    assert "classification" in suite.applicable(_handle(SmallCNN()), reg)
    h = _handle(SmallCNN())
    h.output = "mean"
    assert "logits" in suite.applicable(h, digits)
    res = suite.run(h, digits, _ctx(Path("/tmp")))
    assert res.status == "skipped" and res.reason


def test_contract_and_identities_on_digits(image_run):
    res, _ = image_run
    assert res.status == "ok"
    for m in res.metrics:
        assert m.higher_is_better is not None, m.name
        assert m.value is None or math.isfinite(m.value)
        if m.value is None:
            assert m.reason
    clean = _m(res, "clean_accuracy", variant="standard")
    assert clean.n == 60 and clean.ci[0] <= clean.value <= clean.ci[1]
    for eps in (0.05, 0.1, 0.2):
        worst = _m(res, "robust_accuracy", attack="worst_case", eps=eps, variant="standard")
        per_attack = []
        for attack in ("fgsm", "pgd", "apgd_ce", "apgd_t"):
            r = _m(res, "robust_accuracy", attack=attack, eps=eps, variant="standard")
            assert {"steps", "restarts", "norm"} <= set(r.tags)
            per_attack.append(r.value)
            assert r.value <= clean.value
            # success rate = fooled / clean-correct, exactly
            s = _m(res, "attack_success_rate", attack=attack, eps=eps, variant="standard")
            assert s.n == round(clean.value * 60)
            assert s.value == pytest.approx((clean.value - r.value) / clean.value)
            # per-class accuracies average back to the overall one
            pcs = [m for m in res.metrics if m.name == "per_class_robust_accuracy" and m.tags["attack"] == attack
                   and m.tags["eps"] == eps]
            assert len(pcs) == 10
            assert sum(m.value * m.n for m in pcs if m.value is not None) / 60 == pytest.approx(r.value)
            norm = _m(res, "mean_perturbation_norm", attack=attack, eps=eps, variant="standard")
            assert norm.value is None or norm.value <= eps + 1e-6
        assert worst.value <= min(per_attack) + 1e-12
        assert worst.ci[0] <= worst.value <= worst.ci[1]
    # robust accuracy falls with eps and PGD beats FGSM on this standard model
    wc = [_m(res, "robust_accuracy", attack="worst_case", eps=e, variant="standard").value for e in (0.05, 0.1, 0.2)]
    assert wc[0] >= wc[1] >= wc[2] and wc[2] < 0.2


def test_masking_flags_recorded_and_quiet_on_a_standard_model(image_run):
    res, run_dir = image_run
    flags = [m for m in res.metrics if m.name == "gradient_masking_flag"]
    assert {m.tags["check"] for m in flags} == {
        "zero_gradient", "pgd_weaker_than_fgsm", "accuracy_increases_with_eps", "unbounded_eps_not_chance",
        "more_iterations_weaker", "dlr_much_stronger_than_ce", "black_box_beats_white_box", "noise_beats_pgd"}
    assert all(m.tags["reason"] for m in flags)
    total = _m(res, "gradient_masking_flags", variant="standard")
    assert total.value == sum(m.value for m in flags) == 0
    saved = json.loads((run_dir / res.artifacts["masking_flags"]).read_text())
    assert len(saved["standard"]) == 8


def test_saturated_logits_flagged_through_the_suite(cnn, digits, tmp_path):
    res = _suite(n_samples=80).run(_handle(ScaledLogits(cnn)), digits, _ctx(tmp_path))
    assert _m(res, "gradient_masking_flags", variant="standard").value >= 2
    assert _m(res, "gradient_masking_flag", check="zero_gradient").value == 1.0


def test_artifacts_and_figures(image_run):
    res, run_dir = image_run
    for rel in res.artifacts.values():
        assert (run_dir / rel).exists()
    assert set(res.artifacts) >= {"adversarial_examples", "masking_flags", "robustness_summary"}
    import numpy as np

    with np.load(run_dir / res.artifacts["adversarial_examples"]) as ex:
        assert ex["clean"].shape == (4, 1, 8, 8) and ex["probs_adversarial"].shape == (4, 10)
        np.testing.assert_allclose(ex["adversarial"] - ex["clean"], ex["perturbation"], atol=1e-6)
        assert np.abs(ex["perturbation"]).max() <= 0.1 + 1e-6  # saved at the masking eps
        assert (ex["pred_adversarial"] != ex["label"]).any()
    figs = RobustnessSuite.figures(res.to_dict(), run_dir)
    assert [t for t, _ in figs] == ["Robust accuracy vs eps", "Gradient-masking checks", "Adversarial examples"]
    for _, fig in figs:
        fig.to_json()


def test_side_effects_in_train_mode_and_determinism(cnn, digits, tmp_path):
    m = SmallCNN()
    m.load_state_dict(cnn.state_dict())
    m.train()
    m.fc.weight.grad = torch.ones_like(m.fc.weight)
    before = ModuleState.capture(m)
    suite = _suite(n_samples=30, attacks=["fgsm", "pgd"])
    a = suite.run(_handle(m), digits, _ctx(tmp_path / "a", seed=3))
    assert before.diff(m) == []
    b = suite.run(_handle(m), digits, _ctx(tmp_path / "b", seed=3))
    strip = lambda r: [(x.name, x.tags, x.value, x.ci) for x in r.metrics if x.unit != "s"]  # noqa: E731
    assert strip(a) == strip(b)


def test_tabular_model_is_attacked_unbounded(tmp_path):
    data = tabular_dataset()
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
    train_plain(mlp, data, epochs=30)
    res = _suite(eps=[0.1, 0.5, 1.0]).run(_handle(mlp), data, _ctx(tmp_path))
    assert res.status == "ok"
    summary = json.loads((tmp_path / res.artifacts["robustness_summary"]).read_text())
    assert any("unbounded" in n for n in summary["notes"])
    assert _m(res, "robust_accuracy", attack="worst_case", eps=1.0).value < _m(
        res, "clean_accuracy", variant="standard").value


def test_adversarial_training_variants_side_by_side(cnn, digits, tmp_path):
    from workbench.suites.robustness.training import FGSMRandomStartTraining, train_with_recipe

    calls = []

    def trainer(seed=None, recipe=None, recipe_params=None, epochs=None, **overrides):
        calls.append((recipe, dict(recipe_params)))
        torch.manual_seed(0)
        m, _, _ = train_with_recipe(SmallCNN(), FGSMRandomStartTraining(**recipe_params, val_samples=64), digits,
                                    epochs=4)
        return m

    res = _suite(adversarial_training=["fgsm_rs"], training_eps=0.1).run(
        _handle(cnn, trainer=trainer), digits, _ctx(tmp_path))
    assert calls == [("fgsm_rs", {"eps": 0.1, "norm": "linf", "bounds": [0.0, 1.0]})]
    for v in ("standard", "fgsm_rs"):
        _m(res, "clean_accuracy", variant=v)
        _m(res, "training_time", variant=v)
    std = _m(res, "robust_accuracy", attack="worst_case", eps=0.1, variant="standard").value
    at = _m(res, "robust_accuracy", attack="worst_case", eps=0.1, variant="fgsm_rs").value
    assert at >= std  # 4 epochs of FGSM-RS already help (efficacy is tested in test_robustness_training)
    assert _m(res, "robust_accuracy", attack="worst_case", eps=0.2, variant="fgsm_rs").value > _m(
        res, "robust_accuracy", attack="worst_case", eps=0.2, variant="standard").value
    summary = json.loads((tmp_path / res.artifacts["robustness_summary"]).read_text())
    assert "stronger" in summary["variants"]["fgsm_rs"]["trained_with"]
    # no trainer: the variant is null with the reason
    res2 = _suite(adversarial_training=["pgd_at"], attacks=["fgsm"]).run(_handle(cnn), digits, _ctx(tmp_path / "b"))
    r = _m(res2, "robust_accuracy", attack="worst_case", variant="pgd_at")
    assert r.value is None and "trainer" in r.reason
