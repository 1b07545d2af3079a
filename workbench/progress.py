"""Progress inside long jobs, for a terminal and for a log.

On a terminal a tqdm bar; anywhere else (a CI log, a notebook cell's captured output, a
Ray worker whose stdout Ray forwards to the driver) one plain line at most every
`interval_s` seconds with done/total, the rate and an ETA, plus a closing line:

    explain shapley (digits_cnn): 12/64 examples (19%), 41.3 s elapsed, ETA 2 min 59 s

Suites get one through `RunContext.progress(total, what)`; training, attacks,
explanations, ensembles and certification report through it. Whether a bar or lines are
used is decided once per process (`mode()`); `WORKBENCH_PROGRESS=bar|log|off` overrides.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from workbench.errors import ConfigError, check_choice, check_positive_int

DEFAULT_INTERVAL_S = 30.0
MODES = ("bar", "log", "off")


def mode(stream: TextIO | None = None) -> str:
    """"bar" on a terminal, else "log"; `WORKBENCH_PROGRESS` (bar, log, off) overrides."""
    forced = os.environ.get("WORKBENCH_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    if forced in ("1", "true", "yes"):
        return "bar"
    if forced in ("0", "false", "no"):
        return "off"
    stream = stream if stream is not None else sys.stderr
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError):
        return "log"


def format_duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 2 h 03 min: coarse enough to read at a glance."""
    if seconds != seconds or seconds < 0:  # NaN or negative: unknown
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(what: str, done: int, total: int, elapsed: float, unit: str = "") -> str:
    """One log line: done/total, percent, elapsed and (once something is done) the ETA,
    extrapolated linearly from the rate so far."""
    unit_s = f" {unit}" if unit else ""
    pct = f" ({100.0 * done / total:.0f}%)" if total > 0 else ""
    line = f"{what}: {done}/{total}{unit_s}{pct}, {format_duration(elapsed)} elapsed"
    if 0 < done < total:
        line += f", ETA {format_duration(elapsed / done * (total - done))}"
    elif done >= total > 0:
        line += ", done"
    return line


class Progress:
    """Counts units of work (examples, steps, epochs) of one long loop.

    `total` is how many units the loop will do; `update(n)` adds n done. Use as a context
    manager so the closing line (log mode) or bar (terminal) is always finished.
    """

    def __init__(
        self,
        total: int,
        what: str,
        *,
        unit: str = "",
        log: Callable[[str], None] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        display: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_positive_int("total", total, allow_zero=True)
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise ConfigError(f"Expected `interval_s` to be a number of seconds > 0, got {interval_s!r}.")
        display = check_choice("display", display if display is not None else mode(), MODES)
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.display = display
        self.interval_s = float(interval_s)
        self._log = log if log is not None else (lambda m: print(m, file=sys.stderr, flush=True))
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._closed = False
        self._bar: Any = None
        if display == "bar" and total > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit or "it", leave=False)

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + int(n)) if self.total else self.done + int(n)
        if self._bar is not None:
            self._bar.update(n)
        elif self.display == "log":
            now = self._clock()
            if now - self._last_line >= self.interval_s and self.done < self.total:
                self._last_line = now
                self._log(progress_line(self.what, self.done, self.total, now - self._start, self.unit))

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    def close(self) -> None:
        """Finish the bar, or write the closing line when the loop ran long enough to have
        written a line before (short loops stay silent in a log)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.display == "log" and self._last_line != self._start:
            self._log(progress_line(self.what, self.done, self.total, self.elapsed, self.unit))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
