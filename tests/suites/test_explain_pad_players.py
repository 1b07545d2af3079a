"""Token padding is no player of the explanations: exact Shapley by enumeration over the
real tokens, LIME / sampled Shapley that never touch a pad (every model input recorded),
deletion/insertion curves over real tokens, rank correlations without the tied pads, IG
completeness with pads kept, and unchanged results for unpadded inputs."""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from workbench.data.base import Dataset, Split
from workbench.embedding import padding_mask
from workbench.errors import DataError, ParameterTypeError
from workbench.suite import ModelHandle, RunContext
from workbench.suites.explain.attention import token_relevance
from workbench.suites.explain.config import PAD_NOTE, ExplainParams
from workbench.suites.explain.gradients import per_unit
from workbench.suites.explain.methods import explain_method
from workbench.suites.explain.quality import perturbation_curves, rank_correlation, top_k_precision
from workbench.suites.explain.setup import Setup
from workbench.suites.explain.shapley import NOT_A_PLAYER, check_groups, exact_shapley
from workbench.suites.explain.suite import ExplainSuite

torch.set_num_threads(1)
CPU = torch.device("cpu")
PAD, VOCAB, T = 0, 8, 8
LENGTHS = (3, 5, 8, 2, 6)  # real tokens per test example; the rest is right padding
# every example padded: a model input is then checked against pads that exist (a row of a
# full-length example has no pad to keep, so it could not tell a moved pad from a kept one)
PADDED = (3, 5, 7, 2, 6)


class PosBag(nn.Module):
    """Token classifier h = tanh(sum_t P_t * e_t), logits = head(h): nonlinear, so tokens
    interact. zero_pads: `embed` gives a pad the zero vector (as the Hugging Face adapter
    does), so a pad changes nothing; otherwise a pad has its own embedding and moves the
    output. linear: no tanh (shap's DeepExplainer is exact on it). `record` keeps every
    embedded input the model is asked about."""

    output_kind = "logits"

    def __init__(self, zero_pads: bool = True, seed: int = 0, linear: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.token_embedding = nn.Embedding(VOCAB, 4)
        self.pos = nn.Parameter(torch.randn(T, 4, generator=g))
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.token_embedding.weight.copy_(torch.randn(VOCAB, 4, generator=g))
            self.head.weight.copy_(torch.randn(3, 4, generator=g))
            self.head.bias.zero_()
        self.zero_pads = zero_pads
        self.linear = linear
        self.record: list[torch.Tensor] | None = None

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.token_embedding(ids)
        return e * (ids != PAD)[..., None].to(e.dtype) if self.zero_pads else e

    def forward_from_embeddings(self, e: torch.Tensor) -> torch.Tensor:
        if self.record is not None:
            self.record.append(e.detach().clone())
        h = (e * self.pos[: e.shape[1]]).sum(1)  # (B, 4)
        return self.head(h if self.linear else torch.tanh(h))  # (B, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embeddings(self.embed(ids))


def _ids(lengths: tuple[int, ...], seed: int, width: int = T) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(lengths), width), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randint(1, VOCAB, (n,), generator=g)  # real tokens are never the pad id
    return x


def _data(test_x: torch.Tensor, pad_id: int | None = PAD, train_x: torch.Tensor | None = None) -> Dataset:
    width = test_x.shape[1]
    if train_x is None:  # padded training texts of 2..width real tokens
        lengths = torch.randint(2, width + 1, (40,), generator=torch.Generator().manual_seed(1))
        train_x = _ids(tuple(int(n) for n in lengths), seed=2, width=width)
    split = lambda x: Split(x, torch.zeros(len(x), dtype=torch.long))  # noqa: E731
    gt = {} if pad_id is None else {"pad_id": pad_id}
    return Dataset(name="padded", modality="tokens", task="classification", train=split(train_x),
                   val=split(train_x[:4]), test=split(test_x), num_classes=3, vocab_size=VOCAB, ground_truth=gt,
                   vocab=("[PAD]",) + tuple(f"w{i}" for i in range(1, VOCAB)))


def _ctx(tmp: Path, seed: int = 3) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp, seed=seed, device=CPU, suite="explain", model_name="m",
                      dataset_name="d", batch_size=64, log=lambda m: None)


def _setup(model: nn.Module, data: Dataset, tmp: Path, **params) -> Setup:
    p = ExplainParams(**{"n_examples": len(data.test), "methods": ("shapley",), **params})
    handle = ModelHandle(name="m", module=model, arch="test", task="classification", output="logits")
    return Setup.build(handle, data, _ctx(tmp), p)


def _brute_shapley(f, z: torch.Tensor, base: torch.Tensor, players: list[int]) -> np.ndarray:
    """Shapley values of the token positions `players` by the textbook sum over subsets:
    v(S) = f(z on S, base elsewhere); positions that are no player keep base's value."""
    def v(coalition: tuple[int, ...]) -> float:
        inp = base.clone()
        for pos in coalition:
            inp[pos] = z[pos]
        with torch.no_grad():
            return float(f(inp[None])[0])

    m = len(players)
    phi = np.zeros(m)
    for i, me in enumerate(players):
        others = [p for p in players if p != me]
        for r in range(m):
            w = math.factorial(r) * math.factorial(m - r - 1) / math.factorial(m)
            for s in combinations(others, r):
                phi[i] += w * (v(s + (me,)) - v(s))
    return phi


# ---------------------------------------------------------------- the mask and the player map


def test_padding_mask_and_player_map() -> None:
    ids = _ids(LENGTHS, seed=0)
    mask = padding_mask(ids, PAD)
    assert mask.sum(1).tolist() == [T - n for n in LENGTHS]
    assert padding_mask(ids, None) is None
    assert padding_mask(ids[2:3], PAD) is None  # a full-length row: nothing is padding
    with pytest.raises(ParameterTypeError, match="pad_id"):
        padding_mask(ids, "0")
    for bad in (True, 0.0):
        with pytest.raises(ParameterTypeError, match="pad_id"):
            padding_mask(ids, bad)
    import numpy as np

    for same in (np.int64(PAD), torch.tensor(PAD)):  # any integer, as the HF adapter accepts
        assert torch.equal(padding_mask(ids, same), mask)
    with pytest.raises(DataError, match="integer token ids"):
        padding_mask(ids.float(), PAD)
    g = torch.tensor([0, 1, NOT_A_PLAYER, 2, NOT_A_PLAYER])
    assert check_groups(g, (5,)) == 3
    with pytest.raises(DataError, match="at least one player"):
        check_groups(torch.full((3,), NOT_A_PLAYER), (3,))
    with pytest.raises(DataError, match="every player index"):
        check_groups(torch.tensor([0, 2, NOT_A_PLAYER]), (3,))


def test_setup_players_are_the_real_tokens(tmp_path: Path) -> None:
    s = _setup(PosBag(), _data(_ids(LENGTHS, seed=0)), tmp_path)
    assert s.n_players().tolist() == list(LENGTHS)
    for i, n in enumerate(LENGTHS):
        g = s.groups[i][:, 0]
        assert g[:n].tolist() == list(range(n)) and (g[n:] == NOT_A_PLAYER).all()


# ---------------------------------------------------------------- (a) exact Shapley over real tokens


@pytest.mark.parametrize("zero_pads", [True, False])
def test_exact_shapley_equals_enumeration_over_real_tokens(tmp_path: Path, zero_pads: bool) -> None:
    model = PosBag(zero_pads=zero_pads).eval()
    s = _setup(model, _data(_ids(LENGTHS, seed=0)), tmp_path, shap_budget=4096)
    view = s.model_view(model)
    out = explain_method("shapley", s, view, seed=5)
    assert out.tags["estimator"] == "exact" and out.tags["players"] == "non-pad tokens"
    assert out.tags["pads"] == PAD_NOTE
    scores = per_unit(out.attr, "embedding", "tokens").double().numpy()  # (N, T)
    for i, n in enumerate(LENGTHS):
        f = view.em.scalar(int(s.target[i]))
        base = torch.where(s.pad[i][:, None], view.z[i], torch.zeros_like(view.z[i]))  # pads keep theirs
        want = _brute_shapley(f, view.z[i], base, list(range(n)))
        np.testing.assert_allclose(scores[i, :n], want, atol=1e-5)
        assert (scores[i, n:] == 0).all()  # exactly 0 on pads
        # efficiency over the real tokens: sum phi = f(x) - f(x with every real token removed)
        with torch.no_grad():
            f_x, f_base = float(f(view.z[i][None])[0]), float(f(base[None])[0])
        assert abs(scores[i].sum() - (f_x - f_base)) < 1e-5
        assert abs(out.ref[i] - f_base) < 1e-6


def test_padded_shapley_equals_the_unpadded_prefix(tmp_path: Path) -> None:
    """Sampled Kernel SHAP on a padded text = on its real tokens alone (same players, seed)."""
    model = PosBag(zero_pads=True).eval()
    ids = _ids((8, 7, 6), seed=4, width=T)
    s = _setup(model, _data(ids), tmp_path, shap_budget=40)
    padded = explain_method("shapley", s, s.model_view(model), seed=11)
    assert padded.tags["estimator"] == "kernel"
    for i, n in enumerate((8, 7, 6)):
        alone = _setup(model, _data(ids[i : i + 1, :n]), tmp_path / str(i), shap_budget=40)
        assert alone.pad is None
        ref = explain_method("shapley", alone, alone.model_view(model), seed=11 + i)  # example i draws seed + i
        want = per_unit(ref.attr, "embedding", "tokens")[0].double().numpy()
        got = per_unit(padded.attr, "embedding", "tokens")[i].double().numpy()
        np.testing.assert_allclose(got[:n], want, atol=1e-5)
        assert (got[n:] == 0).all()


# ---------------------------------------------------------------- (b) LIME / sampled SHAP never touch a pad


@pytest.mark.parametrize("method", ["lime", "shapley", "shap_kernel"])
def test_sampling_methods_never_perturb_pads_and_give_them_zero(tmp_path: Path, method: str) -> None:
    model = PosBag(zero_pads=False).eval()  # a pad has its own embedding: a perturbed pad would show
    s = _setup(model, _data(_ids(PADDED, seed=0)), tmp_path, methods=(method,), lime_samples=60, shap_budget=24)
    view = s.model_view(model)
    model.record = []
    out = explain_method(method, s, view, seed=9)
    seen = model.record
    model.record = None
    scores = per_unit(out.attr, "embedding", "tokens").numpy()
    assert (scores[s.pad.numpy()] == 0).all() and out.tags["pads"] == PAD_NOTE
    rows = torch.cat(seen)  # (calls, T, C)
    if method == "lime":
        assert rows.shape[0] == len(PADDED) * 60  # lime_samples rows per example, nothing else
        assert (scores[~s.pad.numpy()] != 0).any()
    # every input the model saw keeps every pad of its own example exactly: each example
    # explained alone, so that a row cannot pass by matching another example's pads
    for i in range(len(PADDED)):
        one = _setup(model, _data(_ids(PADDED, seed=0)[i : i + 1]), tmp_path / str(i), methods=(method,),
                     lime_samples=60, shap_budget=24)
        z, pad = one.model_view(model).z[0], one.pad[0]
        model.record = []
        explain_method(method, one, one.model_view(model), seed=9)
        rows, model.record = torch.cat(model.record), None
        assert bool(pad.any()) and (rows[:, pad] == z[pad]).all(), (method, i)


def test_padded_lime_equals_lime_on_the_unpadded_prefix(tmp_path: Path) -> None:
    model = PosBag(zero_pads=True).eval()
    ids = _ids((5, 8, 3), seed=6)
    s = _setup(model, _data(ids), tmp_path, methods=("lime",), lime_samples=80)
    padded = explain_method("lime", s, s.model_view(model), seed=21)
    for i, n in enumerate((5, 8, 3)):
        alone = _setup(model, _data(ids[i : i + 1, :n]), tmp_path / str(i), methods=("lime",), lime_samples=80)
        ref = explain_method("lime", alone, alone.model_view(model), seed=21 + i)  # lime seeds example i with seed + i
        got = per_unit(padded.attr, "embedding", "tokens")[i].double().numpy()
        np.testing.assert_allclose(got[:n], per_unit(ref.attr, "embedding", "tokens")[0].double().numpy(),
                                   atol=1e-5)
        assert (got[n:] == 0).all()
        np.testing.assert_allclose(padded.extra["r2"][i], ref.extra["r2"][0], atol=1e-6)


# ---------------------------------------------------------------- gradients, IG completeness, rollout


def test_gradient_methods_zero_on_pads_and_ig_complete(tmp_path: Path) -> None:
    model = PosBag(zero_pads=False).eval()  # pads move the output: IG must keep them in its baseline
    s = _setup(model, _data(_ids(LENGTHS, seed=0)), tmp_path, ig_steps=64)
    view = s.model_view(model)
    for method in ("saliency", "input_x_gradient", "integrated_gradients", "occlusion", "deeplift"):
        out = explain_method(method, s, view, seed=1)
        assert (out.attr[s.pad] == 0).all(), method
        assert out.tags["pads"] == PAD_NOTE
    ig = explain_method("integrated_gradients", s, view, seed=1)
    f_x = view.explained(view.z, s.target).numpy()
    total = ig.attr.reshape(s.n, -1).double().sum(1).numpy()
    np.testing.assert_allclose(total, f_x - ig.ref, atol=2e-3)
    # the reference is x with its real tokens removed and its pads kept
    kept = torch.where(s.pad[:, :, None], view.z, torch.zeros_like(view.z))
    np.testing.assert_allclose(ig.ref, view.explained(kept, s.target).numpy(), atol=1e-6)


def test_rollout_reads_real_rows_and_gives_pads_zero() -> None:
    g = torch.Generator().manual_seed(0)
    roll = torch.rand(2, 4, 4, generator=g)
    real = torch.tensor([[True, True, False, False], [True, True, True, True]])
    rel = token_relevance(roll, "mean", real)
    assert torch.allclose(rel[0, :2], roll[0, :2, :2].mean(0)) and (rel[0, 2:] == 0).all()
    assert torch.allclose(rel[1], roll[1].mean(0))
    last = token_relevance(roll, "last", real)
    assert torch.allclose(last[0, :2], roll[0, 1, :2]) and torch.allclose(last[1], roll[1, 3])


# ---------------------------------------------------------------- (c) curves over real tokens


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_curve_steps_count_real_tokens_only(mode: str) -> None:
    """Step j acts on round(j n_i / S) of the n_i real tokens; pads keep their value throughout."""
    n, u, steps = 3, 8, 4
    players = np.array([3, 8, 5])
    z = torch.arange(1, n * u + 1, dtype=torch.float32).reshape(n, u, 1)  # every element distinct, non-zero
    rep = torch.zeros_like(z)
    rng = np.random.default_rng(0)
    order = np.stack([np.concatenate([rng.permutation(k), np.arange(k, u)]) for k in players])
    seen: list[torch.Tensor] = []

    def f(inputs: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
        seen.append(inputs.clone())
        return inputs.sum((1, 2))

    perturbation_curves(f, z, torch.zeros(n, dtype=torch.long), order, torch.arange(u)[:, None], rep, mode=mode,
                        n_steps=steps, n_players=players)
    inputs = torch.cat(seen).reshape(n, steps + 1, u)
    replaced = inputs == 0  # (N, S+1, U)
    for i, k in enumerate(players):
        want = np.round(np.linspace(0, k, steps + 1)).astype(int)
        got = replaced[i].sum(1).numpy()
        np.testing.assert_array_equal(got, want if mode == "deletion" else k - want)
        assert not replaced[i][:, k:].any()  # pads never replaced, in insertion either
    with pytest.raises(DataError, match="n_players"):
        perturbation_curves(f, z, torch.zeros(n, dtype=torch.long), order, torch.arange(u)[:, None], rep,
                            n_players=np.array([3, 9, 5]))


def test_rank_correlation_and_top_k_leave_pads_out() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    mask = np.zeros((3, 8), dtype=bool)
    for i, k in enumerate((3, 8, 5)):
        mask[i, :k] = True
    a[~mask] = b[~mask] = 0.0  # tied zeros at the pads
    got = rank_correlation(a, b, absolute=True, mask=mask)
    for i, k in enumerate((3, 8, 5)):
        assert got[i] == pytest.approx(spearmanr(np.abs(a[i, :k]), np.abs(b[i, :k]))[0])
    one = np.zeros((1, 8), dtype=bool)
    one[0, 0] = True
    assert np.isnan(rank_correlation(a[:1], b[:1], mask=one)[0])
    # top-k: with real scores all 0 the pads (also 0) must not take the slots
    scores = np.zeros((1, 6))
    keep = np.array([[True, True, False, False, False, False]])
    assert top_k_precision(scores, [0], mask=keep)[0] == pytest.approx(0.5)  # base rate over 2 real tokens


# ---------------------------------------------------------------- the suite end to end


def _suite(**over) -> ExplainSuite:
    return ExplainSuite.from_config({"n_examples": 5, "methods": ["saliency", "integrated_gradients", "lime",
                                                                 "shapley"],
                                     "lime_samples": 60, "shap_budget": 512, "ig_steps": 32,
                                     "quality": ["completeness", "deletion", "insertion", "sanity", "stability"],
                                     "random_orders": 4, **over}, profile="quick")


def _run(model: nn.Module, data: Dataset, tmp: Path, **over):
    handle = ModelHandle(name="m", module=model, arch="test", task="classification", output="logits")
    return _suite(**over).run(handle, data, _ctx(tmp))


def test_suite_on_padded_tokens(tmp_path: Path) -> None:
    model = PosBag(zero_pads=True).eval()
    r = _run(model, _data(_ids(LENGTHS, seed=0)), tmp_path)
    cov = [m for m in r.metrics if m.name == "method_coverage"]
    assert {m.tags["method"] for m in cov if m.value == 1.0} == {"saliency", "integrated_gradients", "lime",
                                                                  "shapley"}
    assert all(m.tags["pads"] == PAD_NOTE for m in cov)
    gap = r.metric("completeness_gap", method="integrated_gradients")
    assert gap.value < 0.05
    art = tmp_path / "artifacts" / "explain" / "m"
    meta = json.loads((art / "meta.json").read_text())
    assert meta["pad_id"] == PAD and meta["n_players"] == list(LENGTHS) and meta["players"] == "non-pad tokens"
    ex = np.load(art / "examples.npz")
    pads = ex["input"] == PAD
    for m in ("saliency", "integrated_gradients", "lime", "shapley"):
        assert (ex[f"attr_{m}"][pads] == 0).all(), m
    # deletion with zero replacement ends, for every example, at f(all real tokens removed)
    curves = np.load(art / "curves.npz")
    for key in [k for k in curves.files if k.startswith("deletion__") and k.endswith("__zero")]:
        np.testing.assert_allclose(curves[key][:, -1], curves["deletion__random__zero"][:, -1], atol=1e-6)
    for m in ("saliency", "integrated_gradients"):
        rho = r.metric("randomisation_rank_correlation", method=m)
        assert rho.value is not None and rho.n == len(LENGTHS)
    from workbench.suites.explain.figures import attribution_figure

    fig = attribution_figure(dict(ex), meta)  # the token maps leave the pads out
    assert [len(t.x) for t in fig.data] == list(LENGTHS[:4])


def test_unpadded_results_unchanged_when_no_position_is_padding(tmp_path: Path) -> None:
    """(d) Full-length texts (explained and training) with a declared pad id run the unpadded
    path: identical records, the `mean` and `sample` replacements included."""
    model = PosBag(zero_pads=True).eval()
    ids = _ids((8, 8, 8, 8), seed=7)
    train = _ids((8,) * 40, seed=2)
    reps = ["zero", "mean", "sample"]
    a = _run(model, _data(ids, pad_id=PAD, train_x=train), tmp_path / "a", n_examples=4, replacements=reps)
    b = _run(model, _data(ids, pad_id=None, train_x=train), tmp_path / "b", n_examples=4, replacements=reps)
    assert [m.to_dict() for m in a.metrics] == [m.to_dict() for m in b.metrics]
    assert all("pads" not in m.tags for m in a.metrics)
    assert {m.tags.get("replacement") for m in a.metrics if m.name == "deletion_auc"} == set(reps)
    # and the unpadded exact Shapley is still the enumeration over all T tokens
    s = _setup(model, _data(ids, pad_id=None), tmp_path / "c", shap_budget=4096)
    view = s.model_view(model)
    out = explain_method("shapley", s, view, seed=5)
    f = view.em.scalar(int(s.target[0]))
    want = _brute_shapley(f, view.z[0], torch.zeros_like(view.z[0]), list(range(T)))
    np.testing.assert_allclose(per_unit(out.attr, "embedding", "tokens")[0].double().numpy(), want, atol=1e-5)
    r = exact_shapley(f, view.z[0], torch.arange(T)[:, None], torch.zeros_like(view.z[:1]))
    np.testing.assert_allclose(r.values, want, atol=1e-5)


# ---------------------------------------------------------------- a real padded model: tiny BERT


def test_tiny_bert_pads_are_no_players(tmp_path: Path) -> None:
    """The Hugging Face adapter on right-padded text: sampled Kernel SHAP over the real tokens
    equals the explanation of the unpadded prefix (same players, same draws; with pads as
    players the draws would differ), and pads get exactly 0 from every method."""
    pytest.importorskip("transformers")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hf_tiny import write_bert

    from workbench.hf.data import load_hf_text
    from workbench.hf.model import build

    d = load_hf_text(tokenizer=str(write_bert(tmp_path / "cls", kind="classifier", num_labels=5)),
                     corpus="stdlib_docstrings", max_length=12)
    pad = d.ground_truth["pad_id"]
    short = (d.test.x != pad).sum(1) <= 8
    ids = d.test.x[short][:3]
    assert (ids == pad).any(1).all()
    data = Dataset(name="docs", modality="tokens", task="classification", train=d.train, val=d.val,
                   test=Split(ids, d.test.y[short][:3]), num_classes=d.num_classes, vocab_size=d.vocab_size,
                   ground_truth=d.ground_truth, vocab=d.vocab)
    model = build(data, path=str(tmp_path / "cls")).eval()
    s = _setup(model, data, tmp_path / "s", shap_budget=24, lime_samples=40)
    view = s.model_view(model)
    shap = explain_method("shapley", s, view, seed=3)
    assert shap.tags["estimator"] == "kernel"
    for method in ("integrated_gradients", "saliency", "lime"):
        assert (explain_method(method, s, view, seed=3).attr[ids == pad] == 0).all(), method
    scores = per_unit(shap.attr, "embedding", "tokens").double().numpy()
    for i in range(len(ids)):
        n = int((ids[i] != pad).sum())
        assert (scores[i, n:] == 0).all()
        alone_data = Dataset(name="docs", modality="tokens", task="classification", train=d.train, val=d.val,
                             test=Split(ids[i : i + 1, :n], d.test.y[:1]), num_classes=d.num_classes,
                             vocab_size=d.vocab_size, ground_truth=d.ground_truth, vocab=d.vocab)
        alone = _setup(model, alone_data, tmp_path / f"a{i}", shap_budget=24)
        assert alone.pad is None and int(alone.target[0]) == int(s.target[i])
        ref = explain_method("shapley", alone, alone.model_view(model), seed=3 + i)
        np.testing.assert_allclose(scores[i, :n], per_unit(ref.attr, "embedding", "tokens")[0].double().numpy(),
                                   atol=1e-4)


def test_no_check_or_method_ever_moves_a_pad(tmp_path: Path) -> None:
    """Every input the model sees in a whole run (SmoothGrad's noisy copies, shap's gradient
    and deep explainers, infidelity and sensitivity perturbations, curves with sampled
    replacements) keeps the pads of the example it belongs to; shap's DeepExplainer keeps
    efficiency with each example's pads in its background (exact on a linear model)."""
    model = PosBag(zero_pads=False, linear=True).eval()  # a moved pad would change the input the model sees
    data = _data(_ids(PADDED, seed=0))
    model.record = []
    r = _run(model, data, tmp_path, methods=["smoothgrad", "integrated_gradients", "shap_gradient", "shap_deep",
                                             "shap_kernel"],
             quality=["completeness", "deletion", "insertion", "infidelity", "sensitivity"],
             replacements=["zero", "mean", "sample"], n_perturb=4, smoothgrad_samples=4, shap_gradient_samples=20,
             shap_background=4, shap_budget=64)
    seen, model.record = torch.cat(model.record), None
    with torch.no_grad():
        z = model.embed(data.test.x)  # (N, T, C)
    pads = data.test.x == PAD
    # up to rounding: shap's GradientExplainer evaluates t x + (1 - t) b, which is x only to an ulp where b = x
    keeps = torch.stack([((seen[:, pads[i]] - z[i][pads[i]]).abs() <= 1e-5).flatten(1).all(1) for i in range(len(z))])
    assert keeps.any(0).all(), f"{int((~keeps.any(0)).sum())} of {seen.shape[0]} model inputs moved a pad"
    cov = {m.tags["method"]: m for m in r.metrics if m.name == "method_coverage"}
    assert all(m.value == 1.0 for m in cov.values()), {k: m.reason for k, m in cov.items()}
    assert r.metric("completeness_gap", method="shap_deep").value < 1e-4
    ex = np.load(tmp_path / "artifacts" / "explain" / "m" / "examples.npz")
    for m in cov:
        assert (ex[f"attr_{m}"][pads.numpy()] == 0).all(), m
    for name in ("infidelity", "max_sensitivity"):
        assert r.metric(name, method="smoothgrad").value is not None


def test_a_text_with_one_real_token_has_no_curve(tmp_path: Path) -> None:
    """One player: every order is the same, so its deletion/insertion AUCs are NaN and left
    out (n counts the others); LIME, which needs 2 players, leaves that text out (NaN, with
    the reason) and explains the others as usual; no model input moves a pad."""
    model = PosBag(zero_pads=False).eval()  # a pad has its own embedding: a moved pad would show
    lengths = (3, 1, 5, 4)
    ids = _ids(lengths, seed=8)
    # the one-token text padded on the left: no other text is real at position 7, so a model
    # input with a real token there belongs to it, and any pad it moved would show
    ids[1] = ids[1].flip(0)
    data = _data(ids)
    model.record = []
    r = _run(model, data, tmp_path, n_examples=4, methods=["integrated_gradients", "shapley", "lime"],
             quality=["deletion", "insertion", "stability"], replacements=["zero", "mean", "sample"])
    seen, model.record = torch.cat(model.record), None
    for mode in ("deletion", "insertion"):
        for m in ("integrated_gradients", "shapley", "lime", "random"):
            for rep in ("zero", "mean", "sample"):
                rec = r.metric(f"{mode}_auc", method=m, replacement=rep)
                assert rec.value is not None and rec.n == 3, (mode, m, rep)
    lime = r.metric("method_coverage", method="lime")
    assert lime.value == pytest.approx(0.75) and lime.n == 4
    assert "example 1" in lime.tags["unexplained"] and "at least 2 tokens" in lime.tags["unexplained"]
    assert r.metric("method_coverage", method="shapley").value == 1.0
    for name in ("surrogate_r2", "local_prediction_error", "low_fidelity_fraction", "seed_rank_correlation"):
        rec = r.metric(name, method="lime")
        assert rec.value is not None and rec.n == 3, name
    art = tmp_path / "artifacts" / "explain" / "m"
    ex = np.load(art / "examples.npz")
    lime_attr = ex["attr_lime"]
    assert np.isnan(lime_attr[1, -1]) and (lime_attr[1, :-1] == 0).all()  # the one token NaN, pads 0
    quality = json.loads((art / "quality.json").read_text())
    assert math.isnan(quality["lime"]["surrogate_r2"][1])
    # the other texts: the same LIME as alone (example i draws with seed + i; zero pads, so that
    # the text alone is the same function as the padded one)
    flat = PosBag(zero_pads=True).eval()
    s = _setup(flat, data, tmp_path / "s", methods=("lime",), lime_samples=60)
    padded = explain_method("lime", s, s.model_view(flat), seed=21)
    for i in (0, 2, 3):
        n = lengths[i]
        alone = _setup(flat, _data(data.test.x[i : i + 1, :n]), tmp_path / f"a{i}", methods=("lime",),
                       lime_samples=60)
        ref = explain_method("lime", alone, alone.model_view(flat), seed=21 + i)
        np.testing.assert_allclose(per_unit(padded.attr, "embedding", "tokens")[i, :n].double().numpy(),
                                   per_unit(ref.attr, "embedding", "tokens")[0].double().numpy(), atol=1e-5)
    # every input the model saw in the run keeps the pads of an explained text
    with torch.no_grad():
        z = model.embed(data.test.x)
    pads = data.test.x == PAD
    keeps = torch.stack([(seen[:, pads[i]] == z[i][pads[i]]).flatten(1).all(1) for i in range(len(z))])
    assert keeps.any(0).all(), f"{int((~keeps.any(0)).sum())} of {seen.shape[0]} model inputs moved a pad"
    from workbench.suites.explain.figures import attribution_figure

    fig = attribution_figure(dict(ex), json.loads((art / "meta.json").read_text()))
    lime_row = list(fig.data[1].y).index("lime")
    assert np.isnan(np.asarray(fig.data[1].z, dtype=float)[lime_row]).all()  # a gap, not a zero


def test_lime_tokens_leaves_out_texts_with_one_token() -> None:
    """lime_tokens with token counts (3, 1, 4): example 1 NaN with its reason, the others equal
    to lime_tokens on each alone (same draws); no example with 2 tokens: DataError."""
    from workbench.suites.explain.lime_methods import lime_tokens

    w = [np.array([0.5, -1.0, 2.0]), np.array([3.0]), np.array([1.0, 0.2, -0.7, 0.4])]

    def linear(i: int):  # noqa: ANN202 - f(mask) = mask @ w_i + a little curvature
        return lambda mask: mask @ w[i] + 0.1 * (mask.sum(1) ** 2)

    got = lime_tokens([linear(i) for i in range(3)], [3, 1, 4], 3, num_samples=50, seed=4)
    assert set(got.unexplained) == {1} and "at least 2 tokens" in got.unexplained[1]
    assert np.isnan(got.r2[1]) and np.isnan(got.local_error[1]) and np.isnan(got.attributions[1, 0])
    assert (got.attributions[1, 1:] == 0).all()
    for i in (0, 2):
        alone = lime_tokens([linear(i)], [len(w[i])], 1, num_samples=50, seed=4 + i)
        np.testing.assert_allclose(got.unit_weights[i], alone.unit_weights[0], atol=1e-12)
        assert got.r2[i] == pytest.approx(alone.r2[0]) and np.isfinite(got.r2[i])
    with pytest.raises(DataError, match="none of the 2 examples"):
        lime_tokens([linear(1), linear(1)], [1, 0], 2, num_samples=50, seed=4)


def test_top_k_leaves_unexplained_examples_out() -> None:
    scores = np.array([[3.0, 1.0, 0.0], [np.nan, 0.0, 0.0]])
    keep = np.array([[True, True, True], [True, False, False]])
    got = top_k_precision(scores, [0], mask=keep)
    assert got[0] == 1.0 and np.isnan(got[1])


# ---------------------------------------------------------------- replacement values from real training tokens


def _train_z(model: PosBag, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.embed(ids)


def _loop_mean(train_z: np.ndarray, train_ids: np.ndarray) -> np.ndarray:
    """(T, C): per position, the plain mean over the training texts real there; the mean of
    every real training token at a position no training text reaches."""
    everywhere = [train_z[r, t] for r in range(len(train_ids)) for t in range(train_ids.shape[1])
                  if train_ids[r, t] != PAD]
    out = []
    for t in range(train_ids.shape[1]):
        here = [train_z[r, t] for r in range(len(train_ids)) if train_ids[r, t] != PAD]
        out.append(np.mean(here or everywhere, axis=0))
    return np.stack(out)


def test_mean_replacement_averages_real_training_tokens_only() -> None:
    from workbench.suites.explain.quality import replacement_inputs

    model = PosBag(zero_pads=False).eval()
    with torch.no_grad():
        model.token_embedding.weight[PAD] = 100.0  # a distinctive pad embedding: any share of it would show
    train_ids = _ids((2, 5, 3, 6, 4, 6, 1), seed=3)  # no training text reaches positions 6, 7
    tz = _train_z(model, train_ids)
    z = _train_z(model, _ids((8, 4), seed=5))
    rep = replacement_inputs("mean", z, train_z=tz, modality="tokens", rng=np.random.default_rng(0),
                             train_pad=padding_mask(train_ids, PAD))
    want = _loop_mean(tz.double().numpy(), train_ids.numpy())
    assert rep.shape == z.shape and rep.dtype == z.dtype
    for i in range(len(z)):
        np.testing.assert_allclose(rep[i].double().numpy(), want, rtol=1e-6, atol=1e-6)
    assert rep.abs().max() < 10  # no pad in any mean (with pads the mean at position 7 would be 100)
    with pytest.raises(DataError, match="at least one real"):
        replacement_inputs("mean", z, train_z=tz[:1] * 0, modality="tokens", rng=np.random.default_rng(0),
                           train_pad=torch.ones(1, T, dtype=torch.bool))


def test_sample_replacement_never_draws_a_pad() -> None:
    from workbench.suites.explain.quality import replacement_inputs

    model = PosBag(zero_pads=False).eval()
    with torch.no_grad():
        model.token_embedding.weight[PAD] = 100.0
    train_ids = _ids((2, 5, 3, 6, 4, 6, 1, 8), seed=3)  # position 7 is real in one training text only
    tz = _train_z(model, train_ids)
    pad = padding_mask(train_ids, PAD)
    z = _train_z(model, _ids((8,) * 300, seed=5))
    rep = replacement_inputs("sample", z, train_z=tz, modality="tokens", rng=np.random.default_rng(0),
                             train_pad=pad)
    assert not (rep == 100.0).any()  # never the pad's embedding
    for t in range(T):  # every replacement at position t is a training token real at t
        real_t = tz[~pad[:, t], t]  # (K, C)
        assert (rep[:, t, None] == real_t[None]).all(-1).any(1).all(), t
    # where the drawn training text is real, its own token is kept (the same first draw as unpadded)
    idx = np.random.default_rng(0).integers(0, len(tz), size=len(z))
    own = ~pad[torch.as_tensor(idx)]  # (N, T)
    assert torch.equal(rep[own], tz[torch.as_tensor(idx)][own])
    # and the test can fail: unpadded sampling does put the pad's embedding in
    plain = replacement_inputs("sample", z, train_z=tz, modality="tokens", rng=np.random.default_rng(0))
    assert (plain == 100.0).all(-1).any()
    # no training text real at a position: a draw among all real training tokens
    short = _ids((2, 3), seed=6)
    rep = replacement_inputs("sample", z[:50], train_z=_train_z(model, short), modality="tokens",
                             rng=np.random.default_rng(1), train_pad=padding_mask(short, PAD))
    real_tokens = _train_z(model, short)[short != PAD]  # (5, C)
    assert (rep[:, 3:, None] == real_tokens[None, None]).all(-1).any(-1).all()


def test_replacements_without_pads_are_bitwise_unchanged() -> None:
    """No pad id (train_pad None) or a mask without a pad: exactly the unpadded formulas."""
    from workbench.suites.explain.quality import replacement_inputs

    model = PosBag(zero_pads=False).eval()
    train_ids = _ids((8,) * 12, seed=3)
    tz = _train_z(model, train_ids)
    z = _train_z(model, _ids((8,) * 5, seed=5))
    idx = np.random.default_rng(2).integers(0, len(tz), size=len(z))
    for train_pad in (None, torch.zeros(len(tz), T, dtype=torch.bool)):
        mean = replacement_inputs("mean", z, train_z=tz, modality="tokens", rng=np.random.default_rng(2),
                                  train_pad=train_pad)
        assert torch.equal(mean, tz.float().mean(0, keepdim=True).expand_as(z))
        sample = replacement_inputs("sample", z, train_z=tz, modality="tokens", rng=np.random.default_rng(2),
                                    train_pad=train_pad)
        assert torch.equal(sample, tz[torch.as_tensor(idx)])


def test_suite_curves_replace_with_the_real_token_mean(tmp_path: Path) -> None:
    """End to end: deletion with the `mean` replacement ends, for every example, at the model
    on its text with every real token replaced by the real-token training mean (pads kept)."""
    model = PosBag(zero_pads=False).eval()
    data = _data(_ids(PADDED, seed=0))
    r = _run(model, data, tmp_path, n_examples=5, methods=["saliency"], quality=["deletion"],
             replacements=["mean"])
    s = _setup(model, data, tmp_path / "s")  # the same context seed: the same training pool
    assert s.train_pad is not None and torch.equal(s.train_pad, s.train_raw == PAD)
    mean = torch.as_tensor(_loop_mean(_train_z(model, s.train_raw).double().numpy(), s.train_raw.numpy()),
                           dtype=torch.float32)
    z = _train_z(model, data.test.x)
    gone = torch.where(s.pad[:, :, None], z, mean[None])  # every real token replaced
    with torch.no_grad():
        want = torch.softmax(model(data.test.x), 1)  # only to get the targets
        target = want.argmax(1)
        end = torch.softmax(model.forward_from_embeddings(gone), 1).gather(1, target[:, None])[:, 0]
    curves = np.load(tmp_path / "artifacts" / "explain" / "m" / "curves.npz")
    np.testing.assert_allclose(curves["deletion__saliency__mean"][:, -1], end.numpy(), atol=1e-5)
    np.testing.assert_allclose(curves["deletion__random__mean"][:, -1], end.numpy(), atol=1e-5)
    assert r.metric("deletion_auc", method="saliency", replacement="mean").n == 5


# ---------------------------------------------------------------- SHAP backgrounds and the noise scale


def test_redraw_pads_keeps_real_tokens_and_draws_real_ones() -> None:
    from workbench.suites.explain.quality import redraw_pads

    train = _ids((2, 5, 3, 6, 4, 6, 1), seed=3)  # no training text is real at positions 6, 7
    train_pad = train == PAD
    rows = _ids((1, 4, 8, 2) * 25, seed=9)
    got = redraw_pads(rows, rows == PAD, train, train_pad, np.random.default_rng(0))
    assert got.shape == rows.shape and got.dtype == rows.dtype and not (got == PAD).any()
    real = rows != PAD
    assert torch.equal(got[real], rows[real])  # the drawn text's own tokens are kept
    everywhere = set(train[~train_pad].tolist())
    for t in range(1, T):  # a redrawn token is one real at t in some training text (any real one past them all)
        allowed = set(train[~train_pad[:, t], t].tolist()) or everywhere
        assert set(got[~real[:, t], t].tolist()) == allowed, t  # drawn among them all (75 draws or more)
    # no pad: nothing drawn (the generator untouched) and the rows themselves come back
    rng = np.random.default_rng(0)
    full = _ids((8, 8), seed=1)
    assert torch.equal(redraw_pads(full, full == PAD, train, train_pad, rng), full)
    assert rng.integers(0, 2**62) == np.random.default_rng(0).integers(0, 2**62)
    with pytest.raises(DataError, match="same width"):
        redraw_pads(rows[:, :4], rows[:, :4] == PAD, train, train_pad, rng)


def _record_backgrounds(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[torch.Tensor]]:
    """Every background handed to shap's Gradient/Deep explainers and every replacement set
    handed to the Shapley value function (`coalition_values`), in call order."""
    import shap

    from workbench.suites.explain import shapley

    seen: dict[str, list[torch.Tensor]] = {"shap_gradient": [], "shap_deep": [], "value_function": []}
    for name, key in (("GradientExplainer", "shap_gradient"), ("DeepExplainer", "shap_deep")):
        cls = getattr(shap, name)

        def make(model, data, *a, _cls=cls, _key=key, **k):  # noqa: ANN001, ANN202
            seen[_key].append(data.detach().clone())
            return _cls(model, data, *a, **k)

        monkeypatch.setattr(shap, name, make)
    values = shapley.coalition_values

    def coalition_values(f, x, groups, replacement, *a, **k):  # noqa: ANN001, ANN202
        seen["value_function"].append(replacement.detach().clone())
        return values(f, x, groups, replacement, *a, **k)

    monkeypatch.setattr(shapley, "coalition_values", coalition_values)
    return seen


def test_shap_backgrounds_never_hold_a_pad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distinctive pad embedding (100 everywhere) never reaches a real position of any
    background the SHAP methods get: Gradient/Deep explainers see, per example, R rows that
    are the pad embedding exactly at that example's pads (kept) and nowhere else; the
    Shapley value functions' replacements hold no pad at all. Completeness still holds
    (efficiency for Shapley and Kernel SHAP; Deep SHAP is exact on a linear model)."""
    model = PosBag(zero_pads=False, linear=True).eval()
    with torch.no_grad():
        model.token_embedding.weight[PAD] = 100.0
    data = _data(_ids(PADDED, seed=0))
    seen = _record_backgrounds(monkeypatch)
    model.record = []
    methods = ["shapley", "shap_kernel", "shap_gradient", "shap_deep"]
    r = _run(model, data, tmp_path, methods=methods, quality=["completeness"], shap_value_function="background",
             shap_background=8, shap_budget=4096, shap_gradient_samples=20)
    inputs, model.record = torch.cat(model.record), None
    pads = data.test.x == PAD  # (N, T)
    for key in ("shap_gradient", "shap_deep"):
        assert len(seen[key]) == len(PADDED), key  # one background per example, in order
        for i, bg in enumerate(seen[key]):
            is_pad = (bg == 100.0).all(-1)  # (R, T)
            assert bg.shape[0] == 8 and torch.equal(is_pad, pads[i].expand_as(is_pad)), (key, i)
    assert len(seen["value_function"]) >= 2 * len(PADDED)
    for rep in seen["value_function"]:
        assert rep.shape[0] == 8 and not (rep == 100.0).any()
    # every model input made of exact values (Shapley coalitions, Deep SHAP's rows; not shap's
    # gradient interpolations, which hold a kept pad only to an ulp) has the pad embedding
    # exactly at the pads of an explained text, nowhere else
    near = ((inputs - 100.0).abs() < 1e-3).all(-1)  # (B, T)
    at = (inputs == 100.0).all(-1)
    exact = (near == at).all(1)
    assert int(exact.sum()) >= 2 * len(PADDED) * 8  # at least one coalition x 8 background rows per Shapley call
    assert (at[exact][:, None, :] == pads[None]).all(-1).any(1).all()
    for m in ("shapley", "shap_kernel", "shap_deep"):  # shap_gradient samples its backgrounds: not exact
        gap = r.metric("completeness_gap", method=m)
        assert gap.value is not None and gap.value < 1e-4, (m, gap.value)
    assert r.metric("completeness_gap", method="shap_gradient").value is not None


def test_background_rows_are_real_training_tokens(tmp_path: Path) -> None:
    """The background rows are training texts whose pads were redrawn among real training
    tokens; Shapley with the background value function keeps efficiency against a plain
    loop: sum phi = f(x) - mean_b f(x's pads, b's tokens elsewhere)."""
    model = PosBag(zero_pads=False).eval()
    with torch.no_grad():
        model.token_embedding.weight[PAD] = 100.0
    data = _data(_ids(PADDED, seed=0))
    s = _setup(model, data, tmp_path, shap_value_function="background", shap_background=8, shap_budget=4096)
    bg = s.background_raw
    assert bg.shape == (8, T) and not (bg == PAD).any()
    train, pool, pool_pad = data.train.x, s.train_raw, s.train_pad
    lengths = (train != PAD).sum(1)
    came_from_padded = 0
    for row in bg:  # the real prefix of a training text, then tokens real there in the pool
        n = next(int(k) for r, k in zip(train, lengths) if torch.equal(row[:k], r[:k]))
        came_from_padded += n < T
        for t in range(n, T):
            assert int(row[t]) in set(pool[~pool_pad[:, t], t].tolist()), t
    assert came_from_padded > 0  # otherwise the test could not tell
    view = s.model_view(model)
    assert torch.equal(view.background, model.embed(bg)) and not (view.background == 100.0).any()
    out = explain_method("shapley", s, view, seed=5)
    assert out.tags["estimator"] == "exact"
    scores = per_unit(out.attr, "embedding", "tokens").double().numpy()
    for i in range(s.n):
        f = view.em.scalar(int(s.target[i]))
        with torch.no_grad():
            f_x = float(f(view.z[i][None])[0])
            f_bg = np.mean([float(f(torch.where(s.pad[i][:, None], view.z[i], b)[None])[0])
                            for b in view.background])
        assert abs(out.ref[i] - f_bg) < 1e-5 and abs(scores[i].sum() - (f_x - f_bg)) < 1e-5, i
        assert (scores[i][s.pad[i].numpy()] == 0).all()


def _quantile_range(values: np.ndarray) -> float:
    lo, hi = np.quantile(values, [0.01, 0.99])
    return float(hi - lo)


def test_scale_is_the_quantile_over_real_training_tokens(tmp_path: Path) -> None:
    """Zero pad embeddings (as the HF adapter gives) would shrink the noise scale: with a
    pad id it is the 1-99% range over the real training tokens only; without one, over all."""
    model = PosBag(zero_pads=True).eval()
    train = _ids((1, 2) * 20, seed=2)  # short texts: most training positions are padding
    data = _data(_ids(PADDED, seed=0), train_x=train)
    s = _setup(model, data, tmp_path / "a")
    tz = _train_z(model, s.train_raw).numpy()  # (R, T, C)
    real = (s.train_raw != PAD).numpy()
    assert s.scale == pytest.approx(_quantile_range(tz[real].ravel()), rel=1e-6)
    everything = _quantile_range(tz.ravel())
    assert everything < 0.9 * s.scale  # the pads do shrink it: the test can fail
    plain = _setup(model, _data(_ids(PADDED, seed=0), pad_id=None, train_x=train), tmp_path / "b")
    assert plain.scale == pytest.approx(everything, rel=1e-6)


def test_background_and_scale_without_pads_are_unchanged(tmp_path: Path) -> None:
    """Full-length texts with a declared pad id: the same background rows (training rows as
    drawn), scale and background-Shapley values as without a pad id, bitwise; an undeclared
    pad id leaves padded training rows as they are (the pad is then a token like any other)."""
    model = PosBag(zero_pads=False).eval()
    ids, train = _ids((8, 8, 8), seed=7), _ids((8,) * 40, seed=2)
    kw = dict(shap_value_function="background", shap_background=6, shap_budget=512)
    a = _setup(model, _data(ids, pad_id=PAD, train_x=train), tmp_path / "a", **kw)
    b = _setup(model, _data(ids, pad_id=None, train_x=train), tmp_path / "b", **kw)
    assert torch.equal(a.background_raw, b.background_raw) and a.scale == b.scale
    assert all((train == row).all(1).any() for row in a.background_raw)
    sa = explain_method("shapley", a, a.model_view(model), seed=2)
    sb = explain_method("shapley", b, b.model_view(model), seed=2)
    assert torch.equal(sa.attr, sb.attr) and np.array_equal(sa.ref, sb.ref)
    padded = _setup(model, _data(_ids(PADDED, seed=0), pad_id=None), tmp_path / "c", **kw)
    assert (padded.background_raw == PAD).any()
    assert all((padded.data.train.x == row).all(1).any() for row in padded.background_raw)


def test_a_text_of_padding_only_is_unexplained_by_every_method(tmp_path: Path) -> None:
    """A text with no real token (an empty CSV cell) has no player: every method gives it NaN
    with the reason ("no real token"), counts it out of `method_coverage` and the quality
    means, and explains the other texts exactly as without it (the deterministic methods;
    Shapley is exact here). It once failed Shapley, Kernel SHAP and rollout for every text,
    and LIME counted it as explained."""
    from workbench.models import transformer

    torch.manual_seed(0)
    model = transformer.TransformerClassifier(transformer.TransformerConfig(
        vocab_size=VOCAB, block_size=T, num_classes=3, n_layer=1, n_head=2, d_model=16, d_ff=32)).eval()
    ids = _ids((3, 0, 5, 4), seed=8)
    methods = ["saliency", "integrated_gradients", "occlusion", "rollout", "shapley", "shap_kernel", "lime"]
    over = {"n_examples": 4, "methods": methods, "quality": ["completeness", "deletion"], "replacements": ["zero"]}
    r = _run(model, _data(ids), tmp_path / "with", **over)
    ex = np.load(tmp_path / "with" / "artifacts" / "explain" / "m" / "examples.npz")
    for m in methods:
        cov = r.metric("method_coverage", method=m)
        assert cov.value == pytest.approx(0.75) and cov.n == 4, m
        assert cov.tags["unexplained"] == "example 1: no real token (padding only) (NaN, left out of the means)", m
        assert np.isnan(ex[f"attr_{m}"][1]).all() and np.isfinite(ex[f"attr_{m}"][[0, 2, 3]]).all(), m
        assert r.metric("deletion_auc", method=m, replacement="zero").n == 3, m
    assert r.metric("completeness_gap", method="integrated_gradients").n == 3
    assert r.metric("shapley_error_bound", method="shapley").n == 3
    alone = _run(model, _data(ids[[0, 2, 3]]), tmp_path / "without", **{**over, "n_examples": 3})
    ref = np.load(tmp_path / "without" / "artifacts" / "explain" / "m" / "examples.npz")
    for m in ("saliency", "integrated_gradients", "occlusion", "rollout", "shapley"):
        np.testing.assert_allclose(ex[f"attr_{m}"][[0, 2, 3]], ref[f"attr_{m}"], atol=1e-5, err_msg=m)
