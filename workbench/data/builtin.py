"""Built-in offline datasets: scikit-learn's bundled tables and images, and CPython's own
pydoc topic texts as a character-level language-modelling corpus. No network, ever.

Every loader is `(seed: int = 0, *, options...) -> Dataset`; an unknown option raises
ConfigError with a did-you-mean hint. Splits are 60/20/20 by default, seeded, and
stratified for classification; tabular features are standardised with train statistics
only (the statistics are in ground_truth["standardization"]).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from workbench.data.base import Dataset, Split
from workbench.data.loaders import (
    char_lm_dataset,
    check_bool,
    check_fractions,
    check_optional_positive_int,
    check_positive_int,
    check_seed,
    reject_unknown_options,
    split_indices,
    tabular_dataset,
)

SKLEARN_SOURCE = "scikit-learn bundled copy of the UCI {what} (BSD-3-Clause scikit-learn; data: {licence})"


def _subsample(y: np.ndarray | None, n: int, max_examples: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded (stratified when y is given) subset of size max_examples."""
    if max_examples is None or max_examples >= n:
        return np.arange(n)
    keep, _ = split_indices(n, (max_examples / n, 1 - max_examples / n), seed + 7919, labels=y)
    return keep


def load_digits(
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_examples: int | None = None,
    **unknown: Any,
) -> Dataset:
    """scikit-learn's 1,797 handwritten digits: x (N, 1, 8, 8) float32 = pixel / 16 in
    bounds (0, 1), y (N,) long in 0..9, class names "0".."9". Stratified seeded split.
    max_examples: keep a stratified random subset of that many images first."""
    reject_unknown_options("dataset 'digits'", unknown, load_digits)
    seed = check_seed(seed)
    fractions = check_fractions(val_fraction, test_fraction)
    max_examples = check_optional_positive_int("max_examples", max_examples)
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    x = (raw.images.astype(np.float32) / 16.0)[:, None, :, :]  # (N, 1, 8, 8)
    y = raw.target.astype(np.int64)
    keep = _subsample(y, len(y), max_examples, seed)
    x, y = x[keep], y[keep]
    parts = split_indices(len(y), fractions, seed, labels=y)
    splits = [Split(torch.from_numpy(np.ascontiguousarray(x[i])), torch.from_numpy(y[i])) for i in parts]
    return Dataset(
        name="digits",
        modality="image",
        task="classification",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        bounds=(0.0, 1.0),
        description="8x8 grey-scale handwritten digits (UCI optical recognition, 1,797 images), pixels scaled to [0, 1].",
        source=SKLEARN_SOURCE.format(what="optical recognition of handwritten digits", licence="CC BY 4.0"),
        seed=seed,
    )


def _sklearn_tabular(
    loader_name: str, name: str, seed: int, fractions: tuple[float, float, float], max_examples: int | None,
    description: str, source: str, task: str = "classification", standardize_target: bool = False,
    scaled: bool | None = None, ground_truth: dict[str, Any] | None = None,
) -> Dataset:
    import sklearn.datasets as skd

    kw = {} if scaled is None else {"scaled": scaled}
    raw = getattr(skd, loader_name)(**kw)
    x = np.asarray(raw.data, dtype=np.float64)
    y = np.asarray(raw.target)
    y = y.astype(np.int64) if task == "classification" else y.astype(np.float64)
    keep = _subsample(y if task == "classification" else None, len(y), max_examples, seed)
    class_names = [str(c) for c in raw.target_names] if task == "classification" else None
    return tabular_dataset(
        x[keep], y[keep], name=name, task=task, seed=seed, val_fraction=fractions[1], test_fraction=fractions[2],
        class_names=class_names, feature_names=[str(f) for f in raw.feature_names],
        standardize_target=standardize_target, ground_truth=ground_truth, description=description, source=source,
    )


def load_breast_cancer(
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_examples: int | None = None,
    **unknown: Any,
) -> Dataset:
    """Wisconsin diagnostic breast cancer: 569 × 30 features, 2 classes
    ("malignant", "benign"). x (N, 30) float32 standardised with train statistics,
    bounds None (standardised features have no natural box)."""
    reject_unknown_options("dataset 'breast_cancer'", unknown, load_breast_cancer)
    return _sklearn_tabular(
        "load_breast_cancer", "breast_cancer", check_seed(seed), check_fractions(val_fraction, test_fraction),
        check_optional_positive_int("max_examples", max_examples),
        "Breast cancer Wisconsin (diagnostic): 569 tumours, 30 cell-nucleus features, malignant vs benign.",
        SKLEARN_SOURCE.format(what="Breast Cancer Wisconsin (Diagnostic) data", licence="CC BY 4.0"),
    )


def load_wine(
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_examples: int | None = None,
    **unknown: Any,
) -> Dataset:
    """UCI wine recognition: 178 × 13 chemical features, 3 cultivars ("class_0".."class_2").
    x (N, 13) float32 standardised with train statistics, bounds None."""
    reject_unknown_options("dataset 'wine'", unknown, load_wine)
    return _sklearn_tabular(
        "load_wine", "wine", check_seed(seed), check_fractions(val_fraction, test_fraction),
        check_optional_positive_int("max_examples", max_examples),
        "Wine recognition: 178 wines, 13 chemical analysis features, 3 cultivars.",
        SKLEARN_SOURCE.format(what="Wine recognition data", licence="CC BY 4.0"),
    )


def load_diabetes(
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_examples: int | None = None,
    standardize_target: bool = True,
    **unknown: Any,
) -> Dataset:
    """Efron et al. diabetes regression: 442 patients × 10 baseline features (raw units,
    then standardised with train statistics), target = disease progression one year
    later. By default y is standardised with train mean/std too (so tiny models train
    with default learning rates); ground_truth["target_mean"] and ["target_std"] hold
    the scale, so MSE in original units = MSE * target_std**2 and a prediction in
    original units = pred * target_std + target_mean. With standardize_target=False y
    stays in original units (target_mean 0, target_std 1)."""
    reject_unknown_options("dataset 'diabetes'", unknown, load_diabetes)
    return _sklearn_tabular(
        "load_diabetes", "diabetes", check_seed(seed), check_fractions(val_fraction, test_fraction),
        check_optional_positive_int("max_examples", max_examples),
        "Diabetes: 442 patients, 10 baseline variables (age, sex, BMI, blood pressure, 6 serum measurements), "
        "target = quantitative disease progression one year after baseline.",
        "scikit-learn bundled copy of Efron, Hastie, Johnstone & Tibshirani (2004) 'Least Angle Regression' "
        "diabetes data (BSD-3-Clause scikit-learn)",
        task="regression", standardize_target=check_bool("standardize_target", standardize_target), scaled=False,
        ground_truth={"target_units": "disease progression score (original units)"},
    )


def load_pydoc_text(
    seed: int = 0,
    *,
    block_size: int = 64,
    max_windows: int | None = 4000,
    min_char_count: int = 5,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    **unknown: Any,
) -> Dataset:
    """Character-level LM corpus from CPython's `pydoc_data.topics.topics` (the help()
    texts of the running interpreter, PSF licence): one document per topic (79 in 3.11),
    about 465k characters.

    Vocabulary: id 0 "<unk>", then every character seen >= min_char_count times (about 100).
    Topics are split between train/val/test by character share (seeded), cut into
    non-overlapping windows x (N, block_size) with next-character targets y (N, block_size),
    and capped at max_windows windows in all (train gets 60%; None = no cap, about 7,200
    windows at block_size 64). meta["doc_id"] indexes ground_truth["documents"] (topic
    names) so metrics can bootstrap over documents; ground_truth["bytes_per_token"] is
    the UTF-8 bytes per character over the test targets (for bits per byte)."""
    reject_unknown_options("dataset 'pydoc_text'", unknown, load_pydoc_text)
    seed = check_seed(seed)
    block_size = check_positive_int("block_size", block_size)
    max_windows = check_optional_positive_int("max_windows", max_windows)
    min_char_count = check_positive_int("min_char_count", min_char_count)
    from pydoc_data.topics import topics

    names = sorted(topics)
    version = ".".join(map(str, sys.version_info[:3]))
    return char_lm_dataset(
        [topics[k] for k in names], name="pydoc_text", seed=seed, block_size=block_size, max_windows=max_windows,
        min_char_count=min_char_count, val_fraction=val_fraction, test_fraction=test_fraction, doc_names=names,
        description=f"Character-level LM on the pydoc help topics of CPython {version} ({len(names)} topics).",
        source=f"CPython {version} Lib/pydoc_data/topics.py (Python Software Foundation License)",
    )
