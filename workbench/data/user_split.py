"""The user's own train/val/test split, in the three forms a plan can give it.

- a split column (CSV): each row says `train`, `val` (or `validation`, `valid`) or `test`;
- separate files: `path = { train = "...", val = "...", test = "..." }`;
- index files: `split_files = { val = "val_rows.txt", test = "test_rows.npy" }`, 0-based
  row numbers (text: whitespace-separated integers; `.npy`: read with allow_pickle=False);
  rows listed in no file are train (or, with a `train` file, rows in none are an error).

In every form `val` may be left out: it is then a seeded random share (`val_fraction`,
stratified for classification) of the user's train rows, and the provenance says so.
The user's test rows are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.checks import existing_file
from workbench.data.splits import split_indices
from workbench.errors import ConfigError, DataError, ParameterTypeError, did_you_mean

SPLIT_WORDS = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "dev": 1, "test": 2}
FILE_KEYS = ("train", "val", "test")


def check_split_table(name: str, table: object, *, need_train: bool) -> dict[str, Any]:
    """A {train?, val?, test} table of a plan (`path` or `split_files`), checked."""
    if not isinstance(table, Mapping):
        raise ParameterTypeError(f"Expected `{name}` to be a table such as {{ train = ..., test = ... }}, "
                                 f"got {type(table).__name__} {table!r}.")
    for k in table:
        if k not in FILE_KEYS:
            raise ConfigError(f"Unknown split {k!r} in `{name}`.{did_you_mean(str(k), FILE_KEYS)} "
                              f"Valid splits: {', '.join(FILE_KEYS)}.")
    required = ("train", "test") if need_train else ("test",)
    for k in required:
        if k not in table:
            raise ConfigError(f"`{name}` needs a {k!r} entry (it has {', '.join(sorted(table)) or 'none'}).")
    return dict(table)


def parts_from_column(values: Sequence[str], column: str, where: str) -> tuple[list[np.ndarray], bool]:
    """Row indices per split from a split column's values; (parts, val_given)."""
    codes = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        key = v.strip().lower()
        if key not in SPLIT_WORDS:
            raise DataError(
                f"{where} data row {i + 1}, split column {column!r}: unknown split {v!r}.{did_you_mean(key, SPLIT_WORDS)} "
                f"Expected one of train, val (or validation), test."
            )
        codes[i] = SPLIT_WORDS[key]
    parts = [np.flatnonzero(codes == k) for k in range(3)]
    return parts, len(parts[1]) > 0


def read_index_file(path: object, n: int, what: str) -> np.ndarray:
    """0-based row numbers from a text or .npy file, checked against n rows."""
    p = existing_file(path, f"{what} index")
    if p.suffix.lower() == ".npy":
        try:
            idx = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{what} index file {str(p)!r} is not a plain .npy array: {exc}") from None
    else:
        try:
            words = p.read_text(encoding="utf-8").replace(",", " ").split()
        except UnicodeDecodeError as exc:
            raise DataError(f"{what} index file {str(p)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
        try:
            idx = np.array([int(w) for w in words], dtype=np.int64)
        except ValueError:
            bad = next(w for w in words if not w.lstrip("-").isdigit())
            raise DataError(f"{what} index file {str(p)!r}: expected whole row numbers, got {bad!r}.") from None
    idx = np.asarray(idx)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise DataError(f"{what} index file {str(p)!r}: expected a 1-D list of integer row numbers, "
                        f"got shape {idx.shape} dtype {idx.dtype}.")
    idx = idx.astype(np.int64)
    if idx.size == 0:
        raise DataError(f"{what} index file {str(p)!r} lists no rows.")
    if idx.min() < 0 or idx.max() >= n:
        raise DataError(f"{what} index file {str(p)!r}: row numbers must be in [0, {n}) (0-based, {n} data rows), "
                        f"got min {int(idx.min())} max {int(idx.max())}.")
    if len(np.unique(idx)) != len(idx):
        raise DataError(f"{what} index file {str(p)!r} lists a row twice.")
    return np.sort(idx)


def parts_from_index_files(n: int, files: Mapping[str, Any]) -> tuple[list[np.ndarray], bool]:
    """Row indices per split from `split_files`; (parts, val_given). Overlaps are errors."""
    files = check_split_table("split_files", files, need_train=False)
    got = {k: read_index_file(v, n, k) for k, v in files.items()}
    owner = np.full(n, -1, dtype=np.int64)
    for k in FILE_KEYS:
        if k not in got:
            continue
        clash = owner[got[k]] >= 0
        if clash.any():
            row = int(got[k][clash][0])
            raise DataError(f"split_files: row {row} is in both {FILE_KEYS[owner[row]]!r} and {k!r}; "
                            "the splits must not overlap.")
        owner[got[k]] = FILE_KEYS.index(k)
    if "train" not in got:
        owner[owner < 0] = 0
    elif (owner < 0).any():
        raise DataError(f"split_files: {int((owner < 0).sum())} row(s) are in no split (first: row "
                        f"{int(np.flatnonzero(owner < 0)[0])}); list them, or leave out `train` to make the rest train.")
    return [np.flatnonzero(owner == k) for k in range(3)], "val" in got


def carve_val(parts: list[np.ndarray], val_fraction: float, seed: int, labels: np.ndarray | None,
              note: str) -> tuple[list[np.ndarray], str]:
    """When the user gave train and test but no val: val = a seeded share of the train rows."""
    train = parts[0]
    if len(train) < 2:
        raise DataError(f"The user's train split has {len(train)} row(s); it needs at least 2 to hold out validation rows.")
    lab = labels[train] if labels is not None else None
    keep, val = split_indices(len(train), (1 - val_fraction, val_fraction), seed, labels=lab)
    note += (f"; val = a seeded random {round(100 * val_fraction)}% of the user's train rows (seed {seed}"
             f"{', stratified' if labels is not None else ''})")
    return [train[keep], train[val], parts[2]], note


def resolve_user_split(n: int, *, column_values: Sequence[str] | None, column: str | None,
                       files: Mapping[str, Any] | None, file_sizes: Sequence[int] | None,
                       val_fraction: float, seed: int, labels: np.ndarray | None,
                       where: str) -> tuple[list[np.ndarray], str] | None:
    """(train, val, test row indices, a note for the provenance) from whichever form the
    plan gave, or None when it gave none. `file_sizes`: rows per file when `path` was a
    table of split files (in the order of its keys train, val, test present)."""
    given = [k for k, v in (("split_column", column), ("split_files", files), ("path table", file_sizes))
             if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{where}: give the split one way, got {' and '.join(given)}.")
    if column is not None:
        parts, has_val = parts_from_column(column_values or [], column, where)
        note = f"given by the user: split column {column!r}"
    elif files is not None:
        parts, has_val = parts_from_index_files(n, files)
        note = "given by the user: index files " + ", ".join(f"{k}={str(Path(v).name)}" for k, v in files.items())
    elif file_sizes is not None:
        bounds = np.cumsum([0, *file_sizes])
        parts = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(file_sizes))]
        has_val = len(file_sizes) == 3
        if not has_val:
            parts = [parts[0], np.zeros(0, np.int64), parts[1]]
        note = "given by the user: separate train/val/test files" if has_val else "given by the user: separate train/test files"
    else:
        return None
    for k, split in ((0, "train"), (2, "test")):
        if len(parts[k]) == 0:
            raise DataError(f"{where}: the user's {split} split is empty.")
    if not has_val:
        parts, note = carve_val(parts, val_fraction, seed, labels, note)
    return parts, note
