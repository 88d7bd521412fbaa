"""A pipeline with ``schedule:`` (cron): a batch run (:mod:`.once`) at each of its times instead of running on.

Times are cron expressions (five fields, or six with seconds last, as
croniter reads them) in UTC, computed from the engine's clock, so a test
drives a schedule with a fake clock. Between runs the pipeline shows
``scheduled`` with the next run's time (the status's ``next_attempt_at`` and
``next_run_at``). A run that is still going at a time that was due is not
overlapped: the next run is the first time after it ends. A run that fails or
ends with dead letters or a block is logged and tried again at the next time;
it does not stop the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING

from croniter import croniter

from tidesync.clock import Clock
from tidesync.errors import ConfigError, TidesyncError
from tidesync.secrets import REDACTOR

if TYPE_CHECKING:
    from tidesync.engine.runner import PipelineRunner

log = logging.getLogger("tidesync.engine")


class CronSchedule:
    def __init__(self, expression: str) -> None:
        if not croniter.is_valid(expression):
            raise ConfigError(f"schedule {expression!r} is not a cron expression (e.g. '*/15 * * * *')")
        self.expression = expression

    def next_after(self, t: float) -> float:
        """The first time strictly after ``t`` (seconds since the epoch, UTC)."""
        start = dt.datetime.fromtimestamp(t, dt.UTC)
        return float(croniter(self.expression, start).get_next(float))

    async def run(self, runner: PipelineRunner, stop: asyncio.Event) -> None:
        """Batch runs of ``runner`` at each time, until ``stop``."""
        clock, view = runner.clock, runner.view
        try:
            while not stop.is_set():
                view.next_run_at = at = self.next_after(clock.time())
                await view.persist_status()
                log.info("pipeline %s: next run at %s", runner.name, _iso(at))
                if not await _sleep_until(clock, at, stop):
                    break
                view.next_run_at = None
                try:
                    once = await runner.run_once(stop)
                except Exception as exc:  # the run logged it and shows failed; the next time tries again
                    error = str(exc) if isinstance(exc, TidesyncError) else f"{type(exc).__name__}: {exc}"
                    log.error("pipeline %s: the scheduled run failed: %s", runner.name, REDACTOR.redact(error))
                    continue
                report = log.info if once.ok else log.warning
                report("%s", once.summary(runner.name))
        finally:
            view.next_run_at = None
            with contextlib.suppress(Exception):
                await view.persist_status()


async def _sleep_until(clock: Clock, at: float, stop: asyncio.Event) -> bool:
    """Wait on ``clock`` until ``at``; False when ``stop`` was set first."""
    sleeper = asyncio.ensure_future(clock.sleep(max(0.0, at - clock.time())))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((sleeper, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        stopped.cancel()
    return not stop.is_set()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")
