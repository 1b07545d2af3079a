"""Calling the user's code: where it is imported from, and what its failures become.

- Imports: `module:function` references in a plan import from the plan file's folder and
  the current directory (in that order, ahead of site-packages), for the installed
  `workbench` command as for `python -m workbench`. `import_dirs` adds them for the
  duration of a run or a `validate`.
- Failures: `call_user` runs a user function and turns anything it raises, including
  `SystemExit`, a `KeyboardInterrupt` raised by the code itself, and `RecursionError`,
  into one `UserCodeError` naming what was called; the traceback goes to `details` for the
  run's log file. A real Ctrl-C or SIGTERM (see `signals_as_interrupt`) still interrupts.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from workbench.errors import ConfigError, UserCodeError, did_you_mean

T = TypeVar("T")

_signalled = threading.Event()  # set by our SIGINT/SIGTERM handler: a real interrupt
_watching = threading.Event()  # set while `signals_as_interrupt` is active


@contextlib.contextmanager
def import_dirs(dirs: Sequence[str | Path | None]) -> Iterator[None]:
    """Put `dirs` (existing folders; None skipped) first on sys.path for the duration."""
    added = []
    for d in reversed([str(Path(d).resolve()) for d in dirs if d is not None]):
        if Path(d).is_dir() and d not in sys.path:
            sys.path.insert(0, d)
            added.append(d)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for d in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


def import_reference(ref: str, *, what: str = "factory") -> Callable[..., Any]:
    """The callable a "package.module:function" reference names. Import failures (any
    exception the module raises at import, SystemExit included) are a ConfigError/
    UserCodeError naming the reference and the folders searched."""
    if not isinstance(ref, str) or ":" not in ref or ref.startswith(":") or ref.endswith(":"):
        raise ConfigError(f"Expected the {what} as 'package.module:function', got {ref!r}.")
    module, _, attr = ref.partition(":")
    try:
        mod = call_user(f"importing {module!r} for {what} {ref!r}", importlib.import_module, module)
    except UserCodeError as exc:
        cause = exc.__cause__
        if isinstance(cause, ModuleNotFoundError) and cause.name and module.startswith(cause.name):
            raise ConfigError(
                f"Cannot import module {module!r} for {what} {ref!r}: no module named {cause.name!r}. "
                f"Searched the plan's folder, the current directory ({Path.cwd()}) and installed packages."
            ) from None
        raise
    fn: Any = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            public = [n for n in dir(mod) if not n.startswith("_")]
            raise ConfigError(f"Module {module!r} has no attribute {attr!r} (from {what} {ref!r}).{did_you_mean(part, public)}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"{what.capitalize()} {ref!r} is not callable (it is a {type(fn).__name__}).")
    return fn


def call_user(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs); whatever user code raises or exits with becomes UserCodeError
    "<what> raised <Type>: <message>". A real interrupt (our signal handler ran) passes."""
    try:
        return fn(*args, **kwargs)
    except UserCodeError:
        raise
    except KeyboardInterrupt as exc:
        if is_real_interrupt():
            raise
        raise UserCodeError(f"{what} raised KeyboardInterrupt{_tail(exc)} (not a Ctrl-C: raised by the code itself).",
                            traceback.format_exc()) from exc
    except SystemExit as exc:
        raise UserCodeError(f"{what} called sys.exit({exc.code!r}); user code must return or raise, not exit.",
                            traceback.format_exc()) from exc
    except RecursionError as exc:
        raise UserCodeError(f"{what} raised RecursionError: maximum recursion depth exceeded.",
                            traceback.format_exc()) from exc
    except Exception as exc:
        raise UserCodeError(f"{what} raised {type(exc).__name__}{_tail(exc)}", traceback.format_exc()) from exc


def _tail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f": {text[:400]}" if text else ""


def is_real_interrupt() -> bool:
    """Whether a KeyboardInterrupt being handled now is a real Ctrl-C/SIGTERM: our handler
    ran, or no handler of ours is watching (then every interrupt counts as real)."""
    return _signalled.is_set() or not _watching.is_set()


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """For the duration: SIGINT and SIGTERM (a scheduler, `kill`, a CI timeout) raise
    KeyboardInterrupt and are remembered as real interrupts, so a run is marked
    `interrupted`, while a KeyboardInterrupt user code raises itself is an error."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _signalled.clear()
    _watching.set()

    def handler(signum: int, frame: Any) -> None:
        _signalled.set()
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _watching.clear()
        for s, h in previous.items():
            signal.signal(s, h)
