"""workbench.suites.metrics.functional against independent references on fixed inputs:
scikit-learn, sacrebleu, rouge-score, plain loops and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from sklearn import metrics as skm

from workbench.suites.metrics import functional as MF
from workbench.errors import ConfigError, DataError
from workbench.stats import bootstrap_mean_ci, bootstrap_ratio_ci, bootstrap_stat_ci

K = 5


@pytest.fixture
def labels() -> tuple[np.ndarray, np.ndarray]:
    """Class 3 is present but never predicted; class 4 is never present nor predicted."""
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 150)
    p = np.where(rng.random(150) < 0.6, t, rng.integers(0, 3, 150))
    p[p == 3] = 0
    assert (t == 3).any() and not (p == 3).any() and not (t == 4).any()
    return p, t


# ------------------------------------------------------------------ classification


def test_classification_matches_sklearn(labels):
    p, t = labels
    lab = list(range(K))
    assert MF.accuracy(p, t) == pytest.approx(skm.accuracy_score(t, p))
    np.testing.assert_array_equal(MF.confusion_matrix(p, t, K), skm.confusion_matrix(t, p, labels=lab))
    for ours, ref in ((MF.precision, skm.precision_score), (MF.recall, skm.recall_score), (MF.f1_score, skm.f1_score)):
        np.testing.assert_allclose(ours(p, t, K, average=None), ref(t, p, labels=lab, average=None, zero_division=0))
        assert ours(p, t, K) == pytest.approx(ref(t, p, labels=lab, average="macro", zero_division=0))
    rep = MF.classification_report(torch.as_tensor(p), torch.as_tensor(t), K, n_boot=50)
    assert rep.accuracy == pytest.approx(skm.accuracy_score(t, p))
    np.testing.assert_allclose(rep.per_class["f1"], skm.f1_score(t, p, labels=lab, average=None, zero_division=0))
    assert rep.macro["recall"] == pytest.approx(skm.recall_score(t, p, labels=lab, average="macro", zero_division=0))
    np.testing.assert_array_equal(rep.per_class["support"], np.bincount(t, minlength=K))


def test_zero_division_is_zero_like_sklearn(labels):
    p, t = labels
    prec = MF.precision(p, t, K, average=None)
    rec = MF.recall(p, t, K, average=None)
    f1 = MF.f1_score(p, t, K, average=None)
    # class 3: never predicted -> precision 0/0 = 0; present -> recall 0; F1 0
    assert prec[3] == 0 and rec[3] == 0 and f1[3] == 0
    # class 4: absent and never predicted -> everything 0, still in the macro mean over K
    assert prec[4] == rec[4] == f1[4] == 0
    assert MF.f1_score(p, t, K) == pytest.approx(f1.mean())
    with pytest.warns(skm._classification.UndefinedMetricWarning):
        skm.precision_score(t, p, labels=list(range(K)), average=None)


def test_hand_made_confusion():
    pred = torch.tensor([0, 0, 1, 1, 2])
    true = torch.tensor([0, 1, 1, 1, 0])
    cm = MF.confusion_matrix(pred, true, 3)
    np.testing.assert_array_equal(cm, [[1, 0, 1], [1, 2, 0], [0, 0, 0]])
    s = MF.scores_from_confusion(cm)
    np.testing.assert_allclose(s["precision"], [1 / 2, 1.0, 0.0])
    np.testing.assert_allclose(s["recall"], [1 / 2, 2 / 3, 0.0])
    np.testing.assert_allclose(s["f1"], [1 / 2, 0.8, 0.0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: MF.confusion_matrix([0, 3], [0, 1], 3), r"pred.*\[0, 3\)"),
        (lambda: MF.confusion_matrix([0, 1], [0, 1, 1], 3), "equal length"),
        (lambda: MF.confusion_matrix([0.5, 1], [0, 1], 3), "integer class ids"),
        (lambda: MF.confusion_matrix([0, 1], [0, 1], True), "num_classes"),
        (lambda: MF.f1_score([0, 1], [0, 1], 2, average="micro"), "average"),
        (lambda: MF.classification_report([0, 1], [0, 1], 2, n_boot=0), "n_boot"),
        (lambda: MF.mse([], []), "at least one"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises((ConfigError, DataError), match=match):
        call()


def _scipy_exact(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return pytest.approx(np.nan, nan_ok=True), pytest.approx(np.nan, nan_ok=True)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def test_classification_cis_match_independent_references(labels):
    """Proportions: scipy's exact (Clopper-Pearson) interval. F1 and macro averages: the vectorised bincount
    bootstrap equals a plain per-resample loop over scikit-learn."""
    p, t = labels
    rep = MF.classification_report(p, t, K, n_boot=100, seed=7)
    assert rep.accuracy_ci == pytest.approx(_scipy_exact((p == t).sum(), t.size))
    for c in range(K):
        tp = int(((p == c) & (t == c)).sum())
        assert tuple(rep.per_class_ci["recall"][c]) == pytest.approx(_scipy_exact(tp, (t == c).sum()))
        got, want = tuple(rep.per_class_ci["precision"][c]), _scipy_exact(tp, (p == c).sum())
        assert got == (want if (p == c).sum() == 0 else pytest.approx(want))
    lab = list(range(K))
    ref = bootstrap_stat_ci(
        lambda i: skm.f1_score(t[i], p[i], labels=lab, average="macro", zero_division=0), t.size, n_boot=100, seed=7
    )
    assert rep.macro_ci["f1"] == pytest.approx(ref)
    ref1 = bootstrap_stat_ci(
        lambda i: skm.f1_score(t[i], p[i], labels=lab, average=None, zero_division=0)[1],
        t.size, n_boot=100, seed=7,
    )
    assert tuple(rep.per_class_ci["f1"][1]) == pytest.approx(ref1)


def test_perfect_predictions_never_give_a_certain_interval():
    """30 examples all right: the bootstrap of accuracy would be [1, 1]; Clopper-Pearson is not a
    point, and F1's degenerate bootstrap is missing (nan), not [1, 1]."""
    t = np.arange(30) % 3
    rep = MF.classification_report(t, t, 3, n_boot=200, seed=0)
    assert rep.accuracy == 1.0 and rep.accuracy_ci == pytest.approx(_scipy_exact(30, 30))
    assert rep.accuracy_ci[0] < 0.9
    assert np.all(rep.per_class_ci["recall"][:, 0] < 1.0)
    assert np.all(np.isnan(rep.per_class_ci["f1"]))
    assert np.all(np.isnan(rep.macro_ci["f1"]))


def test_bootstrap_is_seeded_and_contains_point(labels):
    p, t = labels
    a = MF.classification_report(p, t, K, n_boot=300, seed=1)
    b = MF.classification_report(p, t, K, n_boot=300, seed=1)
    c = MF.classification_report(p, t, K, n_boot=300, seed=2)
    assert a.macro_ci == b.macro_ci and a.accuracy_ci == b.accuracy_ci
    assert a.macro_ci["f1"] != c.macro_ci["f1"]
    assert a.accuracy_ci[0] <= a.accuracy <= a.accuracy_ci[1]
    for name in ("precision", "recall", "f1"):
        lo, hi = a.macro_ci[name]
        assert lo <= a.macro[name] <= hi
        assert lo < hi


def test_chunked_bootstrap_is_reproducible(monkeypatch, labels):
    import workbench.stats as stats

    p, t = labels
    whole = MF.classification_report(p, t, K, n_boot=100, seed=3)
    monkeypatch.setattr(stats, "BOOT_CHUNK_ELEMS", 1000)  # forces ~7 resamples per chunk
    a = MF.classification_report(p, t, K, n_boot=100, seed=3)
    b = MF.classification_report(p, t, K, n_boot=100, seed=3)
    assert a.macro_ci == b.macro_ci == whole.macro_ci  # one stream: chunking does not change the draws
    assert a.macro_ci["f1"][0] <= a.macro["f1"] <= a.macro_ci["f1"][1]
    r = MF.regression_report(p.astype(float), t.astype(float), n_boot=100, seed=3)
    assert r.mse_ci[0] <= r.mse <= r.mse_ci[1]


# ---------------------------------------------------------------------- regression


def test_regression_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.normal(size=80)
    yhat = y + rng.normal(scale=0.5, size=80)
    assert MF.mse(yhat, y) == pytest.approx(skm.mean_squared_error(y, yhat))
    assert MF.mae(torch.as_tensor(yhat), torch.as_tensor(y)) == pytest.approx(skm.mean_absolute_error(y, yhat))
    assert MF.r2(yhat, y) == pytest.approx(skm.r2_score(y, yhat))
    assert MF.r2(-3 * yhat, y) == pytest.approx(skm.r2_score(y, -3 * yhat))  # negative R²
    rep = MF.regression_report(yhat, y, n_boot=200, seed=5)
    assert (rep.mse, rep.mae, rep.r2) == pytest.approx(
        (skm.mean_squared_error(y, yhat), skm.mean_absolute_error(y, yhat), skm.r2_score(y, yhat))
    )
    assert rep.mse_ci == pytest.approx(bootstrap_mean_ci((yhat - y) ** 2, n_boot=200, seed=5))
    assert rep.mae_ci == pytest.approx(bootstrap_mean_ci(np.abs(yhat - y), n_boot=200, seed=5))
    assert rep.r2_ci == pytest.approx(bootstrap_stat_ci(lambda i: skm.r2_score(y[i], yhat[i]), 80, n_boot=200, seed=5))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_r2_undefined_for_constant_targets():
    y = np.ones(5)
    assert math.isnan(MF.r2(np.arange(5.0), y))
    assert math.isnan(skm.r2_score(y, y, force_finite=False))


# ----------------------------------------------------------------- language models


def test_token_nll_and_perplexity_match_plain_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, generator=g)
    targets = torch.randint(0, 6, (3, 4), generator=g)
    nll = MF.token_nll(logits, targets)
    loop = torch.zeros(3, 4)
    for b in range(3):
        for t in range(4):
            z = logits[b, t].double()
            loop[b, t] = float(torch.logsumexp(z, 0) - z[targets[b, t]])
    torch.testing.assert_close(nll, loop, rtol=1e-5, atol=1e-6)
    ppl = MF.perplexity(float(nll.sum()), nll.numel())
    ref = math.exp(float(torch.nn.functional.cross_entropy(logits.reshape(-1, 6), targets.reshape(-1))))
    assert ppl == pytest.approx(ref, rel=1e-6)
    targets2 = targets.clone()
    targets2[0, 0] = -100
    assert MF.token_nll(logits, targets2)[0, 0] == 0
    with pytest.raises(DataError, match="shape"):
        MF.token_nll(logits, targets[:, :2])


def test_uniform_model_has_vocab_size_perplexity():
    logits = torch.zeros(2, 5, 7)
    nll = MF.token_nll(logits, torch.zeros(2, 5, dtype=torch.long))
    assert MF.perplexity(float(nll.sum()), 10) == pytest.approx(7.0)


def test_bits_per_byte_and_word_perplexity_by_hand():
    vocab = ["a", "é", " ", "bc"]  # 1, 2, 1, 2 bytes
    np.testing.assert_array_equal(MF.token_bytes(vocab), [1, 2, 1, 2])
    ids = [0, 1, 2, 3, 2, 0]  # "aé bc a": 1+2+1+2+1+1 = 8 bytes, 3 words
    text = MF.decode(ids, vocab)
    assert text == "aé bc a" and len(text.encode("utf-8")) == 8 and MF.count_words(text) == 3
    total_nll = 6 * math.log(4)  # a uniform 4-way model on 6 tokens
    assert MF.bits_per_byte(total_nll, 8) == pytest.approx(6 * 2 / 8)  # 2 bits per token
    assert MF.word_perplexity(total_nll, 3) == pytest.approx(math.exp(6 * math.log(4) / 3))  # = 16
    assert MF.word_perplexity(total_nll, 3) == pytest.approx(16.0)
    assert MF.decode(torch.tensor([3, 10]), None) == "3 10"
    assert MF.is_text_vocab(vocab) and not MF.is_text_vocab(["a", "b"]) and not MF.is_text_vocab(None)
    assert MF.decode([1, 0, 1], ["a", "b"]) == "b a b"  # symbols keep their boundaries
    with pytest.raises(DataError):
        MF.bits_per_byte(1.0, 0)


def test_group_sums_groups_by_document():
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    docs = np.array([7, 2, 7, 2, 9])
    sums, ids = MF.group_sums(vals, docs)
    np.testing.assert_array_equal(ids, [2, 7, 9])
    np.testing.assert_array_equal(sums, [6.0, 4.0, 5.0])
    same, rows = MF.group_sums(vals, None)
    np.testing.assert_array_equal(same, vals)
    np.testing.assert_array_equal(rows, np.arange(5))
    # Grouping matters for the CI: two long documents vs ten short rows give different spreads.
    nll = np.array([1.0, 1.1, 0.9, 1.0, 3.0, 3.1, 2.9, 3.0, 3.2, 2.8])
    tok = np.ones(10)
    doc = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    dn, _ = MF.group_sums(nll, doc)
    dt, _ = MF.group_sums(tok, doc)
    by_doc = bootstrap_ratio_ci(dn, dt, transform=np.exp, n_boot=500, seed=0)
    by_row = bootstrap_ratio_ci(nll, tok, transform=np.exp, n_boot=500, seed=0)
    assert by_doc != pytest.approx(by_row)
    # two documents: a resample is doc0 twice, doc1 twice, or both -> exp(1), exp(3), exp(2.2)
    assert by_doc[0] == pytest.approx(math.e, rel=1e-9) and by_doc[1] == pytest.approx(math.exp(3.0), rel=1e-9)


# ---------------------------------------------------------------------- generation

HYPS = [
    "The cat sat on the mat, didn't it?",
    "Hello, world! It's a fine day.",
    "He said: \"no way\" -- then left.",
    "Numbers like 3.14 and 2,000 appear here.",
]
REFS = [
    "The cat sat on the mat, did it not?",
    "Hello world, it is a fine day.",
    "He said \"no way\" and then left.",
    "Numbers like 3.14 and 2,000 appear there.",
]


def test_bleu_matches_sacrebleu_and_records_signature():
    res = MF.bleu(HYPS, REFS, n_boot=200, seed=0)
    ref = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert res.score == pytest.approx(ref.score, abs=1e-9)
    metric = sacrebleu.metrics.BLEU()
    metric.corpus_score(HYPS, [REFS])
    assert res.signature == str(metric.get_signature())
    assert "tok:13a" in res.signature and "version:" in res.signature
    # per-pair statistics sum to sacrebleu's corpus statistics
    m = 4
    np.testing.assert_array_equal(res.stats[:, 2 : 2 + m].sum(0), ref.counts)
    np.testing.assert_array_equal(res.stats[:, 2 + m :].sum(0), ref.totals)
    assert res.stats[:, 0].sum() == ref.sys_len and res.stats[:, 1].sum() == ref.ref_len
    assert res.ci[0] <= res.score <= res.ci[1] and res.n == 4
    assert MF.bleu(HYPS, REFS, n_boot=200, seed=0).ci == res.ci
    # 4 pairs have few distinct resamples; 12 pairs make the percentiles seed-dependent
    hyps12 = HYPS + [h.lower() for h in HYPS] + [h.replace(" ", "  ").replace("e", "a") for h in HYPS]
    a, b = MF.bleu(hyps12, REFS * 3, n_boot=200, seed=0), MF.bleu(hyps12, REFS * 3, n_boot=200, seed=1)
    assert a.ci != b.ci and a.ci[0] <= a.score <= a.ci[1]


def test_whitespace_bleu_differs_from_13a():
    ws = MF.bleu(HYPS, REFS, tokenize="none", n_boot=10)
    default = MF.bleu(HYPS, REFS, n_boot=10)
    assert ws.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none").score)
    assert "tok:none" in ws.signature
    assert default.score - ws.score > 5.0  # punctuation glued to words costs whitespace BLEU many points


def test_bleu_perfect_and_bad_lengths():
    assert MF.bleu(REFS, REFS, n_boot=10).score == pytest.approx(100.0)
    with pytest.raises(DataError, match="one reference per hypothesis"):
        MF.bleu(HYPS, REFS[:2])


def test_rouge_l_matches_rouge_score_and_hand_lcs():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    got = MF.rouge_l(HYPS, REFS)
    ref = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPS, REFS)]
    np.testing.assert_allclose(got, ref)
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 of 6 tokens each side
    assert MF.rouge_l(["The cat sat on the mat."], ["the cat is on the mat"])[0] == pytest.approx(5 / 6)
    # the ROUGE-L CI is our own seeded bootstrap of the per-pair F-measures
    a = bootstrap_mean_ci(got, n_boot=100, seed=4)
    assert a == bootstrap_mean_ci(got, n_boot=100, seed=4) and a[0] <= got.mean() <= a[1]


def test_degenerate_generations_are_detected():
    space, e, t, h = 0, 1, 2, 3
    assert MF.degenerate_kind([space] * 5, "     ") == "blank"
    assert MF.degenerate_kind([], "") == "blank"
    assert MF.degenerate_kind([t] * 4, "tttt") == "one_token"
    assert MF.degenerate_kind([e] + [space] * 32, "e" + " " * 32) == "one_token"  # 32 of 33 are the space
    assert MF.degenerate_kind([t, h, e, space] * 3, "the the the ") is None  # repetitive, but text
    assert MF.degenerate_generation_reason(["blank", None, None], "greedy") is None  # a minority
    why = MF.degenerate_generation_reason(["blank", "one_token", None], "greedy decoding")
    assert "2 of 3" in why and "blank (1)" in why and "one token (1)" in why and "greedy decoding" in why
