"""ExplainSuite end to end on tiny hand-made models: records, flags, artifacts, figures,
determinism, no side effects, parameter errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workbench.suites.explain.suite import ExplainSuite
from workbench.suites.explain.testing import (
    LinearModel,
    TinyCNN,
    TinyLSTM,
    TinyMLP,
    digits_dataset,
    quick_train,
    tabular_dataset,
    tokens_dataset,
)
from workbench.data.base import Dataset, Split
from workbench.errors import ConfigError, ParameterTypeError
from workbench.suite import ModelHandle, RunContext
from workbench.torch_utils import ModuleState

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _ctx(tmp: Path, name: str, seed: int = 7) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp, seed=seed, device=CPU, suite="explain", model_name=name,
                      dataset_name="d", batch_size=256, log=lambda m: None)


def _suite(**overrides) -> ExplainSuite:
    return ExplainSuite.from_config(overrides, profile="quick")


def _handle(module: nn.Module, task: str = "classification", output: str = "logits") -> ModelHandle:
    return ModelHandle(name="m", module=module, arch="test", task=task, output=output)


def _by(result, name: str, **tags):
    return result.metric(name, **tags)


def test_params_are_validated_with_clear_messages():
    with pytest.raises(ConfigError, match="Did you mean 'saliency'"):
        _suite(methods=["salency"])
    with pytest.raises(ConfigError, match="Unknown parameter 'n_example'"):
        _suite(n_example=3)
    with pytest.raises(ParameterTypeError):
        _suite(n_examples="8")
    with pytest.raises(ConfigError, match="shap_value_function"):
        _suite(shap_value_function="conditional")
    with pytest.raises(ConfigError, match="replacements"):
        _suite(replacements=["noise"])
    quick, full = _suite(), ExplainSuite.from_config({}, profile="full")
    assert quick.params.n_examples < full.params.n_examples
    assert isinstance(quick.params.methods, tuple) and "deeplift" in full.params.methods


@pytest.fixture(scope="module")
def tabular():
    data = tabular_dataset(n=400, n_features=6, relevant=(0, 3))
    torch.manual_seed(0)
    return quick_train(TinyMLP(6, 2), data, epochs=15, lr=1e-2), data


def test_tabular_every_method_and_check(tabular, tmp_path):
    model, data = tabular
    model(data.train.x[:4]).sum().backward()  # filled .grad must survive
    model.train()  # and the train flag
    before = ModuleState.capture(model)
    suite = _suite(methods=["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "deeplift",
                            "occlusion", "lime", "shapley", "shap_kernel", "shap_gradient", "shap_deep"],
                   n_examples=6, quality=list(ExplainSuite.Params().quality), shap_value_function="background",
                   shap_background=8, shap_budget=512, lime_samples=200, smoothgrad_samples=4, n_perturb=4,
                   ig_steps=32, sanity_sampling=True, replacements=["zero", "mean", "sample"],
                   shap_gradient_samples=32)
    res = suite.run(_handle(model), data, _ctx(tmp_path / "a", "m"))
    assert before.diff(model) == []
    model.eval()
    assert res.status == "ok"
    for m in res.metrics:
        assert m.value is None or math.isfinite(m.value)
        assert m.value is not None or m.reason, m
    # every method explained every example, and states what it explains
    for method in suite.params.methods:
        cov = _by(res, "method_coverage", method=method)
        assert cov.value == 1.0 and cov.tags["target"] == "predicted class"
    # efficiency / completeness hold where the method guarantees them (an MLP of ReLUs)
    for method in ("integrated_gradients", "deeplift", "shapley", "shap_kernel"):
        gap = _by(res, "completeness_gap", method=method)
        assert gap.value < 0.05 and gap.tags["verdict"] == "ok", (method, gap)
    shapley = _by(res, "method_coverage", method="shapley")
    assert shapley.tags["value_function"] == "background" and shapley.tags["estimator"] == "exact"
    assert shapley.tags["n_samples"] == 2**6 and "seed" in shapley.tags
    assert _by(res, "shapley_error_bound", method="shapley").value == 0.0  # exact: no sampling error
    assert _by(res, "method_coverage", method="shap_kernel").tags["library"].startswith("shap ")
    # ground truth: features 0 and 3 carry the label
    assert _by(res, "top_k_precision", method="shapley").value >= 0.75
    assert _by(res, "top_k_precision", method="integrated_gradients").value >= 0.75
    # faithfulness against the random order, per replacement
    for rep in ("zero", "mean", "sample"):
        rand = _by(res, "deletion_auc", method="random", replacement=rep).value
        assert _by(res, "deletion_auc", method="shapley", replacement=rep).value < rand
    assert _by(res, "seed_rank_correlation", method="smoothgrad").value is not None
    assert _by(res, "seed_rank_correlation", method="shapley").reason.startswith("exact enumeration")
    assert _by(res, "max_sensitivity", method="lime").value is None
    assert _by(res, "infidelity", method="saliency").value >= 0
    lime_r2 = _by(res, "surrogate_r2", method="lime")
    low = _by(res, "low_fidelity_fraction", method="lime")
    assert lime_r2.tags["fidelity"] == ("low" if low.value > 0.5 else "ok")
    # artifacts the dashboard reads
    run_dir = tmp_path / "a"
    with np.load(run_dir / res.artifacts["examples"]) as ex:
        keys = set(ex.files)
        assert {"input", "label", "prediction", "probability", "explained_value"} <= keys
        assert ex["attr_shapley"].shape == (6, 6)
        # efficiency against an independent reference: f(x) - E_w[f(background)] with the
        # background rebuilt here (shap.kmeans of the training split, its weights)
        import shap

        summary = shap.kmeans(data.train.x.double().numpy(), 8)
        with torch.no_grad():
            f_bg = model(torch.as_tensor(summary.data, dtype=torch.float32)).double().numpy()  # (R, K)
        w = np.asarray(summary.weights, dtype=np.float64) / np.sum(summary.weights)
        ref = (w[:, None] * f_bg).sum(0)[ex["prediction"]]  # E_w f_target(b), (N,)
        np.testing.assert_allclose(ex["attr_shapley"].sum(1), ex["explained_value"] - ref, atol=1e-4)
    with np.load(run_dir / res.artifacts["curves"]) as cv:
        assert cv["deletion__shapley__zero"].shape == (6, suite.params.curve_steps + 1)
        assert "insertion__random__sample" in cv.files
    meta = json.loads((run_dir / res.artifacts["meta"]).read_text())
    assert meta["attributions"] == list(suite.params.methods) and meta["relevant"] == [0, 3]
    quality = json.loads((run_dir / res.artifacts["quality"]).read_text())
    assert len(quality["integrated_gradients"]["completeness_gap"]) == 6
    titles = [t for t, _ in ExplainSuite.figures(res.to_dict(), run_dir)]
    assert titles[0] == "Attributions side by side" and "Explanation quality" in titles
    assert any(t.startswith("Deletion") for t in titles)


def test_same_seed_same_numbers(tabular, tmp_path):
    model, data = tabular
    suite = _suite(methods=["smoothgrad", "lime", "shapley", "shap_kernel"], n_examples=4, shap_budget=40,
                   lime_samples=60, quality=["completeness", "deletion", "stability"], shap_value_function="baseline")
    a = suite.run(_handle(model), data, _ctx(tmp_path / "1", "m"))
    b = suite.run(_handle(model), data, _ctx(tmp_path / "2", "m"))
    assert [m.to_dict() for m in a.metrics] == [m.to_dict() for m in b.metrics]
    assert _by(a, "method_coverage", method="shapley").tags["estimator"] == "kernel"
    assert _by(a, "seed_rank_correlation", method="shapley").value is not None
    bound = _by(a, "shapley_error_bound", method="shapley")
    assert bound.value > 0 and bound.tags["estimator"] == "kernel"
    assert "by construction" in _by(a, "completeness_gap", method="shapley").tags["note"]


def test_token_lstm_flags_methods_that_break_their_property(tmp_path):
    """shap's DeepExplainer has no rule for LSTM: its efficiency error is large and the
    record says which layers it does not cover; exact Shapley and IG stay complete."""
    data = tokens_dataset(n=300, length=6, vocab=8, relevant=(1, 4))
    torch.manual_seed(0)
    model = quick_train(TinyLSTM(vocab=8), data, epochs=8, lr=2e-2)
    suite = _suite(methods=["integrated_gradients", "deeplift", "shapley", "shap_deep", "lime", "attention"],
                   n_examples=6, ig_steps=64, quality=["completeness", "ground_truth"], shap_budget=128,
                   shap_value_function="background", shap_background=4, lime_samples=100)
    before = ModuleState.capture(model)
    res = suite.run(_handle(model), data, _ctx(tmp_path, "lstm"))
    assert before.diff(model) == []
    deep = _by(res, "completeness_gap", method="shap_deep")
    assert "LSTM" in deep.tags["unsupported_layers"]
    assert deep.value > 0.05 and deep.tags["verdict"] == "breaks property"
    assert _by(res, "completeness_gap", method="shapley").value < 1e-6
    assert _by(res, "completeness_gap", method="integrated_gradients").tags["reference"] == "zero embedding"
    assert "LSTM" in _by(res, "method_coverage", method="deeplift").tags["unsupported_layers"]
    meta = json.loads((tmp_path / res.artifacts["meta"]).read_text())
    assert "attention" in meta["skipped"] and len(meta["tokens"][0]) == 6
    assert all(m.tags.get("method") != "attention" for m in res.metrics)  # not applicable: meta only


def test_image_quick_profile_on_a_cnn(tmp_path):
    data = digits_dataset()
    torch.manual_seed(0)
    model = quick_train(TinyCNN(), data, epochs=1)
    suite = _suite(n_examples=4)
    res = suite.run(_handle(model), data, _ctx(tmp_path, "cnn"))
    assert res.status == "ok"
    with np.load(tmp_path / res.artifacts["examples"]) as ex:
        assert ex["segments"].shape == (4, 8, 8) and ex["attr_lime"].shape == (4, 8, 8)
        assert ex["input"].shape == (4, 1, 8, 8)
    assert _by(res, "completeness_gap", method="integrated_gradients").value < 0.05
    assert _by(res, "method_coverage", method="shapley").tags["players"] == "SLIC superpixels"
    sal = _by(res, "randomisation_rank_correlation", method="saliency")
    # the verdict follows from the value and the threshold (either outcome is possible on a 1-epoch CNN)
    want = "passes" if sal.value <= sal.tags["threshold"] else "fails (explanation barely depends on the weights)"
    assert -1.0 <= sal.value <= 1.0 and sal.tags["verdict"] == want
    for r in ("zero", "blur"):
        rand = _by(res, "deletion_auc", method="random", replacement=r)
        assert rand.value is not None and 0.0 <= rand.value <= 1.0 and rand.tags["orders"] == 8


def test_regression_linear_model_shapley_is_w_times_x(tmp_path):
    data = tabular_dataset(n=200, n_features=5, relevant=(0, 3), task="regression")
    torch.manual_seed(0)
    model = LinearModel(5).eval()
    suite = _suite(methods=["integrated_gradients", "shapley", "lime"], n_examples=5,
                   quality=["completeness", "deletion"], lime_samples=50)
    res = suite.run(_handle(model, task="regression", output="mean"), data, _ctx(tmp_path, "lin"))
    assert _by(res, "method_coverage", method="shapley").tags["target"] == "regression mean"
    with np.load(tmp_path / res.artifacts["examples"]) as ex:
        want = (model.linear.weight.detach()[0] * torch.as_tensor(ex["input"])).numpy()
        np.testing.assert_allclose(ex["attr_shapley"], want, atol=1e-5)
        np.testing.assert_allclose(ex["attr_integrated_gradients"], want, atol=1e-5)
    deletion = _by(res, "deletion_auc", method="shapley", replacement="zero")
    assert deletion.unit == "output" and deletion.value is None and "regression" in deletion.reason


def test_language_model_attention_and_rollout_only(tmp_path):
    from workbench.models.gpt import GPT, GPTConfig

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (12, 9), generator=g)
    split = Split(x[:, :-1], x[:, 1:])
    data = Dataset(name="lm", modality="lm", task="lm", train=split, val=split, test=split, vocab_size=7,
                   vocab=tuple("abcdefg"))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=2, n_head=2, d_model=16, d_ff=32)).eval()
    suite = _suite(n_examples=5)
    handle = _handle(model, task="lm", output="lm_logits")
    assert suite.applicable(handle, data) is None
    res = suite.run(handle, data, _ctx(tmp_path, "gpt"))
    assert _by(res, "causality_violation", method="attention").value == 0.0
    assert _by(res, "causality_violation", method="rollout").value < 1e-6
    assert _by(res, "attention_row_sum_error", method="attention").value < 1e-5
    with np.load(tmp_path / res.artifacts["examples"]) as ex:
        assert ex["attention"].shape == (5, 2, 2, 8, 8) and ex["rollout"].shape == (5, 8, 8)
    titles = [t for t, _ in ExplainSuite.figures(res.to_dict(), tmp_path)]
    assert titles == ["Attention heads and rollout (example 0)"]
    reason = suite.applicable(_handle(TinyMLP(3, 2), task="lm", output="lm_logits"), data)
    assert reason and "return_attention" in reason


def test_a_failing_method_is_a_null_record_not_a_crash(tabular, tmp_path, monkeypatch):
    import workbench.suites.explain.methods as methods_mod

    def boom(*a, **k):
        raise RuntimeError("surrogate exploded")

    monkeypatch.setattr(methods_mod, "_explain_lime", boom)
    model, data = tabular
    res = _suite(methods=["saliency", "lime"], n_examples=3, quality=["deletion"]).run(
        _handle(model), data, _ctx(tmp_path, "m"))
    cov = _by(res, "method_coverage", method="lime")
    assert cov.value is None and "surrogate exploded" in cov.reason
    assert _by(res, "method_coverage", method="saliency").value == 1.0


def test_lime_low_fidelity_is_flagged(tmp_path):
    """A model whose logit is x0 * x1 (an interaction) defeats a linear surrogate."""

    class Product(nn.Module):
        output_kind = "logits"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = 4 * x[:, 0] * x[:, 1]
            return torch.stack([-s, s], 1)

    data = tabular_dataset(n=200, n_features=4)
    res = _suite(methods=["lime"], n_examples=6, quality=[], lime_samples=200).run(
        _handle(Product()), data, _ctx(tmp_path, "p"))
    r2 = _by(res, "surrogate_r2", method="lime")
    assert r2.value < 0.5 and r2.tags["fidelity"] == "low"
    assert _by(res, "low_fidelity_fraction", method="lime").value > 0.5


class MeanProbability(nn.Module):
    """Two classes with p(class 1) = mean(x) exactly (logits log(1 - m), log(m)), so a
    deletion curve under a random order has the closed-form expectation (1 - k/U) mean(x)."""

    output_kind = "logits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(1).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log1p(-m), torch.log(m)], 1)


def _mean_probability_data(n_features: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = 0.6 + 0.4 * torch.rand(60, n_features, generator=g)  # mean > 0.5: class 1 is predicted
    split = Split(x, torch.ones(60, dtype=torch.long))
    return Dataset(name="mean", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=2, feature_names=tuple(f"f{i}" for i in range(n_features)))


def test_random_control_is_the_expectation_with_its_spread(tmp_path):
    U, N, R, S = 10, 8, 16, 10
    data = _mean_probability_data(U)
    res = _suite(methods=["saliency"], n_examples=N, quality=["deletion", "insertion"], replacements=["zero"],
                 random_orders=R, curve_steps=S).run(_handle(MeanProbability()), data, _ctx(tmp_path, "mp"))
    x = data.test.x[:N].double().numpy()
    k = np.round(np.linspace(0, U, S + 1))
    closed = {"deletion": np.trapezoid((1 - k / U)[None] * x.mean(1)[:, None], dx=1 / S, axis=1),
              "insertion": np.trapezoid((k / U)[None] * x.mean(1)[:, None], dx=1 / S, axis=1)}
    quality = json.loads((tmp_path / res.artifacts["quality"]).read_text())["random"]
    for mode in ("deletion", "insertion"):
        rand = _by(res, f"{mode}_auc", method="random", replacement="zero")
        assert rand.tags["order"] == "random_expectation" and rand.tags["orders"] == R
        spread = _by(res, "random_order_spread", method="random", replacement="zero", mode=mode)
        per_example = np.array(quality[f"{mode}_auc"]["zero"])
        sd = np.array(quality[f"{mode}_auc_spread"]["zero"])
        assert spread.value == pytest.approx(sd.mean()) and np.all(sd > 0)
        # the mean of R orders sits within 4 Monte Carlo standard errors of the closed form
        assert np.all(np.abs(per_example - closed[mode]) <= 4 * sd / np.sqrt(R))
        mc_se = np.sqrt(np.mean(sd**2) / (R * N))
        assert abs(rand.value - closed[mode].mean()) <= 4 * mc_se
        # one random order is off by the spread, R times more than the R-order mean on average
        assert sd.mean() > 2 * np.abs(per_example - closed[mode]).mean()
    # the verdict beside each method compares its per-example AUCs with the control's expectation
    from workbench.suites.explain.records import vs_random

    full = json.loads((tmp_path / res.artifacts["quality"]).read_text())
    want = vs_random(np.array(full["saliency"]["deletion_auc"]["zero"]), np.array(quality["deletion_auc"]["zero"]),
                     "deletion", 7)
    assert _by(res, "deletion_auc", method="saliency", replacement="zero").tags["vs_random"] == want


def test_vs_random_verdict_follows_the_paired_difference():
    from workbench.suites.explain.records import vs_random

    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 30)
    assert vs_random(base - 0.1, base, "deletion", 0) == "better"  # lower deletion AUC is better
    assert vs_random(base - 0.1 + rng.normal(0, 0.02, 30), base, "deletion", 0) == "better"
    assert vs_random(base, base, "deletion", 0) == "not distinguishable"
    assert vs_random(base + 0.1, base, "deletion", 0) == "worse"
    assert vs_random(base + 0.1, base, "insertion", 0) == "better"
    assert vs_random(base + rng.normal(0, 0.05, 30), base, "insertion", 0) == "not distinguishable"


def test_deletion_is_null_with_reason_for_one_unit_and_for_regression(tmp_path):
    one = _mean_probability_data(1)
    res = _suite(methods=["saliency", "integrated_gradients"], n_examples=4, quality=["deletion", "insertion"],
                 replacements=["zero"]).run(_handle(MeanProbability()), one, _ctx(tmp_path / "one", "mp"))
    for method in ("saliency", "integrated_gradients", "random"):
        for mode in ("deletion", "insertion"):
            m = _by(res, f"{mode}_auc", method=method, replacement="zero")
            assert m.value is None and "at least 2 input units" in m.reason, m
    data = tabular_dataset(n=200, n_features=5, relevant=(0, 3), task="regression")
    res = _suite(methods=["saliency"], n_examples=4, quality=["deletion"], replacements=["zero"]).run(
        _handle(LinearModel(5).eval(), task="regression", output="mean"), data, _ctx(tmp_path / "reg", "lin"))
    for method in ("saliency", "random"):
        m = _by(res, "deletion_auc", method=method, replacement="zero")
        assert m.value is None and "undefined for regression" in m.reason
