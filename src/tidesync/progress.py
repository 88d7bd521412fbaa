"""Progress where a person waits: a rich bar on a terminal, a log line every few seconds elsewhere.

One :class:`Progress` per wait (a snapshot, a backfill, a reconcile, a replay),
one *task* per thing counted in it (a table, an object type), named by the
caller. Each task shows what it is, how many are done (of how many, when the
total is known), the rate, and the time left (only with a total).

Where it shows:

- ``enabled=False`` (a ``progress: false`` config key, ``--no-progress``):
  nothing at all.
- the console is a terminal (default: stderr): a rich progress display, one
  bar per task, kept on screen when it ends.
- otherwise (a service, a pipe, a CI log): a log line of the same figures
  every ``log_every`` seconds per task, and one when the task is done.

A total is a hint (a planner's estimate, an API's count): a task may finish
below or above it; when it is done its total becomes its count. Displays
running at the same time (two pipelines snapshotting) share one stderr
console, where rich stacks them; a rich that cannot stack them refuses the
second, which then logs instead. Time comes from ``clock`` (monotonic
seconds), so tests drive rates and ETAs with a fake one.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

log = logging.getLogger("tidesync.progress")
_stderr: Console | None = None


def _stderr_console() -> Console:
    global _stderr
    if _stderr is None:
        _stderr = Console(stderr=True)
    return _stderr


def _duration(seconds: float) -> str:
    return str(dt.timedelta(seconds=max(0, round(seconds))))


class _CountColumn(ProgressColumn):
    """``250/300 rows``, or ``1,234 rows`` without a total."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        return Text(f"{done}/{int(task.total):,} {self.unit}" if task.total else f"{done} {self.unit}")


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s")


class _EtaColumn(ProgressColumn):
    """``eta 0:01:05`` with a total and a rate; blank otherwise (a count has no end to estimate)."""

    def render(self, task: Task) -> Text:
        if task.finished or not task.total or task.time_remaining is None:
            return Text("")
        return Text(f"eta {_duration(task.time_remaining)}")


@dataclass
class _Task:
    name: str
    total: int | None
    started: float
    logged: float
    completed: int = 0
    done: bool = False
    bar: TaskID | None = None


class Progress:
    """Progress of one wait; see the module docstring. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        what: str,
        *,
        unit: str = "rows",
        enabled: bool = True,
        console: Console | None = None,
        logger: logging.Logger | None = None,
        log_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.unit = unit
        self.log = logger or log
        self.log_every = log_every
        self.clock = clock
        self.console = console or _stderr_console()
        self.mode = "off" if not enabled else "bar" if self.console.is_terminal else "log"
        self.tasks: dict[str, _Task] = {}
        self._bar: RichProgress | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add(self, name: str, total: int | None = None) -> None:
        """Start counting ``name`` (if not yet started); a ``total`` of 0 or None means not known."""
        if name in self.tasks or self.mode == "off":
            return
        now = self.clock()
        task = self.tasks[name] = _Task(name, total or None, now, now)
        if self.mode == "bar":
            bar = self._display()
            if bar is not None:
                task.bar = bar.add_task(name, total=task.total)

    def set_total(self, name: str, total: int | None) -> None:
        """A better total for ``name`` (an API answered with one)."""
        task = self.tasks.get(name)
        if task is None or task.done:
            return
        task.total = total or None
        if self._bar is not None and task.bar is not None:
            self._bar.update(task.bar, total=task.total)

    def advance(self, name: str, n: int = 1, *, done: bool = False) -> None:
        """Count ``n`` more for ``name`` (started if needed); ``done``: that was its last."""
        if self.mode == "off":
            return
        self.add(name)
        task = self.tasks[name]
        if task.done:
            return
        task.completed += n
        task.done = done
        if done:
            task.total = task.completed
        if self._bar is not None and task.bar is not None:
            self._bar.update(task.bar, completed=task.completed, total=task.total)
            return
        now = self.clock()
        if done or now - task.logged >= self.log_every:
            task.logged = now
            self.log.info("%s", self.line(name))

    def line(self, name: str) -> str:
        """The figures of ``name`` as one line: ``snapshot public.a: 250/300 rows (83%), 120 rows/s, eta 0:00:04``."""
        task = self.tasks[name]
        elapsed = self.clock() - task.started
        rate = task.completed / elapsed if elapsed > 0 else None
        count = f"{task.completed:,}"
        if task.total:
            count += f"/{task.total:,} {self.unit} ({100 * task.completed // task.total}%)"
        else:
            count += f" {self.unit}"
        parts = [f"{self.what} {name}: {count}", f"{rate:,.0f} {self.unit}/s" if rate else f"- {self.unit}/s"]
        if task.done:
            parts.append(f"done in {_duration(elapsed)}")
        elif task.total and rate and task.total > task.completed:
            parts.append(f"eta {_duration((task.total - task.completed) / rate)}")
        return ", ".join(parts)

    def close(self) -> None:
        """Stop the display (it stays on screen). Safe to call twice."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.stop()

    def _display(self) -> RichProgress | None:
        if self._bar is None:
            bar = RichProgress(
                TextColumn(f"{self.what} {{task.description}}", markup=False),
                BarColumn(),
                _CountColumn(self.unit),
                _RateColumn(self.unit),
                _EtaColumn(),
                TimeElapsedColumn(),
                console=self.console,
                get_time=self.clock,
                transient=False,
            )
            try:
                bar.start()
            except LiveError:  # another display is live and this rich cannot stack them: log lines instead
                self.mode = "log"
                return None
            self._bar = bar
        return self._bar
