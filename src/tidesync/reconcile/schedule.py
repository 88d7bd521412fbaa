"""Scheduled reconciliation: ``reconcile: {every: 1h, repair: true}`` on a pipeline, run by ``tidesync run``.

Each scheduled pipeline gets one task that waits ``every``, reconciles (with
its own state-store connection, so it never holds the engine's), logs the
outcome and waits again. A run that fails is logged and retried at the next
tick; it never stops the pipelines. The first run is one interval after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.config import LoadedConfig

if TYPE_CHECKING:  # imported when a schedule runs: a run without one does not load the reconciler
    from tidesync.reconcile.run import PipelineReport

log = logging.getLogger("tidesync.reconcile")


class ReconcileSchedules:
    def __init__(self, loaded: LoadedConfig, pipelines: Sequence[str], clock: Clock = SYSTEM_CLOCK) -> None:
        self.loaded = loaded
        self.clock = clock
        self.specs = [p for p in loaded.pipelines if p.name in pipelines and p.config.reconcile is not None]
        self.tasks: list[asyncio.Task[None]] = []
        self.reports: dict[str, PipelineReport] = {}  # the latest report of each pipeline

    def start(self) -> ReconcileSchedules:
        for spec in self.specs:
            self.tasks.append(asyncio.create_task(self._loop(spec.name), name=f"{spec.name}:reconcile"))
        return self

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()

    async def _loop(self, name: str) -> None:
        from tidesync.reconcile.run import reconcile_pipeline

        schedule = self.loaded.pipeline(name).config.reconcile
        assert schedule is not None
        while True:
            await self.clock.sleep(schedule.every)
            try:
                report = await reconcile_pipeline(self.loaded, name, schedule.options(), clock=self.clock)
            except Exception as exc:  # a failed run must not stop the pipelines; the next tick tries again
                log.error("scheduled reconcile of %s failed: %s", name, exc)
                continue
            self.reports[name] = report
            level = logging.WARNING if report.drift else logging.INFO
            log.log(
                level,
                "scheduled reconcile of %s: drift %d%s",
                name,
                report.drift,
                f", repaired {report.drift - report.unrepaired}" if schedule.repair else "",
            )
