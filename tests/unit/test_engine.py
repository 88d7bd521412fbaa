"""The engine with in-memory connectors and a real SQLite state store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.engine.lifecycle import ALLOWED, IllegalTransition, Lifecycle, State
from tidesync.engine.replay import replay, select_entries
from tidesync.errors import StateStoreError
from tidesync.event import Batch, ChangeEvent
from tidesync.retry import RetryPolicy
from tidesync.state import open_state_store
from tidesync.state.store import DeadLetterFilter, StateChanges, StateStore
from tidesync.testing import FakeClock, FlakySink, ListSource, MemorySink, eventually


def upsert(i: int, key: int | None = None, value: int | None = None) -> ChangeEvent:
    k = i if key is None else key
    return ChangeEvent("t", (k,), "insert", after={"id": k, "v": i if value is None else value})


async def run_until(runner: PipelineRunner, predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: predicate() or task.done(), timeout=timeout, message="pipeline progress")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def store(state_url):  # type: ignore[no-untyped-def]
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


async def test_all_events_flow_and_checkpoint_follows_the_sink(store) -> None:  # type: ignore[no-untyped-def]
    source = ListSource(upsert(i) for i in range(10_000))
    sink = MemorySink()
    runner = PipelineRunner("p", source, sink, store, batch=BatchPolicy(500, 0.01))
    await run_until(runner, lambda: runner.stats.events_written == 10_000)
    assert len(sink.tables["t"]) == 10_000
    assert await store.load_checkpoint("p") == (9_999,)
    assert source.committed[-1] == (9_999,)
    status = await store.status_get("p")
    assert status is not None and status.events_applied == 10_000 and status.state == "stopped"
    assert source.closed == 1 and sink.closed == 1


async def test_restart_resumes_after_checkpoint(store) -> None:  # type: ignore[no-untyped-def]
    events = [upsert(i) for i in range(1000)]
    sink = MemorySink()
    r1 = PipelineRunner("p", ListSource(events[:600]), sink, store, batch=BatchPolicy(100, 0.01))
    await run_until(r1, lambda: r1.stats.events_written == 600)
    seen_before = len(sink.writes)
    r2 = PipelineRunner("p", ListSource(events), sink, store, batch=BatchPolicy(100, 0.01))
    await run_until(r2, lambda: r2.stats.events_written == 400)
    assert len(sink.writes) - seen_before == 400  # nothing at or before the checkpoint again
    assert [w.position for w in sink.writes] == [(i,) for i in range(1000)]


async def test_slow_sink_keeps_memory_bounded(store) -> None:  # type: ignore[no-untyped-def]
    source = ListSource(upsert(i % 100) for i in itertools.count())
    sink = FlakySink(delay=0.02)
    runner = PipelineRunner("p", source, sink, store, batch=BatchPolicy(100, 0.01), queue_batches=3)
    in_flight: list[int] = []

    def sample() -> bool:
        in_flight.append(runner.stats.events_read - runner.stats.events_written)
        return runner.stats.batches >= 40

    await run_until(runner, sample)
    # read-ahead is capped by the queue: 3 queued batches + one being written + one being put
    assert max(in_flight) <= 100 * 5
    assert runner.stats.events_read > runner.stats.events_written  # the source really was faster


async def test_transient_failures_are_retried_with_the_policy_schedule(store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    sink = FlakySink(fail_next=4)
    policy = RetryPolicy(initial_delay=0.5, max_delay=3.0, multiplier=2.0, jitter="none")
    runner = PipelineRunner(
        "p",
        ListSource([upsert(i) for i in range(10)]),
        sink,
        store,
        retry=policy,
        clock=clock,
        batch=BatchPolicy(10, 0.01),
    )
    await run_until(runner, lambda: runner.stats.events_written == 10)
    assert clock.sleeps[:4] == [0.5, 1.0, 2.0, 3.0]
    assert await store.dlq_count("p") == 0
    assert len(sink.tables["t"]) == 10


async def test_full_jitter_delays_stay_under_the_cap(store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    sink = FlakySink(fail_next=6)
    policy = RetryPolicy(initial_delay=1.0, max_delay=8.0, multiplier=2.0, jitter="full")
    runner = PipelineRunner(
        "p", ListSource([upsert(1)]), sink, store, retry=policy, clock=clock, batch=BatchPolicy(10, 0.01)
    )
    await run_until(runner, lambda: runner.stats.events_written == 1)
    caps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert len(clock.sleeps) >= 6
    assert all(0 <= s <= c for s, c in zip(clock.sleeps, caps, strict=False))
    assert len(set(clock.sleeps[:6])) > 1  # jittered, not a fixed schedule


async def test_poison_records_are_isolated_and_later_events_of_their_keys_wait(store) -> None:  # type: ignore[no-untyped-def]
    bad_keys = {7, 300, 901}
    events = [upsert(i, key=i % 1000, value=i) for i in range(3000)]  # each key three times
    sink = FlakySink(poison=lambda e: e.after is not None and e.after["v"] in {7, 300, 901})
    runner = PipelineRunner("p", ListSource(events), sink, store, batch=BatchPolicy(1000, 0.01))
    await run_until(runner, lambda: runner.stats.events_written + runner.stats.dead_lettered == 3000)
    entries = await store.dlq_list(DeadLetterFilter(pipeline="p"))
    assert len(entries) == 9  # the bad event of each key and the two later events of that key
    assert {e.key[0] for e in entries} == bad_keys
    assert sorted(e.error_class for e in entries).count("permanent") == 3
    assert sorted(e.error_class for e in entries).count("blocked") == 6
    # every other key has its last value
    table = sink.tables["t"]
    for k in range(1000):
        if k in bad_keys:
            assert k not in table
        else:
            assert table[(k,)]["v"] == 2000 + k
    # fix the destination, replay: every key ends at its last value, the queue is empty
    sink.poison = None
    report = await replay(store, sink, await select_entries(store, DeadLetterFilter(pipeline="p")))
    assert len(report.written) == 9 and not report.failed
    assert await store.dlq_count("p") == 0
    for k in bad_keys:
        assert table[(k,)]["v"] == 2000 + k


async def test_retries_exhausted_park_the_batch_in_order(store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    sink = FlakySink(fail_next=10**9)
    policy = RetryPolicy(initial_delay=0.1, max_delay=1, max_attempts=3, jitter="none")
    runner = PipelineRunner(
        "p",
        ListSource([upsert(i) for i in range(5)]),
        sink,
        store,
        retry=policy,
        clock=clock,
        batch=BatchPolicy(10, 0.01),
    )
    await run_until(runner, lambda: runner.stats.dead_lettered == 5)
    entries = await store.dlq_list()
    assert [e.key[0] for e in entries] == [0, 1, 2, 3, 4]
    assert {e.error_class for e in entries} == {"transient"}
    assert all(e.attempts == 3 for e in entries)
    assert await store.load_checkpoint("p") == (4,)  # parked durably, so the checkpoint moves on


async def test_stale_replay_is_skipped(store) -> None:  # type: ignore[no-untyped-def]
    events = [upsert(0, key=1, value=1), upsert(1, key=1, value=2)]
    sink = FlakySink(poison=lambda e: True)
    runner = PipelineRunner("p", ListSource(events), sink, store, batch=BatchPolicy(10, 0.01))
    await run_until(runner, lambda: runner.stats.dead_lettered == 2)
    first, second = await store.dlq_list()
    sink.poison = None
    # the newer entry is replayed first (by hand); the older one must then not roll it back
    r1 = await replay(store, sink, [second])
    assert r1.written == [second.id]
    r2 = await replay(store, sink, [first])
    assert r2.written == [] and r2.skipped and r2.skipped[0][0] == first.id
    assert sink.tables["t"][(1,)]["v"] == 2
    assert await store.dlq_count() == 0


async def test_graceful_stop_checkpoints_what_was_written(store) -> None:  # type: ignore[no-untyped-def]
    source = ListSource(upsert(i) for i in itertools.count())
    sink = MemorySink()
    runner = PipelineRunner("p", source, sink, store, batch=BatchPolicy(100, 0.01))
    await run_until(runner, lambda: runner.stats.events_written > 2000)
    checkpoint = await store.load_checkpoint("p")
    assert checkpoint == sink.applied  # exactly what the sink acknowledged, no more, no less
    assert source.committed[-1] == checkpoint


def test_lifecycle_table_refuses_illegal_moves() -> None:
    lc = Lifecycle()
    with pytest.raises(IllegalTransition):
        lc.to(State.RUNNING)  # must start first
    lc.to(State.STARTING)
    lc.to(State.RUNNING)
    lc.to(State.RETRYING)
    lc.to(State.RUNNING)
    lc.to(State.DRAINING)
    with pytest.raises(IllegalTransition):
        lc.to(State.RUNNING)
    lc.to(State.STOPPED)
    assert all(State.FAILED in ALLOWED[s] for s in ALLOWED if s not in (State.STOPPED, State.FAILED))


class MidTransactionSource(ListSource):
    """Reads three events at a time; the first batch ends inside a transaction (no position to resume from)."""

    def __init__(self, events: list[ChangeEvent]) -> None:
        super().__init__(events)
        self.reads = 0

    async def read(self, max_events: int, max_wait: float) -> Batch:
        batch = await super().read(3, max_wait)
        if batch.events:
            self.reads += 1
            if self.reads == 1:
                return Batch(batch.events, None)
        return batch


class GatedSink(MemorySink):
    """Holds its first write until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not self.writing.is_set():
            self.writing.set()
            await self.release.wait()
        self.apply(events, replay)


async def test_a_stop_during_a_batch_without_position_writes_on_to_a_checkpoint(store) -> None:  # type: ignore[no-untyped-def]
    source = MidTransactionSource([upsert(i) for i in range(6)])
    sink = GatedSink()
    runner = PipelineRunner("p", source, sink, store, batch=BatchPolicy(3, 0.01))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: sink.writing.is_set() and source.reads >= 2, message="the first write, two batches read")
    stop.set()  # lands while the position-less batch is being written
    sink.release.set()
    await asyncio.wait_for(task, 30)
    assert [w.position for w in sink.writes] == [(i,) for i in range(6)]
    assert await store.load_checkpoint("p") == (5,)  # the next batch closed the transaction and was checkpointed
    assert source.committed == [(5,)]
    assert runner.state_name == "stopped"


async def test_a_stop_with_nothing_more_queued_ends_without_a_checkpoint(store) -> None:  # type: ignore[no-untyped-def]
    """The reader stopped before it read the end of the transaction: nothing to checkpoint, the next start reads it."""
    source = MidTransactionSource([upsert(i) for i in range(3)])
    sink = GatedSink()
    runner = PipelineRunner("p", source, sink, store, batch=BatchPolicy(3, 0.01), queue_batches=1)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(sink.writing.is_set, message="the first write")
    stop.set()
    sink.release.set()
    await asyncio.wait_for(task, 30)
    assert len(sink.writes) == 3 and await store.load_checkpoint("p") is None and source.committed == []


class FlakyStore:
    """A state store whose next ``fail`` commits of a checkpoint raise StateStoreError."""

    def __init__(self, inner: StateStore, fail: int) -> None:
        self.inner = inner
        self.fail = fail
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(self, pipeline: str, changes: StateChanges) -> None:
        if changes.checkpoint is not None and self.failed < self.fail:
            self.failed += 1
            raise StateStoreError("database is locked")
        await self.inner.commit(pipeline, changes)


async def test_a_failing_state_store_is_retried_on_the_state_policy(store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    flaky = FlakyStore(store, fail=8)  # more than the five tries there used to be
    policy = RetryPolicy(initial_delay=0.2, max_delay=5.0, max_age=60.0, jitter="none")
    runner = PipelineRunner(
        "p", ListSource([upsert(i) for i in range(10)]), MemorySink(), flaky, clock=clock,  # type: ignore[arg-type]
        batch=BatchPolicy(10, 0.01), state_retry=policy,
    )  # fmt: skip
    await run_until(runner, lambda: runner.stats.batches >= 1)
    assert flaky.failed == 8 and runner.state_name == "stopped"
    assert await store.load_checkpoint("p") == (9,)
    assert clock.sleeps[:8] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


async def test_a_state_store_down_beyond_the_policy_fails_the_pipeline(store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    flaky = FlakyStore(store, fail=10**9)
    runner = PipelineRunner(
        "p", ListSource([upsert(i) for i in range(10)]), MemorySink(), flaky, clock=clock,  # type: ignore[arg-type]
        batch=BatchPolicy(10, 0.01),
    )  # fmt: skip
    with pytest.raises(StateStoreError):
        await asyncio.wait_for(runner.run(asyncio.Event()), 30)
    assert runner.state_name == "failed" and "database is locked" in (runner.last_error or "")
    assert 60.0 <= sum(clock.sleeps) <= 60.0 + 5.0  # STATE_RETRY gives up a minute after the first failure
    assert await store.load_checkpoint("p") is None


class _DownAtStart(ListSource):
    """A source whose server refuses the first ``refusals`` opens (down, or not set up yet, at start)."""

    def __init__(self, events: Sequence[ChangeEvent], refusals: int, error: Exception) -> None:
        super().__init__(events)
        self.refusals, self.error = refusals, error

    async def open(self, ctx: Any, after: Any) -> None:
        await super().open(ctx, after)
        if self.opened <= self.refusals:
            raise self.error


async def test_a_source_down_at_start_is_waited_for_not_failed(store) -> None:  # type: ignore[no-untyped-def]
    from tidesync.errors import SourceTransientError

    source = _DownAtStart([upsert(i) for i in range(50)], 3, SourceTransientError("connection refused"))
    sink = MemorySink()
    runner = PipelineRunner(
        "p",
        source,
        sink,
        store,
        batch=BatchPolicy(100, 0.01),
        source_retry=RetryPolicy(initial_delay=0.01, max_delay=0.02),
    )
    await run_until(runner, lambda: runner.stats.events_written == 50)
    assert runner.stats.events_written == 50 and source.opened == 4  # three refusals, then it ran


async def test_a_source_that_cannot_open_for_good_fails_the_pipeline_at_once(store) -> None:  # type: ignore[no-untyped-def]
    from tidesync.errors import SourceError

    source = _DownAtStart([upsert(0)], 99, SourceError("password authentication failed"))
    runner = PipelineRunner(
        "p", source, MemorySink(), store, source_retry=RetryPolicy(initial_delay=0.01, max_delay=0.02)
    )
    with pytest.raises(SourceError):
        await runner.run(asyncio.Event())
    assert source.opened == 1
    status = await store.status_get("p")
    assert status is not None and status.state == "failed" and "password" in (status.last_error or "")


class _SwallowsCancellation(ListSource):
    """A source whose driver turns a cancellation into an ordinary answer (nats-py's next_msg does, on a
    closing connection): the engine must stop anyway."""

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)
        return await super().read(max_events, max_wait)


async def test_a_reader_whose_source_swallows_its_cancellation_still_stops(store) -> None:  # type: ignore[no-untyped-def]
    from tidesync.errors import LeaseLostError

    runner = PipelineRunner(
        "p", _SwallowsCancellation(upsert(i) for i in itertools.count()), MemorySink(), store, queue_batches=1
    )

    def guard() -> None:  # the lease ran out: the first write is refused and the pipeline fails
        raise LeaseLostError("lease pipeline:p not renewed; not writing")

    runner.write_guard = guard
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LeaseLostError):
        await asyncio.wait_for(runner.run(asyncio.Event()), 10)
    # Without the reader honouring the swallowed cancellation it waited on the full queue until wait_for gave up.
    assert loop.time() - started < 5


class _ReconnectsForEver(ListSource):
    """A source whose read never ends: a Postgres source reconnecting to a slot another process holds."""

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        if self._n >= 20:
            await asyncio.Event().wait()
        return await super().read(max_events, max_wait)


async def test_a_stop_gives_up_a_read_that_does_not_end_and_keeps_what_was_applied(store) -> None:  # type: ignore[no-untyped-def]
    from tidesync.engine.runner import READ_GRACE

    sink = MemorySink()
    runner = PipelineRunner(
        "p", _ReconnectsForEver(upsert(i) for i in range(40)), sink, store, batch=BatchPolicy(10, 0.01)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: runner.stats.events_written == 20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop.set()
    await asyncio.wait_for(task, 10)  # before: the drain waited on the read for as long as it lasted
    assert loop.time() - started < READ_GRACE + 2
    assert runner.lifecycle.state.value == "stopped"
    assert len(sink.writes) == 20 and await store.load_checkpoint("p") == (19,)
