"""Option checks shared by every dataset loader (built-in, synthetic and user data).

Each raises `ConfigError` (bad value) or `ParameterTypeError` (wrong type) saying what was
expected and what was got, in the wording of `workbench.errors`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import (ConfigError, DataError, ParameterTypeError, check_bool, check_number,
                             check_positive_int, did_you_mean)

__all__ = ["reject_unknown_options", "check_seed", "check_fractions", "check_optional_positive_int", "check_float",
           "check_bool", "check_int_list", "check_positive_int", "existing_file"]

def reject_unknown_options(where: str, unknown: Mapping[str, Any], func: Callable[..., Any]) -> None:
    """Raise ConfigError for keyword options `func` does not take, with a did-you-mean hint.

    `func`'s keyword-only parameters (and `seed`) are the valid options."""
    if not unknown:
        return
    valid = sorted(
        n for n, p in inspect.signature(func).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in ("path", "function")
    )
    bad = sorted(unknown)[0]
    raise ConfigError(
        f"Unknown option {bad!r} for {where}.{did_you_mean(bad, valid)} Valid options: {', '.join(valid)}."
    )


def check_seed(seed: object) -> int:
    """A seed is a non-negative int (bools rejected)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterTypeError(f"Expected `seed` to be an int, got {type(seed).__name__} {seed!r}.")
    if seed < 0:
        raise ConfigError(f"Expected `seed` to be an int >= 0, got {seed}.")
    return int(seed)


def check_fractions(val_fraction: object, test_fraction: object) -> tuple[float, float, float]:
    """(train, val, test) fractions from the val and test fractions; each in (0, 1), sum < 1."""
    out = []
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParameterTypeError(f"Expected `{name}` to be a float in (0, 1), got {type(v).__name__} {v!r}.")
        if not 0 < float(v) < 1:
            raise ConfigError(f"Expected `{name}` to be in (0, 1), got {v}.")
        out.append(float(v))
    if out[0] + out[1] >= 1:
        raise ConfigError(
            f"Expected `val_fraction` + `test_fraction` < 1 (the rest is train), got {out[0]} + {out[1]}."
        )
    return 1.0 - out[0] - out[1], out[0], out[1]


def check_optional_positive_int(name: str, value: object) -> int | None:
    return None if value is None else check_positive_int(name, value)


def check_float(name: str, value: object, *, low: float | None = None, high: float | None = None,
                open_low: bool = False) -> float:
    """A finite real number, optionally bounded (low open when `open_low`):
    `workbench.errors.check_number`."""
    return check_number(name, value, low=low, high=high, low_open=open_low)


def check_int_list(name: str, value: object, *, low: int, high: int) -> tuple[int, ...]:
    """A non-empty list/tuple of distinct ints in [low, high)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ParameterTypeError(f"Expected `{name}` to be a non-empty list of ints, got {value!r}.")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ParameterTypeError(f"Expected `{name}` to hold ints, got {type(v).__name__} {v!r}.")
        if not low <= int(v) < high:
            raise ConfigError(f"Expected every entry of `{name}` in [{low}, {high}), got {v}.")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ConfigError(f"Expected distinct entries in `{name}`, got {list(value)}.")
    return tuple(out)



def existing_file(path: object, what: str) -> Path:
    """`path` as a Path to an existing file, or DataError naming the path as given and resolved."""
    if not isinstance(path, (str, Path)):
        raise ParameterTypeError(f"Expected `path` to be a file path string, got {type(path).__name__} {path!r}.")
    p = Path(path).expanduser()
    if not p.is_file():
        kind = "a directory, not a file" if p.is_dir() else "not found"
        raise DataError(f"{what} file {kind}: {str(p)!r} (resolved to {str(p.resolve())!r}).")
    return p
