"""A crash while a rejected batch is being split must lose nothing.

The sink stores the applied position with every write (exactly once), so once
the halves after a rejected event are written, a restart skips that event. Its
dead letter must therefore be durable before any later write: here the process
"dies" (the run is cancelled, nothing more committed) right after the write
that follows the isolated poison event, and the restart must still find the
poison event in the dead-letter queue, and every other event in the sink, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.unit.test_engine import store  # noqa: F401  (the fixture)
from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.event import ChangeEvent
from tidesync.state.store import StateStore
from tidesync.testing import FlakySink, ListSource, eventually


class DyingSink(FlakySink):
    """Rejects poison (whole write, like a transaction); after ``die_after`` successful writes that came after
    a rejection, the next write hangs forever (the process is about to be killed)."""

    def __init__(self) -> None:
        super().__init__(poison=lambda e: e.key == (10,))
        self.rejected = False
        self.writes_after_reject = 0
        self.die_after = 2  # [0..9] and [11] written: the position passed the poison event 10
        self.hung = asyncio.Event()

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if self.rejected and self.writes_after_reject >= self.die_after:
            self.hung.set()
            await asyncio.Event().wait()
        if not replay and self.applied is not None:  # what a SQL sink does first: skip what it already applied
            events = [e for e in events if e.position > self.applied]
        try:
            await super().write(events, replay=replay)
        except Exception:
            self.rejected = True
            raise
        if self.rejected:
            self.writes_after_reject += 1


def events() -> list[ChangeEvent]:
    return [ChangeEvent("t", (i,), "insert", after={"id": i}) for i in range(20)]


async def test_a_crash_mid_split_keeps_the_isolated_dead_letter(store: StateStore) -> None:  # noqa: F811
    sink = DyingSink()
    first = PipelineRunner("p", ListSource(events()), sink, store, batch=BatchPolicy(20, 0.01))
    task = asyncio.create_task(first.run(asyncio.Event()))
    await eventually(sink.hung.is_set, message="the write after the poison event")
    task.cancel()  # kill -9: nothing after this point is committed
    await asyncio.gather(task, return_exceptions=True)
    assert 11 in {k[0] for k in sink.tables["t"]}  # the sink stored a position past the poison event

    sink.die_after = 10**9
    stop = asyncio.Event()
    second = PipelineRunner("p", ListSource(events()), sink, store, batch=BatchPolicy(20, 0.01))
    run = asyncio.create_task(second.run(stop))
    await eventually(lambda: second.stats.batches >= 1, message="the restart's first batch")
    stop.set()
    await asyncio.wait_for(run, 30)
    entries = await store.dlq_list()
    assert [e.key for e in entries] == [(10,)], [(e.key, e.error_class) for e in entries]
    assert sorted(k[0] for k in sink.tables["t"]) == [i for i in range(20) if i != 10]
