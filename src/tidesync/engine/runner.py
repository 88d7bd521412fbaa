"""One pipeline: source → transforms → sink, with a bounded queue between reading and writing.

Two asyncio tasks. The reader (:mod:`.reading`) reads a batch (by size and
time), transforms it and puts it on a queue of at most ``queue_batches``
batches: when the sink is slower than the source the queue fills and the
reader waits, so memory stays bounded. The writer takes batches (coalescing
queued ones up to the batch size) and does three things with each
(:meth:`PipelineRunner._write_item`): **deliver** it through the dead-letter
and retry wrappers (:mod:`.delivery`: parking, per-key order, holding),
**commit** the checkpoint together with the new dead letters, the source's own
state and the status in one state store transaction, and only then **ack**:
tell the source the position is handled. What the pipeline shows (lifecycle,
status row, log lines) lives in :mod:`.observing`; opening the sink in
:mod:`.opening`.

Shutdown (``stop`` set): the reader stops; the writer finishes the batch in
flight, checkpoints it and exits. A batch that ends inside a source
transaction (``position`` None) cannot be checkpointed, so the writer first
takes further queued batches until it has written one with a position (or the
queue is empty and the reader has stopped). Anything still queued was never
checkpointed and is read again on the next start. A batch held while the
pipeline is retrying or blocked is dropped unwritten, so it is read again too.

A batch run (``once``, or a ``schedule``: :mod:`.once`, :mod:`.schedule`)
runs the same two tasks under a stop of its own, set once a checkpoint at the
source's end is committed or the pipeline blocks.

The state store is retried on :data:`STATE_RETRY` (backoff from 0.2 s up to
5 s, for at most 60 s after the first failure): a store that is down longer
fails the pipeline, with the checkpoint at the last batch it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.engine.breaker import CircuitBreaker
from tidesync.engine.delivery import BlockNotice, DeadLetterWriter, HoldAborted, RetryingWriter, SerialSink
from tidesync.engine.lifecycle import State
from tidesync.engine.observing import DEGRADED_FOR, PipelineView
from tidesync.engine.once import OnceRun
from tidesync.engine.opening import open_sink
from tidesync.engine.parked import ParkedKeys
from tidesync.engine.reading import BatchPolicy, Item, Reader
from tidesync.engine.schedule import CronSchedule
from tidesync.errors import StateStoreError, TidesyncError
from tidesync.event import Position
from tidesync.observe.stats import PipelineStats
from tidesync.protocols import Context, Sink, Source
from tidesync.retry import RetryPolicy
from tidesync.schema import SchemaRegistry
from tidesync.secrets import REDACTOR
from tidesync.state.store import NewDeadLetter, StateChanges, StateStore

if TYPE_CHECKING:
    from tidesync.transform.chain import Transform

__all__ = ["DEGRADED_FOR", "STATE_RETRY", "BatchPolicy", "PipelineRunner"]

log = logging.getLogger("tidesync.engine")
READ_GRACE = 1.0  # seconds a read in flight at a stop may take before it is given up (see _run_tasks)
STATE_RETRY = RetryPolicy(initial_delay=0.2, max_delay=5.0, max_age=60.0)


def _state_store_error(exc: Exception) -> bool:
    return isinstance(exc, StateStoreError)


async def _set_when(outer: asyncio.Event, inner: asyncio.Event) -> None:
    await outer.wait()
    inner.set()


class PipelineRunner:
    def __init__(
        self,
        name: str,
        source: Source,
        sink: Sink,
        state: StateStore,
        *,
        transform: Transform | None = None,
        batch: BatchPolicy | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        queue_batches: int = 4,
        sink_name: str = "sink",
        source_retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        probe: RetryPolicy | None = None,
        state_retry: RetryPolicy = STATE_RETRY,
        schema_changes: str = "evolve",
        once: bool = False,
        schedule: CronSchedule | None = None,
    ) -> None:
        self.name, self.source, self.sink, self.state = name, source, sink, state
        self.transform = transform
        self.batch = batch or BatchPolicy()
        self.clock = clock
        self.queue_batches = queue_batches
        self.sink_name = sink_name
        self.state_retry = state_retry
        self.schema_changes = schema_changes  # handed to the sink (Context.extra), which follows the changes
        self.once = once  # run() reads up to the source's end and returns (tidesync run --once)
        self.schedule = schedule  # run() makes a batch run at each of its times
        self.once_run: OnceRun | None = None  # the batch run in progress, or the last one
        self.rng = random.Random()
        self.stats = PipelineStats(name, sink_name)
        self.view = PipelineView(name, sink_name, state, clock)
        self.lifecycle = self.view.lifecycle
        self.source_schemas = SchemaRegistry()
        self.sink_schemas = SchemaRegistry()
        if transform is not None:
            self.source_schemas.subscribe(lambda s: self.sink_schemas.put(transform.map_schema(s)))
        else:
            self.source_schemas.subscribe(self.sink_schemas.put)
        view = self.view
        self.serial_sink = SerialSink(sink)  # shared with in-process dead-letter replays
        self.writer = RetryingWriter(
            self.serial_sink, retry or RetryPolicy(), clock, on_retry=view.on_retry, on_recover=view.on_recover
        )
        self.delivery = DeadLetterWriter(
            self.writer,
            name,
            sink_name,
            clock,
            keys=ParkedKeys(name, sink_name, state, clock),
            breaker=breaker,
            probe=probe,
            on_block=self._on_block,
            on_probe=view.on_probe,
            on_unblock=view.on_unblock,
            persist=self._persist_letters,
        )
        # Set while a lease (tidesync.engine.lease) runs this pipeline: raises LeaseLostError
        # when this process may no longer write, checked before each batch goes to the sink.
        self.write_guard: Callable[[], None] | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.reader = Reader(
            source,
            self._ctx("source", self.source_schemas),
            transform=transform,
            batch=self.batch,
            retry=source_retry or RetryPolicy(initial_delay=0.2, max_delay=10.0),
            clock=clock,
            stats=self.stats,
            view=view,
            resumed=self._resumed,
        )

    # --- what shows (kept by self.view) ------------------------------------------

    @property
    def state_name(self) -> str:
        return str(self.lifecycle.state)

    @property
    def display_state(self) -> str:
        return self.view.display_state

    @property
    def position(self) -> Position | None:
        return self.view.position

    @property
    def blocked(self) -> BlockNotice | None:
        return self.view.blocked

    @property
    def last_error(self) -> str | None:
        return self.view.last_error

    @property
    def next_attempt_at(self) -> float | None:
        return self.view.next_attempt_at

    def lag_seconds(self) -> float:
        return self.view.lag_seconds()

    def pause(self) -> None:
        if self.lifecycle.state in (State.RUNNING, State.RETRYING):
            self._resumed.clear()
            self.lifecycle.to(State.PAUSED)

    def resume(self) -> None:
        if self.lifecycle.state == State.PAUSED:
            self.lifecycle.to(State.RUNNING)
            self._resumed.set()

    # --- run -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (exit normally) or an unrecoverable error (state failed, re-raised).

        With ``once``: until the source's end is applied (or the pipeline blocks);
        with a ``schedule``: a batch run at each of its times, until ``stop``.
        """
        if self.schedule is not None:
            await self.schedule.run(self, stop)
        elif self.once:
            await self.run_once(stop)
        else:
            await self._run(stop)

    async def run_once(self, stop: asyncio.Event) -> OnceRun:
        """One batch run: read up to the source's end as of its start, apply, checkpoint, stop (:mod:`.once`)."""
        self.once_run = once = self.reader.once = OnceRun()
        linked = asyncio.ensure_future(_set_when(stop, once.stop))
        try:
            await self._run(once.stop)
        finally:
            linked.cancel()
        return once

    async def _run(self, stop: asyncio.Event) -> None:
        self.lifecycle.to(State.STARTING)
        self.delivery.stop = stop
        try:
            self.view.position = await self.state.load_checkpoint(self.name)
            await self.view.load_dlq_growth()
            await self.delivery.keys.load()
            ctx = self._ctx(self.sink_name, self.sink_schemas)
            ctx.extra["schema_changes"] = self.schema_changes
            refused = self._on_block if self.once_run is not None else None
            if not await open_sink(
                self.sink, ctx, self.delivery.probe, self.clock, self.view, stop, self.rng, on_refused=refused
            ):
                self._force(State.STOPPED)
                return
            if not await self.reader.open_first(self.view.position, stop):
                self._force(State.STOPPED)
                return
            if self.once_run is not None:
                await self.once_run.start(self.source, self.view.position)
            self.lifecycle.to(State.RUNNING)
            await self.view.persist_status()
            await self._run_tasks(stop)
            self.lifecycle.to(State.STOPPED)
        except asyncio.CancelledError:
            self._force(State.STOPPED)
            raise
        except BaseException as exc:
            error = str(exc) if isinstance(exc, TidesyncError) else f"{type(exc).__name__}: {exc}"
            self.view.last_error = REDACTOR.redact(error)
            self._force(State.FAILED)
            log.error("pipeline %s failed: %s", self.name, self.view.last_error)
            raise
        finally:
            with contextlib.suppress(Exception):
                await self.source.close()
            detach = getattr(self.source, "detach", None)  # a fan-out lane: its hub stops feeding it
            if detach is not None:
                with contextlib.suppress(Exception):
                    await detach()
            with contextlib.suppress(Exception):
                await self.sink.close()
            with contextlib.suppress(Exception):
                await self.view.persist_status()

    async def _run_tasks(self, stop: asyncio.Event) -> None:
        queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=self.queue_batches)
        reader = asyncio.create_task(self.reader.run(queue, stop), name=f"{self.name}:read")
        writer = asyncio.create_task(self._write_loop(queue, stop), name=f"{self.name}:write")
        stopped = asyncio.create_task(stop.wait(), name=f"{self.name}:stop")
        tasks: tuple[asyncio.Task[Any], ...] = (reader, writer, stopped)
        cutoff: asyncio.TimerHandle | None = None
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, writer):
                if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                    raise error
            if stop.is_set() and not reader.done():
                # A read still going READ_GRACE after the stop (a source reconnecting to a replication slot
                # another process holds now, after a lost lease) is given up: nothing it read was queued or
                # checkpointed, so the next start reads it again. The drain waited on it for as long before.
                cutoff = asyncio.get_running_loop().call_later(READ_GRACE, reader.cancel)
            if self.lifecycle.state != State.DRAINING:
                held = self.lifecycle.state in (State.RETRYING, State.BLOCKED) or self.delivery.held is not None
                self.lifecycle.to(State.DRAINING)
                self._resumed.set()
                if held:
                    # The batch in flight cannot be written now; it was never
                    # checkpointed, so the next start reads it again.
                    writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        finally:
            if cutoff is not None:
                cutoff.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _force(self, state: State) -> None:
        try:
            if self.lifecycle.state == State.STARTING and state == State.STOPPED:
                self.lifecycle.to(State.STOPPED)
            elif state == State.STOPPED and self.lifecycle.state != State.STOPPED:
                if self.lifecycle.state != State.DRAINING:
                    self.lifecycle.to(State.DRAINING)
                self.lifecycle.to(State.STOPPED)
            else:
                self.lifecycle.to(state)
        except Exception:
            self.lifecycle.state = state

    def _ctx(self, name: str, schemas: SchemaRegistry) -> Context:
        return Context(pipeline=self.name, name=name, state=self.state, clock=self.clock, schemas=schemas)

    # --- write -------------------------------------------------------------------

    async def _write_loop(self, queue: asyncio.Queue[Item | None], stop: asyncio.Event) -> None:
        while True:
            item = await self._next(queue, stop)
            if item is None:
                return
            # Coalesce what is already queued into one write, up to the batch size.
            while len(item.events) < self.batch.max_events and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    queue.put_nowait(None)
                    break
                item = item.merge(nxt)
            try:
                await self._write_item(item)
            except HoldAborted:
                return  # stopping while the batch is held: it was not checkpointed
            if stop.is_set() and item.position is not None:
                return

    async def _next(self, queue: asyncio.Queue[Item | None], stop: asyncio.Event) -> Item | None:
        """The next queued item; None at the end. While stopping, None once the queue is empty and the reader done."""
        if not stop.is_set() or not queue.empty():
            return await queue.get()
        done = self.reader.done
        while queue.empty() and not done.is_set():
            getter = asyncio.ensure_future(queue.get())
            finished = asyncio.ensure_future(done.wait())
            try:
                await asyncio.wait((getter, finished), return_when=asyncio.FIRST_COMPLETED)
            finally:
                finished.cancel()
                getter.cancel()  # a get that already took its item keeps it (its result below)
            if getter.done() and not getter.cancelled():
                return getter.result()
        return None if queue.empty() else queue.get_nowait()

    async def _write_item(self, item: Item) -> None:
        """Deliver → commit → ack."""
        if self.write_guard is not None:
            self.write_guard()
        t0 = self.clock.time()
        done = await self.delivery.deliver_batch(item.events, rejected=item.rejected)
        now = self.clock.time()
        changes = StateChanges(checkpoint=item.position, dead_letters=done.unsaved, events_applied=len(done.written))
        if item.state is not None:  # the source's own state commits with the checkpoint
            changes = item.state.merge(changes)
        view = self.view
        if item.position is not None:
            view.position = item.position
        if done.written:
            view.last_committed_at = done.written[-1].committed_at
        for _ in range(item.batches):
            if view.pending:
                view.pending.popleft()
        if done.letters:
            view.dlq_grew_at = now
        changes.status = status = view.status()
        await self._commit_state(changes)
        view.committed(status)
        if done.letters:
            view.parked(done.letters, now)
        if item.position is not None:
            await self.source.commit(item.position)
        took = now - t0 if item.events else None
        filtered = None if self.transform is None else self.transform.filtered
        retries, lag = self.writer.retries, view.lag_seconds()
        self.stats.batch_done(now, took, done.written, len(done.letters), retries=retries, lag=lag, filtered=filtered)
        if self.once_run is not None:
            self.once_run.wrote(item.position, len(done.written), done.letters)

    def _on_block(self, notice: BlockNotice | None = None) -> None:
        """The sink blocks (``notice``), or refuses to open (the view holds the notice)."""
        if notice is not None:
            self.view.on_block(notice)
        held = self.view.blocked
        if self.once_run is not None and held is not None:  # a batch run stops rather than wait for the sink
            self.once_run.block(held)

    async def _persist_letters(self, letters: Sequence[NewDeadLetter]) -> None:
        """Dead letters found part-way through a delivery, committed before the sink writes past them."""
        await self._commit_state(StateChanges(dead_letters=list(letters)))

    async def _commit_state(self, changes: StateChanges) -> None:
        retry = self.state_retry.attempts(
            self.clock, _state_store_error, on_retry=self.view.state_store_failing, rng=self.rng
        )
        async for attempt in retry:
            with attempt:
                await self.state.commit(self.name, changes)
        if retry.failures:
            self.view.state_store_recovered(retry.failures)
