"""Token models are attacked through a forward hook on their embedding layer, for any
nn.Module (issue 20): a user-style model with no special methods (nn.Embedding + conv +
GRU + linear), the reference Transformer (token + position embeddings) and LSTM, and a
model with two embedding layers fed the ids (the plan must name one). The HotFlip search's
flips are real (a forward on the substituted ids) and never more than an exhaustive
search over every single substitution finds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workbench import embedding as E
from workbench.errors import ModelError
from workbench.suite import ModelHandle, RunContext
from workbench.suites.robustness import functional as A
from workbench.suites.robustness.hotflip import hotflip
from workbench.suites.robustness.suite import RobustnessSuite
from workbench.suites.robustness.testing import GRUTokenClassifier, TwoEmbeddingClassifier, token_dataset, train_plain
from workbench.torch_utils import ModuleState

torch.set_num_threads(1)
CPU = torch.device("cpu")
SMALL = {"n_samples": 40, "eps": [0.25, 0.5], "attacks": ["fgsm", "pgd", "apgd_t"], "pgd_steps": 5, "apgd_steps": 8,
         "apgd_targets": 2, "random_search_queries": 20, "n_examples": 4, "substitutions": [1, 2]}


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp_path, seed=0, device=CPU, suite="robustness", model_name="m",
                      dataset_name="d", batch_size=16, log=lambda m: None)


def _handle(module: nn.Module, embedding: str | None = None) -> ModelHandle:
    return ModelHandle(name="m", module=module, arch="custom", task="classification", output="logits",
                       embedding=embedding)


@pytest.fixture(scope="module")
def data():
    return token_dataset()


@pytest.fixture(scope="module")
def gru(data):
    torch.manual_seed(0)
    return train_plain(GRUTokenClassifier(), data, epochs=30)


def test_user_token_model_without_special_methods_through_the_suite(gru, data, tmp_path):
    assert not hasattr(gru, "embed") and not hasattr(gru, "forward_from_embeddings")
    gru.train()
    before = ModuleState.capture(gru)
    res = RobustnessSuite.from_config(SMALL, profile="quick").run(_handle(gru), data, _ctx(tmp_path))
    assert before.diff(gru) == []
    gru.eval()
    assert res.status == "ok", res.reason
    worst = res.metric("robust_accuracy", attack="worst_case", eps=0.5)
    assert worst.value is not None and worst.tags["space"] == "embedding" and worst.tags["eps_absolute"] > 0
    assert worst.tags["eps_relative_to"] == "rms_embedding_coordinate"
    assert worst.value <= res.metric("clean_accuracy", variant="standard").value
    summary = json.loads((tmp_path / res.artifacts["robustness_summary"]).read_text())
    assert summary["embedding_layer"] == "emb" and "root-mean-square" in summary["eps_meaning"]
    # the token-substitution artifact: what the dashboard shows in place
    with np.load(tmp_path / res.artifacts["token_substitutions"]) as z:
        ex = {k: z[k] for k in z.files}
    assert ex["tokens"].shape == ex["substituted"].shape == ex["changed"].shape == (4, 8)
    np.testing.assert_array_equal(ex["changed"], ex["tokens"] != ex["substituted"])
    with torch.no_grad():  # the reported predictions are a real forward on the substituted ids
        pred = gru(torch.as_tensor(ex["substituted"])).argmax(1).numpy()
    np.testing.assert_array_equal(pred, ex["pred_substituted"])
    flipped = ex["substitutions_to_flip"] >= 1
    assert (ex["changed"].sum(1)[flipped] == ex["substitutions_to_flip"][flipped]).all()
    assert (pred[flipped] != ex["label"][flipped]).all()
    # flip rates: one budget row each, never fewer flips with a larger budget
    r1 = res.metric("token_flip_rate", substitutions=1)
    r2 = res.metric("token_flip_rate", substitutions=2)
    assert r1.n == r2.n == round(res.metric("clean_accuracy", variant="standard").value * 40)
    assert 0 <= r1.value <= r2.value <= 1
    acc2 = res.metric("token_robust_accuracy", substitutions=2)
    assert acc2.value == pytest.approx((1 - r2.value) * r2.n / 40)
    figs = RobustnessSuite.figures(res.to_dict(), tmp_path)
    assert "Token substitutions" in [t for t, _ in figs]
    for _, fig in figs:
        fig.to_json()


def test_hotflip_flips_are_real_and_within_the_exhaustive_single_substitution_set(gru, data):
    ids, y = data.test.x[:30], data.test.y[:30]
    _, layer = E.find_embedding_layer(gru, ids)
    res = hotflip(gru, layer, ids, y, max_substitutions=1, candidates=4)
    with torch.no_grad():
        clean_ok = gru(ids).argmax(1) == y
        assert torch.equal(gru(res.substituted).argmax(1) != y, (res.flips_at >= 0))
        # exhaustive: every position x every other token, a real forward each
        flippable = torch.zeros(len(y), dtype=torch.bool)
        for t in range(ids.shape[1]):
            for v in range(12):
                alt = ids.clone()
                alt[:, t] = v
                flippable |= (gru(alt).argmax(1) != y) & (ids[:, t] != v)
    got = res.flipped_within(1)
    assert bool((got <= (flippable & clean_ok)).all())  # greedy finds a subset of what exists
    assert int(got.sum()) >= 0.5 * int((flippable & clean_ok).sum())  # and most of it, on this model
    assert int(((res.substituted != ids).sum(1) > 1).sum()) == 0
    # positions that carry the label can be frozen: never changed, flips still real
    fr = hotflip(gru, layer, ids, y, max_substitutions=2, candidates=4, frozen_positions=(1,))
    assert torch.equal(fr.substituted[:, 1], ids[:, 1])
    with torch.no_grad():
        assert torch.equal(gru(fr.substituted).argmax(1) != y, fr.flips_at >= 0)


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_reference_models_hook_equals_their_shortcut(arch, data, tmp_path):
    import importlib

    build = importlib.import_module(f"workbench.models.{arch}").build
    torch.manual_seed(0)
    model = build(data).eval()
    ids = data.test.x[:16]
    name, layer = E.find_embedding_layer(model, ids)  # the transformer's position table is not fed the ids
    assert name == "token_embedding"
    space = E.TokenEmbeddingModel(model, layer, ids)
    e = space.clean()
    assert torch.equal(e, model.embed(ids).detach())
    e2 = e + 0.1 * torch.randn(e.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        via_shortcut = model.forward_from_embeddings(e2)
        via_shortcut = via_shortcut[0] if isinstance(via_shortcut, tuple) else via_shortcut
        assert torch.allclose(A.logits_of(space, e2), via_shortcut, atol=1e-6)
    res = RobustnessSuite.from_config({**SMALL, "n_samples": 16, "attacks": ["pgd"], "masking_checks": False},
                                      profile="quick").run(_handle(model), data, _ctx(tmp_path))
    assert res.metric("robust_accuracy", attack="worst_case", eps=0.5).value is not None
    assert res.metric("token_flip_rate", substitutions=2).n is not None


def test_two_embedding_layers_ask_the_plan_to_name_one(data, tmp_path):
    torch.manual_seed(0)
    model = train_plain(TwoEmbeddingClassifier(), data, epochs=5)
    with pytest.raises(ModelError, match='embedding = "words"'):
        E.find_embedding_layer(model, data.test.x[:4])
    suite = RobustnessSuite.from_config({**SMALL, "attacks": ["fgsm"], "masking_checks": False}, profile="quick")
    res = suite.run(_handle(model), data, _ctx(tmp_path / "a"))
    r = res.metric("robust_accuracy", attack="worst_case")
    assert r.value is None and "words, features" in r.reason and "embedding =" in r.reason
    assert res.metric("token_flip_rate").value is None
    named = suite.run(_handle(model, embedding="features"), data, _ctx(tmp_path / "b"))
    assert named.metric("robust_accuracy", attack="worst_case", eps=0.5).value is not None
    summary = json.loads((tmp_path / "b" / named.artifacts["robustness_summary"]).read_text())
    assert summary["embedding_layer"] == "features"
    with pytest.raises(ModelError, match="Did you mean 'words'"):
        E.find_embedding_layer(model, path="word")


def test_plan_names_the_embedding_layer():
    from workbench.config import build_plan

    plan = build_plan({"run": {"name": "x"}, "models": [
        {"name": "m", "factory": "mod:fn", "dataset": "synthetic_tokens", "train": {"epochs": 1},
         "embedding": "encoder.tok"}]})
    assert plan.models[0].embedding == "encoder.tok"


def test_explain_uses_the_same_embedding_helper(gru, data):
    from workbench.suites.explain.gradients import ExplainedModel, embed_tokens, find_embedding

    ids = data.test.x[:6]
    assert find_embedding(gru, ids) is E.find_embedding_layer(gru, ids)[1]
    e = embed_tokens(gru, ids)
    assert torch.equal(e, gru.emb(ids).detach())
    explained = ExplainedModel(gru, "logits", space="embedding")
    with torch.no_grad():
        assert torch.allclose(explained(e), gru(ids), atol=1e-6)  # the GRU reads the ids only through `emb`
    with pytest.raises(ModelError, match="words, features"):
        find_embedding(TwoEmbeddingClassifier(), ids)


def test_suite_freezes_the_positions_that_define_the_label(gru, data, tmp_path):
    known = type(data)(**{**data.__dict__, "ground_truth": {"relevant_positions": [1]}})
    suite = RobustnessSuite.from_config({**SMALL, "attacks": ["fgsm"], "masking_checks": False}, profile="quick")
    res = suite.run(_handle(gru), known, _ctx(tmp_path))
    r = res.metric("token_flip_rate", substitutions=2)
    assert r.tags["positions"] == "irrelevant_only"
    with np.load(tmp_path / res.artifacts["token_substitutions"]) as z:
        assert not z["changed"][:, 1].any()
    summary = json.loads((tmp_path / res.artifacts["robustness_summary"]).read_text())
    assert summary["token_substitutions"]["frozen_positions"] == [1]


def test_finding_the_layer_leaves_a_train_mode_model_untouched(data):
    class WithNorm(nn.Module):  # two tables fed the ids, a BatchNorm after them
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Embedding(12, 4), nn.Embedding(12, 4)
            self.bn = nn.BatchNorm1d(8)
            self.head = nn.Linear(8, 3)

        def forward(self, idx):
            return self.head(self.bn(torch.cat([self.a(idx), self.b(idx)], -1).mean(1)))

    m = WithNorm().train()
    before = ModuleState.capture(m)
    with pytest.raises(ModelError, match="a, b"):
        E.find_embedding_layer(m, data.test.x[:8])
    assert E.find_embedding_layer(m, data.test.x[:8], path="b")[0] == "b"
    assert before.diff(m) == []


def test_adversarial_training_of_a_user_token_model_through_the_hook(data):
    import copy

    import torch.nn.functional as F

    from workbench.suites.robustness.training import PGDAdversarialTraining, TRADESTraining

    torch.manual_seed(0)
    m = GRUTokenClassifier().train()
    ids, y = data.train.x[:16], data.train.y[:16]
    for recipe in (PGDAdversarialTraining(eps=0.2, steps=2), TRADESTraining(eps=0.2, steps=2, beta=1.0)):
        m.zero_grad()
        loss = recipe.batch_loss(m, ids, y, F.cross_entropy)
        loss.backward()
        assert float(m.emb.weight.grad.abs().sum()) > 0  # the gradient reaches the embedding weights
        assert m.training  # the attack phase restored train mode
    # a vanishing eps gives the clean loss: the hook adds the perturbation to the layer's real output
    tiny = PGDAdversarialTraining(eps=1e-9, steps=1)
    ref = copy.deepcopy(m)
    with torch.no_grad():
        clean = F.cross_entropy(ref(ids), y)
    assert float(tiny.batch_loss(m, ids, y, F.cross_entropy)) == pytest.approx(float(clean), abs=1e-5)


def make_token_data(seed: int = 0):
    return token_dataset(seed=seed)


def test_plan_embedding_key_reaches_the_suite(tmp_path, shared_cache):
    """A plan's `embedding = "words"` on a factory model travels config -> ModelHandle -> suite."""
    from workbench.config import build_plan
    from workbench.runner import run_plan

    def raw(embedding):
        model = {"name": "two", "factory": "workbench.suites.robustness.testing:TwoEmbeddingClassifier",
                 "dataset": "toks", "train": {"epochs": 2}}
        if embedding:
            model["embedding"] = embedding
        return {"run": {"name": "emb", "seed": 0, "device": "cpu", "out": str(tmp_path), "suites": ["robustness"],
                        "progress": False, "cache": str(shared_cache)},
                "datasets": {"toks": {"source": "callable", "function": f"{__name__}:make_token_data"}},
                "models": [model],
                "suites": {"robustness": {**SMALL, "attacks": ["fgsm"], "masking_checks": False}}}

    (res,) = run_plan(build_plan(raw("words")), log=lambda m: None).run.results
    assert res.status == "ok", res.reason
    assert res.metric("robust_accuracy", attack="worst_case", eps=0.5).value is not None
    (res2,) = run_plan(build_plan(raw(None)), log=lambda m: None).run.results
    assert res2.metric("robust_accuracy", attack="worst_case").value is None
    assert 'embedding = "words"' in res2.metric("robust_accuracy", attack="worst_case").reason


def test_token_attacks_respect_the_batch_size(gru, data, tmp_path):
    seen: list[int] = []
    h = gru.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    try:
        res = RobustnessSuite.from_config(SMALL, profile="quick").run(_handle(gru), data, _ctx(tmp_path))
    finally:
        h.remove()
    assert res.status == "ok" and seen and max(seen) <= 16, sorted(set(seen))  # ctx.batch_size = 16
