"""`source = "text"`: a character-level language-modelling Dataset from text files.

Choosing this source asks for character-level tokenisation (the only one offered): the
vocabulary, the windows and the split are recorded in the dataset's provenance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.data.base import Dataset
from workbench.data.checks import (check_optional_positive_int, check_positive_int, check_seed, existing_file,
                                   reject_unknown_options)
from workbench.data.splits import char_lm_dataset
from workbench.data.user_split import FILE_KEYS, check_split_table
from workbench.data.validate import validate_dataset
from workbench.errors import DataError


def read_text_file(path: object, encoding: str) -> tuple[Path, str]:
    """(path, text) with CRLF line ends read as LF; undecodable bytes are a DataError
    naming the line and the `encoding` option."""
    p = existing_file(path, "Text")
    raw = p.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"Text file {str(p)!r} line {line}: byte {exc.start} is not valid {encoding} ({exc.reason}). "
                        "Set `encoding` in its dataset table, e.g. encoding = \"latin-1\".") from None
    except LookupError:
        from workbench.errors import ConfigError

        raise ConfigError(f"Unknown `encoding` {encoding!r}; use a Python codec name such as 'utf-8' or 'latin-1'.") from None
    return p, text.replace("\r\n", "\n")


def paragraphs(text: str) -> list[str]:
    """Documents = paragraphs separated by blank lines."""
    return [q.strip("\n") for q in text.split("\n\n") if q.strip()]


def load_text(
    path: str | Path | Mapping[str, Any],
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
    """A character-level LM Dataset from a text file, like `pydoc_text`, or from one file per
    split (`path = { train = ..., val = ..., test = ... }`, the user's split; all three).

    Documents are paragraphs (separated by blank lines); consecutive short paragraphs are
    merged until each has block_size+1 characters. See `char_lm_dataset` for the vocab,
    the split by documents, windows, meta["doc_id"] and ground_truth["bytes_per_token"]."""
    reject_unknown_options("source = 'text'", unknown, load_text)
    seed = check_seed(seed)
    block_size = check_positive_int("block_size", block_size)
    max_windows = check_optional_positive_int("max_windows", max_windows)
    min_char_count = check_positive_int("min_char_count", min_char_count)
    if isinstance(path, Mapping):
        table = check_split_table("path", path, need_train=True)
        if "val" not in table:
            raise DataError("A text `path` table needs train, val and test files (documents cannot be carved "
                            "out of a file without mixing its windows).")
        docs: list[str] = []
        names: list[str] = []
        groups: list[int] = []
        first = None
        for k, split in enumerate(FILE_KEYS):
            p, text = read_text_file(table[split], encoding)
            first = first or p
            para = paragraphs(text)
            docs += para
            names += [f"{split}/{p.name}#{i}" for i in range(len(para))]
            groups += [k] * len(para)
        ds = char_lm_dataset(
            docs, name=name or first.stem, seed=seed, block_size=block_size, max_windows=max_windows,
            min_char_count=min_char_count, val_fraction=val_fraction, test_fraction=test_fraction, groups=groups,
            doc_names=names,
            split_note="given by the user: separate train/val/test files",
            description=f"Character-level LM on {', '.join(Path(str(table[s])).name for s in FILE_KEYS)}.",
            source="user files " + ", ".join(str(table[s]) for s in FILE_KEYS),
        )
        return validate_dataset(ds)
    p, text = read_text_file(path, encoding)
    ds = char_lm_dataset(
        paragraphs(text), name=name or p.stem, seed=seed, block_size=block_size, max_windows=max_windows,
        min_char_count=min_char_count, val_fraction=val_fraction, test_fraction=test_fraction,
        description=f"Character-level LM on {p.name} ({len(text)} characters), documents = paragraphs.",
        source=f"user file {str(p)}",
    )
    return validate_dataset(ds)
