"""Reference models: one short file per architecture (mlp, cnn, lstm, transformer, gpt).

Every file exposes a `@dataclass` config, `CONFIGS = {"tiny": ..., "base": ...}` presets,
the `nn.Module`, the data it accepts (`MODALITIES`, `TASKS`) and
`build(data, size="tiny", **overrides) -> nn.Module`, which derives the data-dependent
fields (input size, classes, vocabulary, sequence length) from the Dataset. The module
carries `output_kind` ("logits" | "mean" | "mean_logvar" | "lm_logits") and `config`.

This package file holds the small helpers the five `build` functions share; it imports
no torch so that listing models stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from workbench.errors import ConfigError, ParameterTypeError, did_you_mean

C = TypeVar("C")

SIZES = ("tiny", "base")


def check_size(arch: str, size: object) -> str:
    """Validate the preset name: "tiny" (CPU seconds) or "base" (what a GPU user wants)."""
    if not isinstance(size, str) or size not in SIZES:
        hint = did_you_mean(size, SIZES) if isinstance(size, str) else ""
        raise ConfigError(
            f"Unknown size {size!r} for model {arch!r}.{hint} Valid sizes: {', '.join(repr(s) for s in SIZES)}."
        )
    return size


# which reference architectures fit each modality, for error hints
FITS = {"image": ("cnn", "mlp"), "tabular": ("mlp",), "tokens": ("lstm", "transformer"), "lm": ("gpt",)}


def check_data(arch: str, data: Any, modalities: Iterable[str], tasks: Iterable[str]) -> None:
    """Raise ConfigError when `data` has a modality or task this architecture cannot handle."""
    modalities, tasks = tuple(modalities), tuple(tasks)
    shape = tuple(getattr(data, "input_shape", ()))
    if data.modality not in modalities:
        fits = " or ".join(repr(a) for a in FITS.get(data.modality, ()))
        raise ConfigError(
            f"Model {arch!r} expects {' or '.join(modalities)} data; dataset {data.name!r} is "
            f"{data.modality} with input shape {shape}.{f' Use {fits}.' if fits else ''}"
        )
    if data.task not in tasks:
        raise ConfigError(
            f"Model {arch!r} supports tasks {list(tasks)}; dataset {data.name!r} has task {data.task!r}."
        )


def make_config(
    arch: str,
    presets: Mapping[str, C],
    size: str,
    derived: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    adjustable: Iterable[str] = (),
) -> C:
    """The preset `size` with the data-derived fields filled in, then the user's overrides.

    Fields in `derived` come from the dataset and cannot be overridden (a wrong number of
    classes would only fail later, far from the cause), except those in `adjustable`
    (e.g. `block_size`, which may be larger than the data's sequence length; the config's
    own validation checks it). Unknown keys raise ConfigError with a did-you-mean hint and
    the valid keys; list values (from TOML) become tuples.
    """
    check_size(arch, size)
    base = presets[size]
    fields = [f.name for f in dataclasses.fields(base)]  # type: ignore[arg-type]
    adjustable = set(adjustable)
    settable = [f for f in fields if f not in derived or f in adjustable]
    values: dict[str, Any] = dict(derived)
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"Unknown override {key!r} for model {arch!r}.{did_you_mean(key, fields)} "
                f"Valid keys: {', '.join(sorted(settable))}."
            )
        if key in derived and key not in adjustable:
            raise ConfigError(
                f"Override {key!r} for model {arch!r} is derived from the dataset ({derived[key]!r}) "
                f"and cannot be set. Valid keys: {', '.join(sorted(settable))}."
            )
        values[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **values)  # type: ignore[type-var]


def check_int(arch: str, name: str, value: object, *, minimum: int = 1) -> int:
    """An int >= `minimum` (bools rejected), with the shared wording."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterTypeError(
            f"Model {arch!r}: expected `{name}` to be an int, got {type(value).__name__} {value!r}."
        )
    if value < minimum:
        raise ConfigError(f"Model {arch!r}: expected `{name}` to be an int >= {minimum}, got {value}.")
    return value


def check_dropout(arch: str, name: str, value: object) -> float:
    """A probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterTypeError(
            f"Model {arch!r}: expected `{name}` to be a float in [0, 1), got {type(value).__name__} {value!r}."
        )
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"Model {arch!r}: expected `{name}` to be in [0, 1), got {value}.")
    return float(value)


def check_options(arch: str, name: str, value: object, choices: Iterable[str]) -> str:
    """One of `choices`, with a did-you-mean hint."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ConfigError(f"Model {arch!r}: expected `{name}` to be one of {choices}, got {value!r}.{hint}")
    return value


def check_bool(arch: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ParameterTypeError(
            f"Model {arch!r}: expected `{name}` to be a bool, got {type(value).__name__} {value!r}."
        )
    return value


__all__ = ["SIZES", "FITS", "check_size", "check_data", "make_config", "check_int", "check_dropout", "check_options", "check_bool"]
