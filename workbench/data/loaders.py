"""User data: CSV tables, plain text, tensor files and Python callables, each turned into a
validated `Dataset`; plus the helpers the built-in and synthetic datasets share (option
checks, seeded stratified splits, train-only standardisation, char-level LM windows).

Everything here is offline and deterministic for a seed. Bad input raises `DataError`
(malformed data, missing file) or `ConfigError` (bad option), naming what was expected,
what was got, and where (path, split, row, column).
"""

from __future__ import annotations

import csv
import importlib
import inspect
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.base import SPLITS, Dataset, Split
from workbench.errors import (
    ConfigError,
    DataError,
    ParameterTypeError,
    check_choice,
    check_positive_int,
    did_you_mean,
)

MODALITIES = ("image", "tabular", "tokens", "lm")
TASKS = ("classification", "regression", "lm")
SOURCES = ("csv", "text", "tensors", "callable")
UNK = "<unk>"
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})

# --------------------------------------------------------------------------------------
# Option checks shared by every loader
# --------------------------------------------------------------------------------------


def reject_unknown_options(where: str, unknown: Mapping[str, Any], func: Callable[..., Any]) -> None:
    """Raise ConfigError for keyword options `func` does not take, with a did-you-mean hint.

    `func`'s keyword-only parameters (and `seed`) are the valid options."""
    if not unknown:
        return
    valid = sorted(
        n for n, p in inspect.signature(func).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in ("path", "function")
    )
    bad = sorted(unknown)[0]
    raise ConfigError(
        f"Unknown option {bad!r} for {where}.{did_you_mean(bad, valid)} Valid options: {', '.join(valid)}."
    )


def check_seed(seed: object) -> int:
    """A seed is a non-negative int (bools rejected)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterTypeError(f"Expected `seed` to be an int, got {type(seed).__name__} {seed!r}.")
    if seed < 0:
        raise ConfigError(f"Expected `seed` to be an int >= 0, got {seed}.")
    return int(seed)


def check_fractions(val_fraction: object, test_fraction: object) -> tuple[float, float, float]:
    """(train, val, test) fractions from the val and test fractions; each in (0, 1), sum < 1."""
    out = []
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParameterTypeError(f"Expected `{name}` to be a float in (0, 1), got {type(v).__name__} {v!r}.")
        if not 0 < float(v) < 1:
            raise ConfigError(f"Expected `{name}` to be in (0, 1), got {v}.")
        out.append(float(v))
    if out[0] + out[1] >= 1:
        raise ConfigError(
            f"Expected `val_fraction` + `test_fraction` < 1 (the rest is train), got {out[0]} + {out[1]}."
        )
    return 1.0 - out[0] - out[1], out[0], out[1]


def check_optional_positive_int(name: str, value: object) -> int | None:
    return None if value is None else check_positive_int(name, value)


def check_float(name: str, value: object, *, low: float | None = None, high: float | None = None,
                open_low: bool = False) -> float:
    """A finite real number, optionally bounded (low open when `open_low`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterTypeError(f"Expected `{name}` to be a number, got {type(value).__name__} {value!r}.")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"Expected `{name}` to be a finite number, got {value}.")
    if (low is not None and (v < low or (open_low and v == low))) or (high is not None and v > high):
        lo = "" if low is None else (f"> {low}" if open_low else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        raise ConfigError(f"Expected `{name}` to be a number {' and '.join(s for s in (lo, hi) if s)}, got {value}.")
    return v


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ParameterTypeError(f"Expected `{name}` to be true or false, got {type(value).__name__} {value!r}.")
    return value


def check_int_list(name: str, value: object, *, low: int, high: int) -> tuple[int, ...]:
    """A non-empty list/tuple of distinct ints in [low, high)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ParameterTypeError(f"Expected `{name}` to be a non-empty list of ints, got {value!r}.")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ParameterTypeError(f"Expected `{name}` to hold ints, got {type(v).__name__} {v!r}.")
        if not low <= int(v) < high:
            raise ConfigError(f"Expected every entry of `{name}` in [{low}, {high}), got {v}.")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ConfigError(f"Expected distinct entries in `{name}`, got {list(value)}.")
    return tuple(out)


# --------------------------------------------------------------------------------------
# Splits and standardisation
# --------------------------------------------------------------------------------------


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts summing to n, closest to n * fractions (Hamilton's method)."""
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_indices(
    n: int, fractions: Sequence[float], seed: int, *, labels: np.ndarray | None = None
) -> list[np.ndarray]:
    """Partition range(n) into len(fractions) sorted index arrays, seeded.

    Part sizes are exactly the largest-remainder rounding of n * fractions. With
    `labels` (N,) the split is stratified: each class is shuffled and cut so that each
    (class, part) count is within one (rarely: under two) of n_class * fraction. Without
    labels it is a plain seeded permutation."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    totals = _largest_remainder(n, fractions)
    raw = np.array([[len(g) * f for f in fractions] for g in groups])  # (C, K)
    counts = np.floor(raw).astype(np.int64)
    need_c = np.array([len(g) for g in groups]) - counts.sum(1)
    need_k = np.array(totals) - counts.sum(0)
    # hand out the remaining units, largest fractional part first, one per (class, part)
    # per pass; further passes (rare) settle what is left, so the totals come out exact
    order = sorted(range(raw.size), key=lambda i: (-(raw.flat[i] - counts.flat[i]), i))
    while need_k.sum() > 0:
        for flat in order:
            c, k = divmod(flat, len(fractions))
            if need_c[c] > 0 and need_k[k] > 0:
                counts[c, k] += 1
                need_c[c] -= 1
                need_k[k] -= 1
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for g, row in zip(groups, counts):
        idx = rng.permutation(g)
        start = 0
        for k, count in enumerate(row):
            parts[k].append(idx[start : start + count])
            start += count
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]


def train_standardize(train: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(x - mean) / std with mean and std (ddof=0) from `train` only, along axis 0.
    Constant columns get std 1. Returns ([train, *others] standardised, mean, std)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [((a - mean) / std) for a in (train, *others)], mean, std


def _float32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def tabular_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    task: str,
    seed: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    standardize_features: bool = True,
    standardize_target: bool = False,
    ground_truth: dict[str, Any] | None = None,
    description: str = "",
    source: str = "",
) -> Dataset:
    """A tabular Dataset from x (N, F) and y (N,): seeded split (stratified for
    classification), features standardised with train statistics only, and for regression
    optionally the target too. The statistics go to ground_truth["standardization"]
    ({"mean": [F], "std": [F]}) and ground_truth["target_mean"/"target_std"] (regression;
    0 and 1 when the target is left in its units), so MSE in original units is
    mse * target_std**2."""
    fractions = check_fractions(val_fraction, test_fraction)
    strat = y if task == "classification" else None
    tr, va, te = split_indices(len(x), fractions, seed, labels=strat)
    gt = dict(ground_truth or {})
    xs = [x[tr], x[va], x[te]]
    if standardize_features:
        xs, mean, std = train_standardize(*xs)
        gt["standardization"] = {"mean": mean.tolist(), "std": std.tolist()}
    ys = [y[tr], y[va], y[te]]
    if task == "regression":
        if standardize_target:
            ys, tmean, tstd = train_standardize(*ys)
            gt["target_mean"], gt["target_std"] = float(tmean), float(tstd)
        else:
            gt.setdefault("target_mean", 0.0)
            gt.setdefault("target_std", 1.0)
        ysplit = [_float32(v) for v in ys]
    else:
        ysplit = [_long(v) for v in ys]
    splits = [Split(_float32(a), b) for a, b in zip(xs, ysplit)]
    return Dataset(
        name=name,
        modality="tabular",
        task=task,  # type: ignore[arg-type]
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=len(class_names) if class_names is not None else None,
        class_names=tuple(class_names) if class_names is not None else None,
        feature_names=tuple(feature_names) if feature_names is not None else None,
        bounds=None,
        ground_truth=gt,
        description=description,
        source=source,
        seed=seed,
    )


# --------------------------------------------------------------------------------------
# Language-model windows (char-level text and token sources)
# --------------------------------------------------------------------------------------


def lm_windows(
    docs: Sequence[np.ndarray], doc_ids: Sequence[int], block_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each document (1-D int array) into non-overlapping windows: x = d[i:i+T],
    y = d[i+1:i+T+1] for i = 0, T, 2T, ... while i+T+1 <= len(d). Every token after the
    first is a target at most once. Returns x (N, T) long, y (N, T) long, doc_id (N,) long,
    offset (N,) long (start of the window in its document)."""
    xs, ys, ids, offs = [], [], [], []
    for d, k in zip(docs, doc_ids):
        n = (len(d) - 1) // block_size
        if n <= 0:
            continue
        starts = np.arange(n) * block_size
        idx = starts[:, None] + np.arange(block_size)[None, :]
        xs.append(d[idx])
        ys.append(d[idx + 1])
        ids.append(np.full(n, k, np.int64))
        offs.append(starts)
    if not xs:
        empty = torch.zeros(0, block_size, dtype=torch.long)
        return empty, empty.clone(), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return _long(np.concatenate(xs)), _long(np.concatenate(ys)), _long(np.concatenate(ids)), _long(np.concatenate(offs))


def split_documents(lengths: Sequence[int], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Assign documents to (train, val, test) so each split's share of tokens is close to
    its fraction: documents are shuffled with the seed, then test and val are filled up
    to their token budget (at least one document each), the rest is train. Needs >= 3 docs."""
    n = len(lengths)
    if n < 3:
        raise DataError(f"Expected at least 3 documents to make train/val/test splits, got {n}.")
    order = np.random.default_rng(seed).permutation(n)
    total = float(sum(lengths))
    out: dict[int, list[int]] = {0: [], 1: [], 2: []}
    pos = 0
    for part in (2, 1):
        budget = fractions[part] * total
        got = 0.0
        # leave at least one document for each split still to fill
        while pos < n - (2 if part == 2 else 1) and (not out[part] or got + lengths[order[pos]] / 2 <= budget):
            out[part].append(int(order[pos]))
            got += lengths[order[pos]]
            pos += 1
    out[0] = [int(i) for i in order[pos:]]
    return [np.sort(np.array(out[k], dtype=np.int64)) for k in (0, 1, 2)]


def char_lm_dataset(
    docs: Sequence[str],
    *,
    name: str,
    seed: int,
    block_size: int,
    max_windows: int | None,
    min_char_count: int,
    val_fraction: float,
    test_fraction: float,
    doc_names: Sequence[str] | None = None,
    description: str = "",
    source: str = "",
) -> Dataset:
    """A character-level LM Dataset from documents.

    Vocabulary: id 0 is "<unk>", then the sorted characters that occur at least
    `min_char_count` times in the whole corpus (an alphabet, the same for every seed);
    rarer characters map to <unk>. Documents shorter than block_size+1 are merged with
    their neighbours. Documents are split between train/val/test by character share
    (`split_documents`), cut into non-overlapping windows (`lm_windows`), and each split is
    capped at round(max_windows * fraction) windows chosen at random with the seed.
    meta: "doc_id" (N,) long index into ground_truth["documents"], "offset" (N,) long.
    ground_truth["bytes_per_token"]: UTF-8 bytes per target character over the test
    split's targets (original characters, <unk> included), so
    bits_per_byte = nats_per_token / ln 2 / bytes_per_token."""
    fractions = check_fractions(val_fraction, test_fraction)
    names = list(doc_names) if doc_names is not None else [f"doc{i}" for i in range(len(docs))]
    if doc_names is not None and len(names) != len(docs):
        raise DataError(f"Expected one name per document, got {len(names)} names for {len(docs)} documents.")
    # merge short docs (names joined with '+') so every doc yields at least one window
    merged: list[str] = []
    merged_names: list[str] = []
    cur, cur_names = "", []
    for d, nm in zip(docs, names):
        cur = d if not cur_names else cur + "\n\n" + d
        cur_names.append(nm)
        if len(cur) >= block_size + 1:
            merged.append(cur)
            merged_names.append("+".join(cur_names))
            cur, cur_names = "", []
    if cur_names:
        if merged:
            merged[-1] = merged[-1] + "\n\n" + cur
            merged_names[-1] = merged_names[-1] + "+" + "+".join(cur_names)
        else:
            merged.append(cur)
            merged_names.append("+".join(cur_names))
    total_chars = sum(len(d) for d in merged)
    if len(merged) < 3 or sum((len(d) - 1) // block_size for d in merged) < 3:
        raise DataError(
            f"Text of {total_chars} characters in {len(merged)} document(s) is too short for "
            f"block_size={block_size}: need at least 3 documents of >= {block_size + 1} characters."
        )
    counts = Counter("".join(merged))
    chars = sorted(c for c, k in counts.items() if k >= min_char_count)
    vocab = (UNK, *chars)
    lut = {c: i + 1 for i, c in enumerate(chars)}
    encoded = [np.array([lut.get(c, 0) for c in d], dtype=np.int64) for d in merged]
    parts = split_documents([len(d) for d in merged], fractions, seed)
    rng = np.random.default_rng([seed, 1])
    splits: list[Split] = []
    test_bytes = test_chars = 0
    for k, (doc_idx, frac) in enumerate(zip(parts, fractions)):
        x, y, ids, offs = lm_windows([encoded[i] for i in doc_idx], doc_idx.tolist(), block_size)
        if max_windows is not None:
            cap = max(1, round(max_windows * frac))
            if len(x) > cap:
                keep = torch.from_numpy(np.sort(rng.choice(len(x), cap, replace=False)))
                x, y, ids, offs = x[keep], y[keep], ids[keep], offs[keep]
        if k == 2:
            for d, o in zip(ids.tolist(), offs.tolist()):
                s = merged[d][o + 1 : o + 1 + block_size]
                test_chars += len(s)
                test_bytes += len(s.encode("utf-8"))
        splits.append(Split(x, y, {"doc_id": ids, "offset": offs}))
    gt = {
        "bytes_per_token": test_bytes / test_chars,
        "unk_id": 0,
        "unk_fraction_test": float((splits[2].y == 0).float().mean()),
        "documents": merged_names,
        "n_documents": {s: int(len(p)) for s, p in zip(SPLITS, parts)},
        "block_size": block_size,
    }
    return Dataset(
        name=name,
        modality="lm",
        task="lm",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        vocab_size=len(vocab),
        vocab=vocab,
        bounds=None,
        ground_truth=gt,
        description=description,
        source=source,
        seed=seed,
    )


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def validate_dataset(ds: Dataset) -> Dataset:
    """Check a Dataset against the contract in workbench.data.base and return it.

    Raises DataError naming the split and the problem for: empty splits, x/y/meta length
    mismatch, wrong rank or dtype per modality (image (N,C,H,W) and tabular (N,F) float;
    tokens (N,T) and lm (N,T) long; classification labels (N,) long; regression targets
    (N,) float; lm targets (N,T) long like x), NaN/inf in float inputs or targets, labels
    outside [0, num_classes), token ids outside [0, vocab_size), inputs outside `bounds`,
    input shapes that differ between splits, and names/vocab lengths that do not match."""
    if not isinstance(ds, Dataset):
        raise DataError(f"Expected a workbench.data.base.Dataset, got {type(ds).__name__}.")
    where = f"Dataset {ds.name!r}"
    if not isinstance(ds.name, str) or not ds.name:
        raise DataError(f"Expected a non-empty dataset name, got {ds.name!r}.")
    if ds.modality not in MODALITIES:
        raise DataError(f"{where}: expected modality in {MODALITIES}, got {ds.modality!r}.")
    if ds.task not in TASKS:
        raise DataError(f"{where}: expected task in {TASKS}, got {ds.task!r}.")
    if (ds.modality == "lm") != (ds.task == "lm"):
        raise DataError(f"{where}: modality 'lm' goes with task 'lm' only, got modality {ds.modality!r} and task {ds.task!r}.")
    if ds.task == "classification":
        if isinstance(ds.num_classes, bool) or not isinstance(ds.num_classes, int) or ds.num_classes < 2:
            raise DataError(f"{where}: classification needs num_classes >= 2, got {ds.num_classes!r}.")
        if ds.class_names is not None and len(ds.class_names) != ds.num_classes:
            raise DataError(f"{where}: {len(ds.class_names)} class_names for num_classes={ds.num_classes}.")
    if ds.modality in ("tokens", "lm"):
        if isinstance(ds.vocab_size, bool) or not isinstance(ds.vocab_size, int) or ds.vocab_size < 1:
            raise DataError(f"{where}: modality {ds.modality!r} needs vocab_size >= 1, got {ds.vocab_size!r}.")
        if ds.vocab is not None and len(ds.vocab) != ds.vocab_size:
            raise DataError(f"{where}: vocab has {len(ds.vocab)} entries for vocab_size={ds.vocab_size}.")
    if ds.bounds is not None:
        if len(ds.bounds) != 2 or not float(ds.bounds[0]) < float(ds.bounds[1]):
            raise DataError(f"{where}: expected bounds (low, high) with low < high, got {ds.bounds!r}.")
    shape = None
    for s in SPLITS:
        sp = ds.split(s)
        w = f"{where}, split {s!r}"
        if not isinstance(sp.x, torch.Tensor) or not isinstance(sp.y, torch.Tensor):
            raise DataError(f"{w}: expected x and y to be torch tensors, got {type(sp.x).__name__} and {type(sp.y).__name__}.")
        n = sp.x.shape[0] if sp.x.dim() else 0
        if n == 0:
            raise DataError(f"{w} is empty (0 examples); use more data or smaller val/test fractions.")
        if sp.y.dim() == 0 or sp.y.shape[0] != n:
            raise DataError(f"{w}: x has {n} examples but y has {tuple(sp.y.shape)[:1] or 'no'} (shape {tuple(sp.y.shape)}).")
        for k, v in sp.meta.items():
            if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != n:
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise DataError(f"{w}: meta[{k!r}] must have {n} rows like x, got {got}.")
        _check_inputs(ds, sp, w)
        _check_targets(ds, sp, w)
        if shape is None:
            shape = tuple(sp.x.shape[1:])
        elif tuple(sp.x.shape[1:]) != shape:
            raise DataError(f"{w}: input shape {tuple(sp.x.shape[1:])} differs from train's {shape}.")
    if ds.modality == "tabular" and ds.feature_names is not None and len(ds.feature_names) != shape[0]:
        raise DataError(f"{where}: {len(ds.feature_names)} feature_names for {shape[0]} features.")
    return ds


def _first_bad(mask: torch.Tensor) -> int:
    return int(mask.reshape(mask.shape[0], -1).any(dim=1).nonzero()[0, 0])


def _check_inputs(ds: Dataset, sp: Split, w: str) -> None:
    x = sp.x
    rank = {"image": 4, "tabular": 2, "tokens": 2, "lm": 2}[ds.modality]
    if x.dim() != rank:
        want = {"image": "(N, C, H, W)", "tabular": "(N, F)", "tokens": "(N, T)", "lm": "(N, T)"}[ds.modality]
        raise DataError(f"{w}: modality {ds.modality!r} expects x of shape {want}, got {tuple(x.shape)}.")
    if ds.modality in ("image", "tabular"):
        if not x.is_floating_point():
            raise DataError(f"{w}: modality {ds.modality!r} expects float inputs, got dtype {x.dtype}.")
        bad = ~torch.isfinite(x)
        if bad.any():
            raise DataError(
                f"{w}: x has {int(bad.sum())} NaN/inf value(s), first in example {_first_bad(bad)}."
            )
        if ds.bounds is not None:
            lo, hi = float(ds.bounds[0]), float(ds.bounds[1])
            out = (x < lo) | (x > hi)
            if out.any():
                raise DataError(
                    f"{w}: x has {int(out.sum())} value(s) outside bounds ({lo}, {hi}), "
                    f"range [{float(x.min()):.4g}, {float(x.max()):.4g}], first in example {_first_bad(out)}."
                )
    else:
        if x.dtype != torch.long:
            raise DataError(f"{w}: modality {ds.modality!r} expects token ids of dtype torch.long, got {x.dtype}.")
        _check_ids(x, ds.vocab_size, f"{w}: token id", "vocab_size")


def _check_ids(t: torch.Tensor, size: int, what: str, size_name: str) -> None:
    if t.numel() == 0:
        return
    bad = (t < 0) | (t >= size)
    if bad.any():
        raise DataError(
            f"{what} out of range: expected ids in [0, {size}) ({size_name}={size}), got "
            f"min {int(t.min())} max {int(t.max())} ({int(bad.sum())} bad, first in example {_first_bad(bad)})."
        )


def _check_targets(ds: Dataset, sp: Split, w: str) -> None:
    y = sp.y
    if ds.task == "classification":
        if y.dim() != 1 or y.dtype != torch.long:
            raise DataError(f"{w}: classification labels must be (N,) torch.long, got shape {tuple(y.shape)} dtype {y.dtype}.")
        _check_ids(y, ds.num_classes, f"{w}: label", "num_classes")  # type: ignore[arg-type]
    elif ds.task == "regression":
        if y.dim() != 1 or not y.is_floating_point():
            raise DataError(f"{w}: regression targets must be (N,) float, got shape {tuple(y.shape)} dtype {y.dtype}.")
        bad = ~torch.isfinite(y)
        if bad.any():
            raise DataError(f"{w}: y has {int(bad.sum())} NaN/inf target(s), first in example {int(bad.nonzero()[0, 0])}.")
    else:
        if y.shape != sp.x.shape or y.dtype != torch.long:
            raise DataError(
                f"{w}: lm targets must be torch.long of x's shape {tuple(sp.x.shape)}, got shape {tuple(y.shape)} dtype {y.dtype}."
            )
        _check_ids(y, ds.vocab_size, f"{w}: target token id", "vocab_size")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------


def _existing_file(path: object, what: str) -> Path:
    if not isinstance(path, (str, Path)):
        raise ParameterTypeError(f"Expected `path` to be a file path string, got {type(path).__name__} {path!r}.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} file not found: {str(p)!r} (resolved to {str(p.resolve())!r}).")
    return p


def _parse_number(v: str) -> float:
    return float(v.strip())


def _label_order(values: Sequence[str]) -> list[str]:
    """Sorted distinct labels; numerically when every label is a number ("2" < "10")."""
    distinct = sorted(set(values))
    try:
        return sorted(distinct, key=lambda s: (float(s), s))
    except ValueError:
        return distinct


def load_csv(
    path: str | Path,
    *,
    target: str,
    task: str = "classification",
    features: Sequence[str] | None = None,
    seed: int = 0,
    name: str | None = None,
    dropna: bool = False,
    delimiter: str = ",",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    standardize_target: bool = True,
    **unknown: Any,
) -> Dataset:
    """A tabular Dataset from a CSV file with a header row.

    target: the label column. task "classification": its distinct values (stripped
    strings) become class_names, sorted (numerically if all are numbers), and y the
    index into them; "regression": it must be numeric. features: the numeric columns
    to use (default: every column but the target). Missing values ("", NA, NaN, null,
    None, ?) raise DataError naming the row and column unless `dropna=True`, which drops
    those rows. Features are standardised with train statistics; a regression target too
    when `standardize_target` (scale kept in ground_truth). Splits 60/20/20 by default,
    stratified for classification, seeded."""
    reject_unknown_options("load_csv", unknown, load_csv)
    seed = check_seed(seed)
    p = _existing_file(path, "CSV")
    check_choice("task", task, ("classification", "regression"))
    dropna = check_bool("dropna", dropna)
    standardize_target = check_bool("standardize_target", standardize_target)
    if not isinstance(target, str):
        raise ParameterTypeError(f"Expected `target` to be a column name string, got {type(target).__name__} {target!r}.")
    with p.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"CSV file {str(p)!r} has no data rows (expected a header row and data rows).")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise ConfigError(
            f"Target column {target!r} not in {str(p)!r}.{did_you_mean(target, header)} Columns: {', '.join(header)}."
        )
    if features is None:
        feats = [h for h in header if h != target]
    else:
        if isinstance(features, str) or not isinstance(features, Sequence):
            raise ParameterTypeError(f"Expected `features` to be a list of column names, got {features!r}.")
        feats = list(features)
        for c in feats:
            if c not in header:
                raise ConfigError(f"Feature column {c!r} not in {str(p)!r}.{did_you_mean(str(c), header)} Columns: {', '.join(header)}.")
        if target in feats:
            raise ConfigError(f"Column {target!r} is the target; remove it from `features`.")
    if not feats:
        raise DataError(f"CSV file {str(p)!r} has no feature columns besides the target {target!r}.")
    col = {h: i for i, h in enumerate(header)}
    xs: list[list[float]] = []
    ys: list[str] = []
    for r_i, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise DataError(f"CSV {str(p)!r} data row {r_i}: expected {len(header)} fields like the header, got {len(row)}.")
        missing = [c for c in [*feats, target] if row[col[c]].strip().lower() in MISSING]
        if missing:
            if dropna:
                continue
            raise DataError(
                f"CSV {str(p)!r} data row {r_i}, column {missing[0]!r}: missing value {row[col[missing[0]]]!r}. "
                f"Fill it, or pass dropna=true to drop rows with missing values."
            )
        vals = []
        for c in feats:
            try:
                v = _parse_number(row[col[c]])
            except ValueError:
                raise DataError(
                    f"CSV {str(p)!r} data row {r_i}, column {c!r}: expected a number, got {row[col[c]]!r}. "
                    f"Only numeric feature columns are supported; choose them with `features=[...]`."
                ) from None
            if not math.isfinite(v):
                raise DataError(f"CSV {str(p)!r} data row {r_i}, column {c!r}: non-finite value {row[col[c]]!r}.")
            vals.append(v)
        xs.append(vals)
        ys.append(row[col[target]].strip())
    if not xs:
        raise DataError(f"CSV {str(p)!r}: no rows left after dropping rows with missing values.")
    x = np.asarray(xs, dtype=np.float64)
    if task == "classification":
        classes = _label_order(ys)
        if len(classes) < 2:
            raise DataError(f"CSV {str(p)!r}: target {target!r} has a single class {classes}; classification needs >= 2.")
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in ys], dtype=np.int64)
        class_names: list[str] | None = classes
    else:
        try:
            y = np.array([_parse_number(v) for v in ys], dtype=np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(ys) if not _is_number(v))
            raise DataError(f"CSV {str(p)!r}: regression target {target!r} must be numeric, got {ys[bad]!r}.") from None
        class_names = None
    ds = tabular_dataset(
        x, y, name=name or p.stem, task=task, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        class_names=class_names, feature_names=feats, standardize_target=standardize_target,
        description=f"CSV {p.name}: {len(x)} rows, {len(feats)} numeric features, target {target!r} ({task}).",
        source=f"user file {str(p)}",
    )
    return validate_dataset(ds)


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


def load_text(
    path: str | Path,
    *,
    block_size: int = 64,
    seed: int = 0,
    name: str | None = None,
    max_windows: int | None = None,
    min_char_count: int = 1,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    encoding: str = "utf-8",
    **unknown: Any,
) -> Dataset:
    """A character-level LM Dataset from a text file, like `pydoc_text`.

    Documents are paragraphs (separated by blank lines); consecutive short paragraphs are
    merged until each has block_size+1 characters. See `char_lm_dataset` for the vocab,
    the split by documents, windows, meta["doc_id"] and ground_truth["bytes_per_token"]."""
    reject_unknown_options("load_text", unknown, load_text)
    seed = check_seed(seed)
    p = _existing_file(path, "Text")
    block_size = check_positive_int("block_size", block_size)
    max_windows = check_optional_positive_int("max_windows", max_windows)
    min_char_count = check_positive_int("min_char_count", min_char_count)
    try:
        text = p.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"Text file {str(p)!r} is not valid {encoding}: {e}.") from None
    text = text.replace("\r\n", "\n")
    paragraphs = [q.strip("\n") for q in text.split("\n\n")]
    paragraphs = [q for q in paragraphs if q.strip()]
    ds = char_lm_dataset(
        paragraphs, name=name or p.stem, seed=seed, block_size=block_size, max_windows=max_windows,
        min_char_count=min_char_count, val_fraction=val_fraction, test_fraction=test_fraction,
        description=f"Character-level LM on {p.name} ({len(text)} characters), documents = paragraphs.",
        source=f"user file {str(p)}",
    )
    return validate_dataset(ds)


# --------------------------------------------------------------------------------------
# Tensors (.pt / .npz) and callables
# --------------------------------------------------------------------------------------

_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _as_tensor(v: Any, key: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise DataError(f"Array {key!r} has dtype object; expected numbers.")
        return torch.from_numpy(np.ascontiguousarray(v))
    raise DataError(f"Expected {key!r} to be a tensor or numpy array, got {type(v).__name__}.")


def _infer_kind(x: torch.Tensor, y: torch.Tensor) -> tuple[str, str]:
    """(modality, task) guessed from shapes and dtypes."""
    integer_x = not x.is_floating_point()
    if integer_x and y.shape == x.shape:
        return "lm", "lm"
    modality = "tokens" if integer_x else ("image" if x.dim() == 4 else "tabular")
    task = "regression" if y.is_floating_point() and not _integral(y) else "classification"
    return modality, task


def _integral(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all() and (t == t.round()).all())


def from_tensors(
    tensors: Mapping[str, Any],
    *,
    task: str | None = None,
    modality: str | None = None,
    seed: int = 0,
    name: str = "user_tensors",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    vocab_size: int | None = None,
    vocab: Sequence[str] | None = None,
    bounds: Sequence[float] | None = None,
    feature_names: Sequence[str] | None = None,
    standardize: bool = False,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    description: str = "",
    source: str = "",
) -> Dataset:
    """A Dataset from a dict of tensors/arrays: either the six keys x_train, y_train,
    x_val, y_val, x_test, y_test, or x and y, split with the seed (stratified for
    classification). Missing task/modality are inferred (integer x with y of x's shape ->
    lm; integer x -> tokens; 4-D float x -> image; else tabular; float y with non-integer
    values -> regression). dtypes are converted (float inputs -> float32, ids and labels
    -> long; labels must be whole numbers); num_classes defaults to max label + 1,
    vocab_size to max token id + 1; image bounds default to (0, 1) when all inputs lie in
    it. `standardize` standardises tabular inputs with train statistics (off: the user's
    own preprocessing is kept). The result is validated."""
    seed = check_seed(seed)
    keys = set(tensors)
    if keys >= set(_SPLIT_KEYS):
        extra = keys - set(_SPLIT_KEYS)
        parts = [(_as_tensor(tensors[f"x_{s}"], f"x_{s}"), _as_tensor(tensors[f"y_{s}"], f"y_{s}")) for s in SPLITS]
    elif keys >= {"x", "y"}:
        extra = keys - {"x", "y"}
        x, y = _as_tensor(tensors["x"], "x"), _as_tensor(tensors["y"], "y")
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise DataError(f"{name}: x has shape {tuple(x.shape)} but y has shape {tuple(y.shape)}; expected the same number of rows.")
        parts = None
    else:
        raise DataError(
            f"{name}: expected keys {list(_SPLIT_KEYS)} or ['x', 'y'], got {sorted(keys)}."
        )
    if extra:
        raise DataError(f"{name}: unexpected key(s) {sorted(extra)}; expected {list(_SPLIT_KEYS)} or ['x', 'y'].")
    x0, y0 = parts[0] if parts else (x, y)
    inferred_modality, inferred_task = _infer_kind(x0, y0)
    modality = check_choice("modality", modality or inferred_modality, MODALITIES)
    task = check_choice("task", task or ("lm" if modality == "lm" else inferred_task), TASKS)
    fractions = check_fractions(val_fraction, test_fraction)
    if parts is None:
        labels = y.numpy() if task == "classification" and y.dim() == 1 else None
        idx = split_indices(len(x), fractions, seed, labels=labels)
        parts = [(x[torch.from_numpy(i)], y[torch.from_numpy(i)]) for i in idx]

    def conv_x(t: torch.Tensor, s: str) -> torch.Tensor:
        if modality in ("tokens", "lm"):
            if t.is_floating_point() and not _integral(t):
                raise DataError(f"{name}, split {s!r}: token ids must be whole numbers, got non-integer floats.")
            return t.long()
        return t.float() if t.is_floating_point() else t.to(torch.float32)

    def conv_y(t: torch.Tensor, s: str) -> torch.Tensor:
        if task == "regression":
            return t.float()
        if t.is_floating_point() and not _integral(t):
            raise DataError(f"{name}, split {s!r}: {task} labels must be whole numbers, got non-integer floats.")
        return t.long()

    parts = [(conv_x(a, s), conv_y(b, s)) for (a, b), s in zip(parts, SPLITS)]
    gt: dict[str, Any] = {}
    if standardize:
        if modality != "tabular":
            raise ConfigError(f"`standardize` applies to tabular inputs only, got modality {modality!r}.")
        xs, mean, std = train_standardize(*[p[0].double().numpy() for p in parts])
        parts = [(_float32(a), b) for a, (_, b) in zip(xs, parts)]
        gt["standardization"] = {"mean": mean.tolist(), "std": std.tolist()}
    if task == "regression":
        gt.update(target_mean=0.0, target_std=1.0)
    if task == "classification" and num_classes is None:
        num_classes = len(class_names) if class_names is not None else int(max(int(b.max()) for _, b in parts if b.numel())) + 1
    if modality in ("tokens", "lm") and vocab_size is None:
        vocab_size = len(vocab) if vocab is not None else int(max(int(a.max()) for a, _ in parts if a.numel())) + 1
    bnds = None
    if bounds is not None:
        if isinstance(bounds, (str, bytes)) or len(bounds) != 2:
            raise ConfigError(f"Expected `bounds` to be [low, high], got {bounds!r}.")
        bnds = (float(bounds[0]), float(bounds[1]))
    elif modality == "image":
        lo = min(float(a.min()) for a, _ in parts if a.numel())
        hi = max(float(a.max()) for a, _ in parts if a.numel())
        if lo < 0 or hi > 1:
            raise ConfigError(
                f"{name}: image inputs range over [{lo:.4g}, {hi:.4g}], not [0, 1]; pass bounds=[low, high] "
                f"(the valid input range attacks and corruptions must stay in)."
            )
        bnds = (0.0, 1.0)
    ds = Dataset(
        name=name,
        modality=modality,  # type: ignore[arg-type]
        task=task,  # type: ignore[arg-type]
        train=Split(*parts[0]),
        val=Split(*parts[1]),
        test=Split(*parts[2]),
        num_classes=num_classes if task == "classification" else None,
        class_names=tuple(class_names) if class_names is not None else None,
        vocab_size=vocab_size if modality in ("tokens", "lm") else None,
        vocab=tuple(vocab) if vocab is not None else None,
        bounds=bnds,
        feature_names=tuple(feature_names) if feature_names is not None else None,
        ground_truth=gt,
        description=description,
        source=source,
        seed=seed,
    )
    return validate_dataset(ds)


def load_tensor_file(
    path: str | Path,
    *,
    task: str | None = None,
    modality: str | None = None,
    seed: int = 0,
    name: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    vocab_size: int | None = None,
    vocab: Sequence[str] | None = None,
    bounds: Sequence[float] | None = None,
    feature_names: Sequence[str] | None = None,
    standardize: bool = False,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    **unknown: Any,
) -> Dataset:
    """A Dataset from a .pt file (a dict of tensors, read with torch.load(weights_only=True):
    no code runs) or a .npz file (read with allow_pickle=False). Keys and options as in
    `from_tensors`."""
    reject_unknown_options("load_tensor_file", unknown, load_tensor_file)
    p = _existing_file(path, "Tensor")
    suffix = p.suffix.lower()
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refused or corrupt file
            raise DataError(f"Could not read {str(p)!r} with torch.load(weights_only=True): {e}") from None
        if not isinstance(obj, Mapping):
            raise DataError(f"{str(p)!r} holds a {type(obj).__name__}; expected a dict of tensors.")
        tensors = dict(obj)
    elif suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                tensors = {k: z[k] for k in z.files}
        except ValueError as e:
            raise DataError(f"Could not read {str(p)!r} with numpy.load(allow_pickle=False): {e}") from None
    else:
        raise ConfigError(f"Expected a .pt, .pth or .npz file, got {p.name!r}.")
    return from_tensors(
        tensors, task=task, modality=modality, seed=seed, name=name or p.stem, num_classes=num_classes,
        class_names=class_names, vocab_size=vocab_size, vocab=vocab, bounds=bounds, feature_names=feature_names,
        standardize=check_bool("standardize", standardize), val_fraction=val_fraction, test_fraction=test_fraction,
        description=f"Tensors from {p.name}.", source=f"user file {str(p)}",
    )


def load_callable(
    function: str,
    *,
    seed: int = 0,
    dataset_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Call "package.module:function"(**kwargs) and return its data as a validated Dataset.

    `seed` is passed to the function when it takes a `seed` parameter (or **kwargs). The
    function may return a Dataset, a dict of tensors/arrays (keys as in `from_tensors`),
    a tuple (x, y), or a 6-tuple (x_train, y_train, x_val, y_val, x_test, y_test).
    `dataset_options` (task, modality, name, num_classes, vocab_size, bounds, ...) go to
    `from_tensors` when tensors come back."""
    seed = check_seed(seed)
    if not isinstance(function, str) or ":" not in function:
        raise ConfigError(f"Expected `function` as 'package.module:function', got {function!r}.")
    mod_name, _, attr = function.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"Could not import module {mod_name!r} for dataset function {function!r}: {e}.") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ConfigError(f"Module {mod_name!r} has no function {attr!r}.{did_you_mean(attr, public)}")
    params = inspect.signature(fn).parameters
    if "seed" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {"seed": seed, **kwargs}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in params:
                raise ConfigError(
                    f"{function!r} takes no option {key!r}.{did_you_mean(key, params)} "
                    f"Its parameters: {', '.join(params) or '(none)'}."
                )
    out = fn(**kwargs)
    if isinstance(out, Dataset):
        return validate_dataset(out)
    opts = dict(dataset_options or {})
    opts.setdefault("name", attr)
    opts.setdefault("source", f"python function {function}")
    if isinstance(out, Mapping):
        tensors = dict(out)
    elif isinstance(out, tuple) and len(out) in (2, 6):
        keys = ("x", "y") if len(out) == 2 else _SPLIT_KEYS
        tensors = dict(zip(keys, out))
    else:
        raise DataError(
            f"Dataset function {function!r} returned {type(out).__name__}"
            f"{f' of length {len(out)}' if isinstance(out, tuple) else ''}; expected a Dataset, a dict of tensors, "
            f"(x, y) or (x_train, y_train, x_val, y_val, x_test, y_test)."
        )
    allowed = set(inspect.signature(from_tensors).parameters) - {"tensors", "seed"}
    for k in opts:
        if k not in allowed:
            raise ConfigError(f"Unknown dataset option {k!r}.{did_you_mean(k, allowed)} Valid: {', '.join(sorted(allowed))}.")
    return from_tensors(tensors, seed=seed, **opts)


# --------------------------------------------------------------------------------------
# One entry point for plans
# --------------------------------------------------------------------------------------


def load_dataset(name_or_table: str | Mapping[str, Any], seed: int = 0) -> Dataset:
    """The Dataset a plan names, validated.

    A string is a registered dataset name (workbench.registry.DATASETS). A table with
    "source" = "csv" | "text" | "tensors" | "callable" goes to load_csv / load_text /
    load_tensor_file / load_callable with its other keys as options ("path" or "function"
    required; for "callable", "name" is the display name of tensors it returns, not an
    argument of the function). A table without "source" must have "name" (a registered
    dataset) and its other keys are that dataset's options. A "seed" key in the table
    overrides `seed`."""
    from workbench.registry import DATASETS

    seed = check_seed(seed)
    if isinstance(name_or_table, str):
        return validate_dataset(DATASETS.get(name_or_table)(seed=seed))
    if not isinstance(name_or_table, Mapping):
        raise ParameterTypeError(
            f"Expected a dataset name or a table of options, got {type(name_or_table).__name__} {name_or_table!r}."
        )
    opts = dict(name_or_table)
    seed = check_seed(opts.pop("seed", seed))
    if "source" not in opts:
        if "name" not in opts:
            raise ConfigError(
                f"A dataset table needs 'name' (a registered dataset) or 'source' (one of {list(SOURCES)}), got keys {sorted(opts)}."
            )
        name = opts.pop("name")
        return validate_dataset(DATASETS.get(name)(seed=seed, **opts))
    source = check_choice("source", opts.pop("source"), SOURCES)
    if source == "callable":
        if "function" not in opts:
            raise ConfigError("A dataset table with source = 'callable' needs 'function' = 'package.module:function'.")
        function = opts.pop("function")
        name = opts.pop("name", None)  # the display name, not an argument of the function
        if name is not None:
            dataset_options = dict(opts.pop("dataset_options", None) or {})
            dataset_options.setdefault("name", name)
            opts["dataset_options"] = dataset_options
        return load_callable(function, seed=seed, **opts)
    if "path" not in opts:
        raise ConfigError(f"A dataset table with source = {source!r} needs 'path'.")
    path = opts.pop("path")
    loader = {"csv": load_csv, "text": load_text, "tensors": load_tensor_file}[source]
    return loader(path, seed=seed, **opts)
