"""Synthetic tasks generated on the fly, each with a known ground truth, so suites can be
checked against the truth rather than against another tool:

- hetero_regression: y = f(x) + sigma(x) * eps with known sigma(x) and a gap with no
  training data (aleatoric vs epistemic uncertainty).
- tabular_relevant:  the label depends on known features only (attribution checks).
- tokens_relevant:   the label depends on the tokens at known positions only.
- markov_lm:         text from a Markov source whose entropy rate is computed exactly
  (the best cross-entropy any model can reach).

Each is `(seed: int = 0, *, options...) -> Dataset`; the seed drives sampling (and splits),
while the source itself (Markov transition matrix) has its own `source_seed` so that runs
with different seeds are scored against the same floor. The pure functions
(`hetero_mean`, `hetero_sigma`, `markov_transition_matrix`, `stationary_distribution`,
`markov_entropy_rate`, `sample_markov`) are public so tests and suites can recompute truths.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.data.base import Dataset, Split
from workbench.data.loaders import (
    check_float,
    check_fractions,
    check_int_list,
    check_positive_int,
    check_seed,
    lm_windows,
    reject_unknown_options,
    train_standardize,
)
from workbench.errors import ConfigError, ParameterTypeError


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _i64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def _letters(n: int) -> tuple[str, ...]:
    """Display strings for n token ids: 'a'..'z' when n <= 26, else 't0'..."""
    return tuple(string.ascii_lowercase[:n]) if n <= 26 else tuple(f"t{i}" for i in range(n))


# --------------------------------------------------------------------------------------
# Heteroscedastic regression with a gap
# --------------------------------------------------------------------------------------

HETERO_F = "f(x) = sin(2 x0) + 0.3 x0  (only feature 0 matters)"


def hetero_mean(x: np.ndarray) -> np.ndarray:
    """The true regression function f(x) = sin(2 x0) + 0.3 x0; x (N, F) -> (N,)."""
    x0 = x[:, 0]
    return np.sin(2.0 * x0) + 0.3 * x0


def hetero_sigma(x: np.ndarray, noise_base: float = 0.1, noise_slope: float = 0.2) -> np.ndarray:
    """The true noise standard deviation sigma(x) = noise_base + noise_slope * |x0|; (N,)."""
    return noise_base + noise_slope * np.abs(x[:, 0])


def _check_interval(name: str, value: object) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ParameterTypeError(f"Expected `{name}` to be [low, high], got {value!r}.")
    lo = check_float(f"{name}[0]", value[0])
    hi = check_float(f"{name}[1]", value[1])
    if not lo < hi:
        raise ConfigError(f"Expected `{name}` = [low, high] with low < high, got {list(value)}.")
    return lo, hi


def _uniform_outside(rng: np.random.Generator, n: int, x_range: tuple[float, float],
                     gap: tuple[float, float] | None) -> np.ndarray:
    """n draws uniform on x_range minus the open gap (inverse CDF over the two pieces)."""
    lo, hi = x_range
    if gap is None:
        return rng.uniform(lo, hi, n)
    g0, g1 = gap
    left, right = g0 - lo, hi - g1
    u = rng.uniform(0.0, left + right, n)
    return np.where(u < left, lo + u, g1 + (u - left))


def hetero_regression(
    seed: int = 0,
    *,
    n_train: int = 1000,
    n_val: int = 250,
    n_test: int = 500,
    n_features: int = 1,
    x_range: Sequence[float] = (-3.0, 3.0),
    gap: Sequence[float] | None = (1.0, 2.0),
    noise_base: float = 0.1,
    noise_slope: float = 0.2,
    **unknown: Any,
) -> Dataset:
    """Heteroscedastic 1-D regression with a gap: x0 ~ U(x_range) (other features, if
    n_features > 1, are U(x_range) too but irrelevant), y = f(x) + sigma(x) * eps with
    f(x) = sin(2 x0) + 0.3 x0, sigma(x) = noise_base + noise_slope * |x0|, eps ~ N(0, 1).
    Train and val have NO x0 inside `gap` (None: no gap); test covers all of x_range, so
    about (gap width / range width) of it lies in the gap.

    x is left in its own units (not standardised) so the gap and sigma(x) read as stated;
    y is not standardised (target_mean 0, target_std 1).
    meta: "noise_std" (N,) the true sigma(x); "mean" (N,) the true f(x); "in_gap" (N,)
    bool, with the alias "ood_mask". ground_truth: "gap" and alias "ood_region" [lo, hi],
    "f", "sigma" (descriptions), "relevant_features" [0], "noise_base", "noise_slope",
    "bayes_mse_test" = mean sigma(x)^2 over the test split (the best reachable test MSE)."""
    reject_unknown_options("dataset 'synthetic_hetero_regression'", unknown, hetero_regression)
    seed = check_seed(seed)
    sizes = [check_positive_int(k, v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
    n_features = check_positive_int("n_features", n_features)
    xr = _check_interval("x_range", x_range)
    g = None if gap is None else _check_interval("gap", gap)
    if g is not None and not (xr[0] <= g[0] and g[1] <= xr[1] and (g[0], g[1]) != xr):
        raise ConfigError(
            f"Expected `gap` {list(g)} inside `x_range` {list(xr)}, leaving part of it for training."
        )
    noise_base = check_float("noise_base", noise_base, low=0.0, open_low=True)
    noise_slope = check_float("noise_slope", noise_slope, low=0.0)
    rng = np.random.default_rng(seed)
    splits = []
    for k, n in enumerate(sizes):
        x = rng.uniform(xr[0], xr[1], (n, n_features))
        x[:, 0] = _uniform_outside(rng, n, xr, g if k < 2 else None)
        mean = hetero_mean(x)
        sigma = hetero_sigma(x, noise_base, noise_slope)
        y = mean + sigma * rng.standard_normal(n)
        in_gap = (x[:, 0] > g[0]) & (x[:, 0] < g[1]) if g is not None else np.zeros(n, bool)
        mask = torch.from_numpy(in_gap)
        splits.append(Split(_f32(x), _f32(y), {
            "noise_std": _f32(sigma), "mean": _f32(mean), "in_gap": mask, "ood_mask": mask.clone(),
        }))
    sig = f"sigma(x) = {noise_base:g} + {noise_slope:g} |x0|"
    return Dataset(
        name="synthetic_hetero_regression",
        modality="tabular",
        task="regression",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        feature_names=tuple(f"x{i}" for i in range(n_features)),
        bounds=None,
        ground_truth={
            "gap": list(g) if g else None,
            "ood_region": list(g) if g else None,
            "x_range": list(xr),
            "f": HETERO_F,
            "sigma": sig,
            "noise_base": noise_base,
            "noise_slope": noise_slope,
            "relevant_features": [0],
            "bayes_mse_test": float((splits[2].meta["noise_std"].double() ** 2).mean()),
            "target_mean": 0.0,
            "target_std": 1.0,
        },
        description=f"y = sin(2 x0) + 0.3 x0 + sigma(x) eps, {sig}; no training data for x0 in {list(g) if g else 'none'}.",
        source="generated by workbench.data.synthetic.hetero_regression (no licence needed)",
        seed=seed,
    )


# --------------------------------------------------------------------------------------
# Tabular classification with known relevant features
# --------------------------------------------------------------------------------------


def default_weights(k: int) -> tuple[float, ...]:
    """Weights of the relevant features: +1, -1.5, +2, -1, +1.5, -2, ..."""
    return tuple((-1.0) ** i * (1.0 + 0.5 * (i % 3)) for i in range(k))


def tabular_relevant(
    seed: int = 0,
    *,
    n_train: int = 600,
    n_val: int = 200,
    n_test: int = 200,
    n_features: int = 10,
    relevant: Sequence[int] = (0, 3, 7),
    weights: Sequence[float] | None = None,
    noise: float = 0.1,
    **unknown: Any,
) -> Dataset:
    """Binary classification where only `relevant` features carry the label:
    x ~ N(0, I) (N, n_features), score = sum_k weights[k] * x[:, relevant[k]],
    y = 1[score + noise * eps > 0] (eps ~ N(0, 1) flips a few labels near the boundary).
    x is then standardised with train statistics (an affine map per feature: relevance
    is unchanged). Class names ("negative", "positive"); bounds None.
    meta: "score" (N,) the noise-free score on the raw features. ground_truth:
    "relevant_features", "irrelevant_features", "weights", "noise"."""
    reject_unknown_options("dataset 'synthetic_tabular'", unknown, tabular_relevant)
    seed = check_seed(seed)
    sizes = [check_positive_int(k, v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
    n_features = check_positive_int("n_features", n_features)
    rel = check_int_list("relevant", relevant, low=0, high=n_features)
    if weights is None:
        w = np.array(default_weights(len(rel)))
    else:
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(rel):
            raise ConfigError(f"Expected `weights` to be {len(rel)} numbers (one per relevant feature), got {weights!r}.")
        w = np.array([check_float("weights[i]", v) for v in weights])
        if not np.all(w != 0):
            raise ConfigError(f"Expected non-zero `weights` (a zero weight makes its feature irrelevant), got {list(weights)}.")
    noise = check_float("noise", noise, low=0.0)
    rng = np.random.default_rng(seed)
    xs, ys, scores = [], [], []
    for n in sizes:
        x = rng.standard_normal((n, n_features))
        score = x[:, list(rel)] @ w
        y = (score + noise * rng.standard_normal(n) > 0).astype(np.int64)
        xs.append(x)
        ys.append(y)
        scores.append(score)
    xs, mean, std = train_standardize(*xs)
    splits = [Split(_f32(x), _i64(y), {"score": _f32(s)}) for x, y, s in zip(xs, ys, scores)]
    return Dataset(
        name="synthetic_tabular",
        modality="tabular",
        task="classification",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=2,
        class_names=("negative", "positive"),
        feature_names=tuple(f"x{i}" for i in range(n_features)),
        bounds=None,
        ground_truth={
            "relevant_features": list(rel),
            "irrelevant_features": [i for i in range(n_features) if i not in rel],
            "weights": w.tolist(),
            "noise": noise,
            "standardization": {"mean": mean.tolist(), "std": std.tolist()},
        },
        description=f"Label = sign of a weighted sum of features {list(rel)} of {n_features} Gaussian features (+ noise {noise:g}).",
        source="generated by workbench.data.synthetic.tabular_relevant (no licence needed)",
        seed=seed,
    )


# --------------------------------------------------------------------------------------
# Token classification with known relevant positions
# --------------------------------------------------------------------------------------


def tokens_relevant(
    seed: int = 0,
    *,
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 500,
    seq_len: int = 16,
    vocab_size: int = 20,
    positions: Sequence[int] = (2, 9),
    **unknown: Any,
) -> Dataset:
    """Token-sequence classification where only two known positions carry the label:
    x (N, seq_len) long uniform in [0, vocab_size), y = 1[x[:, p] > x[:, q]] for
    positions (p, q) (ties -> 0, so P(y=1) = (1 - 1/V) / 2). The rule is linear in the
    one-hot tokens at p and q, so a linear model on those positions can be perfect and
    any other position carries no information. vocab = 'a', 'b', ... (V <= 26).
    meta: "margin" (N,) long x[:, p] - x[:, q]. ground_truth: "relevant_positions",
    "rule"."""
    reject_unknown_options("dataset 'synthetic_tokens'", unknown, tokens_relevant)
    seed = check_seed(seed)
    sizes = [check_positive_int(k, v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
    seq_len = check_positive_int("seq_len", seq_len)
    vocab_size = check_positive_int("vocab_size", vocab_size)
    if vocab_size < 2:
        raise ConfigError(f"Expected `vocab_size` >= 2 (the label compares two tokens), got {vocab_size}.")
    pos = check_int_list("positions", positions, low=0, high=seq_len)
    if len(pos) != 2:
        raise ConfigError(f"Expected `positions` to be two positions [p, q], got {list(positions)}.")
    p, q = pos
    rng = np.random.default_rng(seed)
    splits = []
    for n in sizes:
        x = rng.integers(0, vocab_size, (n, seq_len))
        margin = x[:, p] - x[:, q]
        splits.append(Split(_i64(x), _i64((margin > 0).astype(np.int64)), {"margin": _i64(margin)}))
    return Dataset(
        name="synthetic_tokens",
        modality="tokens",
        task="classification",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=2,
        class_names=(f"x[{p}] <= x[{q}]", f"x[{p}] > x[{q}]"),
        vocab_size=vocab_size,
        vocab=_letters(vocab_size),
        bounds=None,
        ground_truth={
            "relevant_positions": [p, q],
            "irrelevant_positions": [i for i in range(seq_len) if i not in (p, q)],
            "rule": f"y = 1 if x[{p}] > x[{q}] else 0",
        },
        description=f"Sequences of {seq_len} uniform tokens over {vocab_size} symbols; label = x[{p}] > x[{q}].",
        source="generated by workbench.data.synthetic.tokens_relevant (no licence needed)",
        seed=seed,
    )


# --------------------------------------------------------------------------------------
# Markov-source language model with an exact entropy rate
# --------------------------------------------------------------------------------------

MAX_MARKOV_STATES = 1024


def markov_transition_matrix(vocab_size: int, order: int, concentration: float, seed: int) -> np.ndarray:
    """Rows P[s] ~ Dirichlet(concentration * 1) for each of the V**order contexts s
    (base-V number of the last `order` tokens, oldest first). Smaller concentration ->
    peakier rows -> lower entropy. Returns (V**order, V) float64, rows sum to 1."""
    rng = np.random.default_rng([seed, 17])
    p = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size**order)
    return p / p.sum(axis=1, keepdims=True)


def _state_matrix(transition: np.ndarray) -> np.ndarray:
    """The (S, S) chain over contexts: s = (a1..ak) -> (a2..ak, j) with prob P[s, j]."""
    s, v = transition.shape
    nxt = (np.arange(s)[:, None] * v + np.arange(v)[None, :]) % s  # (S, V)
    t = np.zeros((s, s))
    np.add.at(t, (np.repeat(np.arange(s), v), nxt.ravel()), transition.ravel())
    return t


def _check_transition(transition: np.ndarray) -> tuple[int, int]:
    t = np.asarray(transition, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] < 1:
        raise ConfigError(f"Expected a transition matrix of shape (V**order, V), got {t.shape}.")
    s, v = t.shape
    order = round(math.log(s, v)) if v > 1 else 1
    if v**order != s:
        raise ConfigError(f"Expected V**order rows for V={v} columns, got {s} rows.")
    if np.any(t < 0) or not np.allclose(t.sum(axis=1), 1.0, atol=1e-9):
        raise ConfigError("Expected a row-stochastic transition matrix (non-negative rows summing to 1).")
    return v, order


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    """Stationary distribution pi (S,) over the contexts of a Markov source with
    transition (S, V) = (V**order, V): solves pi T = pi, sum(pi) = 1 exactly (dense
    linear solve, S <= 1024). For order 1 this is the usual pi P = pi."""
    _check_transition(transition)
    t = _state_matrix(np.asarray(transition, dtype=np.float64))
    s = t.shape[0]
    a = t.T - np.eye(s)
    a[-1, :] = 1.0
    b = np.zeros(s)
    b[-1] = 1.0
    pi = np.linalg.solve(a, b)
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def markov_entropy_rate(transition: np.ndarray) -> float:
    """Entropy rate in nats of a stationary Markov source:
    H = -sum_s pi_s sum_j P[s, j] log P[s, j] (0 log 0 = 0). For a uniform P it is log V."""
    p = np.asarray(transition, dtype=np.float64)
    pi = stationary_distribution(p)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(-(pi * plogp.sum(axis=1)).sum())


def sample_markov(transition: np.ndarray, n_seqs: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """n_seqs independent sequences (n_seqs, length) int64 from the source, each started
    in its stationary distribution (so every position is distributed as in the long run)."""
    p = np.asarray(transition, dtype=np.float64)
    v, order = _check_transition(p)
    pi = stationary_distribution(p)
    s = p.shape[0]
    if length < order:
        raise ConfigError(f"Expected sequence length >= order {order}, got {length}.")
    state = rng.choice(s, size=n_seqs, p=pi)
    out = np.zeros((n_seqs, length), dtype=np.int64)
    for i in range(order):  # unpack the start context's tokens, oldest first
        out[:, i] = (state // v ** (order - 1 - i)) % v
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0
    for t in range(order, length):
        u = rng.random(n_seqs)
        tok = (cum[state] < u[:, None]).sum(axis=1)
        tok = np.minimum(tok, v - 1)
        out[:, t] = tok
        state = (state * v + tok) % s
    return out


def markov_lm(
    seed: int = 0,
    *,
    vocab_size: int = 16,
    order: int = 1,
    concentration: float = 0.3,
    source_seed: int = 0,
    n_docs: int = 100,
    doc_length: int = 513,
    block_size: int = 32,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    **unknown: Any,
) -> Dataset:
    """Language modelling on a seeded Markov source with an exactly known entropy rate.

    The transition matrix (V**order, V) is drawn once from `source_seed` (rows
    Dirichlet(concentration)); `seed` drives sampling: n_docs documents of doc_length
    tokens, each started from the stationary distribution; documents go to train/val/test
    in order (round(n_docs * fraction) each, at least one), and are cut into
    non-overlapping windows x (N, block_size), y (N, block_size) (next tokens).
    meta: "doc_id" (N,) long, "offset" (N,) long.
    ground_truth: "entropy_rate_nats" H = -sum_s pi_s sum_j P_sj log P_sj (exact, from the
    stationary distribution), "perplexity_floor" exp(H), "bits_per_token_floor" H / ln 2,
    "transition_matrix" (nested list), "stationary_distribution", "order",
    "concentration", "source_seed". For order 1 no model can have expected test
    cross-entropy below H; for order k > 1 the first k-1 targets of a window have less
    than k tokens of context, so the true floor of the window loss is slightly above H."""
    reject_unknown_options("dataset 'synthetic_markov_lm'", unknown, markov_lm)
    seed = check_seed(seed)
    vocab_size = check_positive_int("vocab_size", vocab_size)
    if vocab_size < 2:
        raise ConfigError(f"Expected `vocab_size` >= 2, got {vocab_size}.")
    order = check_positive_int("order", order)
    if vocab_size**order > MAX_MARKOV_STATES:
        raise ConfigError(
            f"Expected vocab_size ** order <= {MAX_MARKOV_STATES} (contexts solved exactly), got "
            f"{vocab_size}**{order} = {vocab_size**order}."
        )
    concentration = check_float("concentration", concentration, low=0.0, open_low=True)
    source_seed = check_seed(source_seed)
    n_docs = check_positive_int("n_docs", n_docs)
    if n_docs < 3:
        raise ConfigError(f"Expected `n_docs` >= 3 (one per split at least), got {n_docs}.")
    doc_length = check_positive_int("doc_length", doc_length)
    block_size = check_positive_int("block_size", block_size)
    if doc_length < block_size + 1:
        raise ConfigError(f"Expected `doc_length` >= block_size + 1 = {block_size + 1}, got {doc_length}.")
    fractions = check_fractions(val_fraction, test_fraction)
    p = markov_transition_matrix(vocab_size, order, concentration, source_seed)
    pi = stationary_distribution(p)
    h = markov_entropy_rate(p)
    seqs = sample_markov(p, n_docs, doc_length, np.random.default_rng([seed, 23]))
    n_val = max(1, round(n_docs * fractions[1]))
    n_test = max(1, round(n_docs * fractions[2]))
    n_train = n_docs - n_val - n_test
    if n_train < 1:
        raise ConfigError(f"`n_docs`={n_docs} leaves no training document with these fractions.")
    bounds = [0, n_train, n_train + n_val, n_docs]
    splits = []
    for k in range(3):
        ids = list(range(bounds[k], bounds[k + 1]))
        x, y, doc_id, offset = lm_windows([seqs[i] for i in ids], ids, block_size)
        splits.append(Split(x, y, {"doc_id": doc_id, "offset": offset}))
    return Dataset(
        name="synthetic_markov_lm",
        modality="lm",
        task="lm",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        vocab_size=vocab_size,
        vocab=_letters(vocab_size),
        bounds=None,
        ground_truth={
            "entropy_rate_nats": h,
            "perplexity_floor": math.exp(h),
            "bits_per_token_floor": h / math.log(2),
            "transition_matrix": p.tolist(),
            "stationary_distribution": pi.tolist(),
            "order": order,
            "concentration": concentration,
            "source_seed": source_seed,
            "n_documents": {"train": n_train, "val": n_val, "test": n_test},
            "block_size": block_size,
        },
        description=(
            f"Order-{order} Markov source over {vocab_size} tokens (Dirichlet({concentration:g}) rows); "
            f"entropy rate {h:.4f} nats/token, perplexity floor {math.exp(h):.3f}."
        ),
        source="generated by workbench.data.synthetic.markov_lm (no licence needed)",
        seed=seed,
    )
