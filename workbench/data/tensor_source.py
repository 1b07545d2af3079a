"""`source = "tensors"`: a Dataset from a dict of tensors or arrays (.pt, .npz files, or
what a `callable` source returns), values as given: dtype casts (float inputs to float32,
ids and labels to int64) and, only with `standardize = true`, standardisation are recorded
in the dataset's provenance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.base import SPLITS, Dataset, Split
from workbench.data.checks import check_bool, check_fractions, check_seed, existing_file, reject_unknown_options
from workbench.data.splits import _float32, random_split_note, split_indices, train_standardize
from workbench.data.user_split import FILE_KEYS, check_split_table, resolve_user_split
from workbench.data.validate import MODALITIES, TASKS, validate_dataset
from workbench.errors import ConfigError, DataError, check_choice

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


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
    split_files: Mapping[str, Any] | None = None,
    description: str = "",
    source: str = "",
    file_sizes: Sequence[int] | None = None,
) -> Dataset:
    """A Dataset from a dict of tensors/arrays: either the six keys x_train, y_train,
    x_val, y_val, x_test, y_test, or x and y, split with the seed (stratified for
    classification). Missing task/modality are inferred (integer x with y of x's shape ->
    lm; integer x -> tokens; 4-D float x -> image; else tabular; float y with non-integer
    values -> regression). dtypes are converted (float inputs -> float32, ids and labels
    -> long; labels must be whole numbers); num_classes defaults to max label + 1,
    vocab_size to max token id + 1; image bounds default to (0, 1) when all inputs lie in
    it. `standardize` standardises tabular inputs with train statistics (off: the user's
    own preprocessing is kept). `split_files` (with x and y) is the user's split by row
    numbers (see workbench.data.user_split); `file_sizes` says x and y are one file per
    split concatenated (rows per file: train, [val,] test). The result is validated."""
    seed = check_seed(seed)
    keys = set(tensors)
    if keys >= set(SPLIT_KEYS):
        extra = keys - set(SPLIT_KEYS)
        parts = [(_as_tensor(tensors[f"x_{s}"], f"x_{s}"), _as_tensor(tensors[f"y_{s}"], f"y_{s}")) for s in SPLITS]
    elif keys >= {"x", "y"}:
        extra = keys - {"x", "y"}
        x, y = _as_tensor(tensors["x"], "x"), _as_tensor(tensors["y"], "y")
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise DataError(f"{name}: x has shape {tuple(x.shape)} but y has shape {tuple(y.shape)}; expected the same number of rows.")
        parts = None
    else:
        raise DataError(
            f"{name}: expected keys {list(SPLIT_KEYS)} or ['x', 'y'], got {sorted(keys)}."
        )
    if extra:
        raise DataError(f"{name}: unexpected key(s) {sorted(extra)}; expected {list(SPLIT_KEYS)} or ['x', 'y'].")
    x0, y0 = parts[0] if parts else (x, y)
    inferred_modality, inferred_task = _infer_kind(x0, y0)
    modality = check_choice("modality", modality or inferred_modality, MODALITIES)
    task = check_choice("task", task or ("lm" if modality == "lm" else inferred_task), TASKS)
    fractions = check_fractions(val_fraction, test_fraction)
    prov: dict[str, Any] = {"transforms": []}
    if parts is None:
        labels = y.numpy() if task == "classification" and y.dim() == 1 else None
        user = resolve_user_split(len(x), column_values=None, column=None, files=split_files,
                                  file_sizes=file_sizes, val_fraction=fractions[1], seed=seed,
                                  labels=labels, where=name)
        if user is None:
            idx = split_indices(len(x), fractions, seed, labels=labels)
            prov.update(split=random_split_note(seed, fractions, stratified=labels is not None), user_split=False)
        else:
            idx, note = user
            prov.update(split=note, user_split=True)
        parts = [(x[torch.from_numpy(i)], y[torch.from_numpy(i)]) for i in idx]
    else:
        if split_files is not None:
            raise ConfigError(f"{name}: the x_train/.../y_test keys already give the split; drop `split_files`.")
        prov.update(split="given by the user: x_train/y_train, x_val/y_val, x_test/y_test", user_split=True)
    in_dtypes = {str(a.dtype) for a, _ in parts}
    lab_dtypes = {str(b.dtype) for _, b in parts}

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
    for what, before, after in (("inputs", in_dtypes, parts[0][0].dtype), ("targets", lab_dtypes, parts[0][1].dtype)):
        if before != {str(after)}:
            prov["transforms"].append(f"{what} cast from {', '.join(sorted(before))} to {after} (values unchanged"
                                      f"{' up to float32 rounding' if after == torch.float32 else ''})")
    gt: dict[str, Any] = {}
    if standardize:
        if modality != "tabular":
            raise ConfigError(f"`standardize` applies to tabular inputs only, got modality {modality!r}.")
        xs, mean, std = train_standardize(*[p[0].double().numpy() for p in parts])
        parts = [(_float32(a), b) for a, (_, b) in zip(xs, parts)]
        gt["standardization"] = {"mean": mean.tolist(), "std": std.tolist()}
        prov["transforms"].append("standardize features: (x - mean) / std with the train split's mean and std "
                                  "(ddof 0, constant columns std 1); values in ground_truth.standardization")
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
        provenance=prov,
    )
    return validate_dataset(ds)


def _read_tensor_file(path: object) -> tuple[Path, dict[str, Any]]:
    p = existing_file(path, "Tensor")
    suffix = p.suffix.lower()
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refused or corrupt file
            raise DataError(f"Could not read {str(p)!r} with torch.load(weights_only=True): {e}") from None
        if not isinstance(obj, Mapping):
            raise DataError(f"{str(p)!r} holds a {type(obj).__name__}; expected a dict of tensors.")
        return p, dict(obj)
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return p, {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise DataError(f"Could not read {str(p)!r} with numpy.load(allow_pickle=False): {e}") from None
    if suffix == ".npy":
        raise ConfigError(f"{p.name!r} is a single array; save x and y together in a .npz (numpy.savez) or a .pt dict.")
    raise ConfigError(f"Expected a .pt, .pth or .npz file, got {p.name!r}.")


def load_tensor_file(
    path: str | Path | Mapping[str, Any],
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
    split_files: Mapping[str, Any] | None = None,
    **unknown: Any,
) -> Dataset:
    """A Dataset from a .pt file (a dict of tensors, read with torch.load(weights_only=True):
    no code runs) or a .npz file (read with allow_pickle=False). Keys and options as in
    `from_tensors`."""
    reject_unknown_options("source = 'tensors'", unknown, load_tensor_file)
    sizes = None
    if isinstance(path, Mapping):  # one file per split, each with x and y
        table = check_split_table("path", path, need_train=True)
        got = [(k, *_read_tensor_file(table[k])) for k in FILE_KEYS if k in table]
        for k, q, t in got:
            if set(t) != {"x", "y"}:
                raise DataError(f"{str(q)!r} ({k} split) has keys {sorted(t)}; a split file holds exactly x and y.")
        p = got[0][1]
        xs = [_as_tensor(t["x"], f"x ({k})") for k, _, t in got]
        ys = [_as_tensor(t["y"], f"y ({k})") for k, _, t in got]
        for (k, q, _), a_, b_ in zip(got, xs, ys):
            if a_.dim() == 0 or b_.dim() == 0 or a_.shape[0] != b_.shape[0]:
                raise DataError(f"{str(q)!r} ({k} split): x has shape {tuple(a_.shape)} but y has shape {tuple(b_.shape)}.")
        try:
            tensors = {"x": torch.cat(xs), "y": torch.cat(ys)}
        except RuntimeError as e:
            raise DataError(f"The split files' x or y do not have the same shape per row: {e}") from None
        sizes = [len(a_) for a_ in xs]
    else:
        p, tensors = _read_tensor_file(path)
    return from_tensors(
        tensors, task=task, modality=modality, seed=seed, name=name or p.stem, num_classes=num_classes,
        class_names=class_names, vocab_size=vocab_size, vocab=vocab, bounds=bounds, feature_names=feature_names,
        standardize=check_bool("standardize", standardize), val_fraction=val_fraction, test_fraction=test_fraction,
        split_files=split_files, file_sizes=sizes,
        description=f"Tensors from {p.name}.", source=f"user file {str(p)}",
    )


