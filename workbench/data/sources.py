"""Where a plan's user data comes from: `load_dataset` dispatches a `[datasets.NAME]` table
to its source (csv, text, tensors, images, callable) or a registered dataset name.
User functions (`callable`) run through `workbench.usercode.call_user`, so whatever they
raise or exit with becomes one clear error."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from workbench.data.base import Dataset
from workbench.data.checks import check_seed
from workbench.data.csv_source import load_csv
from workbench.data.image_source import load_image_folder
from workbench.data.tensor_source import SPLIT_KEYS, from_tensors, load_tensor_file
from workbench.data.text_source import load_text
from workbench.data.validate import validate_dataset
from workbench.errors import ConfigError, DataError, ParameterTypeError, check_choice, did_you_mean

SOURCES = ("csv", "text", "tensors", "images", "callable")
LOADERS = {"csv": load_csv, "text": load_text, "tensors": load_tensor_file, "images": load_image_folder}


def load_callable(
    function: str,
    *,
    seed: int = 0,
    dataset_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Call "package.module:function"(**kwargs) and return its data as a validated Dataset.

    `seed` is passed to the function when it takes a `seed` parameter (or **kwargs). The
    function may return a Dataset, a dict of tensors/arrays (keys as in `from_tensors`),
    a tuple (x, y), or a 6-tuple (x_train, y_train, x_val, y_val, x_test, y_test).
    `dataset_options` (task, modality, name, num_classes, vocab_size, bounds, ...) go to
    `from_tensors` when tensors come back."""
    seed = check_seed(seed)
    if not isinstance(function, str) or ":" not in function:
        raise ConfigError(f"Expected `function` as 'package.module:function', got {function!r}.")
    from workbench.usercode import call_user, import_reference

    fn = import_reference(function, what="dataset function")
    attr = function.partition(":")[2]
    params = inspect.signature(fn).parameters
    if "seed" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {"seed": seed, **kwargs}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in params:
                raise ConfigError(
                    f"{function!r} takes no option {key!r}.{did_you_mean(key, params)} "
                    f"Its parameters: {', '.join(params) or '(none)'}."
                )
    out = call_user(f"dataset function {function!r}", fn, **kwargs)
    if isinstance(out, Dataset):
        return validate_dataset(out)
    opts = dict(dataset_options or {})
    opts.setdefault("name", attr)
    opts.setdefault("source", f"python function {function}")
    if isinstance(out, Mapping):
        tensors = dict(out)
    elif isinstance(out, tuple) and len(out) in (2, 6):
        keys = ("x", "y") if len(out) == 2 else SPLIT_KEYS
        tensors = dict(zip(keys, out))
    else:
        raise DataError(
            f"Dataset function {function!r} returned {type(out).__name__}"
            f"{f' of length {len(out)}' if isinstance(out, tuple) else ''}; expected a Dataset, a dict of tensors, "
            f"(x, y) or (x_train, y_train, x_val, y_val, x_test, y_test)."
        )
    allowed = set(inspect.signature(from_tensors).parameters) - {"tensors", "seed"}
    for k in opts:
        if k not in allowed:
            raise ConfigError(f"Unknown dataset option {k!r}.{did_you_mean(k, allowed)} Valid: {', '.join(sorted(allowed))}.")
    return from_tensors(tensors, seed=seed, **opts)



def load_dataset(name_or_table: str | Mapping[str, Any], seed: int = 0) -> Dataset:
    """The Dataset a plan names, validated.

    A string is a registered dataset name (workbench.registry.DATASETS). A table with
    "source" = "csv" | "text" | "tensors" | "images" | "callable" goes to load_csv /
    load_text / load_tensor_file / load_image_folder / load_callable with its other keys as options ("path" or "function"
    required; for "callable", "name" is the display name of tensors it returns, not an
    argument of the function). A table without "source" must have "name" (a registered
    dataset) and its other keys are that dataset's options. A "seed" key in the table
    overrides `seed`."""
    from workbench.registry import DATASETS

    seed = check_seed(seed)
    if isinstance(name_or_table, str):
        return validate_dataset(DATASETS.get(name_or_table)(seed=seed))
    if not isinstance(name_or_table, Mapping):
        raise ParameterTypeError(
            f"Expected a dataset name or a table of options, got {type(name_or_table).__name__} {name_or_table!r}."
        )
    opts = dict(name_or_table)
    seed = check_seed(opts.pop("seed", seed))
    if "source" not in opts:
        if "name" not in opts:
            raise ConfigError(
                f"A dataset table needs 'name' (a registered dataset) or 'source' (one of {list(SOURCES)}), got keys {sorted(opts)}."
            )
        name = opts.pop("name")
        return validate_dataset(DATASETS.get(name)(seed=seed, **opts))
    source = check_choice("source", opts.pop("source"), SOURCES)
    if source == "callable":
        if "function" not in opts:
            raise ConfigError("A dataset table with source = 'callable' needs 'function' = 'package.module:function'.")
        function = opts.pop("function")
        name = opts.pop("name", None)  # the display name, not an argument of the function
        if name is not None:
            dataset_options = dict(opts.pop("dataset_options", None) or {})
            dataset_options.setdefault("name", name)
            opts["dataset_options"] = dataset_options
        return load_callable(function, seed=seed, **opts)
    if "path" not in opts:
        raise ConfigError(f"A dataset table with source = {source!r} needs 'path'.")
    path = opts.pop("path")
    return LOADERS[source](path, seed=seed, **opts)
