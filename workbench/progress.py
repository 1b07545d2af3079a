"""Progress inside long jobs, for a terminal and for a log.

On a terminal a tqdm bar; anywhere else (a CI log, a notebook cell's captured output, a
Ray worker whose stdout Ray forwards to the driver) one plain line at most every
`interval_s` seconds with done/total, the rate and an ETA, plus a closing line:

    explain shapley (digits_cnn): 12/64 examples (19%), 41.3 s elapsed, ETA 2 min 59 s

Suites get one through `RunContext.progress(total, what)`; training, attacks,
explanations, ensembles and certification report through it. Whether a bar or lines are
used is decided once per process (`mode()`); `WORKBENCH_PROGRESS=bar|log|off` overrides, and
`WORKBENCH_PROGRESS_INTERVAL` (seconds, default 30) sets the log interval.
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


def _forced() -> str | None:
    """The display `WORKBENCH_PROGRESS` asks for, or None when it is unset or unrecognised."""
    forced = os.environ.get("WORKBENCH_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    if forced in ("1", "true", "yes"):
        return "bar"
    if forced in ("0", "false", "no"):
        return "off"
    return None


def mode(stream: TextIO | None = None) -> str:
    """"bar" on a terminal, else "log"; `WORKBENCH_PROGRESS` (bar, log, off) overrides."""
    forced = _forced()
    if forced is not None:
        return forced
    stream = stream if stream is not None else sys.stderr
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError):
        return "log"


def display_for(progress: bool | str | None, stream: TextIO | None = None) -> str:
    """The display of a run whose plan says `progress` (`run.progress`): a mode name is
    taken as given; True/None follow `mode()`; False is "off" unless `WORKBENCH_PROGRESS`
    asks for a display."""
    if isinstance(progress, str):
        return check_choice("progress", progress, MODES)
    if progress is False:
        return _forced() or "off"
    return mode(stream)


def interval_from_env() -> float:
    """Seconds between log lines: `WORKBENCH_PROGRESS_INTERVAL`, default 30."""
    text = os.environ.get("WORKBENCH_PROGRESS_INTERVAL", "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"Expected $WORKBENCH_PROGRESS_INTERVAL to be a number of seconds > 0, got {text!r}.")
    return value


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


def progress_line(what: str, done: int, total: int, elapsed: float, unit: str = "", note: str = "",
                  final: bool = False, fraction: float | None = None) -> str:
    """One log line: done/total, percent, elapsed and (once something is done) the ETA,
    extrapolated linearly from the rate so far; `note` (what the loop is at) last. The
    `final` line of a loop that ended before its total (early stopping) says "stopped".
    `fraction`: the share of the work done when units differ in cost (`Progress` with
    `work_total`); the ETA then extrapolates it instead of the unit count, and the line
    gives it as "% of the work"."""
    unit_s = f" {unit}" if unit else ""
    if fraction is not None and total > 0:
        pct = f" ({100.0 * fraction:.0f}% of the work)"
    else:
        pct = f" ({100.0 * done / total:.0f}%)" if total > 0 else ""
    line = f"{what}: {done}/{total}{unit_s}{pct}, {format_duration(elapsed)} elapsed"
    if final and done < total:
        line += ", stopped"
    elif 0 < done < total and fraction is None:
        line += f", ETA {format_duration(elapsed / done * (total - done))}"
    elif 0 < done < total and fraction is not None and 0 < fraction < 1:
        line += f", ETA {format_duration(elapsed / fraction * (1.0 - fraction))}"
    elif done >= total > 0:
        line += ", done"
    if note:
        line += f" [{note}]"
    return line


class Progress:
    """Counts units of work (examples, steps, epochs) of one long loop.

    `total` is how many units the loop will do; `update(n, note=...)` adds n done (`note`
    says what was just done, e.g. "pgd eps=0.1"); `advance_to(done)` for loops that know
    their position. `interval_s` None: `WORKBENCH_PROGRESS_INTERVAL` or 30 s. Use as a
    context manager so the closing line (log mode) or bar (terminal) is always finished.

    Units of unequal cost (a saliency map and a Shapley explanation of one example differ
    by 10^4 model passes): give `work_total` (e.g. the model passes of the whole loop) and
    open each run of equal units with `stage(units, work_per_unit)`; the ETA and the bar
    then follow the work done, not the count of units.
    """

    def __init__(
        self,
        total: int,
        what: str,
        *,
        unit: str = "",
        log: Callable[[str], None] | None = None,
        interval_s: float | None = None,
        display: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        work_total: float | None = None,
    ) -> None:
        check_positive_int("total", total, allow_zero=True)
        if work_total is not None and (isinstance(work_total, bool) or not isinstance(work_total, (int, float))
                                       or not work_total > 0 or work_total == float("inf")):
            raise ConfigError(f"Expected `work_total` to be a finite number > 0 (or None), got {work_total!r}.")
        interval_s = interval_from_env() if interval_s is None else interval_s
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise ConfigError(f"Expected `interval_s` to be a number of seconds > 0, got {interval_s!r}.")
        display = check_choice("display", display if display is not None else mode(), MODES)
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.note = ""
        self.display = display
        self.interval_s = float(interval_s)
        self._log = log if log is not None else (lambda m: print(m, file=sys.stderr, flush=True))
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._closed = False
        self.work_total = None if work_total is None else float(work_total)
        self.work_done = 0.0
        self.unit_work = 1.0  # work of one unit of the current stage
        self._stage_end = 0
        self._bar: Any = None
        if display == "bar" and total > 0:
            from tqdm.auto import tqdm

            if self.work_total is None:
                self._bar = tqdm(total=total, desc=what, unit=unit or "it", leave=False)
            else:  # the bar and its ETA follow the work; the units done are in the postfix
                self._bar = tqdm(total=self.work_total, desc=what, leave=False,
                                 bar_format="{desc}: {percentage:3.0f}% of the work|{bar}| {postfix} "
                                            "[{elapsed}<{remaining}]")

    @property
    def fraction(self) -> float | None:
        """Share of the work done (with `work_total`), else None."""
        if self.work_total is None:
            return None
        return 1.0 if self.total and self.done >= self.total else min(1.0, self.work_done / self.work_total)

    def stage(self, units: int, work_per_unit: float = 1.0, *, note: str | None = None) -> None:
        """Finish the previous stage (its units count as done, e.g. a skipped method) and
        open one of `units` units costing `work_per_unit` each."""
        self.advance_to(self._stage_end)
        self._stage_end = min(self.total, self.done + int(units)) if self.total else self.done + int(units)
        self.unit_work = float(work_per_unit)
        if note is not None:
            self.note = note

    def end_stage(self) -> None:
        """The current stage's units all done (those its loop did not tick itself)."""
        self.advance_to(self._stage_end)

    def update(self, n: int = 1, *, note: str | None = None) -> None:
        before, work_before = self.done, self.work_done
        self.done = min(self.total, self.done + int(n)) if self.total else self.done + int(n)
        self.work_done += (self.done - before) * self.unit_work
        if note is not None:
            self.note = note
        if self._bar is not None:
            if self.work_total is not None:
                post = f"{self.done}/{self.total} {self.unit}".rstrip() + (f" [{self.note}]" if self.note else "")
                self._bar.set_postfix_str(post, refresh=False)
                self._bar.update(min(self.work_done, self.work_total) - min(work_before, self.work_total))
                return
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(self.done - before)
        elif self.display == "log":
            now = self._clock()
            if self.done > before and now - self._last_line >= self.interval_s and self.done < self.total:
                self._last_line = now
                self._log(progress_line(self.what, self.done, self.total, now - self._start, self.unit, self.note,
                                        fraction=self.fraction))

    def advance_to(self, done: int, *, note: str | None = None) -> None:
        """Move forward to `done` units (never back): for loops that skip or batch units."""
        self.update(max(0, int(done) - self.done), note=note)

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
            self._log(progress_line(self.what, self.done, self.total, self.elapsed, self.unit, self.note, final=True,
                                    fraction=self.fraction))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
