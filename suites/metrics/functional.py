"""The maths of the metrics suite: pure functions, torch or numpy in, floats/arrays out.

Conventions
- Classification: `pred` and `target` are (N,) integer class ids in [0, K). The confusion
  matrix follows scikit-learn: rows = true class, columns = predicted class.
  Precision/recall/F1 use scikit-learn's `zero_division=0`: a 0/0 ratio is 0. F1 is
  2·TP / (2·TP + FP + FN) (scikit-learn >= 1.3), so a class that is never predicted and
  never present scores 0 and still counts in the macro average over all K classes (as
  scikit-learn does with `labels=range(K)`).
- Regression: `pred`, `target` (N,) float. R² is NaN when the targets are constant
  (undefined; scikit-learn's `force_finite=False` gives NaN or -inf there).
- Language models: `logits` (B, T, V), `targets` (B, T). NLL is in nats per token.
  Perplexity = exp(total NLL / total tokens); bits per byte = total NLL / ln 2 / total
  UTF-8 bytes of the predicted text; word perplexity = exp(total NLL / total words), the
  lm-evaluation-harness definition (words are whitespace-separated, `str.split()`).
- Text generation: BLEU is sacrebleu's corpus BLEU with its default 13a tokenizer (its
  signature is returned; whitespace-tokenised BLEU differs by ~12 points on the same
  text). ROUGE-L is rouge-score's per-pair F-measure (use_stemmer=False), averaged.
- Confidence intervals: proportions (accuracy; per-class recall, conditional on the
  class's support; per-class precision, conditional on the number predicted as the
  class) use `workbench.stats.proportion_ci` (Clopper-Pearson); every other metric the percentile bootstrap of
  `workbench.stats` (one seeded, memory-bounded stream), and a degenerate bootstrap (all
  resamples equal) is (nan, nan), never a zero-width "certain" interval. `CI_METHODS`
  names the method of each metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workbench.errors import ConfigError, DataError, check_number, check_positive_int
from workbench.stats import (
    BOOTSTRAP,
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    PROPORTION_METHOD,
    bootstrap_index_chunks,
    bootstrap_replicates,
    percentile_interval,
    proportion_ci,
)

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]

# The interval method of each metric (the `ci_method` tag of its record).
CI_METHODS: dict[str, str] = {
    "accuracy": PROPORTION_METHOD, "precision": PROPORTION_METHOD, "recall": PROPORTION_METHOD, "f1": BOOTSTRAP,
    "precision_macro": BOOTSTRAP, "recall_macro": BOOTSTRAP, "f1_macro": BOOTSTRAP,
    "mse": BOOTSTRAP, "mae": BOOTSTRAP, "r2": BOOTSTRAP, "bleu": BOOTSTRAP, "rouge_l": BOOTSTRAP,
    "perplexity": BOOTSTRAP, "nll": BOOTSTRAP, "bits_per_byte": BOOTSTRAP, "word_perplexity": BOOTSTRAP,
}


# --------------------------------------------------------------------------- checks


def _as_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy accepts nearly anything
        raise DataError(f"Expected `{name}` to be a tensor or array, got {type(x).__name__}.") from exc


def _check_labels(pred: ArrayLike, target: ArrayLike, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"Expected `num_classes` to be an int > 0, got {num_classes!r}.")
    p = _as_numpy(pred, "pred").ravel()
    t = _as_numpy(target, "target").ravel()
    if p.shape != t.shape:
        raise DataError(f"Expected `pred` and `target` of equal length, got {p.shape[0]} and {t.shape[0]}.")
    for name, a in (("pred", p), ("target", t)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise DataError(f"Expected `{name}` to hold integer class ids, got dtype {a.dtype} with fractions.")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise DataError(
                f"Expected `{name}` class ids in [0, {num_classes}), got values in [{a.min()}, {a.max()}]."
            )
    return p.astype(np.int64), t.astype(np.int64)


def _check_pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _as_numpy(pred, "pred").astype(np.float64).ravel()
    t = _as_numpy(target, "target").astype(np.float64).ravel()
    if p.shape != t.shape:
        raise DataError(f"Expected `pred` and `target` of equal length, got {p.shape[0]} and {t.shape[0]}.")
    if p.size == 0:
        raise DataError("Expected at least one example, got an empty `pred`.")
    return p, t


def _check_boot(n_boot: int, level: float) -> None:
    check_positive_int("n_boot", n_boot)
    check_number("level", level, low=0, high=1, low_open=True, high_open=True)


def _ci_pair(ci: np.ndarray) -> tuple[float, float]:
    return float(ci[0]), float(ci[1])


# ------------------------------------------------------------------ classification


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Fraction of examples with pred == target. pred, target: (N,) class ids."""
    p = _as_numpy(pred, "pred").ravel()
    t = _as_numpy(target, "target").ravel()
    if p.shape != t.shape:
        raise DataError(f"Expected `pred` and `target` of equal length, got {p.shape[0]} and {t.shape[0]}.")
    if p.size == 0:
        raise DataError("Expected at least one example, got an empty `pred`.")
    return float(np.mean(p == t))


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; entry [i, j] = examples of true class i predicted as j."""
    p, t = _check_labels(pred, target, num_classes)
    k = num_classes
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from confusion matrices.

    cm: (..., K, K) with rows = true class. Returns arrays of shape (..., K); every 0/0
    is 0 (scikit-learn's zero_division=0). F1 = 2TP / (2TP + FP + FN).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    pred_pos = cm.sum(axis=-2)  # column sums: predicted as class j
    true_pos = cm.sum(axis=-1)  # row sums: support of class i
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_pos > 0, tp / np.where(pred_pos > 0, pred_pos, 1), 0.0)
        recall = np.where(true_pos > 0, tp / np.where(true_pos > 0, true_pos, 1), 0.0)
        f1_den = pred_pos + true_pos  # = 2TP + FP + FN
        f1 = np.where(f1_den > 0, 2 * tp / np.where(f1_den > 0, f1_den, 1), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": true_pos}


def _averaged(name: str, pred: ArrayLike, target: ArrayLike, num_classes: int, average: str | None):
    if average not in ("macro", None, "none"):
        raise ConfigError(f"Expected `average` in ('macro', None), got {average!r}.")
    s = scores_from_confusion(confusion_matrix(pred, target, num_classes))[name]
    return float(s.mean()) if average == "macro" else s


def precision(pred: ArrayLike, target: ArrayLike, num_classes: int, average: str | None = "macro"):
    """Precision TP / (TP + FP): a float for average="macro", else (K,) per class."""
    return _averaged("precision", pred, target, num_classes, average)


def recall(pred: ArrayLike, target: ArrayLike, num_classes: int, average: str | None = "macro"):
    """Recall TP / (TP + FN): a float for average="macro", else (K,) per class."""
    return _averaged("recall", pred, target, num_classes, average)


def f1_score(pred: ArrayLike, target: ArrayLike, num_classes: int, average: str | None = "macro"):
    """F1 2TP / (2TP + FP + FN): a float for average="macro", else (K,) per class."""
    return _averaged("f1", pred, target, num_classes, average)


@dataclass(frozen=True)
class ClassificationReport:
    """Point estimates and CIs of the classification metrics.

    `per_class[name]` and `per_class_ci[name]` are (K,) and (K, 2) for name in
    precision/recall/f1; `macro[name]` a float and `macro_ci[name]` a (low, high) pair.
    Methods as in `CI_METHODS`: Clopper-Pearson for accuracy and per-class precision/recall,
    bootstrap for F1 and the macro averages; a missing interval is (nan, nan).
    """

    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    confusion: np.ndarray
    per_class: dict[str, np.ndarray]
    per_class_ci: dict[str, np.ndarray]
    macro: dict[str, float]
    macro_ci: dict[str, tuple[float, float]]


def classification_report(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> ClassificationReport:
    """Accuracy, confusion matrix, per-class and macro precision/recall/F1, each with a
    CI (methods in `CI_METHODS`). The bootstrap is vectorised: each resample's confusion
    matrix is one `np.bincount` over (resample * K*K + true * K + pred)."""
    _check_boot(n_boot, level)
    p, t = _check_labels(pred, target, num_classes)
    n, k = p.size, num_classes
    if n == 0:
        raise DataError("Expected at least one example, got an empty `pred`.")
    cm = confusion_matrix(p, t, k)
    point = scores_from_confusion(cm)
    code = t * k + p
    stats: dict[str, list[np.ndarray]] = {name: [] for name in ("precision", "recall", "f1")}
    for idx in bootstrap_index_chunks(n, n_boot, seed):
        b = idx.shape[0]
        offs = (np.arange(b, dtype=np.int64) * k * k)[:, None]
        cms = np.bincount((code[idx] + offs).ravel(), minlength=b * k * k).reshape(b, k, k)
        s = scores_from_confusion(cms)
        for name in stats:
            stats[name].append(s[name])
    per_class_ci, macro, macro_ci = {}, {}, {}
    tp = np.diagonal(cm)
    denominators = {"precision": cm.sum(axis=0), "recall": cm.sum(axis=1)}
    for name, parts in stats.items():
        boot = np.concatenate(parts)  # (B, K)
        if name in denominators:
            per_class_ci[name] = np.array([proportion_ci(int(tp[c]), int(denominators[name][c]), level) for c in range(k)])
        else:
            per_class_ci[name] = percentile_interval(boot, level)
        macro[name] = float(point[name].mean())
        macro_ci[name] = _ci_pair(percentile_interval(boot.mean(axis=1), level))
    correct = int(tp.sum())
    return ClassificationReport(
        n=n,
        accuracy=correct / n,
        accuracy_ci=proportion_ci(correct, n, level),
        confusion=cm,
        per_class={name: point[name] for name in stats} | {"support": point["support"]},
        per_class_ci=per_class_ci,
        macro=macro,
        macro_ci=macro_ci,
    )


# ---------------------------------------------------------------------- regression


def mse(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean squared error mean((pred - target)²). pred, target: (N,)."""
    p, t = _check_pair(pred, target)
    return float(np.mean((p - t) ** 2))


def mae(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean absolute error mean(|pred - target|). pred, target: (N,)."""
    p, t = _check_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def r2(pred: ArrayLike, target: ArrayLike) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (can be negative; NaN if the
    targets are constant, where R² is undefined)."""
    p, t = _check_pair(pred, target)
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((t - p) ** 2)) / ss_tot


@dataclass(frozen=True)
class RegressionReport:
    """MSE, MAE and R² with percentile-bootstrap CIs over examples."""

    n: int
    mse: float
    mae: float
    r2: float
    mse_ci: tuple[float, float]
    mae_ci: tuple[float, float]
    r2_ci: tuple[float, float]


def regression_report(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> RegressionReport:
    """Point values and CIs of MSE, MAE, R² (all from the same seeded resamples)."""
    _check_boot(n_boot, level)
    p, t = _check_pair(pred, target)
    sq, ab = (p - t) ** 2, np.abs(p - t)
    boots: dict[str, list[np.ndarray]] = {"mse": [], "mae": [], "r2": []}
    for idx in bootstrap_index_chunks(p.size, n_boot, seed):
        ts = t[idx]
        ss_tot = np.sum((ts - ts.mean(axis=1, keepdims=True)) ** 2, axis=1)
        ss_res = sq[idx].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            boots["r2"].append(np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan))
        boots["mse"].append(ss_res / p.size)
        boots["mae"].append(ab[idx].mean(axis=1))
    ci = {k: _ci_pair(percentile_interval(np.concatenate(v), level)) for k, v in boots.items()}
    return RegressionReport(
        n=p.size, mse=float(sq.mean()), mae=float(ab.mean()), r2=r2(p, t),
        mse_ci=ci["mse"], mae_ci=ci["mae"], r2_ci=ci["r2"],
    )


# ----------------------------------------------------------------- language models


def token_nll(logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Per-token negative log-likelihood in nats, (B, T); positions whose target equals
    `ignore_index` get 0 (count them out with `targets != ignore_index`).

    logits: (B, T, V) unnormalised scores; targets: (B, T) next-token ids.
    """
    if logits.ndim != 3:
        raise DataError(f"Expected `logits` of shape (B, T, V), got {tuple(logits.shape)}.")
    if targets.shape != logits.shape[:2]:
        raise DataError(
            f"Expected `targets` of shape {tuple(logits.shape[:2])} to match logits (B, T, V) "
            f"{tuple(logits.shape)}, got {tuple(targets.shape)}."
        )
    b, t, v = logits.shape
    nll = F.cross_entropy(
        logits.float().reshape(b * t, v), targets.reshape(b * t).long(), reduction="none", ignore_index=ignore_index
    )
    return nll.reshape(b, t)


def group_sums(values: ArrayLike, groups: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Sum per-row `values` (N,) within groups (e.g. documents).

    groups: (N,) group ids or None (each row its own group). Returns (sums (G,), group
    ids (G,)) in sorted group-id order.
    """
    v = _as_numpy(values, "values").astype(np.float64).ravel()
    if groups is None:
        return v, np.arange(v.size)
    g = _as_numpy(groups, "groups").ravel()
    if g.shape != v.shape:
        raise DataError(f"Expected one group id per row ({v.size}), got {g.size}.")
    ids, inverse = np.unique(g, return_inverse=True)
    return np.bincount(inverse, weights=v, minlength=ids.size), ids


def perplexity(total_nll: float, n_tokens: float) -> float:
    """exp(total NLL in nats / number of tokens)."""
    if n_tokens <= 0:
        raise DataError(f"Expected a positive token count, got {n_tokens}.")
    return float(math.exp(total_nll / n_tokens))


def bits_per_byte(total_nll: float, n_bytes: float) -> float:
    """Total NLL converted to bits (÷ ln 2) divided by the UTF-8 byte count of the text."""
    if n_bytes <= 0:
        raise DataError(f"Expected a positive byte count, got {n_bytes}.")
    return float(total_nll / math.log(2) / n_bytes)


def word_perplexity(total_nll: float, n_words: float) -> float:
    """exp(total NLL / number of whitespace-separated words) (lm-evaluation-harness)."""
    if n_words <= 0:
        raise DataError(f"Expected a positive word count, got {n_words}.")
    return float(math.exp(total_nll / n_words))


def token_bytes(vocab: Sequence[str]) -> np.ndarray:
    """UTF-8 byte length of each vocabulary entry, (V,)."""
    return np.array([len(s.encode("utf-8")) for s in vocab], dtype=np.int64)


def is_text_vocab(vocab: Sequence[str] | None) -> bool:
    """True when some token holds a space, i.e. concatenated tokens form running text
    (a character or subword vocabulary) rather than a sequence of symbols."""
    return vocab is not None and any(" " in tok for tok in vocab)


def decode(ids: Sequence[int] | torch.Tensor, vocab: Sequence[str] | None) -> str:
    """Text of token ids: concatenated vocab strings for a text vocabulary
    (`is_text_vocab`), space-separated symbols for any other vocabulary, and
    space-separated ids without one, so BLEU/ROUGE always see token boundaries."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if vocab is None:
        return " ".join(str(int(i)) for i in ids)
    sep = "" if is_text_vocab(vocab) else " "
    return sep.join(vocab[int(i)] for i in ids)


def count_words(text: str) -> int:
    """Whitespace-separated words, `len(text.split())`."""
    return len(text.split())


# ------------------------------------------------------------------ generation


@dataclass(frozen=True)
class BleuResult:
    """Corpus BLEU (0-100) with sacrebleu's signature, the CI and per-pair statistics.

    stats: (N, 2 + 2·max_order) per-pair sufficient statistics [sys_len, ref_len,
    correct n-grams..., total n-grams...] whose column sums give the corpus score.
    """

    score: float
    signature: str
    n: int
    ci: tuple[float, float]
    stats: np.ndarray


def _bleu_from_stats(metric, row: np.ndarray) -> float:
    m = metric.max_ngram_order
    sys_len, ref_len = int(row[0]), int(row[1])
    correct, total = [int(v) for v in row[2 : 2 + m]], [int(v) for v in row[2 + m : 2 + 2 * m]]
    return float(
        metric.compute_bleu(
            correct, total, sys_len, ref_len, smooth_method=metric.smooth_method,
            smooth_value=metric.smooth_value, effective_order=False, max_ngram_order=m,
        ).score
    )


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    tokenize: str | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> BleuResult:
    """sacrebleu corpus BLEU of `hypotheses` against one reference each.

    tokenize: sacrebleu tokenizer name (None = its default "13a"; "none" = split on
    whitespace only). The CI resamples pairs (seeded) and recomputes corpus BLEU from the
    summed per-pair n-gram statistics, exactly how sacrebleu aggregates a corpus.
    """
    from sacrebleu.metrics import BLEU

    _check_boot(n_boot, level)
    hyps, refs = [str(h) for h in hypotheses], [str(r) for r in references]
    if len(hyps) != len(refs):
        raise DataError(f"Expected one reference per hypothesis, got {len(hyps)} and {len(refs)}.")
    if not hyps:
        raise DataError("Expected at least one hypothesis, got none.")
    metric = BLEU(tokenize=tokenize)
    corpus = metric.corpus_score(hyps, [refs])
    # Per-pair statistics; effective_order only changes sentence-level smoothing, not the
    # counts, and silences sacrebleu's sentence-level warning.
    per_pair = BLEU(tokenize=tokenize, effective_order=True)
    m = metric.max_ngram_order
    stats = np.zeros((len(hyps), 2 + 2 * m), dtype=np.int64)
    for i, (h, r) in enumerate(zip(hyps, refs)):
        s = per_pair.sentence_score(h, [r])
        stats[i] = [s.sys_len, s.ref_len, *s.counts, *s.totals]
    boot = bootstrap_replicates(
        lambda idx: np.array([_bleu_from_stats(metric, stats[row].sum(axis=0)) for row in idx]),
        len(hyps), n_boot=n_boot, seed=seed,
    )
    ci = _ci_pair(percentile_interval(boot, level))
    return BleuResult(score=float(corpus.score), signature=str(metric.get_signature()), n=len(hyps), ci=ci, stats=stats)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-pair ROUGE-L F-measure (rouge-score, use_stemmer=False), (N,). rouge-score's
    tokenizer lowercases and keeps only [a-z0-9] runs, so punctuation is ignored."""
    from rouge_score import rouge_scorer

    preds, refs = [str(p) for p in predictions], [str(r) for r in references]
    if len(preds) != len(refs):
        raise DataError(f"Expected one reference per prediction, got {len(preds)} and {len(refs)}.")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)], dtype=np.float64)


def degenerate_kind(ids: Sequence[int] | torch.Tensor, text: str) -> str | None:
    """Why a generated continuation says nothing about the model's text, or None.

    "blank": its text is empty or whitespace only (e.g. greedy decoding stuck on the
    space token); "one_token": one token id makes up at least `ONE_TOKEN_SHARE` (90%) of
    it (length >= 2), e.g. "e" followed by 32 spaces. BLEU and ROUGE-L of such
    continuations are 0 or near it whatever the references hold."""
    from collections import Counter

    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if not text.strip():
        return "blank"
    if len(ids) >= 2 and Counter(int(i) for i in ids).most_common(1)[0][1] >= ONE_TOKEN_SHARE * len(ids):
        return "one_token"
    return None


ONE_TOKEN_SHARE = 0.9


def degenerate_generation_reason(kinds: Sequence[str | None], settings: str) -> str | None:
    """The reason BLEU/ROUGE-L are null, or None when they mean something: more than half
    of the continuations are degenerate (`degenerate_kind`)."""
    bad = [k for k in kinds if k is not None]
    if not kinds or 2 * len(bad) <= len(kinds):
        return None
    blank, one = bad.count("blank"), bad.count("one_token")
    return (f"degenerate generations: {len(bad)} of {len(kinds)} continuations are blank ({blank}) or repeat "
            f"one token ({one}) under {settings}; BLEU/ROUGE-L of them measure the decoding failure, not text "
            f"quality (see the `generations` artifact)")
