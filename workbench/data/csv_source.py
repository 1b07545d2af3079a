"""`source = "csv"`: a tabular Dataset from CSV files, exactly as given.

Values reach the model as written in the file (parsed as numbers, stored as float32);
standardisation happens only with `standardize = true` and is then recorded in the
dataset's provenance. The user's split (a split column, separate files, index files) wins
over the workbench's seeded split. Label strings become ids in a recorded mapping.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.base import Dataset
from workbench.data.checks import check_bool, check_fractions, check_seed, existing_file, reject_unknown_options
from workbench.data.splits import tabular_dataset
from workbench.data.user_split import FILE_KEYS, check_split_table, resolve_user_split
from workbench.data.validate import validate_dataset
from workbench.errors import ConfigError, DataError, ParameterTypeError, check_choice, did_you_mean

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


def read_csv_rows(path: object, *, encoding: str = "utf-8", delimiter: str = ",") -> tuple[Path, list[str], list[list[str]]]:
    """(path, header, data rows) of a CSV file with a header row; blank lines dropped.

    Errors name the file: bytes that are not valid `encoding` (with the line and the
    `encoding` option to set), duplicate or empty column names, no data rows."""
    p = existing_file(path, "CSV")
    if not isinstance(encoding, str):
        raise ParameterTypeError(f"Expected `encoding` to be a codec name such as 'utf-8' or 'latin-1', got {encoding!r}.")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"Unknown `encoding` {encoding!r}; use a Python codec name such as 'utf-8', 'latin-1', 'cp1252'.") from None
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise ConfigError(f"Expected `delimiter` to be one character such as ',' ';' or '\\t', got {delimiter!r}.")
    raw = p.read_bytes()
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"CSV {str(p)!r} line {line}: byte {exc.start} ({raw[exc.start:exc.start + 1]!r}) is not valid {encoding} "
            f"({exc.reason}). Set the file's encoding in its dataset table, e.g. encoding = \"latin-1\"."
        ) from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"CSV {str(p)!r}: cannot parse ({exc}).") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"CSV file {str(p)!r} has no data rows (expected a header row and data rows).")
    header = [h.strip() for h in rows[0]]
    dup = [h for h, k in Counter(header).items() if k > 1]
    if dup:
        cols = [i + 1 for i, h in enumerate(header) if h == dup[0]]
        raise DataError(f"CSV {str(p)!r}: column name {dup[0]!r} appears {len(cols)} times (columns "
                        f"{', '.join(map(str, cols))}); column names must be unique.")
    if "" in header:
        raise DataError(f"CSV {str(p)!r}: column {header.index('') + 1} has no name in the header row.")
    return p, header, rows[1:]


def _label_order(values: Sequence[str]) -> list[str]:
    """Sorted distinct labels; numerically when every label is a number ("2" < "10")."""
    distinct = sorted(set(values))
    try:
        return sorted(distinct, key=lambda s: (float(s), s))
    except ValueError:
        return distinct


def _check_columns(name: str, cols: object, header: list[str], where: str) -> list[str]:
    if isinstance(cols, str) or not isinstance(cols, Sequence) or not all(isinstance(c, str) for c in cols):
        raise ParameterTypeError(f"Expected `{name}` to be a list of column names, got {cols!r}.")
    for c in cols:
        if c not in header:
            raise ConfigError(f"{name} column {c!r} not in {where}.{did_you_mean(c, header)} Columns: {', '.join(header)}.")
    if len(set(cols)) != len(cols):
        raise ConfigError(f"`{name}` names a column twice: {list(cols)}.")
    return list(cols)


def load_csv(
    path: str | Path | Mapping[str, Any],
    *,
    target: str,
    task: str = "classification",
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    classes: Sequence[str] | None = None,
    seed: int = 0,
    name: str | None = None,
    dropna: bool = False,
    delimiter: str = ",",
    encoding: str = "utf-8",
    split_column: str | None = None,
    split_files: Mapping[str, Any] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    standardize: bool = False,
    standardize_target: bool = False,
    **unknown: Any,
) -> Dataset:
    """A tabular Dataset from a CSV file with a header row (or one file per split).

    path: a file, or { train = ..., val = ..., test = ... } (val optional) with one header.
    target: the label column. task "classification": label strings become ids in the
      order of `classes` when given (a label not in it is an error), else sorted
      (numerically when all are numbers); the mapping is recorded. "regression": numeric.
    features: the numeric input columns in this order (default: every column but the
      target, `exclude` and the split column). Missing values ("", NA, NaN, null, None, ?)
      are errors naming row and column unless `dropna = true` drops those rows.
    Split: `split_column`, `split_files` or a `path` table (see workbench.data.user_split);
      without one, a seeded 60/20/20 split (stratified), recorded as made by the workbench.
    standardize / standardize_target: off by default; when on, train statistics are used
      and the transform is recorded in provenance."""
    reject_unknown_options("source = 'csv'", unknown, load_csv)
    seed = check_seed(seed)
    check_choice("task", task, ("classification", "regression"))
    dropna = check_bool("dropna", dropna)
    standardize = check_bool("standardize", standardize)
    standardize_target = check_bool("standardize_target", standardize_target)
    _, val_fraction, _ = check_fractions(val_fraction, test_fraction)
    if not isinstance(target, str):
        raise ParameterTypeError(f"Expected `target` to be a column name string, got {type(target).__name__} {target!r}.")
    if isinstance(path, Mapping):
        table = check_split_table("path", path, need_train=True)
        files = [(k, table[k]) for k in FILE_KEYS if k in table]
    else:
        files = [("all", path)]
    first, header, rows = read_csv_rows(files[0][1], encoding=encoding, delimiter=delimiter)
    sizes = [len(rows)]
    for split, f in files[1:]:
        p, h, r = read_csv_rows(f, encoding=encoding, delimiter=delimiter)
        if h != header:
            raise DataError(f"CSV {str(p)!r} ({split}) has columns {h}, but {str(first)!r} has {header}; "
                            "split files need the same header.")
        rows += r
        sizes.append(len(r))
    where = repr(str(first))
    if target not in header:
        raise ConfigError(f"Target column {target!r} not in {where}.{did_you_mean(target, header)} Columns: {', '.join(header)}.")
    if split_column is not None:
        if not isinstance(split_column, str) or split_column not in header:
            raise ConfigError(f"split_column {split_column!r} not in {where}.{did_you_mean(str(split_column), header)} "
                              f"Columns: {', '.join(header)}.")
        if split_column == target:
            raise ConfigError(f"split_column {split_column!r} is the target column.")
    excl = _check_columns("exclude", list(exclude), header, where)
    if features is None:
        feats = [h for h in header if h not in (target, split_column) and h not in excl]
    else:
        feats = _check_columns("features", features, header, where)
        for special, what in ((target, "the target"), (split_column, "the split column")):
            if special in feats:
                raise ConfigError(f"Column {special!r} is {what}; remove it from `features`.")
    if not feats:
        raise DataError(f"CSV {where} has no feature columns besides the target {target!r}.")
    col = {h: i for i, h in enumerate(header)}
    xs: list[list[float]] = []
    ys: list[str] = []
    split_values: list[str] = []
    kept_sizes = [0] * len(sizes)
    bounds = np.cumsum([0, *sizes])
    for r_i, row in enumerate(rows):
        file_k = int(np.searchsorted(bounds, r_i, side="right") - 1)
        line = r_i - bounds[file_k] + 1
        src = repr(str(files[file_k][1])) if len(files) > 1 else where
        if len(row) != len(header):
            raise DataError(f"CSV {src} data row {line}: expected {len(header)} fields like the header, got {len(row)}.")
        missing = [c for c in [*feats, target] if row[col[c]].strip().lower() in MISSING]
        if missing:
            if dropna:
                continue
            raise DataError(
                f"CSV {src} data row {line}, column {missing[0]!r}: missing value {row[col[missing[0]]]!r}. "
                f"Fill it, or set dropna = true to drop rows with missing values."
            )
        vals = []
        for c in feats:
            try:
                v = float(row[col[c]].strip())
            except ValueError:
                raise DataError(
                    f"CSV {src} data row {line}, column {c!r}: expected a number, got {row[col[c]]!r}. "
                    f"Only numeric feature columns are supported; choose them with `features = [...]` or `exclude`."
                ) from None
            if not math.isfinite(v):
                raise DataError(f"CSV {src} data row {line}, column {c!r}: non-finite value {row[col[c]]!r}.")
            vals.append(v)
        xs.append(vals)
        ys.append(row[col[target]].strip())
        if split_column is not None:
            split_values.append(row[col[split_column]])
        kept_sizes[file_k] += 1
    if not xs:
        raise DataError(f"CSV {where}: no rows left after dropping rows with missing values.")
    x = np.asarray(xs, dtype=np.float64)
    prov: dict[str, Any] = {"transforms": []}
    if task == "classification":
        if classes is not None:
            if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
                raise ParameterTypeError(f"Expected `classes` to be a list of at least 2 label strings, got {classes!r}.")
            class_names = [str(c) for c in classes]
            if len(set(class_names)) != len(class_names):
                raise ConfigError(f"`classes` lists a label twice: {class_names}.")
            unknown_labels = sorted(set(ys) - set(class_names))
            if unknown_labels:
                raise DataError(f"CSV {where}: target {target!r} has label(s) {unknown_labels[:5]} that are not in "
                                f"`classes` {class_names}.")
        else:
            class_names = _label_order(ys)
            if len(class_names) < 2:
                raise DataError(f"CSV {where}: target {target!r} has a single class {class_names}; classification needs >= 2.")
        index = {c: i for i, c in enumerate(class_names)}
        y = np.array([index[v] for v in ys], dtype=np.int64)
        prov["label_mapping"] = dict(index)
        if any(str(i) != c for c, i in index.items()):
            order = "in the order of `classes`" if classes is not None else "sorted"
            prov["transforms"].append(f"labels: strings mapped to class ids {order}: "
                                      + ", ".join(f"{c!r} -> {i}" for c, i in index.items()))
    else:
        try:
            y = np.array([float(v) for v in ys], dtype=np.float64)
        except ValueError:
            bad = next(v for v in ys if not _is_number(v))
            raise DataError(f"CSV {where}: regression target {target!r} must be numeric, got {bad!r}.") from None
        class_names = None
    labels = y if task == "classification" else None
    user = resolve_user_split(
        len(x), column_values=split_values if split_column is not None else None, column=split_column,
        files=split_files, file_sizes=kept_sizes if len(files) > 1 else None, val_fraction=val_fraction,
        seed=seed, labels=labels, where=f"CSV {where}")
    parts, note = user if user is not None else (None, None)
    files_note = ", ".join(str(f) for _, f in files)
    ds = tabular_dataset(
        x, y, name=name or first.stem, task=task, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        class_names=class_names, feature_names=feats, standardize_features=standardize,
        standardize_target=standardize_target, parts=parts, split_note=note, provenance=prov,
        description=f"CSV {first.name}: {len(x)} rows, {len(feats)} numeric features, target {target!r} ({task}).",
        source=f"user file {files_note}",
    )
    return validate_dataset(ds)


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
