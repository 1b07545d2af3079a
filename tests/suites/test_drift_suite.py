"""DriftSuite end to end: the clean test split does not drift from the training inputs,
heavy synthetic shifts do; every row equals `detect_drift` recomputed here on the same
seeded samples; regression data is covered (drift is about inputs); headline and figures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.suite import ModelHandle, RunContext
from workbench.suites.corruptions.functional import corrupt
from workbench.suites.drift.functional import detect_drift, drift_features, permutation_null
from workbench.suites.drift.suite import DriftSuite
from workbench.suites.robustness.testing import digits_dataset
from workbench.torch_utils import derive_seed

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp_path, seed=0, device=CPU, suite="drift", model_name="m",
                      dataset_name="d", batch_size=64, log=lambda m: None)


def _subset(split, n: int, offset: int):
    return split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(offset))[:n].sort().values)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    data = digits_dataset()
    run_dir = tmp_path_factory.mktemp("drift")
    suite = DriftSuite.from_config({"n_samples": 80, "shifts": ["blur", "gaussian_noise"], "severities": [1, 5],
                                    "permutations": 100}, profile="quick")
    handle = ModelHandle(name="m", module=nn.Identity(), arch="custom", task="classification", output="logits")
    return suite.run(handle, data, _ctx(run_dir)), run_dir, data


def test_verdicts_and_rows_recomputed(image_run):
    res, _, data = image_run
    assert res.metric("drift_detected", shift="none").value == 0.0
    assert res.metric("drift_detected", shift="blur", severity=5).value == 1.0
    test, train = _subset(data.test, 80, 17), _subset(data.train, 80, 23)
    feats = lambda x: drift_features(x, "image")  # noqa: E731
    ref = feats(train.x)
    null = permutation_null(ref, feats(test.x), n_permutations=100, seed=derive_seed(0, "drift-null"))
    gen = torch.Generator().manual_seed(derive_seed(0, "corruption", "gaussian_noise", "5"))
    xs = corrupt(test.x, "gaussian_noise", 5, generator=gen, bounds=(0.0, 1.0))
    rep = detect_drift(ref, feats(xs), null=null)
    assert res.metric("drift_p_value", shift="gaussian_noise", severity=5).value == pytest.approx(rep.permutation_pvalue)
    assert res.metric("max_psi", shift="gaussian_noise", severity=5).value == pytest.approx(rep.max_psi)
    assert res.metric("max_psi_corrected", shift="gaussian_noise", severity=5).value == pytest.approx(
        rep.max_psi_corrected)
    assert res.metric("drifted_features", shift="gaussian_noise", severity=5).value == rep.n_significant_features
    assert res.metric("drift_detected", shift="gaussian_noise", severity=5).value == float(rep.drift)


def test_headline_and_figures(image_run):
    res, run_dir, _ = image_run
    d = res.to_dict()
    heads = [m for m in d["metrics"] if DriftSuite.is_headline(m)]
    assert len(heads) == 1 and heads[0]["tags"]["shift"] == "none"
    figs = DriftSuite.figures(d, run_dir)
    assert [t for t, _ in figs] == ["Input drift"]
    figs[0][1].to_json()


def test_regression_inputs_are_checked_too(tmp_path):
    from tests.suites.test_corruptions_suite import regression_dataset

    data = regression_dataset(n=1000)
    handle = ModelHandle(name="m", module=nn.Identity(), arch="custom", task="regression", output="mean")
    res = DriftSuite.from_config({"n_samples": 200, "severities": [5], "permutations": 100}).run(handle, data,
                                                                                                    _ctx(tmp_path))
    assert res.status == "ok", res.reason
    assert {m.tags["shift"] for m in res.metrics} == {"none", "feature_noise", "scaling", "missing_values"}
    # half the entries replaced by the train mean put a spike in every feature: detected at
    # n = 200 (the false-alarm rate on a clean split is calibrated in test_drift_functional.py)
    assert res.metric("drift_detected", shift="missing_values", severity=5).value == 1.0
    assert 0 < res.metric("drift_p_value", shift="none").value <= 1


def test_small_n_gives_null_psi_with_its_reason(tmp_path):
    """n = 30 with 10 bins is 3 points per bin: PSI figures are null with the reason, and the
    verdict too where KS is significant (heavy blur); the clean split keeps a 0/1 verdict
    when KS is not significant; the figure shows the reason."""
    data = digits_dataset()
    handle = ModelHandle(name="m", module=nn.Identity(), arch="custom", task="classification", output="logits")
    res = DriftSuite.from_config({"n_samples": 30, "shifts": ["blur"], "severities": [5], "permutations": 50}).run(
        handle, data, _ctx(tmp_path))
    for name in ("max_psi", "max_psi_corrected"):
        m = res.metric(name, shift="blur", severity=5)
        assert m.value is None and "not estimable" in m.reason and "n >= 50" in m.reason
    blur = res.metric("drift_detected", shift="blur", severity=5)
    assert blur.value is None and "practical size unknown" in blur.reason
    assert blur.tags["significance"] == "statistical_size_unknown"
    assert res.metric("drift_detected", shift="none").value == 0.0
    (_, fig), = DriftSuite.figures(res.to_dict(), tmp_path)
    cells = fig.data[0].cells.values
    assert any("not estimable" in str(c) for c in cells[5]) and "stat.; size unknown" in cells[-1]


def test_bad_params():
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'blur'"):
        DriftSuite.from_config({"shifts": ["blurr"]})
    with pytest.raises(ConfigError, match="alpha"):
        DriftSuite.from_config({"alpha": 1.5})
