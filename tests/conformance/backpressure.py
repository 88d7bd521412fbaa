"""What the backpressure case watches: a slow sink, and the source as the engine sees it.

:class:`SlowSink` is a destination that takes ``delay`` seconds per write and
can be held shut (``gate``), so a test decides when the sink is stuck. Like
the SQL sinks it stores the applied position and skips events at or before
it (a replay after a restart is harmless); it keeps every event each landed
write carried (``received``, duplicates included) and the ones it applied
(``applied_events``), so a test sees both what the engine sent twice and
what the destination took.

:class:`Watched` wraps a harness's source for a :class:`PipelineRunner`: it
counts what the reader took (``Probe``), checks the bound of read-ahead at
every read, and at every ``commit(position)`` checks that the checkpoint
follows the acknowledgement: each batch the commit covers was written by the
sink, and the state store already holds ``position`` as the checkpoint.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.conformance.poll_harness import EngineCommits
from tidesync.event import Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.testing import MemorySink


def ident(ev: ChangeEvent) -> tuple[Any, ...]:
    return (ev.entity, ev.key, ev.position)


class SlowSink(MemorySink):
    """A destination slow by ``delay`` per write, and shut while ``gate`` is clear."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = False  # inside a write that has not landed
        self.received: list[ChangeEvent] = []
        self.applied_events: list[ChangeEvent] = []
        self.landed: set[tuple[Any, ...]] = set()

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        self.waiting = True
        try:
            await asyncio.sleep(self.delay)
            await self.gate.wait()
        finally:
            self.waiting = False
        # Landing is one synchronous step: a task cancelled while waiting above wrote nothing.
        self.received.extend(events)
        self.landed.update(ident(e) for e in events)
        at = self.applied
        self.applied_events.extend(e for e in events if replay or at is None or e.position > at)
        self.apply(events, replay)


@dataclass
class Probe:
    """What one run's reader took and what of it is not yet covered by a commit."""

    queue_batches: int
    max_events: int
    sink: SlowSink
    runner: Any = None
    emitted: int = 0  # events handed to the reader in this run
    batches: deque[tuple[Position | None, list[ChangeEvent]]] = field(default_factory=deque)
    largest: int = 0  # the most events one read returned
    max_batches: int = 0  # most batches in flight at once (read, not yet covered by a commit)
    max_events_in_flight: int = 0
    max_runner_gap: int = 0  # the runner's own view: stats.events_read - stats.events_written
    empty_reads: int = 0
    commits: list[Position] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def batch_bound(self) -> int:
        # The queue (Q) + the batch the reader waits to put (1) + what the writer holds: the item it
        # took and the queued ones it coalesced into it (at most 1 + Q).
        return 2 * self.queue_batches + 2

    def event_bound(self) -> int:
        return self.batch_bound * max(self.max_events, self.largest)

    def in_flight(self) -> tuple[int, int]:
        return len(self.batches), sum(len(evs) for _, evs in self.batches)

    def stalled(self) -> bool:
        """The queue is full and the reader waits: Q queued, one being put, one being written."""
        return self.sink.waiting and len(self.batches) >= self.queue_batches + 2


class Watched:
    """The harness's source under a runner (see the module docstring).

    A polling harness wraps its source in :class:`EngineCommits`, which does
    the engine's part (committing ``batch.state``); here the real engine does
    it, so reads and commits go to the source inside, and only ``open`` goes
    through the wrapper (a Stripe feed starts itself there).
    """

    def __init__(self, made: Any, probe: Probe) -> None:
        self.outer = made
        self.inner = made.source if isinstance(made, EngineCommits) else made
        self.probe = probe
        self.ctx: Context | None = None
        self.after: Position | None = None

    async def open(self, ctx: Context, after: Position | None) -> None:
        self.ctx, self.after = ctx, after
        await self.outer.open(ctx, after)

    async def read(self, max_events: int, max_wait: float) -> Batch:
        batch = await self.inner.read(max_events, max_wait)
        p = self.probe
        if not batch.events:
            p.empty_reads += 1
        if not batch.events and batch.position is None:
            return batch  # the runner drops it
        if self.after is not None and any(e.position <= self.after for e in batch.events):
            p.violations.append(f"read again at or before the checkpoint {self.after}")
        p.emitted += len(batch.events)
        p.largest = max(p.largest, len(batch.events))
        p.batches.append((batch.position, list(batch.events)))
        n_batches, n_events = p.in_flight()
        p.max_batches = max(p.max_batches, n_batches)
        p.max_events_in_flight = max(p.max_events_in_flight, n_events)
        if p.runner is not None:
            p.max_runner_gap = max(p.max_runner_gap, p.runner.stats.events_read - p.runner.stats.events_written)
        if n_batches > p.batch_bound or n_events > p.event_bound():
            p.violations.append(f"read ahead: {n_batches} batches / {n_events} events not yet acknowledged")
        return batch

    async def commit(self, position: Position) -> None:
        p = self.probe
        assert self.ctx is not None
        stored = await self.ctx.state.load_checkpoint(self.ctx.pipeline)
        if stored != position:
            p.violations.append(f"commit({position}) while the state store holds {stored}")
        # A batch without a position (it ends inside a source transaction) is covered by the commit of
        # the next batch that has one, never by an earlier commit.
        while (last := next((i for i, (pos, _) in enumerate(p.batches) if pos is not None), None)) is not None:
            if p.batches[last][0] > position:
                break
            for _ in range(last + 1):
                _, events = p.batches.popleft()
                unwritten = [ident(e) for e in events if ident(e) not in p.sink.landed]
                if unwritten:
                    p.violations.append(f"commit({position}) covers events the sink never wrote: {unwritten[:3]}")
        p.commits.append(position)
        await self.inner.commit(position)

    async def close(self) -> None:
        await self.outer.close()
