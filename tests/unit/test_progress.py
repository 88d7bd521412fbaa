"""The shared progress display: a rich bar on a terminal, log lines elsewhere, nothing when turned off."""

from __future__ import annotations

import io
import logging
import re

import pytest
from rich.console import Console

from tidesync.progress import Progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(out: io.StringIO) -> str:
    return ANSI.sub("", out.getvalue())


def test_on_a_terminal_a_bar_shows_count_rate_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("snapshot", console=Console(file=out, force_terminal=True, width=140), clock=clock)
    assert progress.mode == "bar"
    progress.add("public.a", 300)
    clock.now = 1.0
    progress.advance("public.a", 100)
    clock.now = 3.0
    progress.advance("public.a", 100)  # 100 rows in the last 2 seconds: 50 rows/s, 100 left: 2 seconds
    progress.advance("public.b", 7)  # started on first use, no total: a count
    progress.close()
    progress.close()  # twice is fine
    last = plain(out).rstrip().splitlines()[-2:]
    assert "snapshot public.a" in last[0] and "200/300 rows" in last[0], last
    assert "50 rows/s" in last[0] and "eta 0:00:02" in last[0], last
    assert "snapshot public.b" in last[1] and "7 rows" in last[1] and "eta" not in last[1], last


def test_a_finished_task_shows_its_count_as_its_total(caplog: pytest.LogCaptureFixture) -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("replay", unit="letters", console=Console(file=out, force_terminal=True), clock=clock) as p:
        p.add("shop", 10)  # a hint: only 4 turned out to be there
        clock.now = 2.0
        p.advance("shop", 4, done=True)
        p.advance("shop", 5)  # after done: ignored
    text = plain(out)
    assert "replay shop" in text and "4/4 letters" in text and "eta" not in text.splitlines()[-1]
    assert not caplog.records  # the bar, not log lines


def test_elsewhere_log_lines_carry_the_same_figures(caplog: pytest.LogCaptureFixture) -> None:
    out, clock = io.StringIO(), Clock()
    caplog.set_level(logging.INFO, logger="tidesync.progress")
    progress = Progress("initial load", console=Console(file=out), clock=clock, log_every=10.0)
    assert progress.mode == "log"
    progress.add("orders", 400)
    clock.now = 5.0
    progress.advance("orders", 50)  # not yet 10 seconds: no line
    assert not caplog.records
    clock.now = 10.0
    progress.advance("orders", 50)
    clock.now = 12.0
    progress.advance("orders", 20)  # 2 seconds after the last line: none
    clock.now = 20.0
    progress.advance("orders", 80, done=True)
    progress.advance("counts", 3)  # no total, started now: nothing to say yet
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "initial load orders: 100/400 rows (25%), 10 rows/s, eta 0:00:30",
        "initial load orders: 200/200 rows (100%), 10 rows/s, done in 0:00:20",
    ]
    assert out.getvalue() == ""  # nothing drawn on a console that is not a terminal


def test_a_count_without_total_logs_a_rate_and_no_eta(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="tidesync.sources.stripe")
    logger = logging.getLogger("tidesync.sources.stripe")
    progress = Progress("snapshot", unit="objects", console=Console(file=io.StringIO()), clock=clock, logger=logger)
    progress.add("stripe.customer")  # no total: the list API gives none
    clock.now = 4.0
    progress.advance("stripe.customer", 1000)
    clock.now = 10.0
    progress.advance("stripe.customer", 200)
    (record,) = caplog.records
    assert record.name == "tidesync.sources.stripe"
    assert record.getMessage() == "snapshot stripe.customer: 1,200 objects, 120 objects/s"


@pytest.mark.parametrize("terminal", [True, False])
def test_turned_off_it_shows_and_logs_nothing(terminal: bool, caplog: pytest.LogCaptureFixture) -> None:
    out, clock = io.StringIO(), Clock()
    caplog.set_level(logging.DEBUG, logger="tidesync")
    progress = Progress("snapshot", enabled=False, console=Console(file=out, force_terminal=terminal), clock=clock)
    progress.add("public.a", 10)
    clock.now = 60.0
    progress.advance("public.a", 10, done=True)
    progress.close()
    assert progress.mode == "off" and out.getvalue() == "" and not caplog.records and not progress.tasks


def test_two_displays_at_once_both_show() -> None:
    # Two pipelines snapshotting on one terminal: neither fails, both tasks are drawn.
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, force_terminal=True, width=120)
    first = Progress("snapshot", console=console, clock=clock)
    second = Progress("snapshot", console=console, clock=clock)
    first.advance("a.one", 3)
    second.advance("b.two", 5)
    second.close()
    first.close()
    text = plain(out)
    assert "snapshot a.one" in text and "snapshot b.two" in text
