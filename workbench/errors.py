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


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """' > 0', ' >= 0', ' <= 1', ' in (0, 0.5)': the bounds as a reader expects them."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> float:
    """Validate a finite real number (bools rejected; `integer`: an int) within the optional
    bounds [low, high], either end open; returns it as a float (an int when `integer`).

    check_number("sigma", s, low=0, low_open=True) -> "Expected `sigma` to be a finite
    number > 0, got -1."."""
    kind = "an int" if integer else "a finite number"
    bounds = _range_text(low, high, low_open, high_open)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ParameterTypeError(f"Expected `{name}` to be {kind}{bounds}, got {type(value).__name__} {value!r}.")
    v = float(value)  # type: ignore[arg-type]
    bad = v != v or v in (float("inf"), float("-inf"))
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        raise ConfigError(f"Expected `{name}` to be {kind}{bounds}, got {value!r}.")
    return int(value) if integer else v  # type: ignore[arg-type, return-value]


def _as_list(name: str, value: object, what: str, allow_empty: bool) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ParameterTypeError(f"Expected `{name}` to be a list of {what}, got {type(value).__name__} {value!r}.")
    if not value and not allow_empty:
        raise ConfigError(f"Expected `{name}` to be a non-empty list of {what}, got {list(value)!r}.")
    return tuple(value)


def check_name_list(name: str, value: object, choices: Iterable[str] | None = None, *,
                    allow_empty: bool = True) -> tuple[str, ...]:
    """Validate a list (or tuple) of names, each one of `choices` when given (with a
    did-you-mean hint); a bare string is refused (it is not a list of one name)."""
    choices = list(choices) if choices is not None else None
    what = f"names from {choices}" if choices is not None else "names (str)"
    out = _as_list(name, value, what, allow_empty)
    for v in out:
        if not isinstance(v, str):
            raise ParameterTypeError(f"Expected every entry of `{name}` to be a name (str), got "
                                     f"{type(v).__name__} {v!r} in {list(out)!r}.")
        if choices is not None and v not in choices:
            raise ConfigError(f"Unknown entry {v!r} in `{name}`.{did_you_mean(v, choices)} "
                              f"Valid: {', '.join(choices)}.")
    return out


def check_number_list(name: str, value: object, *, low: float | None = None, high: float | None = None,
                      low_open: bool = False, high_open: bool = False, integer: bool = False,
                      allow_empty: bool = False) -> tuple:
    """Validate a list (or tuple) of numbers, each as `check_number` with the same bounds;
    returns them as a tuple of floats (ints when `integer`), in the given order."""
    kind = "ints" if integer else "finite numbers"
    out = _as_list(name, value, kind + _range_text(low, high, low_open, high_open), allow_empty)
    try:
        return tuple(check_number(f"{name}[{i}]", v, low=low, high=high, low_open=low_open, high_open=high_open,
                                  integer=integer) for i, v in enumerate(out))
    except (ConfigError, ParameterTypeError) as exc:
        raise type(exc)(f"{exc} (in `{name}` = {list(out)!r})") from None


def check_bool(name: str, value: object) -> bool:
    """Validate a bool (true/false in a plan; 0/1 and strings are refused)."""
    if not isinstance(value, bool):
        raise ParameterTypeError(f"Expected `{name}` to be true or false, got {type(value).__name__} {value!r}.")
    return value
