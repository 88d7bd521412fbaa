"""Batch runs in process: a cron schedule on a fake clock, and a run to the end of a source without an end position."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.engine.once import OnceRun
from tidesync.engine.schedule import CronSchedule
from tidesync.errors import ConfigError, SystemicError
from tidesync.event import Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges
from tidesync.testing import FakeClock, ListSource, MemorySink

START = 1_700_000_000.0  # FakeClock's default; the first quarter hour after it:
FIRST = 1_700_000_100.0


def row(i: int) -> ChangeEvent:
    return ChangeEvent("t", (i,), "insert", after={"id": i, "v": i * 10})


class GrowingSource:
    """A change log in memory that knows its newest position; new changes arrive between runs."""

    def __init__(self, clock: FakeClock, stop: asyncio.Event) -> None:
        self.clock, self.stop = clock, stop
        self.log = [row(i) for i in range(3)]
        self.cursor = -1
        self.opened_at: list[float] = []

    async def open(self, ctx: Context, after: Position | None) -> None:
        self.opened_at.append(self.clock.time())
        self.cursor = int(after[0]) if after else -1

    async def end_position(self) -> Position | None:
        return (len(self.log) - 1,) if self.log else None

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        new = self.log[self.cursor + 1 : self.cursor + 1 + max_events]
        if not new:
            await asyncio.sleep(0.001)
            return Batch([])
        self.cursor += len(new)
        events = [e.replace(position=(self.cursor - len(new) + 1 + i,)) for i, e in enumerate(new)]
        return Batch(events, (self.cursor,))

    async def commit(self, position: Position) -> None:
        pass

    async def close(self) -> None:
        if len(self.opened_at) == 1:
            self.log += [row(3), row(4)]  # written between the two runs
        else:
            self.stop.set()


class WatchingClock(FakeClock):
    """Records what status shows whenever the schedule waits for its next time."""

    def __init__(self) -> None:
        super().__init__(START)
        self.runner: PipelineRunner | None = None
        self.shown: list[tuple[str, float | None]] = []

    async def sleep(self, seconds: float) -> None:
        if seconds >= 60 and self.runner is not None:
            status = self.runner.view.status()
            self.shown.append((status.state, status.next_attempt_at))
        await super().sleep(seconds)


async def test_a_cron_schedule_fires_twice_on_a_fake_clock(state_url: str) -> None:
    store = open_state_store(state_url)
    await store.open()
    try:
        clock, stop, sink = WatchingClock(), asyncio.Event(), MemorySink()
        source = GrowingSource(clock, stop)
        runner = PipelineRunner(
            "p", source, sink, store, clock=clock, batch=BatchPolicy(2, 0.01), schedule=CronSchedule("*/15 * * * *")
        )
        clock.runner = runner
        await asyncio.wait_for(runner.run(stop), 20)

        assert source.opened_at == [FIRST, FIRST + 900]  # at the quarter hours, not continuously
        assert clock.shown == [("scheduled", FIRST), ("scheduled", FIRST + 900)]
        assert sink.tables["t"] == {(i,): {"id": i, "v": i * 10} for i in range(5)}
        assert [e.position for e in sink.writes] == [(i,) for i in range(5)]  # each change once
        assert await store.load_checkpoint("p") == (4,)
        assert runner.once_run is not None and runner.once_run.ok and runner.once_run.applied == 2
        status = await store.status_get("p")
        assert status is not None and status.state == "stopped"
    finally:
        await store.close()


async def test_once_without_an_end_position_stops_when_the_source_comes_up_empty(state_url: str) -> None:
    store = open_state_store(state_url)
    await store.open()
    try:
        source, sink = ListSource(row(i) for i in range(50)), MemorySink()
        runner = PipelineRunner("p", source, sink, store, batch=BatchPolicy(10, 0.01), once=True)
        await asyncio.wait_for(runner.run(asyncio.Event()), 20)
        assert len(sink.tables["t"]) == 50
        assert await store.load_checkpoint("p") == (49,)
        assert runner.once_run is not None and runner.once_run.ok and runner.once_run.applied == 50
    finally:
        await store.close()


def test_a_bad_cron_expression_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a cron expression"):
        CronSchedule("every quarter hour")
    assert CronSchedule("0 3 * * *").next_after(START) == 1_700_017_200.0  # 03:00 UTC the next day


class RefusingSink(MemorySink):
    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        raise SystemicError("table t does not exist; create it", entity="t")


async def test_once_stops_and_says_why_when_the_sink_blocks(state_url: str) -> None:
    store = open_state_store(state_url)
    await store.open()
    try:
        runner = PipelineRunner("p", ListSource(row(i) for i in range(5)), RefusingSink(), store, once=True)
        await asyncio.wait_for(runner.run(asyncio.Event()), 20)  # returns instead of probing on and on
        once = runner.once_run
        assert once is not None and not once.ok and once.dead_lettered == 0
        assert "stopped before the end: blocked on t: table t does not exist" in once.summary("p")
        assert await store.load_checkpoint("p") is None  # the held batch is read again by the next run
    finally:
        await store.close()


class ClosedDoorSink(MemorySink):
    async def open(self, ctx: Context) -> None:
        raise SystemicError("database dw does not exist; create it", entity="dw")


async def test_once_stops_when_the_sink_refuses_to_open(state_url: str) -> None:
    store = open_state_store(state_url)
    await store.open()
    try:
        runner = PipelineRunner("p", ListSource(row(i) for i in range(5)), ClosedDoorSink(), store, once=True)
        await asyncio.wait_for(runner.run(asyncio.Event()), 20)
        assert runner.once_run is not None and not runner.once_run.ok
        assert "blocked on dw: database dw does not exist" in runner.once_run.summary("p")
    finally:
        await store.close()


class _Ends:
    """A source that names its end (a polling source's reserved position, far above what it counted)."""

    async def end_position(self) -> Position | None:
        return (7, 1 << 40)


async def test_the_summary_names_the_end_as_of_the_start_not_a_reserved_position() -> None:
    once = OnceRun()
    await once.start(_Ends(), None)
    once.wrote((7, 1 << 40), 12, [])
    assert once.ok
    line = once.summary("p")
    assert line == "pipeline p: 12 event(s) applied up to the source's end as of the start"
    assert str(1 << 40) not in line


async def test_the_summary_of_a_run_ended_by_empty_reads_names_its_position() -> None:
    once = OnceRun()
    await once.start(object(), (3, 5))
    for _ in range(2):
        once.read(Batch([], (3, 9)), (3, 9))
    once.wrote((3, 9), 4, [])
    assert once.summary("p") == "pipeline p: 4 event(s) applied up to [3, 9]"
