"""The reading half of a pipeline: source → transform → a bounded queue of :class:`Item`.

:class:`Reader` reads a batch (by size and time), transforms it and puts it
on the queue, waiting while the queue is full (backpressure, bounded memory).
A source that fails transiently (:class:`~tidesync.errors.SourceTransientError`)
is closed and reopened after the last position read, on the ``retry`` policy
(giving up fails the pipeline); ``stop`` cuts a wait short. A record the
transform (or the source itself, ``Batch.rejected``) cannot turn into an event
travels with its batch as ``rejected``, for the dead-letter writer to park.

When the reader ends it puts ``None`` on the queue if there is room, and sets
:attr:`Reader.done` in any case: a writer draining the queue must not wait for
a marker a full queue had no room for.

In a batch run (``once``, see :mod:`.once`) the reader stops reading once it
has read up to the source's end, and waits for ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidesync.clock import Clock
from tidesync.engine.observing import PipelineView
from tidesync.engine.once import OnceRun
from tidesync.errors import SourceTransientError
from tidesync.event import Batch, ChangeEvent, Position
from tidesync.observe.stats import PipelineStats
from tidesync.protocols import Context, Source
from tidesync.retry import RetryPolicy, RetryStopped
from tidesync.state.store import StateChanges

if TYPE_CHECKING:
    from tidesync.transform.chain import Transform

log = logging.getLogger("tidesync.engine")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_events: int = 1000
    max_wait: float = 0.05  # seconds


@dataclass(slots=True)
class Item:
    """One or more source batches on their way to the writer."""

    events: list[ChangeEvent]
    rejected: list[tuple[ChangeEvent, str]]  # (event, reason): records to dead-letter, not write
    position: Position | None  # None: the batch ends inside a source transaction
    read_at: float
    oldest_commit: float
    state: StateChanges | None = None  # a source's own state changes (batch.state), committed with it
    batches: int = 1  # source batches merged into this item

    def merge(self, nxt: Item) -> Item:
        """This item followed by ``nxt``, as one write."""
        state = self.state
        if nxt.state is not None:
            state = nxt.state if state is None else state.merge(nxt.state)
        return Item(
            self.events + nxt.events,
            self.rejected + nxt.rejected,
            nxt.position if nxt.position is not None else self.position,
            self.read_at,
            self.oldest_commit,
            state,
            self.batches + nxt.batches,
        )


HEAVY_TRANSFORM = 0.02  # seconds: a transform slower than this on a batch runs the next batch in a thread


class Reader:
    def __init__(
        self,
        source: Source,
        ctx: Context,
        *,
        transform: Transform | None,
        batch: BatchPolicy,
        retry: RetryPolicy,
        clock: Clock,
        stats: PipelineStats,
        view: PipelineView,
        resumed: asyncio.Event,
    ) -> None:
        self.source = source
        self.ctx = ctx
        self.transform = transform
        self.batch = batch
        self.retry = retry
        self.clock = clock
        self.stats = stats
        self.view = view
        self.resumed = resumed  # cleared while paused
        self.rng = random.Random()
        self.last_read: Position | None = None  # where a reopen resumes after
        self.done = asyncio.Event()
        self.once: OnceRun | None = None  # set by the runner for a batch run
        self.heavy = False  # the last batch's transform took longer than HEAVY_TRANSFORM

    async def open(self, after: Position | None) -> None:
        self.last_read = after
        await self.source.open(self.ctx, after)

    async def open_first(self, after: Position | None, stop: asyncio.Event) -> bool:
        """The pipeline's first open of its source, retried on the reader's policy like a reopen.

        A source whose server is down or unreachable when the pipeline starts
        (a broker restarting, a stream not created yet) is waited for, visibly
        (the status's error, a warning per attempt), rather than failing the
        pipeline for good; an error that is not transient still fails it.
        False when stopped meanwhile.
        """
        retry = self.retry.attempts(
            self.clock, source_transient, on_retry=self.view.source_failing, stop=stop, rng=self.rng
        )
        try:
            async for attempt in retry:
                with attempt:
                    if attempt.number > 1:
                        await close_quietly(self.source)
                    await self.open(after)
        except RetryStopped:
            return False
        if retry.failures:
            self.view.source_recovered()
        return True

    async def run(self, queue: asyncio.Queue[Item | None], stop: asyncio.Event) -> None:
        self.done.clear()  # a scheduled pipeline runs its reader again
        try:
            while not stop.is_set():
                if not self.resumed.is_set():
                    await self.resumed.wait()
                    continue
                try:
                    batch = await self._read(stop)
                except RetryStopped:
                    return
                self.view.heartbeat()
                _still_wanted()
                if batch.events or batch.position is not None or batch.rejected:
                    item = await self._item(batch)
                    self.view.pending.append(item.oldest_commit)
                    _still_wanted()
                    await queue.put(item)
                    if batch.position is not None:
                        self.last_read = batch.position
                if self.once is not None and self.once.read(
                    batch, self.last_read, idle=bool(getattr(self.source, "idle", True))
                ):
                    await stop.wait()  # read up to the end: the writer applies it, then the run stops
                    return
        finally:
            self.done.set()
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def _read(self, stop: asyncio.Event) -> Batch[StateChanges]:
        """One batch; a failing source is reopened after the last position read, on the retry policy."""
        batch: Batch[StateChanges] | None = None
        retry = self.retry.attempts(
            self.clock, source_transient, on_retry=self.view.source_failing, stop=stop, rng=self.rng
        )
        async for attempt in retry:
            with attempt:
                if attempt.number > 1:
                    await close_quietly(self.source)
                    await self.open(self.last_read)
                batch = await self.source.read(self.batch.max_events, self.batch.max_wait)
        if retry.failures:
            self.view.source_recovered()
        assert batch is not None
        return batch

    async def _item(self, batch: Batch[StateChanges]) -> Item:
        now = self.clock.time()
        events = batch.events
        rejected: list[tuple[ChangeEvent, str]] = []
        if self.transform is not None and events:
            if self.heavy:
                # A transform that took long on the last batch runs in a thread: on the event loop it would
                # hold up every other task of the process (lease renewals, other pipelines, the API) for
                # as long. Python code still takes turns for the interpreter lock, but the loop gets its turn
                # every few milliseconds instead of once per batch.
                events, rejected = await asyncio.to_thread(self._transform, events)
            else:
                events, rejected = self._transform(events)
            took = self.clock.time() - now
            self.heavy = took > HEAVY_TRANSFORM
            self.stats.stage["transform"].add_many([took])
        if batch.rejected:
            # A source that read a record it cannot turn into an event (a webhook
            # payload its mapping rejects) reports it here, as a transform would.
            rejected = [*rejected, *batch.rejected]
        self.stats.transform_failed += len(rejected)
        oldest = batch.events[0].committed_at if batch.events else 0.0
        if batch.events:
            self.stats.events_read += len(batch.events)
            self.stats.stage["capture"].add_many(
                [now - e.committed_at for e in (batch.events[0], batch.events[-1]) if e.committed_at > 0]
            )
        return Item(events, rejected, batch.position, now, oldest, batch.state)

    def _transform(self, events: list[ChangeEvent]) -> tuple[list[ChangeEvent], list[tuple[ChangeEvent, str]]]:
        """Transform a batch; should the transform itself raise, one event at a time, so only its event fails."""
        transform = self.transform
        if transform is None:
            return events, []
        try:
            out, failures = transform.apply(events)
            return list(out), list(failures)
        except Exception as exc:
            log.debug("pipeline %s: transform of a batch raised %r; one event at a time", self.ctx.pipeline, exc)
        out, failures = [], []
        for ev in events:
            try:
                one, failed = transform.apply([ev])
            except Exception as exc:  # RecursionError, a bug: this event's problem, not the pipeline's
                failures.append((ev, f"unexpected {type(exc).__name__}: {exc}"))
                continue
            out.extend(one)
            failures.extend(failed)
        return out, failures


def source_transient(exc: Exception) -> bool:
    """What a reader retries by reopening its source."""
    return isinstance(exc, SourceTransientError)


async def close_quietly(source: Source) -> None:
    """Close ``source``, ignoring its error: it comes from a source that already failed or is being let go."""
    with contextlib.suppress(Exception):
        await source.close()


def _still_wanted() -> None:
    """Raise CancelledError when this task was cancelled and a driver swallowed it.

    A driver that turns a cancellation into its own error or into an empty answer (nats-py's
    ``next_msg`` on a closing connection) would leave the reader running with nobody to take its
    batches: it would wait on the full queue for ever, and the pipeline would never stop. Python
    keeps the pending request count (``Task.cancelling``), so the reader honours it here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
