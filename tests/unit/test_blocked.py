"""Loud, contained failures: blocked pipelines probe on a fake clock, the breaker, degraded, foreign exceptions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.engine.breaker import MIN_EVENTS, CircuitBreaker
from tidesync.engine.lifecycle import State
from tidesync.engine.parklog import ParkLog
from tidesync.errors import PartialBatchError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.observe.alerts import CLEARED, FIRED
from tidesync.observe.alerts_config import AlertsConfig
from tidesync.observe.exposition import EngineCollector, render
from tidesync.observe.monitor import Monitor
from tidesync.protocols import Context
from tidesync.retry import RetryPolicy
from tidesync.state import open_state_store
from tidesync.state.store import DeadLetterFilter, NewDeadLetter
from tidesync.testing import FakeClock, FlakySink, ListSource, MemorySink, eventually

PROBE = RetryPolicy(initial_delay=1.0, max_delay=8.0, multiplier=2.0, jitter="none")


def upsert(i: int, key: int | None = None) -> ChangeEvent:
    k = i if key is None else key
    return ChangeEvent("public.orders", (k,), "insert", after={"id": k, "v": i})


class RefusingSink(MemorySink):
    """Refuses every write with a SystemicError while ``refuse`` is true (a missing table, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = True
        self.refusals = 0

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if events and self.refuse:
            self.refusals += 1
            raise SystemicError("table public.orders does not exist in db x; create it", entity="public.orders")
        self.apply(events, replay)


class RaisingSink(MemorySink):
    """Raises a foreign exception (a sink bug) for the events ``bad`` picks."""

    def __init__(self, bad: Callable[[ChangeEvent], BaseException | None]) -> None:
        super().__init__()
        self.bad = bad

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        for ev in events:
            exc = self.bad(ev)
            if exc is not None:
                raise exc
        self.apply(events, replay)


@pytest.fixture
async def store(state_url):  # type: ignore[no-untyped-def]
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


class Running:
    def __init__(self, runner: PipelineRunner) -> None:
        self.runner = runner
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.runner.run(self.stop))
        return self

    async def until(self, predicate: Callable[[], Any], message: str) -> None:
        assert self.task is not None
        await eventually(lambda: predicate() or self.task.done(), timeout=20, message=message)  # type: ignore[union-attr]
        assert not self.task.done() or self.task.exception() is None, self.task.exception()  # type: ignore[union-attr]
        assert predicate(), message

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


# --- a systemic error blocks, holds, probes and resumes ---------------------------------------------


async def test_systemic_error_blocks_with_one_error_line_and_resumes_by_itself(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tidesync")
    clock = FakeClock()
    sink = RefusingSink()
    events = [upsert(i) for i in range(50)]
    runner = PipelineRunner("p", ListSource(events), sink, store, clock=clock, batch=BatchPolicy(20, 0.01), probe=PROBE)
    async with Running(runner) as run:
        await run.until(lambda: runner.state_name == "blocked" and sink.refusals >= 8, "blocked, probing")
        assert await store.dlq_count("p") == 0  # nothing dead-lettered
        assert await store.load_checkpoint("p") is None  # the position is kept
        assert sink.tables == {}
        status = await eventually(lambda: _status_in(store, "blocked"), message="blocked status stored")
        assert "public.orders does not exist" in status.last_error
        assert status.extra["blocked_entity"] == "public.orders" and status.extra["blocked_since"] > 0
        # the probes back off by the probe policy, on the injected clock
        probes = [s for s in clock.sleeps if s >= 1.0]
        assert probes[:5] == [1.0, 2.0, 4.0, 8.0, 8.0]
        sink.refuse = False  # the table was created
        await run.until(lambda: len(sink.tables.get("public.orders", {})) == 50, "resumed")
        assert runner.state_name == "running"
    assert await store.dlq_count("p") == 0
    assert await store.load_checkpoint("p") == (49,)
    assert [w.position for w in sink.writes] == [(i,) for i in range(50)]  # in order, nothing replayed twice
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "blocked on public.orders" in errors[0] and "does not exist" in errors[0]
    unblocked = [r.getMessage() for r in caplog.records if "unblocked" in r.getMessage()]
    assert len(unblocked) == 1 and caplog.records[caplog.records.index(_first(caplog, "unblocked"))].levelno == 20


def _first(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    return next(r for r in caplog.records if text in r.getMessage())


async def _status_in(store: Any, state: str) -> Any:
    st = await store.status_get("p")
    return st if st is not None and st.state == state else None


async def test_stop_while_blocked_keeps_the_held_batch_for_the_next_start(store: Any) -> None:
    clock = FakeClock()
    sink = RefusingSink()
    events = [upsert(i) for i in range(30)]
    runner = PipelineRunner("p", ListSource(events), sink, store, clock=clock, batch=BatchPolicy(10, 0.01), probe=PROBE)
    async with Running(runner) as run:
        await run.until(lambda: runner.state_name == "blocked", "blocked")
    assert runner.state_name == "stopped"
    assert await store.load_checkpoint("p") is None and await store.dlq_count("p") == 0
    sink.refuse = False
    again = PipelineRunner("p", ListSource(events), sink, store, clock=clock, batch=BatchPolicy(10, 0.01), probe=PROBE)
    async with Running(again) as run:
        await run.until(lambda: len(sink.tables.get("public.orders", {})) == 30, "everything after restart")
    assert await store.load_checkpoint("p") == (29,) and await store.dlq_count("p") == 0


async def test_a_per_event_systemic_failure_holds_only_the_failed_events(store: Any) -> None:
    """A sink reporting per event (webhook lanes) that refuses some: the written ones are not held."""

    class HalfRefusing(MemorySink):
        refuse = True

        async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
            failures = {}
            for i, ev in enumerate(events):
                if self.refuse and ev.key[0] % 2:
                    failures[i] = SystemicError("endpoint answered 401")
                else:
                    self.apply([ev], replay)
            if failures:
                raise PartialBatchError(failures)

    clock = FakeClock()
    sink = HalfRefusing()
    runner = PipelineRunner(
        "p", ListSource([upsert(i) for i in range(10)]), sink, store, clock=clock, batch=BatchPolicy(10, 0.01),
        probe=PROBE,
    )  # fmt: skip
    async with Running(runner) as run:
        await run.until(lambda: runner.state_name == "blocked", "blocked")
        assert sorted(sink.tables["public.orders"]) == [(0,), (2,), (4,), (6,), (8,)]
        sink.refuse = False
        await run.until(lambda: len(sink.tables["public.orders"]) == 10, "the held ones written")
    assert await store.dlq_count("p") == 0


# --- the circuit breaker ------------------------------------------------------------------------------


def test_breaker_trips_on_count_or_time_and_resets_on_success_or_another_class() -> None:
    b = CircuitBreaker(events=5, seconds=60)
    for _ in range(4):
        assert not b.failed("permanent", 0.0)
    assert b.failed("permanent", 0.0) and b.tripped("permanent", 0.0)
    assert not b.tripped("transform", 0.0)
    b.failed("blocked", 0.0)  # waiting behind a dead letter is not a failure: changes nothing
    assert b.tripped("permanent", 0.0)
    b.written()
    assert not b.tripped("permanent", 0.0)
    b.failed("permanent", 0.0)
    b.failed("transient", 1.0)
    assert b.count == 1 and b.error_class == "transient"
    # by time: every event failing for 60 s, at least MIN_EVENTS of them
    t = CircuitBreaker(events=0, seconds=60)
    t.failed("permanent", 0.0)
    assert not t.failed("permanent", 61.0)  # two poison rows a minute apart do not trip it
    for i in range(MIN_EVENTS - 2):
        t.failed("permanent", 61.0 + i)
    assert t.tripped("permanent", 80.0)
    off = CircuitBreaker(events=0, seconds=0)
    assert not any(off.failed("permanent", float(i)) for i in range(1000))


async def test_breaker_blocks_after_100_consecutive_dead_letters_and_holds_the_rest(store: Any) -> None:
    clock = FakeClock()
    sink = FlakySink(poison=lambda e: True)  # the destination rejects every row, one at a time
    events = [upsert(i) for i in range(150)]
    runner = PipelineRunner(
        "p", ListSource(events), sink, store, clock=clock, batch=BatchPolicy(200, 0.01), probe=PROBE,
        breaker=CircuitBreaker(events=100, seconds=60),
    )  # fmt: skip
    async with Running(runner) as run:
        await run.until(lambda: runner.state_name == "blocked", "blocked by the breaker")
        status = await eventually(lambda: _status_in(store, "blocked"), message="blocked status stored")
        assert "circuit breaker (100 consecutive events failed with permanent" in status.last_error
        # the 100 letters are durable before the held rest is probed (the sink may move past them)
        await eventually(lambda: _dlq_is(store, 100), message="the 100 dead letters committed")
        assert await store.load_checkpoint("p") is None
        sink.poison = None  # fixed
        await run.until(lambda: runner.stats.batches >= 1, "the batch settled")
    entries = await store.dlq_list(DeadLetterFilter(pipeline="p"))
    assert [e.key[0] for e in entries] == list(range(100))  # exactly the first 100 were dead-lettered
    assert sorted(sink.tables["public.orders"]) == [(i,) for i in range(100, 150)]  # the held 50 were written
    assert await store.load_checkpoint("p") == (149,)


async def _dlq_is(store: Any, n: int) -> bool:
    return bool(await store.dlq_count("p") == n)


# --- any exception of one event goes to the DLQ ------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: TypeError("unsupported operand type(s)"),
        lambda: RecursionError("maximum recursion depth exceeded"),
        lambda: UnicodeEncodeError("latin-1", "\u2603", 0, 1, "ordinal not in range"),
    ],
    ids=["TypeError", "RecursionError", "UnicodeEncodeError"],
)
async def test_a_foreign_exception_of_one_event_dead_letters_that_event(
    store: Any, make: Callable[[], BaseException]
) -> None:
    sink = RaisingSink(lambda e: make() if e.key == (7,) else None)
    runner = PipelineRunner("p", ListSource([upsert(i) for i in range(20)]), sink, store, batch=BatchPolicy(20, 0.01))
    async with Running(runner) as run:
        await run.until(lambda: runner.stats.events_written == 19, "the others written")
        assert runner.state_name == "running" and runner.display_state == "degraded"
    (entry,) = await store.dlq_list(DeadLetterFilter(pipeline="p"))
    name = type(make()).__name__
    assert entry.key == (7,) and entry.error_class == "permanent" and name in entry.error
    assert len(sink.tables["public.orders"]) == 19


async def test_a_transform_that_raises_dead_letters_only_its_event(store: Any) -> None:
    class Boom:
        filtered = 0

        def apply(self, events: list[ChangeEvent]) -> tuple[list[ChangeEvent], list[tuple[ChangeEvent, str]]]:
            if any(e.key == (3,) for e in events):
                raise RecursionError("maximum recursion depth exceeded")
            return events, []

        def map_schema(self, schema: Any) -> Any:
            return schema

    sink = MemorySink()
    runner = PipelineRunner(
        "p", ListSource([upsert(i) for i in range(10)]), sink, store, transform=Boom(), batch=BatchPolicy(10, 0.01)
    )
    async with Running(runner) as run:
        await run.until(lambda: runner.stats.events_written == 9, "the others written")
    (entry,) = await store.dlq_list(DeadLetterFilter(pipeline="p"))
    assert entry.key == (3,) and entry.error_class == "transform" and "RecursionError" in entry.error


# --- every park is visible: degraded, a rate-limited warning ------------------------------------------


def test_park_log_warns_once_then_summarises_per_window() -> None:
    plog = ParkLog("p", window=60)

    def letter(i: int) -> NewDeadLetter:
        return NewDeadLetter("p", "sink", upsert(i), "permanent", f"UndefinedColumn: column x{i} does not exist")

    first = plog.add([letter(0)], 0.0)
    assert len(first) == 1 and "public.orders" in first[0] and "UndefinedColumn" in first[0]
    assert plog.add([letter(i) for i in range(1, 300)], 10.0) == []
    assert plog.add([letter(300)], 30.0) == []
    assert plog.flush(59.0) == []
    (summary,) = plog.flush(60.0)
    assert summary.startswith("pipeline p: 300 more events of public.orders dead-lettered in the last 60s")
    assert "UndefinedColumn: column x1 does not exist" in summary
    assert plog.flush(200.0) == []  # nothing more came: the window closes quietly
    assert len(plog.add([letter(1)], 201.0)) == 1  # and the next one is told at once again


async def test_poison_rows_make_the_pipeline_degraded_for_five_minutes(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "tidesync")
    clock = FakeClock()
    sink = FlakySink(poison=lambda e: e.key[0] in (5, 50, 95))
    runner = PipelineRunner(
        "p", ListSource([upsert(i) for i in range(100)]), sink, store, clock=clock, batch=BatchPolicy(100, 0.01)
    )
    async with Running(runner) as run:
        await run.until(lambda: runner.stats.events_written == 97, "the other rows flow")
        assert runner.display_state == "degraded"
        await eventually(lambda: _status_in(store, "degraded"), message="degraded in the stored status")
        metrics = render(EngineCollector(lambda: [runner])).decode()
        assert 'tidesync_pipeline_state{pipeline="p",state="degraded"} 1.0' in metrics
        clock.advance(301)
        await eventually(lambda: _status_in(store, "running"), message="running again after five quiet minutes")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("an event of public.orders (key [5]) was dead-lettered [permanent]" in w for w in warnings)
    assert any("2 more events of public.orders dead-lettered" in w for w in warnings)  # flushed on the clock


# --- the built-in alerts --------------------------------------------------------------------------------


async def test_builtin_alerts_fire_and_clear_once_for_blocked_and_dead_letters() -> None:
    clock = FakeClock()
    runner = SimpleNamespace(name="p", state_name="running", clock=clock, blocked=None, source=object())

    class Store:
        depth = 0

        async def dlq_count(self, pipeline: str | None = None) -> int:
            return self.depth

        async def kv_scan(self, namespace: str, prefix: str = "") -> dict[str, Any]:
            return {}

    store = Store()
    monitor = Monitor(SimpleNamespace(runners=[runner]), store, alerts=None, clock=clock)  # type: ignore[arg-type]
    builtin = {"pipeline-blocked", "dead-letters", "retained-wal", "binlog-oldest", "binlog-purged"}
    assert {a.rule for a in monitor.book.alerts} == builtin

    async def ticks(n: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for _ in range(n):
            out += [(x.rule, x.kind) for x in await monitor.tick()]
            clock.advance(monitor.interval)
        return out

    assert await ticks(2) == []
    runner.state_name = "blocked"
    runner.blocked = SimpleNamespace(since=clock.time())
    assert await ticks(1) == [("pipeline-blocked", FIRED)]  # on the first look
    assert await ticks(5) == []
    runner.state_name, runner.blocked = "running", None
    store.depth = 2
    assert sorted(await ticks(3)) == [("dead-letters", FIRED), ("pipeline-blocked", CLEARED)]
    store.depth = 0
    assert await ticks(3) == [("dead-letters", CLEARED)]
    off = Monitor(SimpleNamespace(runners=[runner]), store, alerts=AlertsConfig(builtin=False), clock=clock)  # type: ignore[arg-type]
    assert off.book.alerts == []


async def test_the_built_in_retained_wal_alert_fires_above_a_gib_and_clears_below_half() -> None:
    clock = FakeClock()
    retained = [0]

    class Source:
        slot = "tidesync_p"

        async def lag(self) -> Any:
            return SimpleNamespace(exists=True, slot=self.slot, retained_wal_bytes=retained[0], unconfirmed_bytes=0)

    class Store:
        async def dlq_count(self, pipeline: str | None = None) -> int:
            return 0

        async def kv_scan(self, namespace: str, prefix: str = "") -> dict[str, Any]:
            return {}

    runner = SimpleNamespace(name="p", state_name="running", clock=clock, blocked=None, source=Source())
    monitor = Monitor(SimpleNamespace(runners=[runner]), Store(), alerts=None, clock=clock)  # type: ignore[arg-type]

    async def ticks(n: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for _ in range(n):
            out += [(x.rule, x.kind) for x in await monitor.tick()]
            clock.advance(monitor.interval)
        return out

    retained[0] = 2**30  # at the threshold: not above it
    assert await ticks(2) == []
    retained[0] = 2**30 + 1
    assert await ticks(3) == [("retained-wal", FIRED)]
    retained[0] = 2**29 + 1  # between the thresholds: still firing
    assert await ticks(3) == []
    retained[0] = 2**28
    assert await ticks(3) == [("retained-wal", CLEARED)]


# --- the webhook sink: 401/403 are systemic -------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_webhook_refusal_is_systemic_and_stops_the_lane(store: Any, status: int) -> None:
    from tidesync.sinks.webhook import WebhookSink, WebhookSinkConfig

    posts = []

    def handler(request: httpx.Request) -> httpx.Response:
        posts.append(request)
        return httpx.Response(status, text="invalid signature")

    cfg = WebhookSinkConfig.model_validate(
        {"url": "http://hooks.test/in", "secrets": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "concurrency": 1}
    )
    sink = WebhookSink(cfg, transport=httpx.MockTransport(handler))
    await sink.open(Context(pipeline="p", name="sink", state=store))
    try:
        with pytest.raises(PartialBatchError) as info:
            await sink.write([upsert(i) for i in range(5)])
    finally:
        await sink.close()
    assert len(posts) == 1  # the first refusal stops the lane
    assert all(isinstance(e, SystemicError) for e in info.value.failures.values())
    assert f"answered {status}" in str(info.value.failures[0])
    assert not sink.disabled


def test_blocked_is_in_the_lifecycle_table() -> None:
    from tidesync.engine.lifecycle import ALLOWED

    assert State.BLOCKED in ALLOWED[State.RUNNING] and State.RUNNING in ALLOWED[State.BLOCKED]
    assert State.DRAINING in ALLOWED[State.BLOCKED] and State.FAILED in ALLOWED[State.BLOCKED]
