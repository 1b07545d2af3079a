"""Splits and the dataset builders the built-in and synthetic datasets share: seeded
stratified splits, train-only standardisation, tabular datasets, char-level LM windows.

Everything here is deterministic for a seed."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.data.base import SPLITS, Dataset, Split
from workbench.data.checks import check_fractions
from workbench.errors import DataError

UNK = "<unk>"

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
    parts: Sequence[np.ndarray] | None = None,
    split_note: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> Dataset:
    """A tabular Dataset from x (N, F) and y (N,): the user's split (`parts`: train, val
    and test row indices, described by `split_note`) or a seeded split (stratified for
    classification); features standardised with train statistics only when
    `standardize_features`, and for regression optionally the target too. The statistics go to ground_truth["standardization"]
    ({"mean": [F], "std": [F]}) and ground_truth["target_mean"/"target_std"] (regression;
    0 and 1 when the target is left in its units), so MSE in original units is
    mse * target_std**2."""
    prov = dict(provenance or {})
    transforms = list(prov.get("transforms", []))
    if parts is None:
        fractions = check_fractions(val_fraction, test_fraction)
        strat = y if task == "classification" else None
        tr, va, te = split_indices(len(x), fractions, seed, labels=strat)
        prov.setdefault("split", random_split_note(seed, fractions, stratified=strat is not None))
        prov.setdefault("user_split", False)
    else:
        tr, va, te = parts
        prov["split"] = split_note or "given by the user"
        prov["user_split"] = True
    gt = dict(ground_truth or {})
    xs = [x[tr], x[va], x[te]]
    if standardize_features:
        xs, mean, std = train_standardize(*xs)
        gt["standardization"] = {"mean": mean.tolist(), "std": std.tolist()}
        transforms.append("standardize features: (x - mean) / std with the train split's mean and std "
                          "(ddof 0, constant columns std 1); values in ground_truth.standardization")
    ys = [y[tr], y[va], y[te]]
    if task == "regression":
        if standardize_target:
            ys, tmean, tstd = train_standardize(*ys)
            gt["target_mean"], gt["target_std"] = float(tmean), float(tstd)
            transforms.append(f"standardize target: (y - {float(tmean):.6g}) / {float(tstd):.6g} (train statistics)")
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
        provenance={**prov, "transforms": transforms},
    )


def random_split_note(seed: int, fractions: Sequence[float], *, stratified: bool) -> str:
    """How the workbench split data the user gave no split for."""
    pct = "/".join(f"{round(100 * f):d}" for f in fractions)
    return (f"made by the workbench: seeded random {pct} train/val/test split (seed {seed}"
            f"{', stratified by class' if stratified else ''})")


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


def _merge_short(docs: list[str], names: list[str], block_size: int) -> tuple[list[str], list[str]]:
    """Merge consecutive short documents (names joined with '+') so each yields a window."""
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
    return merged, merged_names


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
    groups: Sequence[int] | None = None,
    split_note: str | None = None,
) -> Dataset:
    """A character-level LM Dataset from documents.

    `groups` (one of 0, 1, 2 per document: train, val, test) is the user's split; without
    it the documents are split by the seed.

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
    if groups is None:
        merged, merged_names = _merge_short(list(docs), names, block_size)
        total_chars = sum(len(d) for d in merged)
        if len(merged) < 3 or sum((len(d) - 1) // block_size for d in merged) < 3:
            raise DataError(
                f"Text of {total_chars} characters in {len(merged)} document(s) is too short for "
                f"block_size={block_size}: need at least 3 documents of >= {block_size + 1} characters."
            )
        parts = split_documents([len(d) for d in merged], fractions, seed)
    else:  # the user's split: documents stay in their split; short ones merge within it
        if len(groups) != len(docs):
            raise DataError(f"Expected one split per document, got {len(groups)} for {len(docs)} documents.")
        merged, merged_names, parts = [], [], []
        for k, split in enumerate(SPLITS):
            m, mn = _merge_short([d for d, g in zip(docs, groups) if g == k],
                                 [nm for nm, g in zip(names, groups) if g == k], block_size)
            if sum((len(d) - 1) // block_size for d in m) < 1:
                raise DataError(
                    f"The {split} split's text ({sum(len(d) for d in m)} characters) is too short for "
                    f"block_size={block_size}: it needs at least {block_size + 1} characters."
                )
            parts.append(np.arange(len(merged), len(merged) + len(m), dtype=np.int64))
            merged += m
            merged_names += mn
    counts = Counter("".join(merged))
    chars = sorted(c for c, k in counts.items() if k >= min_char_count)
    vocab = (UNK, *chars)
    lut = {c: i + 1 for i, c in enumerate(chars)}
    encoded = [np.array([lut.get(c, 0) for c in d], dtype=np.int64) for d in merged]
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
        provenance={
            "split": (split_note or "given by the user") if groups is not None else
            f"made by the workbench: documents assigned to train/val/test by character share (seed {seed})",
            "user_split": groups is not None,
            "transforms": [
                f"tokenize: character level, vocabulary of {len(vocab)} (id 0 '<unk>' for characters seen "
                f"fewer than {min_char_count} times)",
                f"windows: non-overlapping, block_size {block_size}"
                + (f", at most {max_windows} windows in all (seeded)" if max_windows is not None else ""),
            ],
        },
    )


