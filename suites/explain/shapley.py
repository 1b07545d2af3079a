"""Shapley values over feature groups: exact enumeration, a batched Kernel SHAP sampler,
and thin wrappers over the `shap` package.

Vocabulary
- player / group: M units that are present or absent together (tabular features,
  superpixels of an image, token positions of a sequence). `groups` maps every element of
  one input to its player index in [0, M).
- coalition: a boolean (M,) row; `True` = the player keeps the example's value.
  Elements mapped to NOT_A_PLAYER (-1; token padding) keep it in every coalition.
- value function v(S):
    "baseline"   f(x_S, b_notS) for one reference input b (R = 1)
    "background" E_b[f(x_S, b_notS)] over R background inputs (interventional SHAP),
                 optionally weighted (shap.kmeans summaries carry weights)
- efficiency: sum_i phi_i = v(all) - v(empty) = f(x) - E[f(b)].

Every coalition is evaluated once (rows are deduplicated) and all R replacements of
all coalitions go through the model in large batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from workbench.errors import ConfigError, DataError, check_positive_int

ScalarFn = Callable[[torch.Tensor], torch.Tensor]
"""f(inputs (B, *S)) -> (B,) the explained scalar output (e.g. the target logit)."""

VALUE_FUNCTIONS = ("baseline", "background")
MAX_EXACT_PLAYERS = 20  # 2^20 coalitions is the most we ever enumerate
NOT_A_PLAYER = -1  # group index of elements that are no player (padding): always the example's value


_CONTROLLER = None


def _blas_one_thread():  # noqa: ANN202 - a context manager
    """Limit BLAS to one thread for small solves (a 200x65 lstsq: 155 ms -> 3 ms on a busy box).
    The threadpoolctl controller is built once: scanning the loaded libraries costs ~8 ms."""
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController

        if _CONTROLLER is None:
            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER.limit(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()


def all_coalitions(m: int) -> np.ndarray:
    """(2^m, m) bool; row k holds the bits of k (player j present iff bit j of k is set)."""
    check_positive_int("m", m)
    if m > MAX_EXACT_PLAYERS:
        raise ConfigError(f"Expected at most {MAX_EXACT_PLAYERS} players to enumerate, got {m}.")
    k = np.arange(2**m, dtype=np.int64)[:, None]
    return ((k >> np.arange(m, dtype=np.int64)) & 1).astype(bool)


def shapley_kernel_weights(m: int) -> np.ndarray:
    """(m,) w[s] = s! (m - s - 1)! / m!, the weight of a coalition of size s without player i."""
    s = np.arange(m)
    return np.exp([math.lgamma(a + 1) + math.lgamma(m - a) - math.lgamma(m + 1) for a in s])


def shapley_from_values(values: np.ndarray) -> np.ndarray:
    """Exact Shapley values from v of every coalition.

    values: (..., 2^m) with values[..., k] = v(coalition with the bits of k).
    Returns (..., m): phi_i = sum_{S not containing i} w(|S|) (v(S + i) - v(S)).
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    m = int(round(math.log2(n))) if n > 0 else -1
    if m < 1 or 2**m != n:
        raise DataError(f"Expected the last axis to have 2^m entries (m >= 1), got {n}.")
    k = np.arange(n, dtype=np.int64)
    size = np.array([bin(int(i)).count("1") for i in range(n)]) if m <= 12 else _popcount(k)
    w = shapley_kernel_weights(m)
    out = np.empty(values.shape[:-1] + (m,), dtype=np.float64)
    for i in range(m):
        without = k[(k >> i) & 1 == 0]  # (2^(m-1),)
        out[..., i] = ((values[..., without | (1 << i)] - values[..., without]) * w[size[without]]).sum(-1)
    return out


def _popcount(k: np.ndarray) -> np.ndarray:
    c = np.zeros_like(k)
    v = k.copy()
    while np.any(v):
        c += v & 1
        v >>= 1
    return c


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values of one example.

    values: (M,) per player. base_value = v(empty), full_value = v(all players) = f(x)
    (for the baseline value function) or E-weighted (background). n_coalitions: distinct
    coalitions evaluated; n_evaluations: model inputs evaluated (= n_coalitions * R).
    estimator: "exact" (all 2^M coalitions) or "kernel" (sampled, constrained WLS).
    standard_error: (M,) the sampler's own estimate of its error per player (bootstrap
    over the sampled coalitions, `kernel_standard_error`); zeros for "exact"; None when
    the estimator gives none (shap's KernelExplainer). The efficiency gap is 0 by
    construction of the constrained solve, so it says nothing about this error.
    """

    values: np.ndarray
    base_value: float
    full_value: float
    n_coalitions: int
    n_evaluations: int
    estimator: str
    standard_error: np.ndarray | None = None

    @property
    def efficiency_gap(self) -> float:
        """|sum(phi) - (v(all) - v(empty))|: 0 up to rounding for both estimators."""
        return float(abs(self.values.sum() - (self.full_value - self.base_value)))


def check_groups(groups: torch.Tensor, shape: tuple[int, ...]) -> int:
    """Validate a player map for inputs of `shape`; returns M. An entry NOT_A_PLAYER (-1)
    marks elements that are no player (padding): they keep the example's value in every
    coalition, so they never change v(S) and get no Shapley value."""
    if not isinstance(groups, torch.Tensor) or groups.dtype not in (torch.int64, torch.int32):
        raise DataError(f"Expected `groups` to be an integer tensor, got {type(groups).__name__}.")
    try:
        torch.broadcast_shapes(tuple(groups.shape), shape)
    except RuntimeError as exc:
        raise DataError(f"Expected `groups` broadcastable to the input shape {shape}, got {tuple(groups.shape)}.") from exc
    if groups.numel() == 0 or int(groups.min()) < NOT_A_PLAYER:
        raise DataError(f"Expected `groups` to hold player indices >= 0 (or {NOT_A_PLAYER}: not a player), got "
                        f"{int(groups.min())}.")
    m = int(groups.max()) + 1
    if m < 1:
        raise DataError("Expected `groups` to name at least one player, got only non-players.")
    present = torch.unique(groups[groups >= 0])
    if present.numel() != m:
        raise DataError(f"Expected `groups` to use every player index 0..{m - 1}, got {present.tolist()}.")
    return m


@torch.no_grad()
def coalition_values(
    f: ScalarFn,
    x: torch.Tensor,
    groups: torch.Tensor,
    replacement: torch.Tensor,
    coalitions: np.ndarray,
    *,
    weights: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """v(S) for each coalition row.

    x: (*S) one input; groups: (*S) or broadcastable, player index per element;
    replacement: (R, *S) values of absent players (R = 1: baseline; R > 1: background);
    coalitions: (C, M) bool (assumed distinct); weights: (R,) summing to 1 or None (uniform).
    Returns (C,) float64: the (weighted) mean over R of f(where(present, x, replacement_r)).
    """
    shape = tuple(x.shape)
    if tuple(replacement.shape[1:]) != shape:
        raise DataError(f"Expected `replacement` of shape (R, {shape}), got {tuple(replacement.shape)}.")
    R = replacement.shape[0]
    device = x.device
    g = groups.to(device).expand(shape).reshape(-1)  # (D,)
    masks = torch.as_tensor(coalitions, dtype=torch.bool, device=device)
    if bool((g == NOT_A_PLAYER).any()):  # non-players read an always-present extra column
        masks = torch.cat([masks, masks.new_ones(masks.shape[0], 1)], 1)
        g = torch.where(g == NOT_A_PLAYER, masks.shape[1] - 1, g)
    w = None if weights is None else weights.to(device=device, dtype=torch.float64)
    xf = x.reshape(1, -1)
    rep = replacement.to(device).reshape(R, -1)  # (R, D)
    chunk = max(1, batch_size // R)
    out = np.empty(len(coalitions), dtype=np.float64)
    for start in range(0, len(coalitions), chunk):
        elem = masks[start : start + chunk][:, g]  # (c, D)
        c = elem.shape[0]
        inputs = torch.where(elem[:, None, :], xf[None], rep[None])  # (c, R, D)
        y = f(inputs.reshape(c * R, *shape)).reshape(c, R).to(torch.float64)
        v = y.mean(1) if w is None else (y * w[None]).sum(1)
        out[start : start + c] = v.cpu().numpy()
    return out


def exact_shapley(
    f: ScalarFn,
    x: torch.Tensor,
    groups: torch.Tensor,
    replacement: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> ShapleyResult:
    """Exact Shapley values by evaluating all 2^M coalitions (see `coalition_values`)."""
    m = check_groups(groups, tuple(x.shape))
    coalitions = all_coalitions(m)
    v = coalition_values(f, x, groups, replacement, coalitions, weights=weights, batch_size=batch_size)
    phi = shapley_from_values(v)
    n = len(coalitions)
    return ShapleyResult(phi, float(v[0]), float(v[-1]), n, n * replacement.shape[0], "exact", np.zeros(m))


def _size_weights(m: int) -> np.ndarray:
    """(m+1,) total Shapley-kernel mass of all coalitions of size s (0 and m excluded)."""
    s = np.arange(m + 1, dtype=np.float64)
    out = np.zeros(m + 1)
    out[1:m] = (m - 1) / (s[1:m] * (m - s[1:m]))
    return out


def _encode(rows: np.ndarray) -> np.ndarray:
    """Hashable key per bool row (bytes view of packed bits)."""
    packed = np.packbits(rows, axis=1)
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()


def _subsets_of_size(m: int, size: int) -> np.ndarray:
    """(C(m, size), m) bool: every coalition with `size` players."""
    if m <= 16:
        rows = all_coalitions(m)
        return rows[rows.sum(1) == size]
    out = np.zeros((math.comb(m, size), m), dtype=bool)
    for r, idx in enumerate(combinations(range(m), size)):
        out[r, list(idx)] = True
    return out


def sample_coalitions(m: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(coalitions, weights) of `sample_coalitions_marked`, without the sampled-row mask."""
    coal, w, _ = sample_coalitions_marked(m, budget, rng)
    return coal, w


def sample_coalitions_marked(
    m: int, budget: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct coalitions for Kernel SHAP and their kernel weights.

    Like shap's KernelExplainer: sizes whose every subset (and complement) fits in their
    share of the remaining budget are enumerated completely with their exact kernel weight;
    the rest of the budget is filled by paired (S, complement) samples drawn without
    duplicates from the remaining sizes, which share the remaining kernel mass in proportion
    to how often they were drawn. Returns (coalitions (C, m) bool excluding empty/full,
    weights (C,) summing to 1, sampled (C,) bool: True for the drawn rows, False for the
    completely enumerated sizes).
    """
    check_positive_int("m", m)
    check_positive_int("budget", budget)
    mass = _size_weights(m)
    mass = mass / mass.sum()
    rows: list[np.ndarray] = []
    wts: list[np.ndarray] = []
    remaining = budget
    left = mass.copy()  # kernel mass not yet assigned, per size
    sizes_done = np.zeros(m + 1, dtype=bool)
    sizes_done[[0, m]] = True
    for s in range(1, m // 2 + 1):
        paired = s != m - s
        count = math.comb(m, s) * (2 if paired else 1)
        share = (left[s] + (left[m - s] if paired else 0.0)) / left.sum()
        # shap's rule: enumerate a size when its expected share of the budget covers it
        if remaining * share < count - 1e-8:
            break
        for size in sorted({s, m - s}):
            combos = _subsets_of_size(m, size)
            rows.append(combos)
            wts.append(np.full(len(combos), left[size] / len(combos)))
            left[size] = 0.0
            sizes_done[size] = True
        remaining -= count
    available = sum(math.comb(m, s) for s in range(1, m) if not sizes_done[s])
    remaining = min(remaining, available)
    if remaining > 0:
        p = left / left.sum()
        keys = np.zeros(0, dtype=_encode(np.zeros((1, m), dtype=bool)).dtype)
        counts = np.zeros(0, dtype=np.float64)
        found = np.zeros((0, m), dtype=bool)
        for _ in range(50):  # draw rounds until the budget is full
            need = remaining - len(found)
            if need <= 0:
                break
            n_draw = max(8, need)
            size = rng.choice(m + 1, size=n_draw, p=p)
            ranks = np.argsort(rng.random((n_draw, m)), axis=1).argsort(axis=1)
            drawn = ranks < size[:, None]  # (n_draw, m) random subsets of the drawn sizes
            cand = np.stack([drawn, ~drawn], 1).reshape(-1, m)  # each paired with its complement
            ckeys = _encode(cand)
            uniq, first, cnt = np.unique(ckeys, return_index=True, return_counts=True)
            known = np.isin(uniq, keys)
            if known.any():  # repeats of coalitions already kept add to their weight
                pos = np.searchsorted(keys, uniq[known], sorter=np.argsort(keys))
                counts[np.argsort(keys)[pos]] += cnt[known]
            new = np.sort(first[~known])[:need]  # first-drawn order, then cut to the budget
            keep_keys = ckeys[new]
            keys = np.concatenate([keys, keep_keys])
            found = np.concatenate([found, cand[new]])
            new_counts = cnt[~known][np.argsort(first[~known])][:need]
            counts = np.concatenate([counts, new_counts.astype(np.float64)])
        if len(found):
            rows.append(found)
            wts.append(counts / counts.sum() * left.sum())
    if not rows:
        return np.zeros((0, m), dtype=bool), np.zeros(0), np.zeros(0, dtype=bool)
    drew = remaining > 0 and len(found) > 0  # the last block of rows is the drawn one
    sampled = np.concatenate([np.zeros(len(r), dtype=bool) for r in rows[:-1]]
                             + [np.full(len(rows[-1]), drew)])
    return np.concatenate(rows), np.concatenate(wts), sampled


def kernel_shap_solve(
    coalitions: np.ndarray, values: np.ndarray, weights: np.ndarray, base_value: float, full_value: float
) -> np.ndarray:
    """Constrained weighted least squares of Kernel SHAP (Lundberg & Lee 2017).

    min_phi sum_k w_k (v_k - v0 - z_k . phi)^2  subject to  sum(phi) = v(all) - v0,
    solved by eliminating the last player. coalitions (C, M) bool, values (C,), weights (C,).
    """
    z = coalitions.astype(np.float64)
    m = z.shape[1]
    total = full_value - base_value
    if m == 1:
        return np.array([total])
    y = values - base_value - z[:, -1] * total  # (C,)
    a = z[:, :-1] - z[:, -1:]  # (C, M-1)
    sw = np.sqrt(np.maximum(weights, 0.0))[:, None]
    with _blas_one_thread():
        sol, *_ = np.linalg.lstsq(a * sw, y * sw[:, 0], rcond=None)
    return np.concatenate([sol, [total - sol.sum()]])


def kernel_standard_error(
    coalitions: np.ndarray, values: np.ndarray, weights: np.ndarray, sampled: np.ndarray,
    base_value: float, full_value: float, *, n_boot: int = 100, seed: int = 0,
) -> np.ndarray:
    """(M,) standard error of the Kernel SHAP estimate from its own sample: the sampled
    coalitions are resampled with replacement (a drawn row's weight times its bootstrap
    multiplicity; enumerated sizes are fixed, they carry no sampling error) and the
    constrained solve is repeated; the SD over `n_boot` replicates. Conservative when the
    sample is a large share of its sizes (no finite-population correction)."""
    idx = np.flatnonzero(sampled)
    m = coalitions.shape[1]
    if idx.size < 2:
        return np.zeros(m)
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, m))
    for b in range(n_boot):
        w = weights.copy()
        w[idx] = weights[idx] * np.bincount(rng.integers(0, idx.size, idx.size), minlength=idx.size)
        reps[b] = kernel_shap_solve(coalitions, values, w, base_value, full_value)
    return reps.std(axis=0, ddof=1)


def kernel_shapley(
    f: ScalarFn,
    x: torch.Tensor,
    groups: torch.Tensor,
    replacement: torch.Tensor,
    *,
    n_coalitions: int,
    seed: int,
    weights: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> ShapleyResult:
    """Shapley values from at most `n_coalitions` distinct coalitions (plus empty and full).

    When 2^M - 2 <= n_coalitions every coalition fits and the exact values are returned
    (estimator "exact"); otherwise the batched, deduplicated Kernel SHAP estimate
    (estimator "kernel"), seeded by `seed`, with its bootstrap standard error per player.
    Efficiency holds exactly in both cases (it is a constraint of the solve).
    """
    m = check_groups(groups, tuple(x.shape))
    check_positive_int("n_coalitions", n_coalitions)
    if m <= MAX_EXACT_PLAYERS and 2**m - 2 <= n_coalitions:
        return exact_shapley(f, x, groups, replacement, weights=weights, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    coal, kw, sampled = sample_coalitions_marked(m, n_coalitions, rng)
    ends = np.stack([np.zeros(m, dtype=bool), np.ones(m, dtype=bool)])
    v = coalition_values(f, x, groups, replacement, np.concatenate([ends, coal]), weights=weights,
                         batch_size=batch_size)
    phi = kernel_shap_solve(coal, v[2:], kw, float(v[0]), float(v[1]))
    se = kernel_standard_error(coal, v[2:], kw, sampled, float(v[0]), float(v[1]), seed=seed)
    n = len(coal) + 2
    return ShapleyResult(phi, float(v[0]), float(v[1]), n, n * replacement.shape[0], "kernel", se)


def shapley_values(
    f: ScalarFn,
    x: torch.Tensor,
    groups: torch.Tensor,
    replacement: torch.Tensor,
    *,
    max_evaluations: int,
    seed: int,
    weights: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> ShapleyResult:
    """Exact when all 2^M coalitions x R replacements fit in `max_evaluations`, else the
    Kernel SHAP sampler with max_evaluations // R coalitions."""
    check_positive_int("max_evaluations", max_evaluations)
    R = int(replacement.shape[0])
    n_coal = max(1, max_evaluations // R - 2)
    return kernel_shapley(f, x, groups, replacement, n_coalitions=n_coal, seed=seed, weights=weights,
                          batch_size=batch_size)


# ---------------------------------------------------------------- shap package wrappers


def shap_version() -> str:
    import shap

    return str(shap.__version__)


def shap_kernel_explainer(
    f: ScalarFn,
    x: torch.Tensor,
    groups: torch.Tensor,
    replacement: torch.Tensor,
    *,
    n_samples: int,
    seed: int,
    weights: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> ShapleyResult:
    """shap.KernelExplainer over player presence z in {0,1}^M for one example.

    shap sees a function of z; its background is the all-absent row z = 0, and our
    function maps z to the (weighted) mean over the R replacements, so the value function
    is the same as `coalition_values` (baseline or background). `n_samples` is shap's
    nsamples (coalitions); shap's own sampling is seeded through numpy's global RNG, which
    is forked and restored around the call.
    """
    import shap

    m = check_groups(groups, tuple(x.shape))

    def fz(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z) > 0.5
        keys = _encode(z)
        uniq, inv = np.unique(keys, return_inverse=True)
        first = np.zeros(len(uniq), dtype=np.int64)
        first[inv[::-1]] = np.arange(len(z))[::-1]
        vals = coalition_values(f, x, groups, replacement, z[first], weights=weights, batch_size=batch_size)
        return vals[inv.ravel()]

    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        with _blas_one_thread():
            ex = shap.KernelExplainer(fz, np.zeros((1, m)))
            phi = np.asarray(ex.shap_values(np.ones((1, m)), nsamples=n_samples, silent=True), dtype=np.float64)
    finally:
        np.random.set_state(state)
    base = float(np.ravel(ex.expected_value)[0])
    full = float(fz(np.ones((1, m)))[0])
    n = min(n_samples, 2**m)
    return ShapleyResult(phi.reshape(-1)[:m], base, full, n, n * replacement.shape[0], "shap_kernel")


def check_value_function(name: str) -> str:
    if name not in VALUE_FUNCTIONS:
        raise ConfigError(f"Expected `value_function` in {VALUE_FUNCTIONS}, got {name!r}.")
    return name
