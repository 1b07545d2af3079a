"""`validate_dataset`: check a Dataset against the contract in `workbench.data.base`."""

from __future__ import annotations

import torch

from workbench.data.base import SPLITS, Dataset, Split
from workbench.errors import DataError

MODALITIES = ("image", "tabular", "tokens", "lm")
TASKS = ("classification", "regression", "lm")

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


