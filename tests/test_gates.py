"""Gates and significance tests: rule grammar, every exit path (0/1/2/3), baseline drops in
both directions, the statistical rules, GitHub annotations, and the tests themselves against
scipy / statsmodels / closed forms / plain loops on fixed inputs."""

from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from workbench import significance as sig
from workbench.errors import ConfigError, DataError
from workbench.gates import (
    EXIT_FAIL,
    EXIT_PASS,
    EXIT_UNEVALUATED,
    EXIT_USAGE,
    GateOutcome,
    evaluate_gates,
    find_metrics,
    gate_exit_code,
    gate_main,
    gates_from_run,
    github_annotations,
    load_gates_file,
    load_per_example,
    parse_gates,
    parse_rule,
)
from workbench.records import MetricRecord, RunRecord, SuiteResult
from workbench.stats import wilson_ci

N = 400


# --------------------------------------------------------------------------- fixtures


def _labels(seed: int = 0, n: int = N, k: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, n)


def _preds(y: np.ndarray, acc: float, seed: int) -> np.ndarray:
    """Predictions that are right on a seeded random subset of round(acc * n) examples."""
    rng = np.random.default_rng(seed)
    right = np.zeros(y.size, bool)
    right[rng.permutation(y.size)[: int(round(acc * y.size))]] = True
    return np.where(right, y, (y + 1 + rng.integers(0, 2, y.size)) % 3)


def make_run(run_dir: Path, run_id: str, y: np.ndarray, y_pred: np.ndarray, *, reg: tuple | None = None,
             save_predictions: bool = True, gates: dict | None = None, extra: tuple = ()) -> RunRecord:
    """A hand-made run: a metrics result for model "cnn" (accuracy from its predictions
    artifact), robustness metrics, a regression result for "mlp" and a skipped suite."""
    run_dir.mkdir(parents=True, exist_ok=True)
    arts = {}
    if save_predictions:
        d = run_dir / "artifacts" / "metrics" / "cnn"
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "predictions.npz", y_true=y, y_pred=y_pred)
        arts["predictions"] = "artifacts/metrics/cnn/predictions.npz"
    correct = (y == y_pred)
    acc = float(correct.mean())
    results = [
        SuiteResult(suite="metrics", model="cnn", dataset="digits", status="ok", artifacts=arts, metrics=(
            MetricRecord(name="accuracy", value=acc, higher_is_better=True, n=y.size,
                         ci=wilson_ci(int(correct.sum()), y.size), tags={"split": "test"}),
            MetricRecord(name="f1_macro", value=0.5, higher_is_better=True, n=y.size, tags={"split": "test"}),
            MetricRecord(name="f1", value=0.4, higher_is_better=True, tags={"split": "test", "class": "0"}),
            MetricRecord(name="f1", value=0.6, higher_is_better=True, tags={"split": "test", "class": "1"}),
            MetricRecord(name="score", value=1.0, higher_is_better=None),
            MetricRecord.unavailable("energy", "no RAPL access on this machine", higher_is_better=False),
            *extra,
        )),
        SuiteResult(suite="robustness", model="cnn", dataset="digits", status="ok", metrics=(
            MetricRecord(name="robust_accuracy", value=0.55, higher_is_better=True, n=y.size,
                         tags={"attack": "pgd_linf", "eps": 0.1}),
            MetricRecord(name="robust_accuracy", value=0.60, higher_is_better=True, n=y.size,
                         tags={"attack": "fgsm", "eps": 0.1}),
        )),
        SuiteResult(suite="explain", model="cnn", dataset="digits", status="skipped", reason="no attributions"),
    ]
    if reg is not None:
        yt, yp = reg
        d = run_dir / "artifacts" / "metrics" / "mlp"
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "predictions.npz", y_true=yt, y_pred=yp)
        results.append(SuiteResult(
            suite="metrics", model="mlp", dataset="diabetes", status="ok",
            artifacts={"predictions": "artifacts/metrics/mlp/predictions.npz"},
            metrics=(MetricRecord(name="mse", value=float(np.mean((yp - yt) ** 2)), higher_is_better=False,
                                  n=yt.size, tags={"split": "test"}),),
        ))
    prov = {"seed": 0, "device": "cpu", "git_sha": "abc123", "versions": {"torch": "2.13.0"},
            "plan": {"run": {"name": "unit"}, "gates": gates or {}}}
    run = RunRecord(run_id=run_id, created_at="2026-11-22T10:00:00+00:00", provenance=prov, results=tuple(results))
    (run_dir / "results.json").write_text(json.dumps(run.to_dict()))
    return run


@pytest.fixture()
def base(tmp_path):
    y = _labels()
    return make_run(tmp_path / "base", "base", y, _preds(y, 0.90, 1)), tmp_path / "base", y


def _one(outcome: GateOutcome):
    assert len(outcome.results) == 1
    return outcome.results[0]


# --------------------------------------------------------------------------- grammar


def test_parse_string_rules():
    r = parse_rule("robust_accuracy{attack=pgd_linf, eps=0.1} >= 0.7")
    assert (r.metric, r.selectors, r.op, r.threshold, r.kind) == (
        "robust_accuracy", (("attack", "pgd_linf"), ("eps", "0.1")), ">=", 0.7, "absolute")
    r = parse_rule("accuracy{model=digits_cnn}>=0.9")
    assert (r.op, r.threshold, r.selectors) == (">=", 0.9, (("model", "digits_cnn"),))
    r = parse_rule("mse max_rel_drop 0.05 significant test=bootstrap alpha=0.01 n_boot=500")
    assert (r.op, r.significant, r.test, r.alpha, r.n_boot, r.kind) == (
        "max_rel_drop", True, "bootstrap", 0.01, 500, "baseline")
    r = parse_rule('accuracy{model="a,b", split=\'te st\'} == 1')
    assert r.selectors == (("model", "a,b"), ("split", "te st"))
    assert parse_rule("accuracy max_drop 0 test=mcnemar").significant  # a test implies significance


def test_parse_table_rules_and_gates_table():
    r = parse_rule({"metric": "accuracy", "tags": {"model": "cnn", "eps": 0.1}, "max_drop": 0.0,
                    "test": "mcnemar", "alpha": 0.01})
    assert (r.op, r.threshold, r.test, r.significant, r.alpha) == ("max_drop", 0.0, "mcnemar", True, 0.01)
    assert r.text == "accuracy{model=cnn,eps=0.1} max_drop 0 significant test=mcnemar alpha=0.01"
    r = parse_rule({"metric": "accuracy", "op": ">=", "threshold": 0.9, "name": "clean accuracy"})
    assert (r.op, r.threshold, r.text) == (">=", 0.9, "clean accuracy")
    cfg = parse_gates({"alpha": 0.01, "rules": ["accuracy >= 0.9", "accuracy max_drop 0.1 significant"]})
    assert [x.alpha for x in cfg.rules] == [0.01, 0.01]
    assert parse_gates(["accuracy >= 0.9"]).rules[0].op == ">="
    assert cfg.needs_baseline and not cfg.absolute_only().needs_baseline
    assert [x.text for x in cfg.absolute_only().rules] == ["accuracy >= 0.9"]


@pytest.mark.parametrize("rule, fragment", [
    ("accuracy => 0.9", "Did you mean '>='"),
    ("accuracy max_dorp 0.1", "Did you mean 'max_drop'"),
    ("accuracy != 0.9", "Valid operators"),
    ("accuracy >= high", "expected a number"),
    ("accuracy >=", "expected a number"),
    ("accuracy{model} >= 0.9", "cannot read the tags"),
    ("accuracy{model=a,model=b} >= 0.9", "given twice"),
    ("accuracy >= 0.9 significant", "apply to baseline rules"),
    ("accuracy max_drop -0.1", "must be >= 0"),
    ("accuracy max_drop 0.1 test=mcnemr", "Did you mean 'mcnemar'"),
    ("accuracy max_drop 0.1 signifcant", "Did you mean 'significant'"),
    ("accuracy max_drop 0.1 alpha=2", "alpha"),
    (">= 0.9", "expected 'METRIC"),
    ("", "expected 'METRIC"),
    ({"metric": "accuracy", "op": ">=", "threshhold": 0.9}, "Did you mean 'threshold'"),
    ({"metric": "accuracy", "op": ">=", "threshold": 0.9, "max_drop": 0.1}, "exactly one of"),
    ({"metric": "accuracy", "max_drop": 0.1, "test": "t-test"}, "Valid tests"),
    ({"metric": "accuracy", "op": ">=", "threshold": "0.9"}, "finite number"),
    (42, "Expected a gate rule"),
])
def test_bad_rules_raise_config_errors(rule, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        parse_rule(rule)
    assert fragment in str(info.value)


def test_bad_gates_table():
    with pytest.raises(ConfigError, match="Did you mean 'rules'"):
        parse_gates({"rule": ["accuracy >= 0.9"]})
    with pytest.raises(ConfigError, match="rules"):
        parse_gates({"rules": 3})


def test_load_gates_file_and_plan(tmp_path, base):
    f = tmp_path / "gates.toml"
    f.write_text('[gates]\nalpha = 0.1\nrules = ["accuracy >= 0.5", {metric = "accuracy", max_drop = 0.01}]\n')
    cfg = load_gates_file(f)
    assert [r.op for r in cfg.rules] == [">=", "max_drop"] and cfg.alpha == 0.1
    f.write_text('rules = ["accuracy >= 0.5"]\n')
    assert load_gates_file(f).rules[0].threshold == 0.5
    f.write_text("rules = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_gates_file(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_gates_file(tmp_path / "nope.toml")
    run, _, _ = base
    assert gates_from_run(run) is None
    y = _labels()
    run2 = make_run(tmp_path / "g", "g", y, y, gates={"rules": ["accuracy >= 0.99"]})
    assert gates_from_run(run2).rules[0].threshold == 0.99


# --------------------------------------------------------------------------- absolute rules and exit codes


def test_absolute_rules_pass_and_fail_at_the_boundary(base):
    run, run_dir, _ = base
    acc = run.results[0].metric("accuracy").value
    assert acc == pytest.approx(0.9)
    o = evaluate_gates(run, [f"accuracy >= {acc}", f"accuracy <= {acc}", f"accuracy == {acc}"])
    assert [r.status for r in o.results] == ["pass"] * 3 and o.exit_code == EXIT_PASS == 0
    o = evaluate_gates(run, [f"accuracy > {acc}", f"accuracy < {acc}", "accuracy >= 0.95"])
    assert [r.status for r in o.results] == ["fail"] * 3 and o.exit_code == EXIT_FAIL == 1
    r = o.results[2]
    assert (r.observed, r.threshold) == (pytest.approx(0.9), 0.95) and "is not >=" in r.message


def test_selectors_and_numeric_tags(base):
    run, _, _ = base
    o = evaluate_gates(run, ["robust_accuracy{attack=pgd_linf,eps=0.10} >= 0.5",
                             "robust_accuracy{attack=fgsm,eps=1e-1,model=cnn,suite=robustness} >= 0.61",
                             "f1{class=1} >= 0.6", "accuracy{dataset=digits,split=test} >= 0.5"])
    assert [r.status for r in o.results] == ["pass", "fail", "pass", "pass"]
    assert o.results[0].target == {"suite": "robustness", "model": "cnn", "dataset": "digits",
                                   "metric": "robust_accuracy", "tags": {"attack": "pgd_linf", "eps": 0.1}}
    assert len(find_metrics(run.to_dict(), "f1")) == 2


def test_missing_metric_is_an_error_not_a_pass(base):
    run, _, _ = base
    r = _one(evaluate_gates(run, ["acuracy >= 0.1"]))
    assert (r.status, r.error_kind) == ("error", "evaluate") and "Did you mean 'accuracy'" in r.message
    r = _one(evaluate_gates(run, ["accuracy{model=gpt} >= 0.1"]))
    assert r.status == "error" and "none matches the tags" in r.message
    r = _one(evaluate_gates(run, ["attribution_auc{suite=explain} >= 0.1"]))
    assert "explain/cnn skipped: no attributions" in r.message
    assert gate_exit_code(evaluate_gates(run, ["acuracy >= 0.1"])) == EXIT_UNEVALUATED == 3


def test_null_metric_cannot_be_evaluated(base):
    run, _, _ = base
    r = _one(evaluate_gates(run, ["energy <= 10"]))
    assert (r.status, r.error_kind) == ("error", "evaluate") and "no RAPL access" in r.message


def test_ambiguous_rule_is_a_usage_error_naming_the_matches(base):
    run, _, _ = base
    r = _one(evaluate_gates(run, ["robust_accuracy >= 0.1"]))
    assert (r.status, r.error_kind) == ("error", "config")
    assert "2 metrics" in r.message and "attack=pgd_linf" in r.message and "attack=fgsm" in r.message
    assert gate_exit_code(evaluate_gates(run, ["robust_accuracy >= 0.1"])) == EXIT_USAGE == 2


def test_exit_code_precedence(base):
    run, _, _ = base
    fail, ambiguous, missing, ok = "accuracy >= 0.99", "f1 >= 0.1", "nope >= 1", "accuracy >= 0.1"
    assert evaluate_gates(run, [ok, ok]).exit_code == 0
    assert evaluate_gates(run, [ok, fail, missing]).exit_code == 1  # a failure beats "could not evaluate"
    assert evaluate_gates(run, [fail, ambiguous, missing]).exit_code == 2  # a broken rule beats all
    assert evaluate_gates(run, [ok, missing]).exit_code == 3
    assert evaluate_gates(run, []).exit_code == 0
    assert gate_exit_code(evaluate_gates(run, [fail]).to_dict()) == 1  # the dict form too
    o = evaluate_gates(run, [ok, fail, missing])
    assert GateOutcome.from_dict(json.loads(json.dumps(o.to_dict()))).to_dict() == o.to_dict()


# --------------------------------------------------------------------------- baseline rules


def test_drop_rules_follow_higher_is_better(tmp_path):
    y = _labels()
    rng = np.random.default_rng(0)
    yt = rng.normal(size=N)
    base_run = make_run(tmp_path / "b", "b", y, _preds(y, 0.90, 1), reg=(yt, yt + 0.5 * rng.normal(size=N)))
    cand = make_run(tmp_path / "c", "c", y, _preds(y, 0.87, 2), reg=(yt, yt + 0.6 * rng.normal(size=N)))
    mse_b = base_run.results[3].metrics[0].value
    mse_c = cand.results[3].metrics[0].value
    assert mse_c > mse_b  # the candidate is worse on both
    o = evaluate_gates(cand, ["accuracy max_drop 0.02", "accuracy max_drop 0.05", "accuracy max_rel_drop 0.05",
                              "mse max_drop 0.0", f"mse max_drop {mse_c - mse_b + 1e-6}",
                              f"mse max_rel_drop {(mse_c - mse_b) / mse_b - 1e-6}"], baseline=base_run)
    assert [r.status for r in o.results] == ["fail", "pass", "pass", "fail", "pass", "fail"]
    assert o.results[0].drop == pytest.approx(0.03) and o.results[0].baseline == pytest.approx(0.9)
    assert o.results[2].drop == pytest.approx(0.03 / 0.9)
    assert o.results[3].drop == pytest.approx(mse_c - mse_b)
    # The improvement direction never fails: swap the runs.
    o = evaluate_gates(base_run, ["accuracy max_drop 0.0", "mse max_drop 0.0"], baseline=cand)
    assert [r.status for r in o.results] == ["pass", "pass"]
    assert o.results[0].drop == pytest.approx(-0.03)


def test_drop_rule_needs_a_baseline_and_a_direction(base):
    run, _, _ = base
    r = _one(evaluate_gates(run, ["accuracy max_drop 0.01"]))
    assert (r.status, r.error_kind) == ("error", "config") and "baseline" in r.message
    r = _one(evaluate_gates(run, ["score max_drop 0.01"], baseline=run))
    assert (r.status, r.error_kind) == ("error", "config") and "higher_is_better" in r.message


def test_baseline_missing_metric_is_an_error(tmp_path, base):
    run, _, y = base
    other = RunRecord(run_id="o", created_at="x", provenance={}, results=())
    r = _one(evaluate_gates(run, ["accuracy max_drop 0.01"], baseline=other))
    assert (r.status, r.error_kind) == ("error", "evaluate") and r.message.startswith("baseline:")


# --------------------------------------------------------------------------- significance rules


@pytest.mark.parametrize("test", ["mcnemar", "bootstrap", "welch", None])
def test_identical_baseline_never_fails(tmp_path, test):
    y = _labels()
    for seed in range(3):
        preds = _preds(y, 0.8, seed)
        a = make_run(tmp_path / f"a{seed}", "a", y, preds)
        b = make_run(tmp_path / f"b{seed}", "b", y, preds.copy())
        opt = f" test={test}" if test else " significant"
        o = evaluate_gates(a, [f"accuracy max_drop 0{opt}", f"accuracy max_rel_drop 0{opt}", "accuracy max_drop 0"],
                           baseline=b, run_dir=tmp_path / f"a{seed}", baseline_dir=tmp_path / f"b{seed}")
        assert [r.status for r in o.results] == ["pass"] * 3, [r.message for r in o.results]


@pytest.mark.parametrize("test", ["mcnemar", "bootstrap", "welch"])
def test_clearly_worse_candidate_always_fails(tmp_path, test):
    y = _labels()
    for seed in range(3):
        a = make_run(tmp_path / f"a{seed}", "a", y, _preds(y, 0.70, 10 + seed))
        b = make_run(tmp_path / f"b{seed}", "b", y, _preds(y, 0.92, 20 + seed))
        r = _one(evaluate_gates(a, [f"accuracy max_drop 0.0 test={test}"], baseline=b,
                                run_dir=tmp_path / f"a{seed}", baseline_dir=tmp_path / f"b{seed}"))
        assert r.status == "fail", r.message
        assert r.test == test and "significant" in r.message
        if test == "bootstrap":
            assert r.p_value is None and r.ci[0] > 0
        else:
            assert r.p_value < 1e-6


def test_tiny_drop_passes_only_when_significance_is_asked(tmp_path):
    y = _labels()
    good = _preds(y, 0.90, 1)
    worse = good.copy()
    flip = np.flatnonzero(good == y)[:2]  # two examples fewer right: accuracy -0.005
    worse[flip] = (y[flip] + 1) % 3
    b = make_run(tmp_path / "b", "b", y, good)
    a = make_run(tmp_path / "a", "a", y, worse)
    kw = dict(baseline=b, run_dir=tmp_path / "a", baseline_dir=tmp_path / "b")
    o = evaluate_gates(a, ["accuracy max_drop 0", "accuracy max_drop 0 significant",
                           "accuracy max_drop 0 test=mcnemar", "accuracy max_drop 0 test=bootstrap",
                           "accuracy max_drop 0 test=welch"], **kw)
    assert [r.status for r in o.results] == ["fail", "pass", "pass", "pass", "pass"], [r.message for r in o.results]
    assert o.results[1].test == "mcnemar"  # the default for 0/1 correctness
    # b = 2 discordant pairs: the exact test, p = 2 * 0.5**2 = 0.5.
    assert o.results[2].p_value == pytest.approx(0.5) and "exact" in o.results[2].message
    assert "not significant" in o.results[2].message


def test_significance_with_a_margin(tmp_path):
    """max_drop 0.05 significant: a 0.08 drop whose CI lies above 0.05 fails with the
    bootstrap; a drop below the margin passes without any test."""
    y = _labels(n=2000)
    b = make_run(tmp_path / "b", "b", y, _preds(y, 0.95, 1))
    a = make_run(tmp_path / "a", "a", y, _preds(y, 0.70, 2))
    c = make_run(tmp_path / "c", "c", y, _preds(y, 0.93, 3))
    kw = dict(baseline=b, baseline_dir=tmp_path / "b")
    r = _one(evaluate_gates(a, ["accuracy max_drop 0.05 test=bootstrap"], run_dir=tmp_path / "a", **kw))
    assert r.status == "fail" and r.ci[0] > 0.05
    r = _one(evaluate_gates(c, ["accuracy max_drop 0.05 test=bootstrap"], run_dir=tmp_path / "c", **kw))
    assert r.status == "pass" and r.p_value is None and r.test is None


def test_significance_without_per_example_data_cannot_be_evaluated(tmp_path):
    y = _labels()
    b = make_run(tmp_path / "b", "b", y, _preds(y, 0.9, 1))
    a = make_run(tmp_path / "a", "a", y, _preds(y, 0.7, 2), save_predictions=False)
    r = _one(evaluate_gates(a, ["accuracy max_drop 0 significant"], baseline=b, run_dir=tmp_path / "a",
                            baseline_dir=tmp_path / "b"))
    assert (r.status, r.error_kind) == ("error", "evaluate") and "no per-example data" in r.message
    r = _one(evaluate_gates(b, ["accuracy max_drop 0 significant"], baseline=a, run_dir=None))
    assert r.status == "pass"  # no drop: nothing to test
    a2 = make_run(tmp_path / "a2", "a2", y, _preds(y, 0.7, 2))
    r = _one(evaluate_gates(a2, ["accuracy max_drop 0 significant"], baseline=b))  # no run_dir given
    assert r.status == "error" and "no run directory" in r.message
    r = _one(evaluate_gates(a2, ["f1_macro max_drop 0 significant"], baseline=make_run(
        tmp_path / "b2", "b2", y, y, extra=()), run_dir=tmp_path / "a2", baseline_dir=tmp_path / "b2"))
    assert r.status in ("pass", "error")  # f1_macro is 0.5 in both fixtures: no drop -> pass


def test_per_example_data_must_match_the_metric_and_the_examples(tmp_path):
    y = _labels()
    b = make_run(tmp_path / "b", "b", y, _preds(y, 0.9, 1))
    a = make_run(tmp_path / "a", "a", y, _preds(y, 0.7, 2))
    # Overwrite the candidate's predictions with other ones: they no longer give its accuracy.
    np.savez(tmp_path / "a/artifacts/metrics/cnn/predictions.npz", y_true=y, y_pred=_preds(y, 0.6, 3))
    kw = dict(baseline=b, run_dir=tmp_path / "a", baseline_dir=tmp_path / "b")
    r = _one(evaluate_gates(a, ["accuracy max_drop 0 significant"], **kw))
    assert r.status == "error" and "do not describe the same examples" in r.message
    # Different examples (other labels, same accuracy): paired tests refuse, Welch accepts.
    y2 = _labels(seed=5)
    c = make_run(tmp_path / "c", "c", y2, _preds(y2, 0.7, 2))
    kw = dict(baseline=b, run_dir=tmp_path / "c", baseline_dir=tmp_path / "b")
    r = _one(evaluate_gates(c, ["accuracy max_drop 0 test=mcnemar"], **kw))
    assert r.status == "error" and "y_true differ" in r.message
    assert _one(evaluate_gates(c, ["accuracy max_drop 0 test=welch"], **kw)).status == "fail"


def test_mcnemar_rejects_continuous_scores(tmp_path):
    rng = np.random.default_rng(0)
    yt = rng.normal(size=N)
    y = _labels()
    b = make_run(tmp_path / "b", "b", y, y, reg=(yt, yt + 0.3 * rng.normal(size=N)))
    a = make_run(tmp_path / "a", "a", y, y, reg=(yt, yt + 0.9 * rng.normal(size=N)))
    kw = dict(baseline=b, run_dir=tmp_path / "a", baseline_dir=tmp_path / "b")
    o = evaluate_gates(a, ["mse max_drop 0 test=mcnemar", "mse max_drop 0 significant"], **kw)
    assert (o.results[0].status, o.results[0].error_kind) == ("error", "config")
    assert (o.results[1].status, o.results[1].test) == ("fail", "bootstrap")


def test_load_per_example_asks_the_suite_hook(tmp_path):
    """Per-example data come from the result's suite (`Suite.per_example`): the metrics
    suite reads its predictions (confined to the run directory); an unknown suite, a missing
    run directory or a broken hook give {} (the rule then cannot be evaluated), never a crash."""
    y = np.array([0, 1, 2, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
    d = tmp_path / "x"
    d.mkdir()
    np.savez(d / "p.npz", y_true=y, y_pred=probs.argmax(1), probs=probs, index=np.arange(4) + 10)
    res = {"suite": "metrics", "artifacts": {"predictions": "x/p.npz", "gone": "x/none.npz", "cfg": "x/c.json"}}
    pe = load_per_example(res, tmp_path)
    from sklearn.metrics import accuracy_score

    np.testing.assert_array_equal(pe["accuracy"], [1, 1, 1, 0])
    assert pe["accuracy"].mean() == accuracy_score(y, probs.argmax(1))
    np.testing.assert_array_equal(pe["example_id"], [10, 11, 12, 13])
    np.testing.assert_array_equal(pe["y_true"], y)
    rng = np.random.default_rng(0)
    yt, yp = rng.normal(size=7), rng.normal(size=7)
    np.savez(d / "r.npz", y_true=yt, y_pred=yp)
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    reg = load_per_example({"suite": "metrics", "artifacts": {"predictions": "x/r.npz"}}, tmp_path)
    assert reg["mse"].mean() == pytest.approx(mean_squared_error(yt, yp))
    assert reg["mae"].mean() == pytest.approx(mean_absolute_error(yt, yp))
    assert load_per_example({"suite": "metrics", "artifacts": {}}, tmp_path) == {}
    assert load_per_example(res, None) == {}
    assert load_per_example({**res, "suite": "not_installed"}, tmp_path) == {}
    # a path that leaves the run directory is not read
    outside = tmp_path.parent / f"{tmp_path.name}-outside.npz"
    np.savez(outside, y_true=y, y_pred=y)
    assert load_per_example({"suite": "metrics", "artifacts": {"predictions": f"../{outside.name}"}}, tmp_path) == {}

    class Broken:
        @classmethod
        def per_example(cls, result, run_dir):
            raise RuntimeError("plug-in bug")

    class Own:
        @classmethod
        def per_example(cls, result, run_dir):
            return {"score": np.arange(3.0)}

    assert load_per_example({"suite": "b"}, tmp_path, suites={"b": Broken}) == {}
    np.testing.assert_array_equal(load_per_example({"suite": "o"}, tmp_path, suites={"o": Own})["score"],
                                  [0.0, 1.0, 2.0])


# --------------------------------------------------------------------------- gate_main and GitHub


def test_gate_main_every_exit_path(tmp_path):
    y = _labels()
    b_dir, a_dir = tmp_path / "b", tmp_path / "a"
    make_run(b_dir, "b", y, _preds(y, 0.9, 1))
    make_run(a_dir, "a", y, _preds(y, 0.7, 2), gates={"rules": ["accuracy >= 0.5"]})
    rules = tmp_path / "rules.toml"
    out, err = io.StringIO(), io.StringIO()
    env: dict[str, str] = {}

    def run(**kw):
        return gate_main(a_dir, env=env, stdout=out, stderr=err, **kw)

    assert run() == 0  # rules from the plan
    rules.write_text('rules = ["accuracy max_drop 0.02"]\n')
    assert run(rules_file=rules, baseline=b_dir / "results.json") == 1
    rules.write_text('rules = ["accuracy => 0.02"]\n')
    assert run(rules_file=rules) == 2 and "Did you mean '>='" in err.getvalue()
    rules.write_text('rules = ["f1 >= 0.1"]\n')
    assert run(rules_file=rules) == 2  # ambiguous
    rules.write_text('rules = ["accuracy max_drop 0.02"]\n')
    assert run(rules_file=rules) == 2  # no baseline
    rules.write_text('rules = []\n')
    assert run(rules_file=rules) == 2
    assert gate_main(tmp_path / "missing", env=env, stdout=out, stderr=err) == 2
    rules.write_text('rules = ["energy <= 1"]\n')
    assert run(rules_file=rules) == 3
    rules.write_text('rules = ["accuracy max_drop 0.0 significant"]\n')
    shutil_rm = a_dir / "artifacts/metrics/cnn/predictions.npz"
    shutil_rm.unlink()
    assert run(rules_file=rules, baseline=b_dir) == 3


def test_gate_main_writes_reports_and_github_output(tmp_path):
    y = _labels()
    make_run(tmp_path / "b", "b", y, _preds(y, 0.9, 1))
    make_run(tmp_path / "a", "a", y, _preds(y, 0.7, 2))
    rules = tmp_path / "rules.toml"
    rules.write_text('rules = ["accuracy >= 0.5", "accuracy max_drop 0.0 test=mcnemar", "nope >= 1"]\n')
    summary = tmp_path / "step_summary.md"
    summary.write_text("previous step\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    out = io.StringIO()
    code = gate_main(tmp_path / "a", rules_file=rules, baseline=tmp_path / "b", out_dir=tmp_path / "rep",
                     formats=("md", "json", "junit"), env=env, stdout=out, stderr=io.StringIO())
    assert code == 1
    text = out.getvalue()
    errors = [line for line in text.splitlines() if line.startswith("::error ")]
    assert len(errors) == 2
    assert errors[0].startswith("::error title=Gate failed%3A accuracy max_drop 0.0 test=mcnemar::")
    assert errors[1].startswith("::error title=Gate could not evaluate%3A nope >= 1::")
    md = summary.read_text()
    assert md.startswith("previous step\n") and "❌ FAIL" in md and "max\\_drop" in md
    gate = json.loads((tmp_path / "rep/gate.json").read_text())
    assert gate["exit_code"] == 1 and [r["status"] for r in gate["rules"]] == ["pass", "fail", "error"]
    root = ET.parse(tmp_path / "rep/junit.xml").getroot()
    ts = root.find("testsuite[@name='workbench.gate']")
    assert (ts.get("tests"), ts.get("failures"), ts.get("errors")) == ("3", "1", "1")
    # Off GitHub: nothing printed, nothing appended.
    o = GateOutcome.from_dict(gate)
    assert github_annotations(o, {}, stream=io.StringIO()) == []


def test_github_annotation_escaping(tmp_path):
    from workbench.gates import RuleOutcome

    o = GateOutcome(results=(RuleOutcome(rule="a{x=1,y=2} >= 50%", status="fail", message="line1\nline2 100%"),))
    stream = io.StringIO()
    lines = github_annotations(o, {"GITHUB_ACTIONS": "true"}, stream=stream)
    assert lines == ["::error title=Gate failed%3A a{x=1%2Cy=2} >= 50%25::line1%0Aline2 100%25"]
    assert stream.getvalue() == lines[0] + "\n"


# --------------------------------------------------------------------------- significance.py


def test_mcnemar_exact_matches_binomtest():
    rng = np.random.default_rng(0)
    for n_disc in (0, 1, 2, 5, 13, 24):
        for b in range(0, n_disc + 1, max(1, n_disc // 4)):
            c = n_disc - b
            a_corr = np.r_[np.ones(b), np.zeros(c), np.ones(30), np.zeros(7)]
            b_corr = np.r_[np.zeros(b), np.ones(c), np.ones(30), np.zeros(7)]
            perm = rng.permutation(a_corr.size)
            r = sig.mcnemar(a_corr[perm].astype(bool), b_corr[perm])
            assert (r.b, r.c, r.method) == (b, c, "exact")
            want = 1.0 if n_disc == 0 else sps.binomtest(min(b, c), n_disc, 0.5).pvalue
            assert r.p_value == pytest.approx(want, rel=1e-12)


def test_mcnemar_chi2_with_continuity_correction():
    a = np.r_[np.ones(40), np.zeros(20), np.ones(100)]
    b = np.r_[np.zeros(40), np.ones(20), np.ones(100)]
    r = sig.mcnemar(a, b)
    stat = (abs(40 - 20) - 1) ** 2 / 60  # 6.0166...
    assert (r.b, r.c, r.method) == (40, 20, "chi2_cc")
    assert r.statistic == pytest.approx(stat)
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(stat / 2)))  # chi2(1) survival in closed form
    # b + c = 25 switches to chi2; 24 stays exact.
    assert sig.mcnemar(np.r_[np.ones(13), np.zeros(12)], np.r_[np.zeros(13), np.ones(12)]).method == "chi2_cc"


def test_mcnemar_against_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.contingency_tables", reason="statsmodels is optional")
    for b, c in [(3, 9), (10, 2), (40, 20), (31, 45)]:
        a = np.r_[np.ones(b), np.zeros(c), np.ones(50), np.zeros(5)]
        bb = np.r_[np.zeros(b), np.ones(c), np.ones(50), np.zeros(5)]
        r = sig.mcnemar(a, bb)
        table = [[50, b], [c, 5]]
        ref = sm.mcnemar(table, exact=b + c < 25, correction=True)
        assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)


def test_mcnemar_input_checks():
    with pytest.raises(DataError, match="0/1"):
        sig.mcnemar([0, 2], [1, 1])
    with pytest.raises(DataError, match="paired"):
        sig.mcnemar([0, 1], [1])
    with pytest.raises(DataError, match="1-D"):
        sig.mcnemar([[0, 1]], [[1, 1]])


def test_paired_bootstrap_matches_a_plain_loop_and_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(0.3, 1, 300)
    b = a - 0.2 + 0.5 * rng.normal(size=300)
    res = sig.paired_bootstrap_diff_ci(a, b, n_boot=600, seed=7, chunk=64)
    # The same draws, one replicate at a time.
    gen = np.random.default_rng(7)
    loop = []
    for start in range(0, 600, 64):
        idx = gen.integers(0, 300, size=(min(64, 600 - start), 300))
        for row in idx:
            loop.append(sum(a[i] - b[i] for i in row) / 300)
    lo, hi = np.quantile(loop, [0.025, 0.975])
    assert (res.low, res.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert res.diff == pytest.approx(a.mean() - b.mean()) and res.low < res.diff < res.high
    ref = sps.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, n_resamples=4000, method="percentile",
                        random_state=0, vectorized=False).confidence_interval
    big = sig.paired_bootstrap_diff_ci(a, b, n_boot=4000, seed=0)
    assert big.low == pytest.approx(ref.low, abs=0.01) and big.high == pytest.approx(ref.high, abs=0.01)
    z = sig.paired_bootstrap_diff_ci(a, a.copy(), n_boot=100)
    assert (z.diff, z.low, z.high) == (0.0, 0.0, 0.0)
    assert sig.paired_bootstrap_diff_ci(a, b, n_boot=200, seed=3) == sig.paired_bootstrap_diff_ci(a, b, n_boot=200, seed=3)
    with pytest.raises(ConfigError):
        sig.paired_bootstrap_diff_ci(a, b, n_boot=0)
    with pytest.raises(DataError, match="non-finite"):
        sig.paired_bootstrap_diff_ci([1.0, np.nan], [1.0, 2.0])


def test_welch_matches_the_closed_form():
    a = np.array([1.0, 2.0, 3.0, 4.5, 2.2])
    b = np.array([2.0, 3.1, 5.0, 6.0, 4.4, 3.9, 5.5])
    r = sig.welch(a, b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    assert r.statistic == pytest.approx(t) and r.df == pytest.approx(df)
    assert r.p_value == pytest.approx(2 * sps.t.sf(abs(t), df))
    assert sig.welch([1.0, 1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    z = sig.welch([1.0, 1.0, 1.0], [2.0, 2.0])
    assert (z.p_value, z.statistic) == (0.0, -math.inf)
    with pytest.raises(DataError, match="at least 2"):
        sig.welch([1.0], [1.0, 2.0])
