"""Progress lines in a log: at most one per interval, done/total and an ETA that
extrapolates the rate; a bar only on a terminal (or when forced)."""

from __future__ import annotations

import io

import pytest

from workbench.errors import ConfigError, ParameterTypeError
from workbench.progress import Progress, display_for, format_duration, interval_from_env, mode, progress_line


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_log_mode_rate_limits_lines_and_extrapolates_eta() -> None:
    clock, lines = FakeClock(), []
    with Progress(10, "explain shapley (m)", unit="examples", log=lines.append, interval_s=30,
                  display="log", clock=clock) as p:
        for _ in range(10):
            clock.t += 10.0  # 10 s per example
            p.update()
    # lines at 30 s (3 done) and 60 s (6 done) and 90 s (9 done), then the closing line at 100 s
    assert lines[0] == "explain shapley (m): 3/10 examples (30%), 30.0 s elapsed, ETA 1 min 10 s"
    assert lines[1] == "explain shapley (m): 6/10 examples (60%), 1 min 00 s elapsed, ETA 40.0 s"
    assert len(lines) == 4
    assert lines[-1] == "explain shapley (m): 10/10 examples (100%), 1 min 40 s elapsed, done"


def test_short_loop_in_a_log_stays_silent() -> None:
    clock, lines = FakeClock(), []
    with Progress(5, "fast", log=lines.append, display="log", clock=clock) as p:
        for _ in range(5):
            clock.t += 0.1
            p.update()
    assert lines == []


def test_off_mode_and_bad_parameters() -> None:
    lines: list[str] = []
    with Progress(3, "x", log=lines.append, display="off", interval_s=1e-9) as p:
        p.update(3)
    assert lines == []
    with pytest.raises(ParameterTypeError, match="`total`"):
        Progress(1.5, "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="`interval_s`"):
        Progress(3, "x", interval_s=0)
    with pytest.raises(ConfigError, match="Did you mean 'log'"):
        Progress(3, "x", display="lg")


def test_mode_follows_the_stream_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_PROGRESS", raising=False)
    assert mode(io.StringIO()) == "log"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert mode(Tty()) == "bar"
    monkeypatch.setenv("WORKBENCH_PROGRESS", "off")
    assert mode(Tty()) == "off"
    monkeypatch.setenv("WORKBENCH_PROGRESS", "1")
    assert mode(io.StringIO()) == "bar"


def test_bar_mode_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    p = Progress(4, "bar", display="bar")
    p.update(2)
    p.update(2)
    assert p.done == 4 and p._bar.n == 4
    p.close()


@pytest.mark.parametrize("seconds,text", [(0.04, "0.0 s"), (59.94, "59.9 s"), (65, "1 min 05 s"),
                                          (7380, "2 h 03 min"), (float("nan"), "unknown")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_progress_line_without_total() -> None:
    assert progress_line("w", 0, 0, 1.0) == "w: 0/0, 1.0 s elapsed"


def test_note_and_advance_to() -> None:
    clock, lines = FakeClock(), []
    with Progress(6, "explain methods x examples (m)", unit="explanations", log=lines.append, interval_s=1,
                  display="log", clock=clock) as p:
        clock.t += 2
        p.advance_to(3, note="saliency")  # a whole method at once
        p.advance_to(2)  # never back
        clock.t += 2
        p.advance_to(3)  # nothing done since: no line
        assert len(lines) == 1
        p.update(note="shapley")
    assert p.done == 4
    assert lines[0] == "explain methods x examples (m): 3/6 explanations (50%), 2.0 s elapsed, ETA 2.0 s [saliency]"
    assert lines[1].endswith("4/6 explanations (67%), 4.0 s elapsed, ETA 2.0 s [shapley]") and len(lines) == 3
    # closed before its total (an early stop): no ETA on the last line
    assert lines[-1] == "explain methods x examples (m): 4/6 explanations (67%), 4.0 s elapsed, stopped [shapley]"


def test_display_for_a_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_PROGRESS", raising=False)
    assert display_for(False) == "off"
    assert display_for(True, io.StringIO()) == "log"  # not a terminal
    assert display_for("bar") == "bar"
    with pytest.raises(ConfigError, match="Did you mean 'log'"):
        display_for("lgo")
    monkeypatch.setenv("WORKBENCH_PROGRESS", "log")
    assert display_for(False) == "log"  # the environment variable overrides the plan


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_PROGRESS_INTERVAL", raising=False)
    assert interval_from_env() == 30.0 and Progress(1, "x", display="off").interval_s == 30.0
    monkeypatch.setenv("WORKBENCH_PROGRESS_INTERVAL", "0.5")
    assert Progress(1, "x", display="off").interval_s == 0.5
    assert Progress(1, "x", display="off", interval_s=2).interval_s == 2.0  # an explicit value wins
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("WORKBENCH_PROGRESS_INTERVAL", bad)
        with pytest.raises(ConfigError, match="WORKBENCH_PROGRESS_INTERVAL"):
            interval_from_env()


def test_work_weighted_stages_extrapolate_the_work_not_the_units() -> None:
    """Two stages of 3 units: 1 work each (3 s in all), then 9 work each (9 s per unit).
    Unit-counting would give ETA 3 s at 3/6 units (50%); the work says 3 of 30 done, so
    ETA 27 s; after one costly unit 12 of 30 in 12 s: ETA 18 s, the true remaining time."""
    clock, lines = FakeClock(), []
    with Progress(6, "explain methods x examples (m)", unit="explanations", log=lines.append, interval_s=1,
                  display="log", clock=clock, work_total=30.0) as p:
        p.stage(3, 1.0, note="saliency")
        clock.t += 3
        p.end_stage()
        p.stage(3, 9.0, note="shapley")  # the previous stage already ended: nothing moves
        assert p.done == 3 and p.work_done == 3.0 and p.fraction == pytest.approx(0.1)
        clock.t += 9
        p.update()
        p.stage(0, 1.0)  # a later stage opening counts the rest of this one as done (a skipped method)
        assert p.done == 6 and p.work_done == 30.0 and p.fraction == 1.0
    assert lines[0] == ("explain methods x examples (m): 3/6 explanations (10% of the work), 3.0 s elapsed, "
                        "ETA 27.0 s [saliency]")
    assert lines[1] == ("explain methods x examples (m): 4/6 explanations (40% of the work), 12.0 s elapsed, "
                        "ETA 18.0 s [shapley]")
    assert lines[-1].endswith("6/6 explanations (100% of the work), 12.0 s elapsed, done [shapley]")
    with pytest.raises(ConfigError, match="work_total"):
        Progress(3, "x", display="off", work_total=0)
    bar = Progress(4, "bar", display="bar", work_total=8.0)  # the bar follows the work
    bar.stage(2, 3.0, note="a")
    bar.update(2)
    assert bar._bar.n == 6.0 and "2/4" in bar._bar.postfix
    bar.close()
