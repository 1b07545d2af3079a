"""CorruptionsSuite end to end: classification (accuracy, cross-entropy gap, decay flag) on
the digits CNN and regression (squared error) on a linear model, every number recomputed
here from the same seeded corrupted inputs; the headline mean over sets and its
per-example data; side effects; figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.base import Dataset, Split
from workbench.suite import ModelHandle, RunContext
from workbench.suites.corruptions.functional import corrupt
from workbench.suites.corruptions.suite import CorruptionsSuite
from workbench.suites.robustness.testing import digits_dataset, trained_digits_cnn
from workbench.torch_utils import ModuleState, derive_seed

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _ctx(tmp_path: Path, seed: int = 0) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp_path, seed=seed, device=CPU, suite="corruptions", model_name="m",
                      dataset_name="d", batch_size=64, log=lambda m: None)


def _handle(module: nn.Module, task: str = "classification", output: str = "logits") -> ModelHandle:
    return ModelHandle(name="m", module=module, arch="custom", task=task, output=output)


def _subset(split: Split, n: int, seed: int, offset: int) -> Split:
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed + offset))[:n].sort().values
    return split.subset(order)


def _corrupted(x: torch.Tensor, name: str, s: int, seed: int, **context) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive_seed(seed, "corruption", name, str(s)))
    return corrupt(x, name, s, generator=gen, **context)


def regression_dataset(n: int = 300, seed: int = 0) -> Dataset:
    """y = x @ w + noise on 4 standardised features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n, generator=g)
    a, b = n * 6 // 10, n * 8 // 10
    return Dataset(name="reg", modality="tabular", task="regression", train=Split(x[:a], y[:a]),
                   val=Split(x[a:b], y[a:b]), test=Split(x[b:], y[b:]), seed=seed)


@pytest.fixture(scope="module")
def digits_run(shared_cache, tmp_path_factory):
    cnn = trained_digits_cnn(shared_cache)
    data = digits_dataset()
    run_dir = tmp_path_factory.mktemp("corr-digits")
    cnn.train()  # the suite evaluates in eval mode and leaves the flags as found
    before = ModuleState.capture(cnn)
    suite = CorruptionsSuite.from_config({"n_samples": 60, "severities": [1, 5]}, profile="quick")
    res = suite.run(_handle(cnn), data, _ctx(run_dir))
    assert before.diff(cnn) == []
    cnn.eval()
    return res, run_dir, cnn, data


def test_classification_numbers_recomputed(digits_run):
    res, _, cnn, data = digits_run
    assert res.status == "ok"
    test, train = _subset(data.test, 60, 0, 17), _subset(data.train, 60, 0, 23)
    with torch.no_grad():
        clean_logits, train_logits = cnn(test.x), cnn(train.x)
    clean_acc = float((clean_logits.argmax(1) == test.y).float().mean())
    assert res.metric("corrupted_accuracy", corruption="none").value == pytest.approx(clean_acc)
    gap = res.metric("generalization_gap", corruption="none")
    expect = float(F.cross_entropy(clean_logits, test.y) - F.cross_entropy(train_logits, train.y))
    assert gap.value == pytest.approx(expect, abs=1e-5) and gap.ci[0] <= gap.value <= gap.ci[1]
    per_set = []
    for name in ("gaussian_noise", "blur", "shift", "rotation", "contrast"):
        for s in (1, 5):
            xs = _corrupted(test.x, name, s, 0, bounds=(0.0, 1.0))
            with torch.no_grad():
                correct = (cnn(xs).argmax(1) == test.y).double()
            per_set.append(correct.numpy())
            acc = res.metric("corrupted_accuracy", corruption=name, severity=s)
            assert acc.value == pytest.approx(float(correct.mean())) and acc.n == 60
            decay = res.metric("performance_decay", corruption=name, severity=s)
            drop = (clean_acc - float(correct.mean())) / clean_acc
            assert decay.tags["relative_drop"] == pytest.approx(drop, abs=1e-4)
            assert decay.value == float(drop > 0.1)
    mean = res.metric("mean_corrupted_accuracy")
    assert mean.value == pytest.approx(float(np.mean(per_set)))
    assert mean.ci[0] <= mean.value <= mean.ci[1]
    assert res.metric("performance_decay", corruption="blur", severity=5).value == 1.0  # heavy blur hurts


def test_headline_per_example_and_figures(digits_run):
    res, run_dir, _, _ = digits_run
    d = res.to_dict()
    heads = [m for m in d["metrics"] if CorruptionsSuite.is_headline(m)]
    assert [m["name"] for m in heads] == ["mean_corrupted_accuracy"]
    pe = CorruptionsSuite.per_example(d, run_dir)
    assert pe["mean_corrupted_accuracy"].shape == (60,)
    assert float(pe["mean_corrupted_accuracy"].mean()) == pytest.approx(heads[0]["value"])
    figs = CorruptionsSuite.figures(d, run_dir)
    assert [t for t, _ in figs] == ["Task metric under corruption"]
    figs[0][1].to_json()


def test_regression_mse_under_corruption(tmp_path):
    data = regression_dataset()
    torch.manual_seed(0)
    lin = nn.Linear(4, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0]]))
        lin.bias.zero_()

    class Mean(nn.Module):  # a regressor returning the mean (B,)
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x).squeeze(1)

    model = Mean()
    suite = CorruptionsSuite.from_config({"n_samples": 50, "severities": [1, 5]}, profile="quick")
    res = suite.run(_handle(model, task="regression", output="mean"), data, _ctx(tmp_path))
    assert res.status == "ok", res.reason
    test = _subset(data.test, 50, 0, 17)
    fill = data.train.x.float().mean(dim=0)
    with torch.no_grad():
        clean_se = (model(test.x) - test.y).double().pow(2).numpy()
    assert res.metric("corrupted_mse", corruption="none").value == pytest.approx(clean_se.mean())
    sets = []
    for name in ("feature_noise", "scaling", "missing_values"):
        for s in (1, 5):
            xs = _corrupted(test.x, name, s, 0, fill=fill)
            with torch.no_grad():
                se = (model(xs) - test.y).double().pow(2).numpy()
            sets.append(se)
            m = res.metric("corrupted_mse", corruption=name, severity=s)
            assert m.value == pytest.approx(se.mean()) and m.ci[0] <= m.value <= m.ci[1]
            change = res.metric("mse_change", corruption=name, severity=s)
            assert change.value == pytest.approx(se.mean() - clean_se.mean())
            decay = res.metric("performance_decay", corruption=name, severity=s)
            rel = (se.mean() - clean_se.mean()) / clean_se.mean()
            assert decay.value == float(rel > 0.1)
    assert res.metric("mse_change", corruption="feature_noise", severity=5).value > 0  # noise adds error
    assert res.metric("mean_corrupted_mse").value == pytest.approx(float(np.mean(sets)))
    assert all(m.name != "corrupted_accuracy" for m in res.metrics)
    for m in res.metrics:
        assert m.value is None or math.isfinite(m.value)


def test_not_applicable_to_lm_and_bad_params():
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'blur'"):
        CorruptionsSuite.from_config({"corruptions": ["blurr"]})
    with pytest.raises(ConfigError, match="severities"):
        CorruptionsSuite.from_config({"severities": [0, 6]})
    data = digits_dataset()
    h = _handle(nn.Linear(2, 2), output="lm_logits")
    assert "outputs" in CorruptionsSuite().applicable(h, data)
