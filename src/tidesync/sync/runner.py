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

Failures: anything a restart may cure (a source that lost its connection,
an endpoint that keeps failing, the state store) ends the session, and the
runner starts over like a restarted process: a fresh processor from the
state store, both sources reopened at their committed positions. Each
failure waits once, on the ``restart`` policy (:mod:`tidesync.retry`); the
policy counts failures in a row, and a session that processed a batch before
it failed begins a new count. Whatever the batch wrote is repeated safely
(see :mod:`.processor`).

State: a :class:`~tidesync.engine.lifecycle.Lifecycle`, shown by
``state_name``: starting (``pairing`` while the initial pairing runs),
running, retrying (waiting to start over), draining, stopped, failed.

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
from tidesync.engine.lifecycle import Lifecycle, State
from tidesync.errors import SourceTransientError
from tidesync.event import Batch
from tidesync.protocols import Context, Source
from tidesync.retry import Failure, RetryPolicy, RetryStopped
from tidesync.secrets import REDACTOR
from tidesync.state.store import StateChanges, StateStore
from tidesync.sync.endpoint import Endpoint
from tidesync.sync.processor import SyncProcessor
from tidesync.sync.store_layout import META

log = logging.getLogger("tidesync.sync")

# What ``state_name`` shows while the initial pairing runs: a step of starting, not a lifecycle state
# (as ``degraded`` is a way of running), so the lifecycle table and the per-state metrics stay as they are.
PAIRING = "pairing"

Queued = tuple[str, Batch[StateChanges]]


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
        self.lifecycle = Lifecycle()
        self.pairing = False
        self.last_error: str | None = None
        self.restarts = 0
        self.batches = 0
        self.idle_cycles = 0  # loop turns in a row with nothing to do (no batch, no resolution)

    @property
    def state_name(self) -> str:
        """The lifecycle state as status shows it (``pairing`` while the initial pairing runs)."""
        if self.pairing:
            return PAIRING
        return str(self.lifecycle.state)

    def _ctx(self, side: str) -> Context:
        return Context(pipeline=f"{self.name}.{side}", name="source", state=self.state, clock=self.clock)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``; re-raises what a restart cannot cure (a config or setup error), or the last
        failure when the ``restart`` policy gives up."""
        try:
            self.lifecycle.to(State.STARTING)
            for endpoint in self.endpoints.values():
                await endpoint.open()
            with contextlib.suppress(RetryStopped):  # stopped while waiting to start over
                await self._sessions(stop)
        except BaseException as exc:
            self.pairing = False
            self.lifecycle.to(State.FAILED)
            self.last_error = REDACTOR.redact(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if self.lifecycle.state != State.FAILED:
                self.lifecycle.to(State.STOPPED if self.lifecycle.state == State.STARTING else State.DRAINING)
            for source in self.sources.values():
                with contextlib.suppress(Exception):
                    await source.close()
            for endpoint in self.endpoints.values():
                with contextlib.suppress(Exception):
                    await endpoint.close()
            if self.lifecycle.state == State.DRAINING:
                self.lifecycle.to(State.STOPPED)

    async def _sessions(self, stop: asyncio.Event) -> None:
        """Run sessions until ``stop``, with one wait on the ``restart`` policy per failure.

        The policy counts failures in a row: when a session that processed a
        batch fails, a new count begins with that failure as its first, so
        ``max_attempts`` and ``max_age`` bound a streak, not the sync's life.
        """
        carried: Exception | None = None
        while not stop.is_set():
            retry = self.restart.attempts(self.clock, _curable, on_retry=self._starting_over, stop=stop)
            async for attempt in retry:
                with attempt:
                    if carried is not None:
                        error, carried = carried, None
                        raise error  # the failure that ended a healthy session: the first of the new count
                    done = self.batches
                    try:
                        await self._session(stop)
                    except Exception as exc:
                        if retry.failures and self.batches > done and _curable(exc):
                            carried = exc
                            break
                        raise
            if carried is None:
                return

    def _starting_over(self, failure: Failure) -> None:
        self.pairing = False
        self.restarts += 1
        self.last_error = REDACTOR.redact(str(failure.error))
        log.warning("sync %s: %s; starting over in %.1fs", self.name, self.last_error, failure.delay)
        self.lifecycle.to(State.RETRYING)

    async def _session(self, stop: asyncio.Event) -> None:
        self.lifecycle.to(State.STARTING)
        proc = self.processor = self.make_processor()
        await proc.load()
        for side, source in self.sources.items():
            with contextlib.suppress(Exception):
                await source.close()
            await source.open(self._ctx(side), proc.positions[side])
        paired = await self.state.kv_get(META, f"{self.name}/paired")
        if not paired and self.pair is not None:
            self.pairing = True
            await self.pair(proc)
            await self.state.commit(self.name, StateChanges(kv_put={(META, f"{self.name}/paired"): True}))
            self.pairing = False
        self.lifecycle.to(State.RUNNING)
        queue: asyncio.Queue[Queued] = asyncio.Queue(maxsize=self.read.queue_batches * 2)
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
        queue: asyncio.Queue[Queued],
        stop: asyncio.Event,
        readers: list[asyncio.Task[None]],
    ) -> None:
        next_resolve = 0.0
        while not stop.is_set():
            for t in readers:
                if t.done() and not t.cancelled():
                    error = t.exception()
                    if error is not None:
                        raise error
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

    async def _reader(self, side: str, queue: asyncio.Queue[Queued], stop: asyncio.Event) -> None:
        """Read one side into ``queue``. A failure ends the task; the loop re-raises it and the session
        starts over after the restart policy's wait (the reader does not wait itself)."""
        source = self.sources[side]
        while not stop.is_set():
            try:
                batch = await source.read(self.read.max_events, self.read.max_wait)
            except SourceTransientError as exc:
                log.warning("sync %s: side %s source: %s", self.name, side, REDACTOR.redact(str(exc)))
                raise
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
