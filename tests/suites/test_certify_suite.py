"""The certify suite end to end on tiny models written here: reported numbers recomputed
from the per-example certificates, the consistency check catching a certifier that
over-claims its radii (and staying quiet on the honest one), token models through their
embedding layer, the noise-training recipe through the real training loop, and figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workbench.data.base import Dataset, Split
from workbench.errors import ConfigError, WorkbenchError
from workbench.records import MetricRecord
from workbench.suite import ModelHandle, RunContext, load_artifact
from workbench.suites.certify import functional as C
from workbench.suites.certify.suite import CertifySuite

CPU = torch.device("cpu")


def _ctx(tmp_path: Path, name: str, seed: int = 0) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp_path, seed=seed, device=CPU, suite="certify", model_name=name,
                      dataset_name="d", max_samples=None, batch_size=512, log=lambda m: None)


def _metrics(res, name: str, **tags) -> list[MetricRecord]:
    return [m for m in res.metrics if m.name == name and all(m.tags.get(k) == v for k, v in tags.items())]


def _handle(module: nn.Module, name: str = "m", trainer=None) -> ModelHandle:
    return ModelHandle(name=name, module=module, arch="custom", task="classification", output="logits",
                       trainer=trainer)


# ----------------------------------------------------------------------------- data and models


def _linear_tabular(n: int = 120, seed: int = 0) -> Dataset:
    """Two standardised features, y = 1[x0 + x1 > 0]."""
    g = torch.Generator().manual_seed(seed)
    splits = []
    for _ in range(3):
        x = torch.randn(n, 2, generator=g)
        splits.append(Split(x, (x.sum(1) > 0).long()))
    return Dataset(name="lin", modality="tabular", task="classification", train=splits[0], val=splits[1],
                   test=splits[2], num_classes=2, class_names=("neg", "pos"),
                   ground_truth={"standardization": {"mean": [0, 0], "std": [1, 1]}})


class FixedLinear(nn.Module):
    """Logits (0, x0 + x1): the exact radius of x is |x0 + x1| / sqrt(2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.sum(1)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    parts = [perm[:1000], perm[1000:1400], perm[1400:]]
    tr, va, te = (Split(x[p], y[p]) for p in parts)
    return Dataset(name="digits", modality="image", task="classification", train=tr, val=va, test=te,
                   num_classes=10, class_names=tuple(map(str, range(10))), bounds=(0.0, 1.0))


def _digits_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))


def _trainer_for(data: Dataset, build, epochs: int = 15):
    """A `ModelHandle.trainer` through the real training loop (workbench.train.train_model)."""
    from workbench.train import TrainConfig, train_model

    def trainer(seed=None, recipe="standard", recipe_params=None, epochs_=None, **_):
        cfg = TrainConfig(epochs=epochs, recipe=recipe or "standard", recipe_params=dict(recipe_params or {}),
                          seed=0 if seed is None else seed, patience=None)
        return train_model(build(), data, cfg, device=CPU).module

    return lambda seed=None, recipe=None, recipe_params=None, epochs=None, **kw: trainer(seed, recipe, recipe_params)


class TokenMean(nn.Module):
    """A user-style token model: nn.Embedding -> mean over positions -> linear. No
    `embed`/`forward_from_embeddings`: noise goes in through a hook on the embedding."""

    def __init__(self, vocab: int = 6, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids).mean(1))


def _tokens(n: int = 200) -> Dataset:
    """y = 1 when token 1 is more frequent than token 2 in a sequence of 10 tokens."""
    g = torch.Generator().manual_seed(0)
    splits = []
    for _ in range(3):
        x = torch.randint(0, 6, (n, 10), generator=g)
        splits.append(Split(x, ((x == 1).sum(1) > (x == 2).sum(1)).long()))
    return Dataset(name="tok", modality="tokens", task="classification", train=splits[0], val=splits[1],
                   test=splits[2], num_classes=2, class_names=("a", "b"), vocab_size=6)


# ----------------------------------------------------------------------------- params


@pytest.mark.parametrize("bad", [{"sigmas": []}, {"sigmas": [0.0]}, {"sigmas": [-0.1]}, {"radii": [-1.0]},
                                 {"alpha": 0.5}, {"alpha": 0.0}, {"n": 0}, {"check_radii": [0.0]},
                                 {"check_alpha": 1.0}, {"noise_training": 1}, {"sigmas": [math.nan]}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(WorkbenchError):
        CertifySuite.from_config(bad)


def test_profiles_are_valid_and_sorted():
    quick = CertifySuite.from_config({}, profile="quick").params
    full = CertifySuite.from_config({}, profile="full").params
    assert quick.n < full.n == 100_000 and full.n0 == 100 and full.alpha == 0.001
    assert CertifySuite.from_config({"radii": [1.0, 0.0, 0.5]}).params.radii == (0.0, 0.5, 1.0)


# ----------------------------------------------------------------------------- numbers


def test_reported_numbers_are_recomputed_from_the_certificates(tmp_path):
    data = _linear_tabular()
    suite = CertifySuite.from_config({"sigmas": [0.5], "n0": 64, "n": 2000, "radii": [0.0, 0.25, 0.5, 1.0, 2.0],
                                      "noise_training": False, "attack_samples": 20, "attack_eval_samples": 500,
                                      "attack_steps": 10, "attack_noise_samples": 16})
    res = suite.run(_handle(FixedLinear()), data, _ctx(tmp_path, "m"))
    assert res.status == "ok", res.reason
    arrays = load_artifact(res.to_dict(), tmp_path, "certificates", ".npz")
    y = arrays["label"]
    pred, radius = arrays["standard_sigma0.5_prediction"], arrays["standard_sigma0.5_radius"]
    values = []
    for m in _metrics(res, "certified_accuracy", variant="standard", sigma=0.5):
        k = int(((pred == y) & (radius >= m.tags["radius"])).sum())
        assert m.value == pytest.approx(k / len(y)) and m.n == len(y)
        lo, hi = C.clopper_pearson(k, len(y))
        assert m.ci == pytest.approx((lo, hi))
        values.append(m.value)
    assert values == sorted(values, reverse=True)  # non-increasing in the radius
    (abst,) = _metrics(res, "abstain_rate", procedure="certify")
    assert abst.value == pytest.approx(float(np.mean(pred == C.ABSTAIN)))
    # exact radius of a linear model: the distance to its hyperplane, never exceeded here
    x = data.test.x[torch.from_numpy(arrays["example_index"])]
    exact = (x.sum(1).abs() / math.sqrt(2)).numpy()
    ok = pred != C.ABSTAIN
    assert np.all(radius[ok] <= exact[ok] + 1e-9)
    r_max = C.max_certifiable_radius(0.5, 2000, 0.001)
    assert radius.max() <= r_max + 1e-12
    (acr,) = _metrics(res, "mean_certified_radius")
    assert acr.value == pytest.approx(float(np.where(pred == y, radius, 0.0).mean()))
    assert acr.unit == "train-std units"
    flags = _metrics(res, "certification_consistency_flag")
    assert flags and all(f.value in (0.0, None) for f in flags)
    assert _metrics(res, "certification_consistency_flags")[0].value == 0.0


def test_consistency_check_flags_a_certifier_that_overclaims(tmp_path, monkeypatch):
    """A bug that triples every radius: the attack on g finds points well inside the claimed
    radius where the class's probability is far below what the certificate promises."""
    real = C.radius_from_bound
    monkeypatch.setattr(C, "radius_from_bound", lambda p, s: 3 * real(p, s))
    data = _linear_tabular()
    suite = CertifySuite.from_config({"sigmas": [0.5], "n0": 64, "n": 2000, "radii": [0.0, 0.5, 1.0, 2.0],
                                      "noise_training": False, "attack_samples": 40, "attack_eval_samples": 500,
                                      "attack_steps": 10, "attack_noise_samples": 16})
    res = suite.run(_handle(FixedLinear()), data, _ctx(tmp_path, "m"))
    assert _metrics(res, "certification_consistency_flags")[0].value >= 1
    summary = load_artifact(res.to_dict(), tmp_path, "certify_summary", ".json")
    rows = summary["variants"]["standard"]["0.5"]["consistency"]
    assert any(r.get("flagged") and r["certified_but_attacked_wrong"] > 0 for r in rows)


def test_deterministic_for_a_seed_and_model_untouched(tmp_path):
    from workbench.torch_utils import ModuleState

    data = _digits()
    module = _digits_net().train()
    before = ModuleState.capture(module)
    suite = CertifySuite.from_config({"n_samples": 20, "sigmas": [0.25], "n0": 16, "n": 100,
                                      "radii": [0.0, 0.25], "noise_training": False, "attack_samples": 5,
                                      "attack_eval_samples": 100, "attack_steps": 2, "attack_noise_samples": 4})
    a = suite.run(_handle(module), data, _ctx(tmp_path / "a", "m", seed=3))
    b = suite.run(_handle(module), data, _ctx(tmp_path / "b", "m", seed=3))
    assert before.diff(module) == []
    assert [m.to_dict() for m in a.metrics] == [m.to_dict() for m in b.metrics]
    c = suite.run(_handle(module), data, _ctx(tmp_path / "c", "m", seed=4))
    assert [m.to_dict() for m in a.metrics] != [m.to_dict() for m in c.metrics]


def test_token_model_gets_noise_on_its_embedding_layer(tmp_path):
    data = _tokens()
    module = TokenMean()
    from workbench.train import TrainConfig, train_model

    module = train_model(module, data, TrainConfig(epochs=30, lr=3e-2, patience=None), device=CPU).module
    suite = CertifySuite.from_config({"n_samples": 60, "sigmas": [0.5], "n0": 32, "n": 500,
                                      "radii": [0.0, 0.5, 1.0], "noise_training": False, "attack_samples": 10,
                                      "attack_eval_samples": 200, "attack_steps": 4, "attack_noise_samples": 8})
    res = suite.run(_handle(module), data, _ctx(tmp_path, "tok"))
    assert res.status == "ok", res.reason
    summary = load_artifact(res.to_dict(), tmp_path, "certify_summary", ".json")
    assert summary["space"] == "embedding" and summary["radius_units"].startswith("relative embedding units")
    scale = summary["variants"]["standard"]["0.5"]["noise_scale"]
    ref = module.emb(data.train.x[:1000]).detach()
    assert scale == pytest.approx(float(ref.pow(2).mean().sqrt()), rel=1e-5)
    (acc0,) = _metrics(res, "certified_accuracy", radius=0.0)
    assert acc0.value > 0.5 and acc0.tags["space"] == "embedding"
    assert not module.emb._forward_hooks  # every hook removed


def test_gaussian_noise_recipe_validation_accuracy_is_under_noise():
    from workbench.suites.certify.training import GaussianNoiseTraining

    data = _linear_tabular()
    recipe = GaussianNoiseTraining(sigma=3.0, val_copies=8)
    row = recipe.epoch_end(FixedLinear(), data, 0, CPU)
    # P(correct) for margin m = |x0 + x1| under N(0, 9 I): Φ(m / (3·sqrt 2)), averaged
    m = data.val.x.sum(1).abs().double().numpy()
    from scipy.stats import norm

    expected = float(norm.cdf(m / (3 * math.sqrt(2))).mean())
    assert row["selection_score"] == pytest.approx(expected, abs=0.04)
    with pytest.raises(ConfigError):
        GaussianNoiseTraining(sigma=0.0)


@pytest.mark.slow
def test_noise_trained_model_certifies_more_than_the_standard_one(tmp_path):
    """Digits MLP, sigma = 0.5, all 397 test digits: at radius 0.5 the Gaussian-noise-trained
    sibling's certified accuracy is above the standard model's, beyond both 95% intervals
    (measured with the per-block noise seeds: 0.29 [0.25, 0.34] vs 0.11 [0.08, 0.14])."""
    data = _digits()
    trainer = _trainer_for(data, _digits_net)
    standard = trainer()
    suite = CertifySuite.from_config({"n_samples": 400, "sigmas": [0.5], "n0": 32, "n": 500,
                                      "radii": [0.0, 0.25, 0.5], "check_radii": [0.5], "attack_samples": 20,
                                      "attack_eval_samples": 300, "attack_steps": 5, "attack_noise_samples": 8})
    res = suite.run(_handle(standard, trainer=trainer), data, _ctx(tmp_path, "digits"))
    (std,) = _metrics(res, "certified_accuracy", variant="standard", radius=0.5)
    (noisy,) = _metrics(res, "certified_accuracy", variant="gaussian_noise", radius=0.5)
    assert noisy.ci[0] > std.ci[1], (std.value, noisy.value)
    assert _metrics(res, "certification_consistency_flags")[0].value == 0.0
    figs = CertifySuite.figures(res.to_dict(), tmp_path)
    assert [t for t, _ in figs] == ["Certified accuracy vs radius", "Certification consistency check"]
    for _, fig in figs:
        json.loads(fig.to_json())


def test_skips_what_it_cannot_certify():
    data = _linear_tabular()
    reg = ModelHandle(name="r", module=FixedLinear(), arch="custom", task="classification", output="mean")
    assert "logits" in CertifySuite().applicable(reg, data)
    tokens = _tokens()
    assert "embedding" in CertifySuite().applicable(_handle(nn.Sequential(nn.Flatten())), tokens)


class _Recorder(nn.Module):
    """Wraps a module and records the number of rows of every forward."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(x.shape[0]))
        return self.module(x)


def test_never_calls_the_model_on_more_than_the_run_batch_size(tmp_path):
    data = _linear_tabular()
    model = _Recorder(FixedLinear())
    suite = CertifySuite.from_config({"sigmas": [0.5], "n0": 10, "n": 50, "radii": [0.0, 0.5],
                                      "noise_training": False, "attack_samples": 5, "attack_eval_samples": 30,
                                      "attack_steps": 2, "attack_noise_samples": 16})
    ctx = RunContext(run_id="t", run_dir=tmp_path, seed=0, device=CPU, suite="certify", model_name="m",
                     dataset_name="d", max_samples=16, batch_size=8, log=lambda m: None)
    res = suite.run(_handle(model), data, ctx)
    assert res.status == "ok" and model.seen and max(model.seen) <= 8
    assert all(m.n is None or m.n <= 16 for m in res.metrics)
    attacked = _metrics(res, "smoothed_adversarial_accuracy")
    assert attacked and all(m.tags["noise_samples"] == 16 for m in attacked)  # 16 draws over forwards of 8 rows


def test_predict_samples_and_abstains_at_the_boundary():
    model = FixedLinear()
    x = torch.tensor([[2.0, 1.0], [-2.0, -1.0], [1.0, -1.0]])  # far positive, far negative, on the boundary
    out = C.predict(model, x, sigma=0.5, n=1000, alpha=0.001, batch_size=256, generator=torch.Generator().manual_seed(0))
    assert out.tolist() == [1, 0, C.ABSTAIN]


def test_cost_estimate_is_exact_for_certification_and_an_upper_end_for_the_check(tmp_path):
    data = _linear_tabular()
    suite = CertifySuite.from_config({"n_samples": 50, "sigmas": [0.25, 0.5], "n0": 10, "n": 100,
                                      "radii": [0.0, 0.5, 1.0], "check_radii": [0.5], "attack_samples": 20,
                                      "attack_steps": 3, "attack_noise_samples": 4, "attack_eval_samples": 30})
    model = _Recorder(FixedLinear())
    ctx = RunContext(run_id="t", run_dir=tmp_path, seed=0, device=CPU, suite="certify", model_name="m",
                     dataset_name="d", max_samples=None, batch_size=64, log=lambda m: None)
    works = suite.cost(_handle(model), data, ctx)  # no trainer: the standard model at two sigmas
    fwd = sum(w.examples for w in works if w.kind == "forward")
    bwd = sum(w.examples for w in works if w.kind == "backward")
    assert fwd == 2 * 50 * 111 + 2 * 20 * 30 and bwd == 2 * 20 * 3 * 4  # 111: n0 + n + f at x itself
    suite.run(_handle(model), data, ctx)
    rows = sum(model.seen)
    assert 2 * 50 * 111 <= rows <= fwd + bwd


def test_clean_accuracy_and_a_failed_noise_trained_sibling_is_flagged(tmp_path):
    """`clean_accuracy` is the base classifier's accuracy on the certified rows (a plain
    recount); a noise-trained sibling that learned nothing (constant logits: the majority
    class at best) is flagged `sibling_training_failed` = 1 with the reason (a headline row);
    a sibling that learned is not."""
    data = _linear_tabular()
    cfg = {"n_samples": 40, "sigmas": [0.25], "n0": 16, "n": 100, "radii": [0.0, 0.25], "consistency_check": False}

    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([1.0, 0.0]).expand(x.shape[0], 2)

    for sibling, flag in ((Constant(), 1.0), (FixedLinear(), 0.0)):
        res = CertifySuite.from_config(cfg).run(_handle(FixedLinear(), trainer=lambda *a, s=sibling, **k: s), data,
                                                _ctx(tmp_path / str(flag), "m"))
        (clean,) = _metrics(res, "clean_accuracy", variant="standard")
        (failed,) = _metrics(res, "sibling_training_failed", variant="gaussian_noise")
        assert failed.value == flag and (failed.reason is not None) == bool(flag)
        assert CertifySuite.is_headline(failed.to_dict())
        if flag:
            assert "failed" in failed.reason and "`train` table" in failed.reason
    from workbench.suites.certify.blocks import SAMPLE_OFFSET

    idx = _ctx(tmp_path / "r", "m").sample_rows(len(data.test), 40, SAMPLE_OFFSET)  # the rows certified
    with torch.no_grad():
        want = float((FixedLinear()(data.test.x[idx]).argmax(1) == data.test.y[idx]).float().mean())
    assert clean.value == pytest.approx(want)


def test_sibling_training_failed_needs_evidence_either_way():
    """The flag from a one-sided exact binomial test against the majority share (here 0.5
    on 20 rows): significantly above it -> 0; at or below it -> 1 with the reason; above it
    but not significantly (12/20: p = P(Bin(20, 0.5) >= 12) = 0.2517) -> null, "too few
    examples to tell", never a claim of failure the data cannot make."""
    from scipy.stats import binom

    from workbench.suites.certify.report import clean_records

    y = np.array([0, 1] * 10)
    tags = {"variant": "gaussian_noise", "sigma": 0.25}
    for right, want in ((18, 0.0), (10, 1.0), (7, 1.0), (12, None)):
        clean = y.copy()
        clean[right:] = 1 - y[right:]  # the first `right` rows correct, the rest wrong
        acc, flag = clean_records(clean, y, "gaussian_noise", tags)
        assert acc.value == right / 20 and flag.name == "sibling_training_failed" and flag.value == want
        assert (flag.reason is None) == (want == 0.0)
        if want is None:
            assert "too few examples" in flag.reason and f"p={binom.sf(11, 20, 0.5):.2g}" in flag.reason
        elif want:
            assert "failed" in flag.reason
    assert len(clean_records(y, y, "standard", tags)) == 1  # the standard model has no sibling
