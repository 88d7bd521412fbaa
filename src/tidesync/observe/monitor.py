"""The process's watch over its pipelines: cached readings, lifecycle watch, metrics collector, alerts.

``tidesync run`` / ``serve`` build one :class:`Monitor` per process beside the
engine. Every ``interval`` seconds (the ``alerts:`` section's, default 5) it
polls the pipelines' states, refreshes the readings that need I/O, and steps
every alert, handing each fire and clear to the notifiers (the log always, a
signed webhook when configured). The admin API reads it for ``/metrics``,
``/api/alerts`` and the dashboard.

Time comes from the injected clock; the loop sleeps on it, so a fake clock
drives the whole schedule in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import httpx

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.engine.lifecycle import State
from tidesync.observe.alerting import AlertBook, LogNotifier, Notifier, WebhookNotifier
from tidesync.observe.alerts import Notice
from tidesync.observe.alerts_config import AlertRuleConfig, AlertsConfig, effective_rules
from tidesync.observe.exposition import EngineCollector
from tidesync.observe.readings import Readings, StateWatch, blocked_seconds
from tidesync.state.store import StateStore

log = logging.getLogger("tidesync.observe")
DEFAULT_INTERVAL = 5.0


class Monitor:
    def __init__(
        self,
        engine: Any,
        state: StateStore,
        *,
        alerts: AlertsConfig | None = None,
        syncs: Sequence[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        owns_state: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.state = state
        self.clock = clock
        self.owns_state = owns_state
        self.readings = Readings(self._runners, state, syncs=syncs, clock=clock)
        self.watch = StateWatch(clock)
        rules = effective_rules(alerts)
        self.book = AlertBook(rules, [r.name for r in self._runners()])
        self.interval = alerts.interval if alerts is not None else DEFAULT_INTERVAL
        self.notifiers: list[Notifier] = [LogNotifier()]
        if alerts is not None and alerts.webhook is not None:
            self.notifiers.append(WebhookNotifier(alerts.webhook, state, clock=clock, transport=transport))
        self.collector = EngineCollector(
            self._runners, readings=self.readings, watch=self.watch, alerts=lambda: self.book.alerts
        )
        self.notices: deque[Notice] = deque(maxlen=200)  # the latest fires and clears, for the API
        self.ticks = 0  # evaluations done
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_config(cls, loaded: Any, engine: Any, *, clock: Clock = SYSTEM_CLOCK) -> Monitor:
        """A monitor with a state-store connection of its own (same URL as the engine's)."""
        from tidesync.state import open_state_store

        return cls(
            engine,
            open_state_store(loaded.state_url),
            alerts=getattr(loaded.model, "alerts", None),
            syncs=[s.name for s in getattr(loaded, "syncs", [])],
            clock=clock,
            owns_state=True,
        )

    def _runners(self) -> list[Any]:
        return list(getattr(self.engine, "runners", []) or [])

    # --- values ------------------------------------------------------------------------------

    def sample(self, rule: AlertRuleConfig, pipeline: str, now: float) -> float | None:
        runner = next((r for r in self._runners() if r.name == pipeline), None)
        if runner is None:
            return None
        metric = rule.metric
        if metric == "lag_seconds":
            return float(runner.lag_seconds())
        if metric == "latency_p99_seconds":
            p99: float | None = runner.stats.latency.recent(now, rule.window).quantile(0.99)
            return p99
        if metric == "dlq_depth":
            depth = self.readings.dlq_depth.get(pipeline)
            return None if depth is None else float(depth)
        if metric == "retained_wal_bytes":
            slot = self.readings.slots.get(pipeline)
            return None if slot is None or slot.retained_wal_bytes is None else float(slot.retained_wal_bytes)
        if metric == "binlog_retention":
            return self.readings.binlog.get(pipeline)
        if metric == "retrying_seconds":
            return self.watch.seconds_in(pipeline, State.RETRYING)
        if metric == "blocked_seconds":
            return blocked_seconds(runner, self.watch)
        raise ValueError(f"unknown alert metric {metric!r}")

    # --- the timer ---------------------------------------------------------------------------

    async def tick(self) -> list[Notice]:
        """One evaluation: poll states, refresh readings, step every alert, notify."""
        self.watch.observe(self._runners())
        await self.readings.refresh()
        notices = self.book.evaluate(self.sample, self.clock.time())
        self.ticks += 1
        for notice in notices:
            self.notices.append(notice)
            for notifier in self.notifiers:
                notifier.notify(notice)
        return notices

    async def start(self) -> Monitor:
        if self.owns_state:
            await self.state.open()
        for notifier in self.notifiers:
            await notifier.start()
        self._task = asyncio.create_task(self._loop(), name="tidesync-monitor")
        return self

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a failed evaluation must never stop the monitor or the pipelines
                log.warning("monitor: evaluation failed: %s", exc)
            await self.clock.sleep(self.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for notifier in self.notifiers:
            with contextlib.suppress(Exception):
                await notifier.close()
        if self.owns_state:
            await self.state.close()

    async def __aenter__(self) -> Monitor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
