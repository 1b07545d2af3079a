"""`source = "images"`: an image classification Dataset from class folders, read with Pillow.

Layout: `root/<class name>/*.png|jpg|jpeg|bmp|gif|tif|tiff|webp`, one folder per class.
Rows are numbered class by class (classes in order), files sorted by name inside a class;
`split_files` refers to those numbers. Pixel values 0..255 become floats in [0, 1]
(x / 255), recorded with every other change; images of different sizes or colour modes are
an error unless the plan asks for `resize = [H, W]` or `mode = "RGB"` / `"L"`, and
`normalize = { mean = [...], std = [...] }` is applied only when given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.base import Dataset, Split
from workbench.data.checks import check_fractions, check_seed, reject_unknown_options
from workbench.data.splits import random_split_note, split_indices
from workbench.data.user_split import FILE_KEYS, check_split_table, resolve_user_split
from workbench.data.validate import validate_dataset
from workbench.errors import ConfigError, DataError, ParameterTypeError, check_choice

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MODES = ("RGB", "L")


def _root(path: object) -> Path:
    if not isinstance(path, (str, Path)):
        raise ParameterTypeError(f"Expected `path` to be a folder path string, got {type(path).__name__} {path!r}.")
    p = Path(path).expanduser()
    if not p.is_dir():
        kind = "is a file, not a folder" if p.exists() else "not found"
        raise DataError(f"Image folder {kind}: {str(p)!r} (resolved to {str(p.resolve())!r}); expected root/<class>/*.png.")
    return p


def list_images(root: Path, classes: Sequence[str] | None) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(file, class id)]) of a class-folder tree; empty classes are errors."""
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        names = found
    else:
        missing = [c for c in classes if c not in found]
        if missing:
            raise DataError(f"Image folder {str(root)!r} has no class folder {missing[0]!r} named in `classes`; "
                            f"class folders: {', '.join(found) or '(none)'}.")
        extra = [c for c in found if c not in classes]
        if extra:
            raise DataError(f"Image folder {str(root)!r} has class folder(s) {extra[:5]} not in `classes` {list(classes)}.")
        names = list(classes)
    if len(names) < 2:
        raise DataError(f"Image folder {str(root)!r} has {len(names)} class folder(s) ({', '.join(names) or 'none'}); "
                        "expected root/<class name>/*.png with at least 2 classes.")
    files: list[tuple[Path, int]] = []
    for k, c in enumerate(names):
        imgs = sorted(f for f in (root / c).iterdir() if f.is_file() and f.suffix.lower() in EXTENSIONS)
        if not imgs:
            raise DataError(f"Class {c!r} in {str(root)!r} is empty: no {', '.join(EXTENSIONS)} files in {str(root / c)!r}.")
        files += [(f, k) for f in imgs]
    return names, files


def read_images(files: Sequence[tuple[Path, int]], *, mode: str | None, resize: tuple[int, int] | None) -> np.ndarray:
    """(N, C, H, W) uint8 pixels. Mixed sizes or modes are errors naming two files."""
    from PIL import Image, UnidentifiedImageError

    out: list[np.ndarray] = []
    first: tuple[Path, tuple[int, int], str] | None = None
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                if mode is not None:
                    im = im.convert(mode)
                elif im.mode not in MODES:
                    raise DataError(f"Image {str(f)!r} has colour mode {im.mode!r}; set mode = \"RGB\" or \"L\" to convert "
                                    "every image to one mode.")
                if resize is not None:
                    im = im.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
                size, md = (im.height, im.width), im.mode
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"Cannot read image {str(f)!r}: {exc}") from None
        if first is None:
            first = (f, size, md)
        elif size != first[1]:
            raise DataError(f"Images differ in size: {str(first[0])!r} is {first[1][0]}x{first[1][1]} but {str(f)!r} is "
                            f"{size[0]}x{size[1]} (height x width); set resize = [H, W] to resize every image.")
        elif md != first[2]:
            raise DataError(f"Images differ in colour mode: {str(first[0])!r} is {first[2]} but {str(f)!r} is {md}; "
                            "set mode = \"RGB\" or \"L\".")
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(out)


def _check_resize(resize: object) -> tuple[int, int] | None:
    if resize is None:
        return None
    if (isinstance(resize, (str, bytes)) or not isinstance(resize, Sequence) or len(resize) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in resize)):
        raise ConfigError(f"Expected `resize` to be [height, width], two ints in [1, 4096], got {resize!r}.")
    return int(resize[0]), int(resize[1])


def _check_normalize(normalize: object, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    if normalize is None:
        return None
    if not isinstance(normalize, Mapping) or set(normalize) != {"mean", "std"}:
        raise ConfigError(f"Expected `normalize` to be {{ mean = [...], std = [...] }}, got {normalize!r}.")
    out = []
    for key in ("mean", "std"):
        v = normalize[key]
        if (isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != channels or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in v)):
            raise ConfigError(f"Expected normalize.{key} to be {channels} finite numbers (one per channel), got {v!r}.")
        out.append(np.asarray(v, dtype=np.float64).reshape(channels, 1, 1))
    if (out[1] <= 0).any():
        raise ConfigError(f"Expected every normalize.std > 0, got {normalize['std']!r}.")
    return out[0], out[1]


def load_image_folder(
    path: str | Path | Mapping[str, Any],
    *,
    seed: int = 0,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    mode: str | None = None,
    resize: Sequence[int] | None = None,
    normalize: Mapping[str, Sequence[float]] | None = None,
    split_files: Mapping[str, Any] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    **unknown: Any,
) -> Dataset:
    """An image classification Dataset from `root/<class>/*` (or one root per split:
    `path = { train = ..., val = ..., test = ... }`, val optional), x (N, C, H, W) float32."""
    reject_unknown_options("source = 'images'", unknown, load_image_folder)
    seed = check_seed(seed)
    fractions = check_fractions(val_fraction, test_fraction)
    if mode is not None:
        check_choice("mode", mode, MODES)
    size = _check_resize(resize)
    if classes is not None and (isinstance(classes, str) or not isinstance(classes, Sequence)):
        raise ParameterTypeError(f"Expected `classes` to be a list of class folder names, got {classes!r}.")
    if isinstance(path, Mapping):
        table = check_split_table("path", path, need_train=True)
        roots = [(k, _root(table[k])) for k in FILE_KEYS if k in table]
        root = roots[0][1]
        names, files = list_images(root, classes)
        sizes = [len(files)]
        for k, r in roots[1:]:
            _, f = list_images(r, names)  # the first root's classes, in its order
            files += f
            sizes.append(len(f))
    else:
        root = _root(path)
        names, files = list_images(root, classes)
        sizes = None
    pixels = read_images(files, mode=mode, resize=size)  # (N, C, H, W) uint8
    y = np.array([k for _, k in files], dtype=np.int64)
    transforms = []
    if mode is not None:
        transforms.append(f"colour mode converted to {mode} (Pillow Image.convert)")
    if size is not None:
        transforms.append(f"resized to {size[0]}x{size[1]} (height x width, Pillow bilinear)")
    x = pixels.astype(np.float64) / 255.0
    transforms.append("pixel values scaled from 0..255 to [0, 1] (x / 255)")
    bounds = (0.0, 1.0)
    norm = _check_normalize(normalize, x.shape[1])
    if norm is not None:
        mean, std = norm
        x = (x - mean) / std
        lows, highs = (0 - mean) / std, (1 - mean) / std
        bounds = (float(lows.min()), float(highs.max()))
        transforms.append(f"normalized per channel: (x - mean) / std with mean {normalize['mean']} and std "  # type: ignore[index]
                          f"{normalize['std']}; input bounds become {bounds}")  # type: ignore[index]
    user = resolve_user_split(len(x), column_values=None, column=None, files=split_files, file_sizes=sizes,
                              val_fraction=fractions[1], seed=seed, labels=y, where=f"Image folder {str(root)!r}")
    if user is None:
        idx = split_indices(len(x), fractions, seed, labels=y)
        prov: dict[str, Any] = {"split": random_split_note(seed, fractions, stratified=True), "user_split": False}
    else:
        idx, note = user
        prov = {"split": note, "user_split": True}
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    bounds = (min(bounds[0], float(xt.min())), max(bounds[1], float(xt.max())))  # float32 rounding
    yt = torch.from_numpy(y)
    splits = [Split(xt[torch.from_numpy(i)], yt[torch.from_numpy(i)]) for i in idx]
    ds = Dataset(
        name=name or root.name, modality="image", task="classification", train=splits[0], val=splits[1],
        test=splits[2], num_classes=len(names), class_names=tuple(names), bounds=bounds,
        description=f"Images from {root.name}: {len(x)} images of {tuple(x.shape[1:])}, {len(names)} classes.",
        source=f"user folder {str(root)}", seed=seed,
        provenance={**prov, "transforms": transforms, "label_mapping": {c: i for i, c in enumerate(names)}},
    )
    return validate_dataset(ds)
