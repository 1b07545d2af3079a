"""MetricsSuite end to end on tiny hand-made models and datasets, each number checked
against an independent reference (scikit-learn, sacrebleu, rouge-score, plain loops)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from sklearn import metrics as skm
from torch import nn

from workbench.suites.metrics import MetricsSuite
from workbench.data.base import Dataset, Split
from workbench.errors import ConfigError, ModelError
from workbench.records import SuiteResult
from workbench.stats import bootstrap_mean_ci, bootstrap_ratio_ci
from workbench.suite import ModelHandle, RunContext
from workbench.torch_utils import ModuleState

CPU = torch.device("cpu")
N_BOOT = 200


def _ctx(tmp_path: Path, seed: int = 0, name: str = "m", **kw) -> RunContext:
    return RunContext(run_id="t", run_dir=tmp_path, seed=seed, device=CPU, suite="metrics", model_name=name,
                      dataset_name="d", batch_size=32, log=lambda m: None, **kw)


def _suite(**kw) -> MetricsSuite:
    return MetricsSuite(MetricsSuite.Params(n_boot=N_BOOT, **kw))


def _check_records(res: SuiteResult) -> None:
    assert res.status == "ok", res.reason
    for m in res.metrics:
        assert m.higher_is_better is not None and m.unit, m
        assert m.tags.get("split") == "test"
        if m.value is None:
            assert m.reason, m
        else:
            assert math.isfinite(m.value)
            if m.ci is not None:
                assert m.ci[0] <= m.value + 1e-12 and m.value <= m.ci[1] + 1e-12, m
        if m.name != "perplexity_floor" and m.value is not None:
            assert m.n and m.n > 0, m
            assert m.tags.get("ci_method") in ("clopper_pearson", "bootstrap_percentile"), m
            # an interval, or the reason there is none (never a silent gap, never a point)
            assert m.ci is not None or m.reason, m
            if m.ci is not None:
                assert m.ci[0] < m.ci[1], m


def _npz(res: SuiteResult, run_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(run_dir / res.artifacts[name], allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ------------------------------------------------------------------ classification


class TinyClassifier(nn.Module):
    output_kind = "logits"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 4) -> (B, 4)
        return self.net(x)


def _blobs() -> Dataset:
    g = torch.Generator().manual_seed(1)
    n = 90
    y = torch.arange(n) % 4
    x = torch.randn(4, 4, generator=g)[y] * 2 + torch.randn(n, 4, generator=g)
    split = Split(x, y)
    return Dataset(name="blobs", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=4, class_names=("ant", "bee", "cat", "dog"))


@pytest.fixture
def classifier() -> ModelHandle:
    module = TinyClassifier()
    data = _blobs()
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(15):  # a few steps: some classes right, some wrong
        opt.zero_grad()
        nn.functional.cross_entropy(module(data.train.x), data.train.y).backward()
        opt.step()
    module.eval()
    return ModelHandle(name="clf", module=module, arch="tiny", task="classification", output="logits")


def test_classification_matches_sklearn(classifier, tmp_path):
    data = _blobs()
    res = _suite().run(classifier, data, _ctx(tmp_path))
    _check_records(res)
    with torch.no_grad():
        logits = classifier.module(data.test.x)
    y_pred, y = logits.argmax(1).numpy(), data.test.y.numpy()
    lab = [0, 1, 2, 3]
    assert res.metric("accuracy").value == pytest.approx(skm.accuracy_score(y, y_pred))
    assert res.metric("accuracy").n == 90 and res.metric("accuracy").unit == "fraction"
    wilson = binomtest(int((y == y_pred).sum()), y.size).proportion_ci(0.95, method="exact")
    assert res.metric("accuracy").ci == pytest.approx((wilson.low, wilson.high))
    assert res.metric("accuracy").tags["ci_method"] == "clopper_pearson"
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        macro = res.metric(f"{name}_macro")
        assert macro.value == pytest.approx(fn(y, y_pred, labels=lab, average="macro", zero_division=0))
        per = fn(y, y_pred, labels=lab, average=None, zero_division=0)
        for c, cname in enumerate(data.class_names):
            assert res.metric(name, **{"class": cname}).value == pytest.approx(per[c])
    assert 0 < res.metric("accuracy").value < 1  # a non-trivial case

    cm = _npz(res, tmp_path, "confusion_matrix")
    np.testing.assert_array_equal(cm["matrix"], skm.confusion_matrix(y, y_pred, labels=lab))
    assert cm["class_names"].tolist() == list(data.class_names)
    pred = _npz(res, tmp_path, "predictions")
    np.testing.assert_array_equal(pred["y_true"], y)
    np.testing.assert_array_equal(pred["y_pred"], y_pred)
    np.testing.assert_allclose(pred["probs"], torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-6)
    assert res.config["n_boot"] == N_BOOT


def test_train_mode_model_is_evaluated_in_eval_and_left_untouched(classifier, tmp_path):
    data = _blobs()
    eval_res = _suite().run(classifier, data, _ctx(tmp_path / "a"))
    classifier.module.train()
    for p in classifier.module.parameters():
        p.grad = torch.ones_like(p)
    before = ModuleState.capture(classifier.module)
    train_res = _suite().run(classifier, data, _ctx(tmp_path / "b"))
    assert before.diff(classifier.module) == []
    # BatchNorm running stats and dropout were not used: same numbers as in eval mode
    assert [m.to_dict() for m in train_res.metrics] == [m.to_dict() for m in eval_res.metrics]


def test_same_seed_same_numbers_other_seed_other_ci(classifier, tmp_path):
    data = _blobs()
    a = _suite().run(classifier, data, _ctx(tmp_path / "a", seed=5))
    b = _suite().run(classifier, data, _ctx(tmp_path / "b", seed=5))
    c = _suite().run(classifier, data, _ctx(tmp_path / "c", seed=6))
    assert [m.to_dict() for m in a.metrics] == [m.to_dict() for m in b.metrics]
    assert a.metric("f1_macro").value == c.metric("f1_macro").value
    assert a.metric("f1_macro").ci != c.metric("f1_macro").ci


def test_classification_figures(classifier, tmp_path):
    res = _suite().run(classifier, _blobs(), _ctx(tmp_path))
    figs = dict(MetricsSuite.figures(json.loads(json.dumps(res.to_dict())), tmp_path))
    assert set(figs) == {"Confusion matrix", "Per-class F1"}
    np.testing.assert_array_equal(np.asarray(figs["Confusion matrix"].data[0].z),
                                  _npz(res, tmp_path, "confusion_matrix")["matrix"])
    bars = figs["Per-class F1"].data[0]
    assert list(bars.x) == ["ant", "bee", "cat", "dog"]
    f1 = res.metric("f1", **{"class": "bee"})
    assert bars.y[1] == pytest.approx(f1.value)
    assert bars.error_y.array[1] == pytest.approx(f1.ci[1] - f1.value)
    assert MetricsSuite.figures({"status": "skipped", "artifacts": {}}, tmp_path) == []


def test_wrong_logit_shape_is_a_model_error(tmp_path):
    module = nn.Linear(4, 3)  # 3 logits for 4 classes
    handle = ModelHandle(name="bad", module=module, arch="x", task="classification", output="logits")
    with pytest.raises(ModelError, match=r"\(N, 4\)"):
        _suite().run(handle, _blobs(), _ctx(tmp_path))


# ---------------------------------------------------------------------- regression


class TinyRegressor(nn.Module):
    def __init__(self, hetero: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.output_kind = "mean_logvar" if hetero else "mean"
        self.lin = nn.Linear(3, 2 if hetero else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3) -> (B,) or (B, 2)
        out = self.lin(x)
        return out if self.output_kind == "mean_logvar" else out[:, 0]


def _regression_data(gt: dict) -> Dataset:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(70, 3, generator=g)
    y = x @ torch.tensor([1.0, -0.5, 0.3]) + 0.3 * torch.randn(70, generator=g)
    split = Split(x, y)
    return Dataset(name="reg", modality="tabular", task="regression", train=split, val=split, test=split,
                   ground_truth=gt)


@pytest.mark.parametrize("hetero", [False, True])
def test_regression_matches_sklearn(hetero, tmp_path):
    module = TinyRegressor(hetero)
    with torch.no_grad():  # fit the mean head by least squares so R² is positive
        data = _regression_data({"target_std": 2.5, "target_mean": 10.0})
        sol = torch.linalg.lstsq(torch.cat([data.test.x, torch.ones(70, 1)], 1), data.test.y[:, None]).solution
        module.lin.weight[0] = sol[:3, 0]
        module.lin.bias[0] = sol[3, 0]
    handle = ModelHandle(name="reg", module=module, arch="x", task="regression", output=module.output_kind)
    res = _suite().run(handle, data, _ctx(tmp_path))
    _check_records(res)
    with torch.no_grad():
        out = module(data.test.x)
    yhat = (out[:, 0] if hetero else out).double().numpy()
    y = data.test.y.double().numpy()
    mse = res.metric("mse", units="model")
    assert mse.value == pytest.approx(skm.mean_squared_error(y, yhat), rel=1e-6)
    assert mse.ci == pytest.approx(bootstrap_mean_ci((yhat - y) ** 2, n_boot=N_BOOT, seed=0), rel=1e-6)
    assert res.metric("mae", units="model").value == pytest.approx(skm.mean_absolute_error(y, yhat), rel=1e-6)
    assert res.metric("r2").value == pytest.approx(skm.r2_score(y, yhat), rel=1e-6)
    assert 0.5 < res.metric("r2").value < 1
    # original units: y * 2.5 + 10
    y0, yhat0 = y * 2.5 + 10, yhat * 2.5 + 10
    assert res.metric("mse", units="original").value == pytest.approx(skm.mean_squared_error(y0, yhat0), rel=1e-6)
    assert res.metric("mae", units="original").value == pytest.approx(skm.mean_absolute_error(y0, yhat0), rel=1e-6)
    arts = _npz(res, tmp_path, "predictions")
    np.testing.assert_allclose(arts["y_pred"], yhat, rtol=1e-6)
    if hetero:
        np.testing.assert_allclose(arts["pred_var"], out[:, 1].double().exp().numpy(), rtol=1e-6)
    else:
        assert "pred_var" not in arts
    titles = [t for t, _ in MetricsSuite.figures(res.to_dict(), tmp_path)]
    assert titles == ["Predicted vs true", "Residuals"]


def test_regression_without_scale_and_constant_target(tmp_path):
    module = TinyRegressor(False)
    data = _regression_data({})
    const = Split(data.test.x, torch.ones(70))
    data = Dataset(name="c", modality="tabular", task="regression", train=const, val=const, test=const)
    handle = ModelHandle(name="reg", module=module, arch="x", task="regression", output="mean")
    res = _suite().run(handle, data, _ctx(tmp_path))
    _check_records(res)
    assert not [m for m in res.metrics if m.tags.get("units") == "original"]
    r2 = res.metric("r2")
    assert r2.value is None and "constant" in r2.reason


# ----------------------------------------------------------------- language models

DOCS = [
    "the cat sat on the mat. the dog sat on the log.",
    "a café by the sea; the cat and the dog met there.",
    "on the mat the cat sat, and the dog sat on the log too.",
]
T = 12


class TinyBigramLM(nn.Module):
    """Next-token logits from a bigram table (log add-one counts of the training text)."""

    output_kind = "lm_logits"

    def __init__(self, vocab_size: int, text_ids: list[list[int]]) -> None:
        super().__init__()
        counts = torch.ones(vocab_size, vocab_size)
        for ids in text_ids:
            for a, b in zip(ids[:-1], ids[1:]):
                counts[a, b] += 1
        self.table = nn.Embedding(vocab_size, vocab_size)
        with torch.no_grad():
            self.table.weight.copy_(counts.log())

    def embed(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.table(idx)

    def forward_from_embeddings(self, e: torch.Tensor) -> torch.Tensor:
        return e

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.table(idx)


class GenerativeBigramLM(TinyBigramLM):
    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k=None) -> torch.Tensor:
        for _ in range(max_new_tokens):
            nxt = self(idx)[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], 1)
        return idx


def _lm_data(gt: dict | None = None) -> tuple[Dataset, list[list[int]], list[int]]:
    vocab = tuple(sorted(set("".join(DOCS))))
    assert " " in vocab and "é" in vocab
    enc = [[vocab.index(c) for c in d] for d in DOCS]
    xs, ys, ids, windows_per_doc = [], [], [], []
    for k, d in enumerate(enc):
        n = (len(d) - 1) // T
        windows_per_doc.append(n)
        for i in range(n):
            xs.append(d[i * T : i * T + T])
            ys.append(d[i * T + 1 : i * T + T + 1])
            ids.append(k)
    split = Split(torch.tensor(xs), torch.tensor(ys), {"doc_id": torch.tensor(ids)})
    data = Dataset(name="txt", modality="lm", task="lm", train=split, val=split, test=split,
                   vocab_size=len(vocab), vocab=vocab, ground_truth=gt or {})
    return data, enc, windows_per_doc


def _plain_loop_nll(module: nn.Module, data: Dataset) -> np.ndarray:
    """Per-row summed NLL with one log-softmax per position."""
    out = []
    for x, y in zip(data.test.x, data.test.y):
        total = 0.0
        logits = module(x[None])[0].double()
        for t in range(T):
            total += float(-torch.log_softmax(logits[t], 0)[y[t]])
        out.append(total)
    return np.array(out)


def test_lm_metrics_match_plain_loops(tmp_path):
    data, enc, per_doc = _lm_data({"perplexity_floor": 3.25})
    module = GenerativeBigramLM(len(data.vocab), enc)
    handle = ModelHandle(name="lm", module=module, arch="bigram", task="lm", output="lm_logits")
    res = _suite(n_prompts=3, prompt_len=6, gen_len=7).run(handle, data, _ctx(tmp_path, seed=3))
    _check_records(res)

    with torch.no_grad():
        row_nll = _plain_loop_nll(module, data)
    n_tok = row_nll.size * T
    ppl = res.metric("perplexity")
    assert ppl.value == pytest.approx(math.exp(row_nll.sum() / n_tok), rel=1e-6)
    assert ppl.n == n_tok and ppl.unit == "ppl" and ppl.higher_is_better is False
    assert res.metric("nll").value == pytest.approx(row_nll.sum() / n_tok, rel=1e-6)
    # the CI resamples whole documents (3 here), not windows
    doc = data.test.meta["doc_id"].numpy()
    doc_nll = np.bincount(doc, weights=row_nll)
    doc_tok = np.bincount(doc) * T
    assert ppl.ci == pytest.approx(bootstrap_ratio_ci(doc_nll, doc_tok, transform=np.exp, n_boot=N_BOOT, seed=3),
                                   rel=1e-6)
    by_row = bootstrap_ratio_ci(row_nll, np.full(row_nll.size, T), transform=np.exp, n_boot=N_BOOT, seed=3)
    assert ppl.ci != pytest.approx(by_row, rel=1e-6)
    # bytes and words of the true target text, straight from the source strings
    targets = [DOCS[k][1 : 1 + n * T] for k, n in enumerate(per_doc)]
    n_bytes = sum(len(s.encode("utf-8")) for s in targets)
    assert n_bytes > n_tok  # "é" is two bytes
    bpb = res.metric("bits_per_byte")
    assert bpb.value == pytest.approx(row_nll.sum() / math.log(2) / n_bytes, rel=1e-6) and bpb.n == n_bytes
    n_words = sum(len(s.split()) for s in targets)
    wp = res.metric("word_perplexity")
    assert wp.value == pytest.approx(math.exp(row_nll.sum() / n_words), rel=1e-6) and wp.n == n_words
    floor = res.metric("perplexity_floor")
    assert floor.value == 3.25 and floor.tags["source"] == "exact"

    # generation: greedy continuations scored by sacrebleu and rouge-score directly
    gen = json.loads((tmp_path / res.artifacts["generations"]).read_text())
    assert len(gen["hypotheses"]) == 3 and gen["prompt_len"] == 6 and gen["gen_len"] == 7
    full = torch.cat([data.test.x, data.test.y[:, -1:]], 1)
    for r, ref, prompt in zip(gen["rows"], gen["references"], gen["prompts"]):
        assert prompt == "".join(data.vocab[i] for i in full[r, :6])
        assert ref == "".join(data.vocab[i] for i in full[r, 6:13])
    bleu = res.metric("bleu")
    assert bleu.value == pytest.approx(sacrebleu.corpus_bleu(gen["hypotheses"], [gen["references"]]).score)
    assert bleu.tags["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a") and bleu.n == 3
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rl = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(gen["hypotheses"], gen["references"])]
    assert res.metric("rouge_l").value == pytest.approx(np.mean(rl))
    assert res.metric("rouge_l").ci == pytest.approx(bootstrap_mean_ci(np.array(rl), n_boot=N_BOOT, seed=3))

    titles = [t for t, _ in MetricsSuite.figures(res.to_dict(), tmp_path)]
    assert titles == ["Perplexity"]
    fig = MetricsSuite.figures(res.to_dict(), tmp_path)[0][1]
    assert fig.data[0].y[0] == pytest.approx(ppl.value)
    assert any(getattr(s, "y0", None) == 3.25 for s in fig.layout.shapes)


def test_lm_without_generate_bytes_per_token_and_no_docs(tmp_path):
    data, enc, _ = _lm_data({"bytes_per_token": 1.5})
    rows = Split(data.test.x, data.test.y)  # no doc_id: rows are the bootstrap unit
    vocab = tuple(v if v != " " else "_" for v in data.vocab)  # no space -> no word perplexity
    data = Dataset(name="nd", modality="lm", task="lm", train=rows, val=rows, test=rows,
                   vocab_size=len(vocab), vocab=vocab, ground_truth={"bytes_per_token": 1.5})
    module = TinyBigramLM(len(vocab), enc)
    module.train()
    before = ModuleState.capture(module)
    handle = ModelHandle(name="lm", module=module, arch="bigram", task="lm", output="lm_logits")
    res = _suite().run(handle, data, _ctx(tmp_path))
    assert before.diff(module) == []
    _check_records(res)
    with torch.no_grad():
        row_nll = _plain_loop_nll(module, data)
    n_tok = row_nll.size * T
    assert res.metric("bits_per_byte").value == pytest.approx(row_nll.sum() / math.log(2) / (1.5 * n_tok), rel=1e-6)
    assert res.metric("perplexity").ci == pytest.approx(
        bootstrap_ratio_ci(row_nll, np.full(row_nll.size, T), transform=np.exp, n_boot=N_BOOT, seed=0), rel=1e-6)
    assert not [m for m in res.metrics if m.name in ("word_perplexity", "perplexity_floor")]
    for name in ("bleu", "rouge_l"):
        m = res.metric(name)
        assert m.value is None and "no generate()" in m.reason


def test_lm_without_bytes_source_is_null_with_reason(tmp_path):
    data, enc, _ = _lm_data()
    data = Dataset(name="ids", modality="lm", task="lm", train=data.test, val=data.test, test=data.test,
                   vocab_size=data.vocab_size)  # no vocab, no bytes_per_token
    module = GenerativeBigramLM(data.vocab_size, enc)
    handle = ModelHandle(name="lm", module=module, arch="bigram", task="lm", output="lm_logits")
    res = _suite(n_prompts=2).run(handle, data, _ctx(tmp_path))
    _check_records(res)
    assert res.metric("bits_per_byte").value is None and "bytes_per_token" in res.metric("bits_per_byte").reason
    gen = json.loads((tmp_path / res.artifacts["generations"]).read_text())
    assert gen["decoded_as"] == "token_ids" and gen["prompt_len"] == T // 2 and gen["gen_len"] == T + 1 - T // 2
    assert res.metric("bleu").value == pytest.approx(sacrebleu.corpus_bleu(gen["hypotheses"], [gen["references"]]).score)


class StuckLM(GenerativeBigramLM):
    """Greedy decoding stuck on one token: `token` forever."""

    def __init__(self, vocab_size: int, text_ids: list[list[int]], token: int) -> None:
        super().__init__(vocab_size, text_ids)
        self.token = token

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k=None) -> torch.Tensor:
        return torch.cat([idx, torch.full((idx.shape[0], max_new_tokens), self.token, dtype=idx.dtype)], 1)


@pytest.mark.parametrize("stuck_on", ["space", "letter"])
def test_degenerate_generations_make_bleu_and_rouge_null_with_reason(tmp_path, stuck_on):
    data, enc, _ = _lm_data()
    token = data.vocab.index(" " if stuck_on == "space" else "t")
    handle = ModelHandle(name="lm", module=StuckLM(len(data.vocab), enc, token), arch="bigram", task="lm",
                         output="lm_logits")
    res = _suite(n_prompts=3, prompt_len=6, gen_len=7).run(handle, data, _ctx(tmp_path, seed=3))
    _check_records(res)
    kind = "blank (3)" if stuck_on == "space" else "repeat one token (3)"
    for name in ("bleu", "rouge_l"):
        m = res.metric(name)
        assert m.value is None and "degenerate generations: 3 of 3" in m.reason and kind in m.reason, m.reason
        # the settings that produced them are recorded beside the null
        assert (m.tags["decoding"], m.tags["temperature"], m.tags["gen_len"]) == ("greedy", 0.0, 7)
    rate = res.metric("degenerate_generation_rate")
    assert rate.value == 1.0 and rate.n == 3 and rate.ci[0] < 1.0
    gen = json.loads((tmp_path / res.artifacts["generations"]).read_text())
    assert gen["degenerate"] == ["blank" if stuck_on == "space" else "one_token"] * 3
    assert gen["settings"]["decoding"] == "greedy"


def test_healthy_generations_keep_bleu_and_report_a_zero_degenerate_rate(tmp_path):
    data, enc, _ = _lm_data()
    handle = ModelHandle(name="lm", module=GenerativeBigramLM(len(data.vocab), enc), arch="bigram", task="lm",
                         output="lm_logits")
    res = _suite(n_prompts=3, prompt_len=6, gen_len=7).run(handle, data, _ctx(tmp_path, seed=3))
    gen = json.loads((tmp_path / res.artifacts["generations"]).read_text())
    assert gen["degenerate"] == ["", "", ""], gen["hypotheses"]
    assert res.metric("degenerate_generation_rate").value == 0.0
    assert res.metric("bleu").value is not None


def test_lm_symbol_vocab_is_deterministic(tmp_path):
    data, enc, _ = _lm_data()
    symbols = tuple(f"s{i}" for i in range(len(data.vocab)))  # a symbol vocabulary, like a Markov source
    data = Dataset(name="sym", modality="lm", task="lm", train=data.test, val=data.test, test=data.test,
                   vocab_size=len(symbols), vocab=symbols)
    handle = ModelHandle(name="lm", module=GenerativeBigramLM(len(symbols), enc), arch="b", task="lm",
                         output="lm_logits")
    a = _suite(n_prompts=4).run(handle, data, _ctx(tmp_path / "a", seed=9))
    b = _suite(n_prompts=4).run(handle, data, _ctx(tmp_path / "b", seed=9))
    _check_records(a)
    assert [m.to_dict() for m in a.metrics] == [m.to_dict() for m in b.metrics]
    gen = json.loads((tmp_path / "a" / a.artifacts["generations"]).read_text())
    full = torch.cat([data.test.x, data.test.y[:, -1:]], 1)
    assert gen["decoded_as"] == "tokens"
    assert gen["references"][0] == " ".join(symbols[i] for i in full[gen["rows"][0], T // 2 :])
    assert a.metric("bleu").value == pytest.approx(sacrebleu.corpus_bleu(gen["hypotheses"], [gen["references"]]).score)
    assert a.metric("bleu").value > 0  # symbol boundaries kept: some n-grams match


# ------------------------------------------------------------------------ params


def test_params_validation_and_profiles():
    assert MetricsSuite.from_config({}, profile="quick").params.n_boot == 500
    assert MetricsSuite.from_config({}, profile="full").params.n_prompts == 64
    assert MetricsSuite.from_config({"n_boot": 50}, profile="full").params.n_boot == 50
    with pytest.raises(ConfigError, match="Did you mean 'n_boot'"):
        MetricsSuite.from_config({"nboot": 10})
    with pytest.raises(ConfigError, match="Did you mean 'test'"):
        MetricsSuite.from_config({"split": "tset"})
    with pytest.raises(ConfigError, match="ci_level"):
        MetricsSuite.from_config({"ci_level": 1.5})
    with pytest.raises(ConfigError, match="prompt_len"):
        MetricsSuite.from_config({"prompt_len": 0})


def test_non_default_ci_level_is_tagged(classifier, tmp_path):
    res = MetricsSuite(MetricsSuite.Params(n_boot=N_BOOT, ci_level=0.8)).run(classifier, _blobs(), _ctx(tmp_path))
    acc = res.metric("accuracy")
    assert acc.tags["ci_level"] == 0.8
    wide = _suite().run(classifier, _blobs(), _ctx(tmp_path / "w")).metric("accuracy")
    assert wide.ci[1] - wide.ci[0] > acc.ci[1] - acc.ci[0]


def test_empty_split_is_skipped_with_reason(classifier, tmp_path):
    data = _blobs()
    empty = Split(data.test.x[:0], data.test.y[:0])
    data = Dataset(name="e", modality="tabular", task="classification", train=data.train, val=empty,
                   test=data.test, num_classes=4)
    res = _suite(split="val").run(classifier, data, _ctx(tmp_path))
    assert res.status == "skipped" and "empty" in res.reason
