"""Error types. Every user-facing failure is a `WorkbenchError` subclass that also
subclasses the builtin a caller would expect (`ValueError`, `TypeError`, `KeyError`...),
and says what was expected, what was got and what the valid choices are."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ConfigError(WorkbenchError, ValueError):
    """A plan, a CLI argument or a suite parameter is invalid (CLI exit code 2)."""


class UnknownNameError(ConfigError):
    """A name (suite, model, dataset, metric...) is not registered."""


class DataError(WorkbenchError, ValueError):
    """A dataset is malformed: NaNs, wrong dtype, missing file, wrong shape."""


class ModelError(WorkbenchError, ValueError):
    """A model does not fit its dataset (output shape, classes, non-finite outputs)."""


class ParameterTypeError(WorkbenchError, TypeError):
    """A parameter has the wrong type."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' when a close match exists, else ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the one shared wording for an unknown name."""
    choices = sorted(choices)
    return UnknownNameError(
        f"Unknown {kind} {name!r}.{did_you_mean(name, choices)} "
        f"Valid {kind}s: {', '.join(choices) if choices else '(none registered)'}."
    )


def check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    """Validate an int parameter > 0 (or >= 0); bools are rejected."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterTypeError(f"Expected `{name}` to be an int, got {type(value).__name__} {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"Expected `{name}` to be an int {bound}, got {value}.")
    return value


def check_probability(name: str, value: object, *, open_low: bool = False, open_high: bool = False) -> float:
    """Validate a float in [0, 1] (optionally open at either end)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterTypeError(f"Expected `{name}` to be a float in [0, 1], got {type(value).__name__} {value!r}.")
    v = float(value)
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (lo_ok and hi_ok):
        lo = "(" if open_low else "["
        hi = ")" if open_high else "]"
        raise ConfigError(f"Expected `{name}` to be in {lo}0, 1{hi}, got {value}.")
    return v


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Validate that `value` is one of `choices`, with a did-you-mean hint."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ConfigError(f"Expected `{name}` to be one of {choices}, got {value!r}.{hint}")
    return value


class UserCodeError(WorkbenchError, ValueError):
    """User code (a model factory, a dataset function, a forward pass) raised, exited or
    was interrupted from inside. `details` holds the traceback text for the run's log file."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ProblemsError(ConfigError):
    """Several independent problems found at once (every model and dataset of a plan is
    checked before reporting). The message's first line counts them; one indented line each."""

    def __init__(self, problems: list[str], what: str = "problem") -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = self.problems[0] if n == 1 else f"{n} {what}s:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(head)
