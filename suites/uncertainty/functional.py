"""The maths of the uncertainty suite: pure functions, torch in, torch out.

Shapes: S samples (MC-dropout passes or ensemble members), N examples, K classes.
Every function computes in float64 (probabilities near 0 or 1 lose their meaning in
float32) and returns float64 tensors; nothing here touches a model.

Definitions (the standard ones; Kendall & Gal 2017, Depeweg et al. 2018):
  classification  total = H[E_s p_s]   aleatoric = E_s H[p_s]   epistemic = MI = E_s KL(p_s || E_s p_s)
  regression      total = aleatoric + epistemic, aleatoric = E_s[sigma_s^2], epistemic = Var_s[mu_s] (ddof=0)
The seed material prints the two regression labels the other way round; these are the
standard ones (law of total variance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from workbench.errors import ConfigError, DataError, ParameterTypeError, check_choice, check_number, check_positive_int

Binning = Literal["uniform", "equal_mass"]
BINNINGS: tuple[str, ...] = ("uniform", "equal_mass")
_F64 = torch.float64


# ---------------------------------------------------------------- argument checks
def _check_tensor(name: str, value: object, *, ndim: tuple[int, ...] | int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        else:
            raise ParameterTypeError(f"Expected `{name}` to be a torch.Tensor, got {type(value).__name__}.")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and value.ndim not in dims:
        raise DataError(f"Expected `{name}` to have {' or '.join(map(str, dims))} dimensions, got shape {tuple(value.shape)}.")
    return value


def _check_same_len(**tensors: torch.Tensor) -> int:
    lengths = {k: int(v.shape[-1]) for k, v in tensors.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"Expected equal numbers of examples, got {lengths}.")
    return next(iter(lengths.values()))


def _check_unit_interval(name: str, x: torch.Tensor) -> None:
    if x.numel() and (bool(torch.isnan(x).any()) or float(x.min()) < 0 or float(x.max()) > 1):
        raise DataError(
            f"Expected `{name}` in [0, 1], got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]"
            f"{' with NaN' if bool(torch.isnan(x).any()) else ''}."
        )


def _check_targets(targets: torch.Tensor, n: int, k: int) -> torch.Tensor:
    targets = _check_tensor("targets", targets, ndim=1)
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise DataError(f"Expected integer class `targets`, got dtype {targets.dtype}.")
    if targets.shape[0] != n:
        raise DataError(f"Expected {n} targets (one per row of the predictions), got {targets.shape[0]}.")
    if n and (int(targets.min()) < 0 or int(targets.max()) >= k):
        raise DataError(f"Expected targets in [0, {k}), got values in [{int(targets.min())}, {int(targets.max())}].")
    return targets.long()


def _check_bins(n_bins: int, binning: str) -> None:
    check_positive_int("n_bins", n_bins)
    check_choice("binning", binning, BINNINGS)


# ---------------------------------------------------------------- predictive distributions
def predictive_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log E_s softmax(logits_s): the log of the averaged predictive distribution.

    logits (S, N, K) or (N, K) (then S = 1) -> (N, K), computed with logsumexp.
    Log-probabilities are valid logits, so this is idempotent on its own output."""
    logits = _check_tensor("logits", logits, ndim=(2, 3))
    if logits.ndim == 2:
        logits = logits.unsqueeze(0)
    logp = torch.log_softmax(logits.to(_F64), dim=-1)
    return torch.logsumexp(logp, dim=0) - math.log(logp.shape[0])


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along `dim`, with 0 log 0 = 0. (..., K) -> (...)."""
    probs = _check_tensor("probs", probs).to(_F64)
    return -torch.special.xlogy(probs, probs).sum(dim)


@dataclass(frozen=True)
class Decomposition:
    """Per-example uncertainty, each (N,). Classification in nats, regression in squared
    target units. `total` = `aleatoric` + `epistemic` up to float error."""

    total: torch.Tensor
    aleatoric: torch.Tensor
    epistemic: torch.Tensor


def classification_decomposition(logits: torch.Tensor) -> Decomposition:
    """Entropy decomposition of S sampled predictive distributions.

    logits (S, N, K) (log-probabilities are fine too).
      total     = H[p_bar],                  p_bar = mean_s p_s
      aleatoric = mean_s H[p_s]              (expected entropy)
      epistemic = mean_s KL(p_s || p_bar)    (mutual information between y and the parameters)
    The mutual information is computed directly as the mean KL, not as total - aleatoric,
    so `total == aleatoric + epistemic` is a check, not a definition."""
    logits = _check_tensor("logits", logits, ndim=3)
    logp = torch.log_softmax(logits.to(_F64), dim=-1)  # (S, N, K)
    p = logp.exp()
    log_pbar = torch.logsumexp(logp, dim=0) - math.log(logp.shape[0])  # (N, K)
    total = entropy(log_pbar.exp())
    aleatoric = entropy(p).mean(0)
    kl_terms = torch.where(p > 0, p * (logp - log_pbar.unsqueeze(0)), torch.zeros((), dtype=_F64))
    epistemic = kl_terms.sum(-1).mean(0).clamp_min(0.0)
    return Decomposition(total=total, aleatoric=aleatoric, epistemic=epistemic)


def regression_decomposition(means: torch.Tensor, variances: torch.Tensor | None) -> Decomposition:
    """Law-of-total-variance decomposition of S Gaussian predictions.

    means (S, N), variances (S, N) (or None for a mean-only model: aleatoric is then NaN).
      aleatoric = mean_s sigma_s^2
      epistemic = mean_s (mu_s - mean_s mu_s)^2     (population variance, ddof=0;
                                                      ddof=1 would inflate it by S/(S-1))
      total     = aleatoric + epistemic = variance of the equal-weight Gaussian mixture."""
    means = _check_tensor("means", means, ndim=2).to(_F64)
    epistemic = means.var(dim=0, correction=0)
    if variances is None:
        nan = torch.full_like(epistemic, float("nan"))
        return Decomposition(total=nan, aleatoric=nan.clone(), epistemic=epistemic)
    variances = _check_tensor("variances", variances, ndim=2).to(_F64)
    if variances.shape != means.shape:
        raise DataError(f"Expected `variances` of shape {tuple(means.shape)}, got {tuple(variances.shape)}.")
    if variances.numel() and float(variances.min()) < 0:
        raise DataError(f"Expected non-negative `variances`, got a minimum of {float(variances.min()):.4g}.")
    aleatoric = variances.mean(0)
    return Decomposition(total=aleatoric + epistemic, aleatoric=aleatoric, epistemic=epistemic)


# ---------------------------------------------------------------- proper scoring rules
def negative_log_likelihood(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example -log p(y_i), nats. log_probs (N, K), targets (N,) -> (N,)."""
    log_probs = _check_tensor("log_probs", log_probs, ndim=2).to(_F64)
    targets = _check_targets(targets, log_probs.shape[0], log_probs.shape[1])
    return -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example multiclass Brier score sum_k (p_k - 1[y = k])^2, in [0, 2].
    probs (N, K), targets (N,) -> (N,)."""
    probs = _check_tensor("probs", probs, ndim=2).to(_F64)
    targets = _check_targets(targets, probs.shape[0], probs.shape[1])
    onehot = torch.nn.functional.one_hot(targets, probs.shape[1]).to(_F64)
    return ((probs - onehot) ** 2).sum(1)


def gaussian_nll(mean: torch.Tensor, variance: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example -log N(y; mean, variance), nats, with the 0.5 log(2 pi) constant. (N,) each -> (N,)."""
    mean = _check_tensor("mean", mean, ndim=1).to(_F64)
    variance = _check_tensor("variance", variance, ndim=1).to(_F64)
    y = _check_tensor("y", y, ndim=1).to(_F64)
    _check_same_len(mean=mean, variance=variance, y=y)
    if variance.numel() and float(variance.min()) <= 0:
        raise DataError(f"Expected `variance` > 0, got a minimum of {float(variance.min()):.4g}.")
    return 0.5 * (torch.log(2 * math.pi * variance) + (y - mean) ** 2 / variance)


def interval_hits(mean: torch.Tensor, variance: torch.Tensor, y: torch.Tensor, level: float = 0.9) -> torch.Tensor:
    """Whether y lies in the central `level` interval of N(mean, variance): |y - mean| <= z sigma,
    z = Phi^-1((1 + level) / 2). (N,) each -> (N,) bool. Empirical coverage is its mean."""
    check_number("level", level, low=0, high=1, low_open=True, high_open=True)
    mean = _check_tensor("mean", mean, ndim=1).to(_F64)
    variance = _check_tensor("variance", variance, ndim=1).to(_F64)
    y = _check_tensor("y", y, ndim=1).to(_F64)
    _check_same_len(mean=mean, variance=variance, y=y)
    z = float(torch.special.ndtri(torch.tensor((1 + level) / 2, dtype=_F64)))
    return (y - mean).abs() <= z * variance.clamp_min(0).sqrt()


# ---------------------------------------------------------------- calibration
def bin_ids(confidences: torch.Tensor, *, n_bins: int = 15, binning: Binning = "uniform") -> torch.Tensor:
    """Bin index of each confidence, (N,) or (R, N) -> same shape, long in [0, n_bins).

    uniform:    bin b holds [b/n, (b+1)/n); the last bin is closed on the right, so 1.0
                falls in bin n-1 (edges are k/n_bins in float64).
    equal_mass: sort each row by confidence (stable), position i goes to bin
                floor(i * n_bins / N): bins hold floor(N/n) or ceil(N/n) examples."""
    _check_bins(n_bins, binning)
    conf = _check_tensor("confidences", confidences, ndim=(1, 2)).to(_F64).contiguous()
    if binning == "uniform":
        inner = torch.arange(1, n_bins, dtype=_F64) / n_bins
        return torch.bucketize(conf, inner, right=True)
    n = conf.shape[-1]
    order = torch.sort(conf, dim=-1, stable=True).indices
    pos_bin = (torch.arange(n) * n_bins) // max(n, 1)
    out = torch.empty_like(order)
    out.scatter_(-1, order, pos_bin.expand_as(order).contiguous())
    return out


@dataclass(frozen=True)
class BinStats:
    """Per-bin sums, each (R, n_bins) float64: `count`, `confidence` (sum), `correct` (sum)."""

    count: torch.Tensor
    confidence: torch.Tensor
    correct: torch.Tensor


def calibration_bins(
    confidences: torch.Tensor, correct: torch.Tensor, *, n_bins: int = 15, binning: Binning = "uniform"
) -> BinStats:
    """Per-bin counts and sums. confidences and correct: (N,) or (R, N) (R rows are binned
    independently, e.g. bootstrap resamples) -> BinStats with (R, n_bins) tensors (R = 1 for 1-D input)."""
    conf = _check_tensor("confidences", confidences, ndim=(1, 2)).to(_F64)
    corr = _check_tensor("correct", correct, ndim=(1, 2)).to(_F64)
    if conf.shape != corr.shape:
        raise DataError(f"Expected `confidences` and `correct` of equal shape, got {tuple(conf.shape)} and {tuple(corr.shape)}.")
    _check_unit_interval("confidences", conf)
    _check_unit_interval("correct", corr)
    return _bin_stats(conf, corr, n_bins, binning)


def _bin_stats(conf: torch.Tensor, corr: torch.Tensor, n_bins: int, binning: str) -> BinStats:
    ids = bin_ids(conf, n_bins=n_bins, binning=binning)
    if conf.ndim == 1:
        conf, corr, ids = conf.unsqueeze(0), corr.unsqueeze(0), ids.unsqueeze(0)
    zeros = torch.zeros(conf.shape[0], n_bins, dtype=_F64)
    return BinStats(
        count=zeros.scatter_add(1, ids, torch.ones_like(conf)),
        confidence=zeros.scatter_add(1, ids, conf),
        correct=zeros.scatter_add(1, ids, corr),
    )


def _ece_mce(stats: BinStats) -> tuple[torch.Tensor, torch.Tensor]:
    n = stats.count.sum(1)
    gap_sum = (stats.correct - stats.confidence).abs()  # = n_b |acc_b - conf_b|
    ece = gap_sum.sum(1) / n
    per_bin = torch.where(stats.count > 0, gap_sum / stats.count.clamp_min(1), torch.zeros((), dtype=_F64))
    return ece, per_bin.max(1).values


def expected_calibration_error(
    confidences: torch.Tensor, correct: torch.Tensor, *, n_bins: int = 15, binning: Binning = "uniform"
) -> torch.Tensor:
    """ECE = sum_b (n_b / N) |acc_b - conf_b|. (N,) -> scalar; (R, N) -> (R,).

    `confidences` are the predicted probabilities of the predicted class, `correct` 0/1.
    Example: confidences [0.95, 1.0], correct [1, 0] share the last of 15 bins -> 0.475."""
    ece, _ = _ece_mce(calibration_bins(confidences, correct, n_bins=n_bins, binning=binning))
    return ece if confidences.ndim == 2 else ece[0]


def maximum_calibration_error(
    confidences: torch.Tensor, correct: torch.Tensor, *, n_bins: int = 15, binning: Binning = "uniform"
) -> torch.Tensor:
    """MCE = max over non-empty bins of |acc_b - conf_b|. (N,) -> scalar; (R, N) -> (R,)."""
    _, mce = _ece_mce(calibration_bins(confidences, correct, n_bins=n_bins, binning=binning))
    return mce if confidences.ndim == 2 else mce[0]


def ece_bootstrap(
    confidences: torch.Tensor,
    correct: torch.Tensor,
    *,
    n_bins: int = 15,
    binning: Binning = "uniform",
    n_boot: int = 1000,
    seed: int = 0,
    chunk: int = 256,
) -> torch.Tensor:
    """ECE of `n_boot` resamples of the examples (bins recomputed on each resample), (n_boot,).
    Resampling indices come from `workbench.stats.bootstrap_index_chunks(N, n_boot, seed)`
    (the same draws as `bootstrap_indices`), `chunk` replicates at a time."""
    from workbench.stats import bootstrap_index_chunks

    check_positive_int("n_boot", n_boot)
    conf = _check_tensor("confidences", confidences, ndim=1).to(_F64)
    corr = _check_tensor("correct", correct, ndim=1).to(_F64)
    _check_bins(n_bins, binning)
    _check_unit_interval("confidences", conf)
    _check_unit_interval("correct", corr)
    return torch.cat([
        _ece_mce(_bin_stats(conf[rows], corr[rows], n_bins, binning))[0]
        for rows in map(torch.from_numpy, bootstrap_index_chunks(conf.shape[0], n_boot, seed, max_rows=chunk))
    ])


def ece_perfectly_calibrated(
    confidences: torch.Tensor,
    *,
    n_bins: int = 15,
    binning: Binning = "uniform",
    n_sim: int = 1000,
    seed: int = 0,
    chunk: int = 256,
) -> torch.Tensor:
    """ECE a perfectly calibrated model would show with these confidences at this N: draw
    correct_i ~ Bernoulli(confidence_i) `n_sim` times (seeded) and measure each. (n_sim,).

    ECE is biased upwards at small N (about 0.02-0.045 at N = 500), so a raw ECE only means
    miscalibration when it clearly exceeds this distribution (e.g. its 95% quantile)."""
    check_positive_int("n_sim", n_sim)
    conf = _check_tensor("confidences", confidences, ndim=1).to(_F64)
    _check_unit_interval("confidences", conf)
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for start in range(0, n_sim, chunk):
        rows = min(chunk, n_sim - start)
        c = conf.expand(rows, -1)
        sim = torch.bernoulli(c, generator=gen)
        out.append(_ece_mce(_bin_stats(c, sim, n_bins, binning))[0])
    return torch.cat(out)


def reliability_diagram(
    confidences: torch.Tensor, correct: torch.Tensor, *, n_bins: int = 15, binning: Binning = "uniform"
) -> dict[str, list[float | None]]:
    """Reliability-diagram data, one entry per bin: `lower`/`upper` edges (uniform: b/n and
    (b+1)/n; equal-mass: the smallest/largest confidence in the bin), `count`, mean
    `confidence` and `accuracy` (None for empty bins). JSON-ready lists."""
    conf = _check_tensor("confidences", confidences, ndim=1).to(_F64)
    corr = _check_tensor("correct", correct, ndim=1).to(_F64)
    stats = calibration_bins(conf, corr, n_bins=n_bins, binning=binning)
    count = stats.count[0]
    if binning == "uniform":
        lower = (torch.arange(n_bins, dtype=_F64) / n_bins).tolist()
        upper = (torch.arange(1, n_bins + 1, dtype=_F64) / n_bins).tolist()
    else:
        ids = bin_ids(conf, n_bins=n_bins, binning=binning)
        big = torch.full((n_bins,), float("inf"), dtype=_F64)
        lower = big.scatter_reduce(0, ids, conf, "amin").tolist()
        upper = (-big).scatter_reduce(0, ids, conf, "amax").tolist()

    def per_bin(sums: torch.Tensor) -> list[float | None]:
        return [float(s / c) if c > 0 else None for s, c in zip(sums[0].tolist(), count.tolist())]

    def finite(v: list[float]) -> list[float | None]:
        return [x if math.isfinite(x) else None for x in v]

    return {
        "lower": finite(lower),
        "upper": finite(upper),
        "count": [int(c) for c in count.tolist()],
        "confidence": per_bin(stats.confidence),
        "accuracy": per_bin(stats.correct),
    }


# ---------------------------------------------------------------- temperature scaling
def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, *, bounds: tuple[float, float] = (0.01, 100.0)) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on (logits, targets).

    logits (N, K) (log-probabilities of an ensemble are fine). The NLL is convex in
    beta = 1/T (a log-sum-exp of a linear function minus a linear function), so a bounded
    Brent search (scipy.optimize.minimize_scalar) over log beta finds the global minimum;
    T is confined to `bounds` (a perfectly separated validation set pushes T to the lower bound)."""
    from scipy.optimize import minimize_scalar

    logits = _check_tensor("logits", logits, ndim=2).to(_F64)
    targets = _check_targets(targets, logits.shape[0], logits.shape[1])
    lo, hi = bounds
    if not 0 < lo < 1 < hi:
        raise ConfigError(f"Expected temperature `bounds` (low, high) with 0 < low < 1 < high, got {bounds!r}.")
    if logits.shape[0] == 0:
        raise DataError("fit_temperature() got no validation examples.")
    z = logits - logits.max(1, keepdim=True).values
    picked = z.gather(1, targets.unsqueeze(1)).squeeze(1)

    def nll(log_beta: float) -> float:
        beta = math.exp(log_beta)
        return float((torch.logsumexp(beta * z, 1) - beta * picked).mean())

    res = minimize_scalar(nll, bounds=(-math.log(hi), -math.log(lo)), method="bounded", options={"xatol": 1e-7})
    return float(math.exp(-res.x))


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) in float64, (N, K) -> (N, K)."""
    check_number("temperature", temperature, low=0, low_open=True)
    logits = _check_tensor("logits", logits, ndim=2).to(_F64)
    return torch.log_softmax(logits / float(temperature), dim=-1)


# ---------------------------------------------------------------- selective prediction
def risk_coverage(confidence: torch.Tensor, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Risk–coverage curve: keep the k most confident examples, k = 1..N.

    confidence (N,) (higher = keep first), loss (N,) (0/1 error or squared error) ->
    coverage (N,) = k/N and risk (N,) = mean loss of the kept examples. Ties in confidence
    have no order, so within a tie group the risk is its expected value over random
    orderings (exact, not sampled): the curve does not depend on how ties happen to sort.
    AURC is `risk.mean()` (Geifman et al. 2019)."""
    conf = _check_tensor("confidence", confidence, ndim=1).to(_F64)
    loss = _check_tensor("loss", loss, ndim=1).to(_F64)
    n = _check_same_len(confidence=conf, loss=loss)
    if n == 0:
        raise DataError("risk_coverage() got no examples.")
    order = torch.sort(conf, descending=True, stable=True).indices
    c, l = conf[order], loss[order]
    _, counts = torch.unique_consecutive(c, return_counts=True)
    ends = counts.cumsum(0)  # exclusive end of each tie group
    starts = ends - counts
    cum = torch.cat([torch.zeros(1, dtype=_F64), l.cumsum(0)])
    group_loss = cum[ends] - cum[starts]
    group = torch.repeat_interleave(torch.arange(len(counts)), counts)
    pos = torch.arange(n)
    j = (pos - starts[group] + 1).to(_F64)  # how many of the group are kept
    kept_loss = cum[starts[group]] + j * group_loss[group] / counts[group].to(_F64)
    k = (pos + 1).to(_F64)
    return k / n, kept_loss / k


def aurc(confidence: torch.Tensor, loss: torch.Tensor) -> float:
    """Area under the risk–coverage curve, mean over k of the risk of the k most confident."""
    return float(risk_coverage(confidence, loss)[1].mean())


# ---------------------------------------------------------------- OOD detection
def ood_detection(score_in: torch.Tensor, score_out: torch.Tensor) -> dict[str, object]:
    """Detection of OOD inputs by an uncertainty score (higher = more likely OOD), OOD is the
    positive class. Wraps sklearn: `auroc` (roc_auc_score), `aupr` (average_precision_score),
    ROC points `fpr`, `tpr` (roc_curve) as lists."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s_in = _check_tensor("score_in", score_in, ndim=1).to(_F64)
    s_out = _check_tensor("score_out", score_out, ndim=1).to(_F64)
    if s_in.numel() == 0 or s_out.numel() == 0:
        raise DataError(f"Expected in- and out-of-distribution scores, got {s_in.numel()} and {s_out.numel()}.")
    scores = torch.cat([s_in, s_out]).numpy()
    labels = np.concatenate([np.zeros(s_in.numel()), np.ones(s_out.numel())])
    if not np.isfinite(scores).all():
        raise DataError("ood_detection() got non-finite scores.")
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "aupr": float(average_precision_score(labels, scores)),
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
    }


def auroc_bootstrap(
    score_in: torch.Tensor, score_out: torch.Tensor, *, n_boot: int = 1000, seed: int = 0
) -> torch.Tensor:
    """AUROC of `n_boot` stratified resamples (in and out resampled separately), (n_boot,).

    Exact Mann–Whitney form with ties counted 1/2, vectorised: for each OOD score the
    (resample-weighted) number of in-distribution scores below / equal to it comes from one
    sort of the in-distribution scores and cumulative sums of the resample counts."""
    check_positive_int("n_boot", n_boot)
    s_in = _check_tensor("score_in", score_in, ndim=1).to(_F64)
    s_out = _check_tensor("score_out", score_out, ndim=1).to(_F64)
    n, m = s_in.numel(), s_out.numel()
    if n == 0 or m == 0:
        raise DataError(f"Expected in- and out-of-distribution scores, got {n} and {m}.")
    rng = np.random.default_rng(seed)

    def counts(size: int) -> torch.Tensor:  # (n_boot, size): how often each example is drawn per resample
        idx = rng.integers(0, size, (n_boot, size)) + size * np.arange(n_boot)[:, None]
        return torch.from_numpy(np.bincount(idx.ravel(), minlength=n_boot * size).reshape(n_boot, size)).to(_F64)

    w_in, w_out = counts(n), counts(m)
    sorted_in, order = torch.sort(s_in)
    cum = torch.cat([torch.zeros(n_boot, 1, dtype=_F64), w_in[:, order].cumsum(1)], 1)  # (B, n+1)
    below = torch.searchsorted(sorted_in, s_out, right=False)  # count of s_in < s_out
    upto = torch.searchsorted(sorted_in, s_out, right=True)  # count of s_in <= s_out
    wins = cum[:, below] + 0.5 * (cum[:, upto] - cum[:, below])  # (B, m)
    return (wins * w_out).sum(1) / (n * m)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr) of two (N,) tensors."""
    from scipy.stats import spearmanr

    a = _check_tensor("a", a, ndim=1).to(_F64)
    b = _check_tensor("b", b, ndim=1).to(_F64)
    _check_same_len(a=a, b=b)
    return float(spearmanr(a.numpy(), b.numpy()).statistic)
