"""The certify suite's sharding and per-example data: shards combined give bitwise the
unsharded result (records, certificates, summary) whatever the number of shards; combine
recounts from the shards' per-example arrays (tampering changes the records, a missing or
misaligned piece is an error, shards that certified different weights are refused); every
reported certified accuracy, abstain rate and smoothed accuracy recounted by a plain loop
over the per-example certificates; the `per_example` hook averages to its rows; and the
job functions of the Ray executor (in this process) give the local executor's result with
the noise-trained sibling taken from the training cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from workbench.data.base import Dataset, Split
from workbench.errors import DataError
from workbench.suite import ModelHandle, RunContext, load_artifact
from workbench.suites.certify import blocks
from workbench.suites.certify.suite import CertifySuite

CPU = torch.device("cpu")
PARAMS = {"sigmas": [0.25, 0.5], "n0": 8, "n": 60, "radii": [0.0, 0.1, 0.25, 0.5], "check_radii": [0.1, 0.25],
          "attack_samples": 9, "attack_steps": 2, "attack_noise_samples": 4, "attack_eval_samples": 40,
          "block_examples": 4}


def _ctx(run_dir: Path, seed: int = 5, batch_size: int = 16, max_samples: int | None = 23) -> RunContext:
    return RunContext(run_id="t", run_dir=run_dir, seed=seed, device=CPU, suite="certify", model_name="m",
                      dataset_name="d", max_samples=max_samples, batch_size=batch_size, log=lambda m: None)


def _tabular(n: int = 60) -> Dataset:
    """Two standardised features, y = 1[x0 + x1 > 0] (the suite tests' data, seed 1)."""
    from tests.suites.test_certify_suite import _linear_tabular

    return _linear_tabular(n, seed=1)


def _linear(scale: float) -> nn.Module:
    """Logits (−s(x0 + x1)/2, s(x0 + x1)/2): right on every example, margin grows with s."""
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]) * scale / 2)
        m.bias.zero_()
    return m


def _sibling_trainer(calls: list | None = None):
    """A `ModelHandle.trainer` giving a fixed sibling per sigma (a steeper linear model);
    with `calls`, a slightly different one on every call (a worker without the shared cache)."""

    def trainer(seed=None, recipe=None, recipe_params=None, epochs=None, **_):
        if calls is not None:
            calls.append(1)
            return _linear(3.0 + 1e-3 * len(calls))
        return _linear(2.0 + float(recipe_params["sigma"]))

    return trainer


def _handle(trainer=None) -> ModelHandle:
    return ModelHandle(name="m", module=_linear(1.0), arch="custom", task="classification", output="logits",
                       trainer=trainer)


def _digits() -> tuple[ModelHandle, Dataset]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:300] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target[:300], dtype=torch.long)
    data = Dataset(name="digits", modality="image", task="classification", train=Split(x[:100], y[:100]),
                   val=Split(x[100:150], y[100:150]), test=Split(x[150:], y[150:]), num_classes=10,
                   class_names=tuple(map(str, range(10))), bounds=(0.0, 1.0))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with torch.no_grad():  # a crude nearest-class-mean head, so that some digits certify
        means = torch.stack([x[:100][y[:100] == c].flatten(1).mean(0) for c in range(10)])
        net[1].weight.zero_()
        net[1].weight[:10] = means
        net[1].bias.zero_()
        net[3].weight.zero_()
        net[3].weight[:, :10] = torch.eye(10) * 4
        net[3].bias.copy_(-2 * means.pow(2).sum(1))
    return ModelHandle(name="m", module=net, arch="custom", task="classification", output="logits"), data


def _shard_and_combine(suite, handle, data, root: Path, n_shards: int, **ctx_kw):
    pieces = suite.shards(handle, data, _ctx(root / "plan", **ctx_kw), n_shards)
    parts = []
    for i, piece in reversed(list(enumerate(pieces))):  # any order, a fresh context each
        parts.insert(0, (piece, suite.run_shard(handle, data, _ctx(root / f"worker{i}", **ctx_kw), piece)))
    ctx = _ctx(root / "combined", **ctx_kw)
    return pieces, parts, suite.combine(handle, data, ctx, parts), ctx


def _same_run(a, a_dir: Path, b, b_dir: Path) -> None:
    """Records, certificates and summary bitwise equal."""
    da, db = a.to_dict(), b.to_dict()
    da.pop("duration_s", None)
    db.pop("duration_s", None)
    assert da == db
    ca, cb = (load_artifact(r.to_dict(), d, "certificates", ".npz") for r, d in ((a, a_dir), (b, b_dir)))
    assert set(ca) == set(cb)
    for k in ca:
        assert ca[k].dtype == cb[k].dtype and np.array_equal(ca[k], cb[k]), k  # exact, floats included
    sa, sb = (load_artifact(r.to_dict(), d, "certify_summary", ".json") for r, d in ((a, a_dir), (b, b_dir)))
    assert sa == sb


# ----------------------------------------------------------------------------- sharded == unsharded


@pytest.mark.parametrize("n_shards", [2, 3, 6])
def test_sharded_equals_unsharded_bitwise_with_a_noise_trained_sibling(tmp_path, n_shards):
    data = _tabular()
    suite = CertifySuite.from_config(PARAMS)
    handle = _handle(_sibling_trainer())
    whole = suite.run(handle, data, _ctx(tmp_path / "whole"))
    pieces, parts, combined, ctx = _shard_and_combine(suite, handle, data, tmp_path, n_shards)
    block = blocks.block_size(suite.params)
    assert block == 4 and len(pieces) == min(n_shards, 6)  # 23 examples: 6 blocks of 4 (the last of 3)
    assert [i for s in pieces for i in range(s.start, s.stop)] == list(range(23))
    assert all(s.start % block == 0 for s in pieces) and len({s.stop - s.start for s in pieces[:-1]}) <= 2
    _same_run(combined, ctx.run_dir, whole, tmp_path / "whole")
    # the check ran on certified examples of both variants, so the attack path is covered too
    flags = [m for m in whole.metrics if m.name == "certification_consistency_flag"]
    assert {m.tags["variant"] for m in flags if m.value is not None} == {"standard", "gaussian_noise"}
    assert len([m for m in whole.metrics if m.name == "smoothed_adversarial_accuracy"]) == 4 * 2  # 4 (variant, σ) × 2 radii


def test_sharded_equals_unsharded_on_an_image_model_with_other_batches(tmp_path):
    handle, data = _digits()
    suite = CertifySuite.from_config({**PARAMS, "noise_training": False, "sigmas": [0.25], "block_examples": 3})
    kw = {"batch_size": 12, "max_samples": 40, "seed": 11}
    whole = suite.run(handle, data, _ctx(tmp_path / "whole", **kw))
    pieces, _, combined, ctx = _shard_and_combine(suite, handle, data, tmp_path, 4, **kw)
    assert len(pieces) == 4 and blocks.block_size(suite.params) == 3
    _same_run(combined, ctx.run_dir, whole, tmp_path / "whole")
    acc0 = next(m for m in whole.metrics if m.name == "certified_accuracy" and m.tags["radius"] == 0.0)
    assert 0.2 < acc0.value < 1.0  # a model that certifies some digits and not others


def test_combine_recounts_from_the_shards_per_example_arrays(tmp_path):
    data = _tabular()
    suite = CertifySuite.from_config(PARAMS)
    handle = _handle(_sibling_trainer())
    whole = suite.run(handle, data, _ctx(tmp_path / "whole"))
    pieces, parts, _, _ = _shard_and_combine(suite, handle, data, tmp_path, 3)

    # the middle shard's certificates (standard model, σ = 0.25) all set to abstain: certified
    # accuracy at radius 0 drops by exactly the examples that shard had certified correct
    label = load_artifact(whole.to_dict(), tmp_path / "whole", "certificates", ".npz")["label"][pieces[1]]
    pred = parts[1][1]["results"][0]["arrays"]["prediction"]
    assert parts[1][1]["results"][0]["variant"] == "standard" and parts[1][1]["results"][0]["sigma"] == 0.25
    n_correct = int(((pred == label) & (pred != -1)).sum())
    tampered = [(p, {**part, "results": [dict(r, arrays=dict(r["arrays"])) for r in part["results"]]})
                for p, part in parts]
    tampered[1][1]["results"][0]["arrays"]["prediction"] = np.full_like(pred, -1)
    res = suite.combine(handle, data, _ctx(tmp_path / "t"), tampered)

    def acc0(r):
        return next(m for m in r.metrics if m.name == "certified_accuracy" and m.tags["radius"] == 0.0
                    and m.tags["variant"] == "standard" and m.tags["sigma"] == 0.25)

    assert n_correct > 0 and round(acc0(res).value * 23) == round(acc0(whole).value * 23) - n_correct

    with pytest.raises(DataError, match="cover"):
        suite.combine(handle, data, _ctx(tmp_path / "m"), parts[:2])  # a piece missing
    with pytest.raises(DataError, match="whole blocks"):
        suite.run_shard(handle, data, _ctx(tmp_path / "w"), slice(2, 8))  # not block-aligned
    with pytest.raises(DataError, match="reports rows"):
        suite.combine(handle, data, _ctx(tmp_path / "x"), [(pieces[1], parts[0][1]), *parts[1:]])


def test_shards_that_certified_different_siblings_are_refused(tmp_path):
    """Workers that trained the sibling themselves (no shared cache) and got other weights."""
    data = _tabular()
    suite = CertifySuite.from_config({**PARAMS, "sigmas": [0.25]})
    handle = _handle(_sibling_trainer(calls=[]))
    with pytest.raises(DataError, match="certified different models"):
        _shard_and_combine(suite, handle, data, tmp_path, 2)


def test_no_shards_when_one_block_holds_every_example(tmp_path):
    data = _tabular()
    suite = CertifySuite.from_config(PARAMS)
    assert suite.shards(_handle(), data, _ctx(tmp_path, max_samples=4), 3) is None  # one block of 4
    assert len(suite.shards(_handle(), data, _ctx(tmp_path, max_samples=5), 3)) == 2
    reg = ModelHandle(name="r", module=_linear(1.0), arch="custom", task="classification", output="mean")
    assert suite.shards(reg, data, _ctx(tmp_path), 3) is None  # not applicable
    empty = suite.run(_handle(), data, _ctx(tmp_path, max_samples=0))
    assert empty.status == "skipped" and "no test example" in empty.reason


# ----------------------------------------------------------------------------- per-example records


def test_every_rate_is_a_plain_loop_recount_of_the_per_example_certificates(tmp_path):
    data = _tabular()
    suite = CertifySuite.from_config(PARAMS)
    res = suite.run(_handle(_sibling_trainer()), data, _ctx(tmp_path))
    arrays = load_artifact(res.to_dict(), tmp_path, "certificates", ".npz")
    y = [int(v) for v in arrays["label"]]
    assert list(arrays["example_index"]) == sorted(set(arrays["example_index"]))
    assert y == data.test.y[torch.from_numpy(arrays["example_index"])].tolist()
    checked = 0
    for m in res.metrics:
        if m.name not in ("certified_accuracy", "abstain_rate", "smoothed_accuracy"):
            continue
        pre = f"{m.tags['variant']}_sigma{m.tags['sigma']:g}_"
        pred, radius = arrays[pre + "prediction"].tolist(), arrays[pre + "radius"].tolist()
        smoothed = arrays[pre + "smoothed_prediction"].tolist()
        k = 0
        for i in range(len(y)):
            if m.name == "certified_accuracy":
                k += pred[i] == y[i] and pred[i] != -1 and radius[i] >= m.tags["radius"]
            elif m.name == "smoothed_accuracy":
                k += smoothed[i] == y[i]
            else:
                k += (pred[i] if m.tags["procedure"] == "certify" else smoothed[i]) == -1
        assert m.n == len(y) and m.value == k / len(y), (m.name, m.tags)
        ci = binomtest(k, len(y)).proportion_ci(0.95, method="exact")
        assert m.ci == pytest.approx((ci.low, ci.high), abs=1e-12)
        checked += 1
    assert checked == 4 * (4 + 3)  # 4 (variant, σ) × (4 radii + 2 abstain rates + smoothed accuracy)


def test_per_example_hook_describes_the_standard_model_at_the_smallest_sigma(tmp_path):
    data = _tabular()
    res = CertifySuite.from_config(PARAMS).run(_handle(_sibling_trainer()), data, _ctx(tmp_path))
    d = json.loads(json.dumps(res.to_dict(), default=str))  # as results.json holds it
    per = CertifySuite.per_example(d, tmp_path)
    assert set(per) == {"smoothed_accuracy", "mean_certified_radius", "y_true", "example_id"}
    assert all(v.shape == (23,) for v in per.values())

    def row(name, sigma):
        return next(m for m in res.metrics if m.name == name and m.tags["variant"] == "standard"
                    and m.tags["sigma"] == sigma)

    arrays = load_artifact(d, tmp_path, "certificates", ".npz")
    radius, pred = arrays["standard_sigma0.25_radius"], arrays["standard_sigma0.25_prediction"]
    loop = sum(radius[i] if pred[i] == arrays["label"][i] else 0.0 for i in range(23)) / 23
    assert float(per["mean_certified_radius"].mean()) == pytest.approx(loop, rel=1e-12)
    assert float(per["mean_certified_radius"].mean()) == row("mean_certified_radius", 0.25).value
    assert float(per["smoothed_accuracy"].mean()) == pytest.approx(row("smoothed_accuracy", 0.25).value, abs=1e-15)
    assert set(np.unique(per["smoothed_accuracy"])) <= {0.0, 1.0}
    assert row("mean_certified_radius", 0.5).value != row("mean_certified_radius", 0.25).value  # one row described
    np.testing.assert_array_equal(per["example_id"], arrays["example_index"])
    np.testing.assert_array_equal(per["y_true"], arrays["label"])
    # what a gate reads goes through the same hook
    from workbench.gates import load_per_example

    assert set(load_per_example(d, tmp_path)) == set(per)
    assert CertifySuite.per_example(d, tmp_path / "elsewhere") == {}  # artifact missing: nothing, no error


# ----------------------------------------------------------------------------- the executor's job functions


@pytest.mark.slow
def test_job_functions_in_process_equal_the_local_executor(tmp_path):
    """plan_shards / run_shard / combine_shards (what Ray runs) against the local executor, on a
    trained MLP whose noise-trained sibling the "workers" get from the training cache."""
    from workbench.config import build_plan
    from workbench.executors import jobs as J
    from workbench.runner import Environment, plan_to_raw, run_plan
    from workbench.store import Store

    raw = {"run": {"name": "c", "seed": 3, "device": "cpu", "out": str(tmp_path / "reports"), "progress": False,
                   "cache": str(tmp_path / "cache"), "store": str(tmp_path / "store.sqlite"),
                   "suites": ["certify"], "max_samples": 30, "batch_size": 32},
           "models": [{"name": "cancer_mlp", "arch": "mlp", "dataset": "breast_cancer", "train": {"epochs": 2}}],
           "suites": {"certify": {"n0": 8, "n": 50, "radii": [0.0, 0.25, 0.5], "check_radii": [0.25],
                                  "attack_samples": 10, "attack_steps": 2, "attack_noise_samples": 8,
                                  "attack_eval_samples": 40, "training_epochs": 2, "block_examples": 4}}}
    plan = build_plan(raw)
    out = run_plan(plan, store=Store(tmp_path / "store.sqlite"), log=lambda m: None)
    (local,) = out.run.results
    assert local.status == "ok", local.reason
    # The Ray path on a cache of its own, empty: the driver (plan_shards) trains the model and
    # its noise-trained sibling once; the shards only load them, never train the sibling again.
    cache = tmp_path / "ray-cache"
    spec = J.JobSpec(plan=plan_to_raw(plan), plan_source=plan.source, run_id="r", device="cpu",
                     cache_dir=str(cache))
    env = Environment(plan=plan, device=CPU, cache_dir=cache, log=lambda m: None)
    pieces = J.plan_shards(env, "cancer_mlp", "certify", 3)
    assert len(pieces) == 3 and pieces[-1].stop == 30
    trained = {f: f.stat().st_mtime_ns for f in cache.rglob("*.pt")}
    assert len(trained) == 2, sorted(trained)  # the model and its sibling, before any shard ran
    shards = [J.run_shard(spec, "cancer_mlp", "certify", s, i) for i, s in enumerate(pieces)]
    assert {f: f.stat().st_mtime_ns for f in cache.rglob("*.pt")} == trained  # nothing trained again
    combined = J.combine_shards(env, "cancer_mlp", "certify", shards[::-1], pieces, "r", tmp_path / "combined")
    a, b = combined.to_dict(), local.to_dict()
    for x in (a, b):
        x.pop("duration_s")
    assert a == b
    assert {r["variant"] for r in shards[0]["part"]["results"]} == {"standard", "gaussian_noise"}


def test_certificates_do_not_depend_on_the_batch_size(tmp_path):
    """The batch size is a speed setting: the blocks (and their noise seeds) come from the
    suite's `block_examples`, and a block's noise stream is the same however its copies are
    cut into forward passes, so every record is the same at batch 8, 16 and 64."""
    data = _tabular()
    suite = CertifySuite.from_config(PARAMS)
    runs = [suite.run(_handle(_sibling_trainer()), data, _ctx(tmp_path / f"b{b}", batch_size=b)) for b in (8, 16, 64)]
    recs = [[(m.name, m.value, m.ci, sorted(m.tags.items())) for m in r.metrics] for r in runs]
    assert recs[0] == recs[1] == recs[2] and len(recs[0]) > 20


def test_the_consistency_attack_does_not_depend_on_the_batch_size(tmp_path):
    """The attack too: on a nonlinear image model (where the noise steers PGD's gradient),
    12 noise draws per step (more than a batch of 8 rows holds: never capped), blocks of 5
    examples, every record, certificate and summary entry is the same at batch 8, 16 and 64,
    with attacked examples at both radii and their accuracies measured (not null); sharded
    at batch 8 equals unsharded at batch 64 bitwise."""
    handle, data = _digits()
    suite = CertifySuite.from_config({**PARAMS, "noise_training": False, "sigmas": [0.25], "block_examples": 5,
                                      "attack_samples": 12, "attack_steps": 3, "attack_noise_samples": 12,
                                      "check_radii": [0.25, 0.5]})
    kw = {"max_samples": 20, "seed": 3}
    runs = {b: suite.run(handle, data, _ctx(tmp_path / f"b{b}", batch_size=b, **kw)) for b in (8, 16, 64)}
    for b in (8, 16):
        _same_run(runs[b], tmp_path / f"b{b}", runs[64], tmp_path / "b64")
    attacked = [m for m in runs[64].metrics if m.name == "smoothed_adversarial_accuracy"]
    assert len(attacked) == 2 and all(m.value is not None and m.n > 0 for m in attacked)
    assert all(m.tags["noise_samples"] == 12 for m in attacked)
    # the per-example attack counts themselves (hits of the label among the evaluation draws)
    arrays = {b: blocks.certify_rows(suite.params, handle, data, _ctx(tmp_path / f"a{b}", batch_size=b, **kw),
                                     slice(0, 20))["results"][0]["arrays"] for b in (8, 64)}
    hits = arrays[64]["adv_hits"]
    assert np.array_equal(arrays[8]["adv_hits"], hits) and np.array_equal(arrays[8]["adv_correct"],
                                                                          arrays[64]["adv_correct"])
    assert (hits >= 0).sum() >= 8 and len(set(hits[hits >= 0].tolist())) > 2  # attacked, and not all alike
    _, _, combined, ctx = _shard_and_combine(suite, handle, data, tmp_path / "sharded", 3, batch_size=8, **kw)
    _same_run(combined, ctx.run_dir, runs[64], tmp_path / "b64")
