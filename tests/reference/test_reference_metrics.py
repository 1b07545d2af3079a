"""Metrics suite: accuracy, macro F1, MSE/MAE/R², perplexity, BLEU, ROUGE-L recomputed
with scikit-learn, scipy, sacrebleu, rouge-score and plain loops."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sacrebleu
import sklearn.metrics as skm
import torch
from rouge_score import rouge_scorer
from scipy.stats import binomtest
from torch import nn

from workbench.data.base import Dataset, Split
from workbench.suites.metrics.suite import MetricsSuite

from tests.reference.refkit import ctx, handle, headline


def _suite(**kw) -> MetricsSuite:
    return MetricsSuite(MetricsSuite.Params(n_boot=200, **kw))


def test_classification_headline_against_sklearn_and_scipy(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()  # 3 classes, imbalanced
    split = Split(x, y)
    data = Dataset(name="c", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=3)
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    res = _suite().run(handle(model), data, ctx(tmp_path, "metrics"))
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    want = {"accuracy": skm.accuracy_score(y, pred),
            "f1_macro": skm.f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0)}
    shown = {m.name: m for m in headline(res, MetricsSuite)}
    assert set(shown) == set(want)
    for name, value in want.items():
        assert shown[name].value == pytest.approx(value, abs=1e-12)
    k = int((pred == y.numpy()).sum())
    exact = binomtest(k, 150).proportion_ci(0.95, method="exact")
    assert shown["accuracy"].ci == pytest.approx((exact.low, exact.high))
    for c in range(3):  # per-class recall: Clopper-Pearson on the class's support
        r = res.metric("recall", **{"class": str(c)})
        tp, support = int(((pred == c) & (y.numpy() == c)).sum()), int((y.numpy() == c).sum())
        assert r.value == pytest.approx(tp / support)
        ref = binomtest(tp, support).proportion_ci(0.95, method="exact")
        assert r.ci == pytest.approx((ref.low, ref.high))


def test_regression_headline_against_sklearn(tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(80, generator=g)
    split = Split(x, y)
    data = Dataset(name="r", modality="tabular", task="regression", train=split, val=split, test=split)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)).eval()
    res = _suite().run(handle(model, task="regression", output="mean"), data, ctx(tmp_path, "metrics"))
    with torch.no_grad():
        pred = model(x).double().numpy()
    want = {"mse": skm.mean_squared_error(y, pred), "mae": skm.mean_absolute_error(y, pred),
            "r2": skm.r2_score(y, pred)}
    shown = {m.name: m for m in headline(res, MetricsSuite)}
    assert set(shown) == set(want)
    for name, value in want.items():
        assert shown[name].value == pytest.approx(value, rel=1e-9)


class Bigram(nn.Module):
    output_kind = "lm_logits"

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(table)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.table(idx)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k=None) -> torch.Tensor:
        for _ in range(max_new_tokens):
            idx = torch.cat([idx, self(idx)[:, -1].argmax(-1, keepdim=True)], 1)
        return idx


def test_language_model_headline_against_loops_sacrebleu_and_rouge(tmp_path):
    text = "the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat. " * 3
    vocab = tuple(sorted(set(text)))
    ids = [vocab.index(c) for c in text]
    T = 10
    xs = [ids[i : i + T] for i in range(0, len(ids) - T - 1, T)]
    ys = [ids[i + 1 : i + T + 1] for i in range(0, len(ids) - T - 1, T)]
    split = Split(torch.tensor(xs), torch.tensor(ys))
    data = Dataset(name="lm", modality="lm", task="lm", train=split, val=split, test=split, vocab_size=len(vocab),
                   vocab=vocab)
    counts = torch.ones(len(vocab), len(vocab))
    for a, b in zip(ids[:-1], ids[1:]):
        counts[a, b] += 1
    model = Bigram(counts.log()).eval()
    res = _suite(n_prompts=4, prompt_len=5, gen_len=6).run(handle(model, task="lm", output="lm_logits"), data,
                                                           ctx(tmp_path, "metrics"))
    total, n_tok = 0.0, 0
    for xr, yr in zip(xs, ys):  # own loop: -log softmax per position
        for a, b in zip(xr, yr):
            row = counts[a].log().double()
            total += float(torch.logsumexp(row, 0) - row[b])
            n_tok += 1
    shown = {m.name: m for m in headline(res, MetricsSuite)}
    assert shown["perplexity"].value == pytest.approx(math.exp(total / n_tok), rel=1e-6)  # float32 logits
    assert shown["bits_per_byte"].value == pytest.approx(total / math.log(2) / n_tok, rel=1e-6)  # ASCII: 1 byte
    gen = json.loads((tmp_path / res.artifacts["generations"]).read_text())
    if shown["bleu"].value is None:  # degenerate continuations: the reason names them
        assert "degenerate" in shown["bleu"].reason
    else:
        assert shown["bleu"].value == pytest.approx(
            sacrebleu.corpus_bleu(gen["hypotheses"], [gen["references"]]).score)
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        rl = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(gen["hypotheses"], gen["references"])]
        assert shown["rouge_l"].value == pytest.approx(np.mean(rl))
    full = torch.cat([split.x, split.y[:, -1:]], 1)
    for r, hyp in zip(gen["rows"], gen["hypotheses"]):  # the continuation is greedy under the bigram table
        cur, want = int(full[r, 4]), []
        for _ in range(6):
            cur = int(counts[cur].argmax())
            want.append(vocab[cur])
        assert hyp == "".join(want)
