"""One running sync: a reader per side, one processing loop, resolutions, restarts.

::

    side A source ─ read ─┐                       ┌─ endpoint A (conditional writes)
                          ├─▶ queue ─▶ processor ─┤
    side B source ─ read ─┘    (bounded)          └─ endpoint B
                                   │
                   state store: record states, ID map, review queue,
                   history, both sides' positions — one commit per batch
                                   │
                       then source.commit(position) for that side

Order: each side's batches are processed in that side's order (one reader
per side, one loop), so per-key order per side holds; the two sides
interleave as their batches arrive. A batch is committed to the state store
before its source hears that its position is handled.

Start: both sources are opened first (a Postgres slot is created, SQLite
triggers are installed, a poller takes its first mark), so every change from
that moment on is captured. Then, if the sync has never paired its tables,
:mod:`.pairing` reads both tables, matches records and settles differences by
the rules; changes captured meanwhile arrive afterwards and are compared as
usual (a change already seen by pairing is a no-op).

Failures: a source that loses its connection is reopened with backoff at the
last position read. Anything else that stops a batch (an endpoint that keeps
failing, the state store) makes the runner start over like a restarted
process: a fresh processor from the state store, both sources reopened at
their committed positions, after a backoff. Whatever the batch wrote is
repeated safely (see :mod:`.processor`).

Resolutions people recorded (:mod:`.resolve`) are applied between batches,
at least every ``resolve_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import SourceTransientError, TidesyncError
from tidesync.event import Batch
from tidesync.protocols import Context, Source
from tidesync.retry import RetryPolicy
from tidesync.secrets import REDACTOR
from tidesync.state.store import StateChanges, StateStore
from tidesync.sync.endpoint import Endpoint
from tidesync.sync.processor import SyncProcessor
from tidesync.sync.store_layout import META

log = logging.getLogger("tidesync.sync")


@dataclass(frozen=True, slots=True)
class ReadPolicy:
    max_events: int = 500
    max_wait: float = 0.05
    queue_batches: int = 4


class SyncRunner:
    """Runs a sync until ``stop`` is set. ``make_processor`` builds a fresh processor (at start and after a failure)."""

    def __init__(
        self,
        name: str,
        sources: Mapping[str, Source],
        endpoints: Mapping[str, Endpoint],
        state: StateStore,
        make_processor: Callable[[], SyncProcessor],
        *,
        pair: Callable[[SyncProcessor], Any] | None = None,
        read: ReadPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        restart: RetryPolicy | None = None,
        resolve_interval: float = 0.5,
    ) -> None:
        self.name = name
        self.sources = dict(sources)
        self.endpoints = dict(endpoints)
        self.state = state
        self.make_processor = make_processor
        self.pair = pair
        self.read = read or ReadPolicy()
        self.clock = clock
        self.restart = restart or RetryPolicy(initial_delay=0.5, max_delay=30.0)
        self.resolve_interval = resolve_interval
        self.processor: SyncProcessor | None = None
        self.state_name = "stopped"
        self.last_error: str | None = None
        self.restarts = 0
        self.batches = 0
        self.idle_cycles = 0  # loop turns in a row with nothing to do (no batch, no resolution)

    def _ctx(self, side: str) -> Context:
        return Context(pipeline=f"{self.name}.{side}", name="source", state=self.state, clock=self.clock)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``; re-raises only what a restart cannot cure (a config or setup error)."""
        failures = 0
        try:
            for endpoint in self.endpoints.values():
                await endpoint.open()
            while not stop.is_set():
                try:
                    self.state_name = "starting"
                    await self._session(stop)
                    return
                except (TidesyncError, OSError) as exc:
                    if not _curable(exc):
                        raise
                    failures += 1
                    self.restarts += 1
                    self.last_error = REDACTOR.redact(str(exc))
                    delay = self.restart.delay(failures)
                    log.warning("sync %s: %s; starting over in %.1fs", self.name, self.last_error, delay)
                    self.state_name = "retrying"
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
        except BaseException as exc:
            self.state_name = "failed"
            self.last_error = REDACTOR.redact(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            for source in self.sources.values():
                with contextlib.suppress(Exception):
                    await source.close()
            for endpoint in self.endpoints.values():
                with contextlib.suppress(Exception):
                    await endpoint.close()
            if self.state_name != "failed":
                self.state_name = "stopped"

    async def _session(self, stop: asyncio.Event) -> None:
        proc = self.processor = self.make_processor()
        await proc.load()
        for side, source in self.sources.items():
            with contextlib.suppress(Exception):
                await source.close()
            await source.open(self._ctx(side), proc.positions[side])
        paired = await self.state.kv_get(META, f"{self.name}/paired")
        if not paired and self.pair is not None:
            self.state_name = "pairing"
            await self.pair(proc)
            await self.state.commit(self.name, StateChanges(kv_put={(META, f"{self.name}/paired"): True}))
        self.state_name = "running"
        queue: asyncio.Queue[tuple[str, Batch]] = asyncio.Queue(maxsize=self.read.queue_batches * 2)
        readers = [
            asyncio.create_task(self._reader(side, queue, stop), name=f"{self.name}:{side}") for side in self.sources
        ]
        try:
            await self._loop(proc, queue, stop, readers)
        finally:
            for t in readers:
                t.cancel()
            for t in readers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _loop(
        self,
        proc: SyncProcessor,
        queue: asyncio.Queue[tuple[str, Batch]],
        stop: asyncio.Event,
        readers: list[asyncio.Task[None]],
    ) -> None:
        next_resolve = 0.0
        while not stop.is_set():
            for t in readers:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            now = self.clock.monotonic()
            if now >= next_resolve:
                if await proc.apply_resolutions():
                    self.idle_cycles = 0
                next_resolve = now + self.resolve_interval
            try:
                side, batch = await asyncio.wait_for(queue.get(), self.resolve_interval)
            except TimeoutError:
                self.idle_cycles += 1
                continue
            self.idle_cycles = 0
            await proc.process(side, batch)  # type: ignore[arg-type]
            if batch.position is not None:
                await self.sources[side].commit(batch.position)
            self.batches += 1
            self.last_error = None

    async def _reader(self, side: str, queue: asyncio.Queue[tuple[str, Batch]], stop: asyncio.Event) -> None:
        source = self.sources[side]
        failures = 0
        while not stop.is_set():
            try:
                batch = await source.read(self.read.max_events, self.read.max_wait)
            except SourceTransientError as exc:
                failures += 1
                delay = self.restart.delay(failures)
                log.warning("sync %s: side %s source: %s; reopening in %.1fs", self.name, side, exc, delay)
                await self.clock.sleep(delay)
                raise  # the session starts over from the committed positions
            failures = 0
            if batch.events or batch.position is not None:
                await queue.put((side, batch))


def _curable(exc: BaseException) -> bool:
    """Errors a restart may cure: lost connections, endpoints or stores that fail for a while."""
    from tidesync.errors import ConfigError, DeliveryError, SourceError, StateStoreError

    if isinstance(exc, ConfigError):
        return False
    if isinstance(exc, SourceError):
        return isinstance(exc, SourceTransientError)
    return isinstance(exc, (DeliveryError, StateStoreError, OSError))
