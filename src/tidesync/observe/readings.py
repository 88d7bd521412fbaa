"""Health values that cost an I/O call to read, refreshed together and cached.

:class:`Readings` holds the dead-letter depth of each pipeline, the
replication slot's retained WAL of each Postgres-sourced pipeline, the binlog
retention of each MariaDB/MySQL-sourced one (:mod:`tidesync.observe.binlog`), and
the pending conflicts of each sync. :meth:`Readings.refresh` reads them all at
most once per ``min_interval`` (a Prometheus scrape and an alert tick in the
same second share one read); a value that cannot be read keeps its last
reading and the failure is logged at debug level, so a slow or unreachable
source never fails a scrape.

:class:`StateWatch` remembers since when each pipeline is in its current
lifecycle state (``retrying_seconds`` for the stuck-retrying alert); it is
as precise as it is polled (every alert tick and every scrape).
:func:`blocked_seconds` is exact: a blocked runner knows when its hold began.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.engine.lifecycle import State
from tidesync.state.store import StateStore

log = logging.getLogger("tidesync.observe")


@dataclass(frozen=True, slots=True)
class SlotReading:
    slot: str
    retained_wal_bytes: int | None
    unconfirmed_wal_bytes: int | None
    read_at: float


class Readings:
    def __init__(
        self,
        runners: Callable[[], Sequence[Any]],
        state: StateStore,
        *,
        syncs: Sequence[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        min_interval: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.runners = runners
        self.state = state
        self.syncs = list(syncs)
        self.clock = clock
        self.min_interval = min_interval
        self.timeout = timeout
        self.dlq_depth: dict[str, int] = {}
        self.slots: dict[str, SlotReading] = {}
        self.binlog: dict[str, float] = {}  # pipeline -> binlog_retention (0 ok, 1 oldest file, 2 purged)
        self.conflicts: dict[str, int] = {}
        self.refreshed_at = float("-inf")  # monotonic
        self._lock = asyncio.Lock()

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            if not force and self.clock.monotonic() - self.refreshed_at < self.min_interval:
                return
            runners = list(self.runners())
            await asyncio.gather(self._dlq(runners), self._slots(runners), self._binlogs(runners), self._conflicts())
            self.refreshed_at = self.clock.monotonic()

    async def _dlq(self, runners: Sequence[Any]) -> None:
        for r in runners:
            try:
                self.dlq_depth[r.name] = await asyncio.wait_for(self.state.dlq_count(r.name), self.timeout)
            except Exception as exc:
                log.debug("cannot count dead letters of %s: %s", r.name, exc)

    async def _slots(self, runners: Sequence[Any]) -> None:
        async def one(r: Any) -> None:
            lag = getattr(r.source, "lag", None)
            if not callable(lag) or not hasattr(r.source, "slot"):
                return
            try:
                reading = await asyncio.wait_for(lag(), self.timeout)
            except Exception as exc:  # not open yet, server unreachable: keep the last reading
                log.debug("cannot read the replication slot of %s: %s", r.name, exc)
                return
            if reading.exists:
                self.slots[r.name] = SlotReading(
                    reading.slot, reading.retained_wal_bytes, reading.unconfirmed_bytes, self.clock.time()
                )

        await asyncio.gather(*(one(r) for r in runners))

    async def _binlogs(self, runners: Sequence[Any]) -> None:
        from tidesync.observe.binlog import is_binlog_source, read_retention

        async def one(r: Any) -> None:
            try:
                value = await asyncio.wait_for(read_retention(r.source, r.position), self.timeout)
            except Exception as exc:  # server unreachable, no grant: keep the last reading
                log.debug("cannot read the binlog files of %s: %s", r.name, exc)
                return
            if value is not None:
                self.binlog[r.name] = value

        await asyncio.gather(*(one(r) for r in runners if is_binlog_source(r.source)))

    async def _conflicts(self) -> None:
        try:
            from tidesync.sync.conflicts import ConflictQueue
        except ImportError:  # two-way sync not installed in this build
            return
        try:
            entries = await asyncio.wait_for(ConflictQueue(self.state).pending(), self.timeout)
        except Exception as exc:
            log.debug("cannot count pending conflicts: %s", exc)
            return
        counts = dict.fromkeys(self.syncs, 0)
        for e in entries:
            counts[e["sync"]] = counts.get(e["sync"], 0) + 1
        self.conflicts = counts


class StateWatch:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._since: dict[str, tuple[str, float]] = {}  # pipeline -> (state, since epoch seconds)

    def observe(self, runners: Sequence[Any]) -> None:
        now = self.clock.time()
        for r in runners:
            state = r.state_name
            seen = self._since.get(r.name)
            if seen is None or seen[0] != state:
                self._since[r.name] = (state, now)

    def seconds_in(self, pipeline: str, state: str) -> float:
        """Seconds the pipeline has been in ``state`` (0 when it is not in it)."""
        seen = self._since.get(pipeline)
        if seen is None or seen[0] != state:
            return 0.0
        return max(0.0, self.clock.time() - seen[1])


def blocked_seconds(runner: Any, watch: StateWatch | None) -> float:
    """Seconds ``runner`` has been blocked (0 when it is not); above 0 from the first look on."""
    if runner.state_name != State.BLOCKED:
        return 0.0
    held = getattr(runner, "blocked", None)
    clock = getattr(runner, "clock", None)
    if held is not None and clock is not None:
        seconds = clock.time() - held.since
    else:
        seconds = watch.seconds_in(runner.name, State.BLOCKED) if watch is not None else 0.0
    return max(1e-3, float(seconds))
