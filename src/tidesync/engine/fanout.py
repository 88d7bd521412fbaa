"""Fan-out: one source read once, fed to several sinks, each a pipeline of its own (``sinks: [...]``).

A pipeline with ``sinks: [a, b]`` runs as two pipelines, ``NAME.a`` and
``NAME.b`` (see ``tidesync.config``), each with its own checkpoint, dead
letters, status, retries and blocking. Their sources are :class:`Lane` s of
one :class:`FanoutHub`, which owns the real source (one replication slot, one
consumer) under the parent's name:

- The hub reads a batch and puts it on every open lane's queue of at most
  ``buffer`` batches. A lane whose sink is slow or blocked fills its queue;
  then the hub waits, and the other sinks stop too once their own queues are
  empty: a slow sink holds the others back by at most that buffer, and memory
  stays bounded.
- Each lane pipeline commits its own checkpoint as usual, then acks its lane
  (``commit``). The hub's checkpoint, under the parent's name, is the lowest
  lane position: it commits that position together with the source's own
  state of the batches up to it, then acks the real source (which may then
  free WAL, ack broker messages…). The source's state is kept back to the
  slowest sink, so a broker source's "applied" window never covers a message a
  slow sink has not written.
- On a start the hub opens the source after its own checkpoint (the slowest
  sink's); a lane ahead of it skips what it already wrote (events at or before
  its checkpoint), so no sink gets an event twice.
- A lane pipeline that ends (stopped, failed, or a sink that could never open)
  detaches (:meth:`Lane.detach`, called by the runner as it ends):
  the hub stops feeding it, and its position holds the hub's checkpoint back
  until it runs again. The source then keeps everything after that position
  (a Postgres slot keeps WAL): ``tidesync status`` shows the lane behind, and
  the lag alert fires on it (see docs/monitoring.md).
- A failing source is reopened by the hub after the last position it read,
  with backoff; meanwhile every lane's read raises the error, so each lane
  pipeline shows the source failing. If the hub gives up, the error becomes
  permanent for every lane.

Transforms run in each lane pipeline (the same steps for each sink).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.engine.reading import close_quietly, source_transient
from tidesync.errors import SourceError, SourceTransientError
from tidesync.event import Batch, Position
from tidesync.protocols import Context, Source
from tidesync.retry import RetryPolicy, RetryStopped
from tidesync.schema import SchemaRegistry
from tidesync.state.store import StateChanges, StateStore

log = logging.getLogger("tidesync.engine")

_END = object()  # queued after the last batch: the hub stopped


class FanoutHub:
    """Reads ``source`` once for the lanes of pipeline ``name`` (one lane per sink)."""

    def __init__(
        self,
        name: str,
        source: Source,
        state: StateStore,
        lanes: Sequence[str],
        *,
        buffer: int = 4,
        max_events: int = 1000,
        max_wait: float = 0.05,
        retry: RetryPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name, self.source, self.state = name, source, state
        self.buffer = buffer
        self.max_events, self.max_wait = max_events, max_wait
        self.retry = retry or RetryPolicy(initial_delay=0.2, max_delay=10.0)
        self.clock = clock
        self.schemas = SchemaRegistry()
        self.lanes = {n: Lane(self, n) for n in lanes}
        self.checkpoint: Position | None = None  # the hub's own, under the parent's name
        self.last_read: Position | None = None
        self.error: Exception | None = None  # transient: lanes raise it while the hub reopens the source
        self.fatal: Exception | None = None
        self._states: deque[tuple[Position, StateChanges]] = deque()  # source state of batches not yet all acked
        self._opened: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self.rng = random.Random()

    def lane(self, name: str) -> Lane:
        return self.lanes[name]

    def expect(self, running: Sequence[str]) -> None:
        """Only the lanes ``running`` will run in this process; the others are not fed (not waited for)."""
        for name, lane in self.lanes.items():
            if name not in running:
                lane.detached = True

    # --- lifecycle -------------------------------------------------------------

    async def _open(self) -> None:
        """Open the real source once, after the hub's checkpoint; the first lane to open does it.

        A failed open is tried again by the next lane open (each lane pipeline
        retries its source's first open on transient errors).
        """
        if self._opened is not None:
            await asyncio.shield(self._opened)
            return
        fut = self._opened = asyncio.get_running_loop().create_future()
        try:
            self.checkpoint = await self.state.load_checkpoint(self.name)
            self.last_read = self.checkpoint
            await self.source.open(self._ctx(), self.checkpoint)
        except asyncio.CancelledError:
            self._opened = None
            fut.cancel()
            raise
        except Exception as exc:
            self._opened = None
            fut.set_exception(exc)
            fut.exception()  # retrieved here; lanes waiting on it raise it too
            raise
        fut.set_result(None)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}:fanout")

    def _ctx(self) -> Context:
        return Context(pipeline=self.name, name="source", state=self.state, clock=self.clock, schemas=self.schemas)

    def _lane_changed(self) -> None:
        if all(lane.detached for lane in self.lanes.values()):
            self._stop.set()

    async def _shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await close_quietly(self.source)

    # --- reading ---------------------------------------------------------------

    async def _run(self) -> None:
        unsaved: StateChanges | None = None
        try:
            while not self._stop.is_set():
                batch = await self._read()
                if batch is None:
                    return
                if not batch.events and batch.position is None and not batch.rejected:
                    continue
                if batch.state is not None:  # a batch inside a transaction: its state goes with the next position
                    unsaved = batch.state if unsaved is None else unsaved.merge(batch.state)
                if batch.position is not None:
                    self.last_read = batch.position
                    if unsaved is not None:
                        self._states.append((batch.position, unsaved))
                        unsaved = None
                for lane in list(self.lanes.values()):
                    await lane.feed(batch)
        except Exception as exc:  # a bug or an error the lanes must see rather than wait forever
            log.error("pipeline %s: fan-out reader stopped: %s", self.name, exc)
            self.fatal = exc
        finally:
            for lane in self.lanes.values():
                lane.end()

    async def _read(self) -> Batch[StateChanges] | None:
        """One batch; a failing source is reopened after the last position read, with backoff."""
        batch: Batch[StateChanges] | None = None
        retry = self.retry.attempts(self.clock, source_transient, stop=self._stop, rng=self.rng)
        try:
            async for attempt in retry:
                with attempt:
                    if attempt.number > 1:
                        await close_quietly(self.source)
                        await self.source.open(self._ctx(), self.last_read)
                    try:
                        batch = await self.source.read(self.max_events, self.max_wait)
                    except SourceTransientError as exc:
                        self.error = exc
                        log.warning("pipeline %s: source (fan-out): %s; reopening", self.name, exc)
                        raise
        except RetryStopped:
            return None
        self.error = None
        return batch

    # --- acks --------------------------------------------------------------------

    async def _acked(self) -> None:
        """Move the hub's checkpoint to the lowest lane position, with the source state up to it."""
        async with self._commit_lock:
            # A lane whose pipeline never opened has written nothing past the hub's checkpoint.
            low = _lowest([lane.position if lane.ever_opened else self.checkpoint for lane in self.lanes.values()])
            if low is None or (self.checkpoint is not None and low <= self.checkpoint):
                return
            states = [st for pos, st in self._states if pos <= low]
            changes = StateChanges()
            for st in states:  # oldest first: a later batch's state wins
                changes = changes.merge(st)
            changes = changes.merge(StateChanges(checkpoint=low))
            try:
                await self.state.commit(self.name, changes)
                for _ in states:
                    self._states.popleft()
                self.checkpoint = low
                await self.source.commit(low)
            except Exception as exc:  # behind is safe: the next ack tries again, and a restart replays
                log.warning("pipeline %s: fan-out checkpoint not moved to %s: %s", self.name, low, exc)


class Lane:
    """The source of one lane pipeline: batches of the hub, after this lane's own checkpoint.

    The hub feeds a lane from its first batch, opened yet or not (a lane
    pipeline still opening its sink is a slow sink); what the lane's pipeline
    already has is dropped when it reads.
    """

    def __init__(self, hub: FanoutHub, name: str) -> None:
        self.hub, self.name = hub, name
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=hub.buffer)
        self.opened = self.ever_opened = False
        self.detached = False
        self.after: Position | None = None  # what this lane's pipeline has (dropped when read)
        self.position: Position | None = None  # the lane pipeline's last committed position
        self.ctx: Context | None = None

    def __getattr__(self, name: str) -> Any:
        # What the admin API and the slot readings ask a source (request_snapshot, lag, slot) is the real one's:
        # each sink's pipeline shows the slot's retained WAL, which is held back to the slowest sink. A batch run
        # (engine/once.py) asks for the real source's end, and whether it is idle.
        if name in ("request_snapshot", "lag", "slot", "end_position", "idle"):
            return getattr(self.hub.source, name)
        raise AttributeError(name)

    async def open(self, ctx: Context, after: Position | None) -> None:
        if self.hub.fatal is not None:
            raise SourceError(f"the fan-out source of {self.hub.name!r} stopped: {self.hub.fatal}")
        if self.ever_opened and not self.detached:  # reopened after a transient error: its queue goes on
            self.opened = True
            return
        if self.ctx is None:
            self.hub.schemas.subscribe(ctx.schemas.put)
            for schema in self.hub.schemas.all().values():
                ctx.schemas.put(schema)
        self.ctx = ctx
        await self.hub._open()
        low = self.hub.checkpoint
        self.after = after if after is not None and (low is None or after > low) else None
        self.position = after if after is not None else low
        self.opened = self.ever_opened = True
        self.detached = False

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        hub = self.hub
        if self.queue.empty():
            if hub.error is not None:
                raise SourceTransientError(str(hub.error))
            if hub.fatal is not None:
                raise SourceError(f"the fan-out source of {hub.name!r} stopped: {hub.fatal}")
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout=max(max_wait, 0.001))
        except TimeoutError:
            return Batch([])
        if item is _END:
            self.queue.put_nowait(_END)
            if hub.fatal is not None:
                raise SourceError(f"the fan-out source of {hub.name!r} stopped: {hub.fatal}")
            return Batch([])
        return self._after_mine(item)

    async def commit(self, position: Position) -> None:
        self.position = position
        await self.hub._acked()

    async def close(self) -> None:
        """Closed by its pipeline's reader to reopen after an error: the queue and its place stay."""
        self.opened = False

    async def detach(self) -> None:
        """Its pipeline ended (stopped or failed): the hub stops feeding it, and waits no more for it."""
        if self.detached:
            return
        self.detached, self.opened = True, False
        while not self.queue.empty():  # a hub waiting to hand it a batch goes on
            self.queue.get_nowait()
        self.hub._lane_changed()
        if all(lane.detached for lane in self.hub.lanes.values()):
            await self.hub._shutdown()

    # --- fed by the hub ----------------------------------------------------------

    async def feed(self, batch: Batch[StateChanges]) -> None:
        if not self.detached:
            await self.queue.put(batch)

    def _after_mine(self, batch: Batch[StateChanges]) -> Batch[StateChanges]:
        """The batch without what this lane already has; its source state stays with the hub."""
        after = self.after
        if after is None:
            return Batch(batch.events, batch.position, rejected=batch.rejected)
        if batch.position is not None and batch.position <= after:
            return Batch([])
        events = [e for e in batch.events if not e.position or e.position > after]
        rejected = [(e, why) for e, why in batch.rejected if not e.position or e.position > after]
        if batch.position is not None:
            self.after = None  # past it: from here on the lane gets everything
        return Batch(events, batch.position, rejected=rejected)

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_END)


def _lowest(positions: Sequence[Position | None]) -> Position | None:
    if not positions or any(p is None for p in positions):
        return None
    return min(p for p in positions if p is not None)
