"""The sync runner over in-memory tables: one wait on the restart policy per failure, a new count after a
healthy session, the lifecycle states it shows, and giving up; and the review queue's ``ConflictQueue``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidesync.engine.lifecycle import State
from tidesync.errors import ConfigError, SourceTransientError
from tidesync.event import Batch
from tidesync.retry import RetryPolicy
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore
from tidesync.sync import decisions
from tidesync.sync.conflicts import ConflictQueue, ResolutionError
from tidesync.sync.mapping import FieldMap, SideSpec
from tidesync.sync.memory import ChangeFeed, FeedSource, MemoryEndpoint, MemoryTable
from tidesync.sync.processor import SyncProcessor
from tidesync.sync.rules import Rule, Rules
from tidesync.sync.runner import SyncRunner
from tidesync.testing import FakeClock, eventually


class FlakySource(FeedSource):
    """A feed source whose reads raise the errors ``script`` returns (None: read as usual)."""

    def __init__(self, feed: ChangeFeed, script: Callable[[], Exception | None]) -> None:
        super().__init__(feed)
        self.script = script
        self.opens = 0

    async def open(self, ctx: object, after: object) -> None:
        self.opens += 1
        await super().open(ctx, after)  # type: ignore[arg-type]

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        error = self.script()
        if error is not None:
            raise error
        return await super().read(max_events, max_wait)


@dataclass
class World:
    a: MemoryTable
    b: MemoryTable
    store: StateStore
    clock: FakeClock = field(default_factory=FakeClock)
    seen: list[str] = field(default_factory=list)  # state names, as they changed

    def runner(self, script: Callable[[], Exception | None], restart: RetryPolicy) -> SyncRunner:
        names = {"id": "id", "x": "x", "y": "y"}
        fmap = FieldMap(SideSpec("a", "a", ("id",), names), SideSpec("b", "b", ("id",), names), shared_keys=True)
        endpoints = {"a": MemoryEndpoint(self.a, origin="o_a"), "b": MemoryEndpoint(self.b, origin="o_b")}
        rules = Rules(default=Rule("lww"), fields={"y": Rule("manual")}, skew=0.0)

        def make() -> SyncProcessor:
            return SyncProcessor(
                "p",
                fmap,
                endpoints,
                self.store,
                decisions.Policy(rules),
                origins={"a": "o_a", "b": "o_b"},
                clock=self.clock,
            )

        sources = {"a": FlakySource(self.a.feed, script), "b": FeedSource(self.b.feed)}
        return SyncRunner(
            "p", sources, endpoints, self.store, make, clock=self.clock, restart=restart, resolve_interval=0.01
        )

    async def watch(self, runner: SyncRunner, task: asyncio.Task[None]) -> None:
        """Record every state name the runner shows until its task ends."""
        async with asyncio.timeout(10):
            while not task.done():
                if not self.seen or self.seen[-1] != runner.state_name:
                    self.seen.append(runner.state_name)
                await asyncio.sleep(0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    ticks = itertools.count(1000)
    clock = lambda: float(next(ticks))  # noqa: E731  (every change commits one second after the last)
    try:
        yield World(MemoryTable("a", ["id"], clock=clock), MemoryTable("b", ["id"], clock=clock), store)
    finally:
        await store.close()


def failing(plan: list[bool]) -> Callable[[], Exception | None]:
    """Reads fail while ``plan`` pops True; once it is empty, they succeed."""

    def script() -> Exception | None:
        if plan and plan.pop(0):
            return SourceTransientError("connection lost")
        return None

    return script


async def test_each_source_failure_waits_once_on_the_restart_policy(world: World) -> None:
    world.a.insert({"id": 1, "x": 1, "y": 1})
    runner = world.runner(failing([True, True]), RetryPolicy(initial_delay=0.5, max_delay=30, jitter="none"))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: (1,) in world.b.rows or task.done(), timeout=10, message="the row copied to B")
    assert runner.state_name == "running"
    stop.set()
    await asyncio.wait_for(task, 10)
    # one wait per failure, growing on the schedule (the reader does not wait as well)
    assert world.clock.sleeps == [0.5, 1.0]
    assert runner.restarts == 2 and runner.state_name == "stopped"
    assert runner.sources["a"].opens == 3  # type: ignore[attr-defined]


async def test_a_session_that_processed_a_batch_begins_a_new_count(world: World) -> None:
    world.a.insert({"id": 1, "x": 1, "y": 1})
    plan = [True]  # fail once at start; later, once more after the first batch

    def script() -> Exception | None:
        if plan and plan.pop(0):
            return SourceTransientError("connection lost")
        if (1,) in world.b.rows and runner.restarts == 1:
            return SourceTransientError("lost again")
        return None

    # two failures in a row would give up; these two are separated by a processed batch
    runner = world.runner(script, RetryPolicy(initial_delay=0.5, max_delay=30, jitter="none", max_attempts=2))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: runner.restarts == 2 or task.done(), timeout=10, message="two restarts")
    world.a.update((1,), {"x": 2})
    await eventually(lambda: world.b.rows[(1,)]["x"] == 2 or task.done(), timeout=10, message="the update copied")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert world.clock.sleeps == [0.5, 0.5]  # each the first failure of its count


async def test_the_states_shown_and_giving_up(world: World) -> None:
    runner = world.runner(failing([True] * 10), RetryPolicy(initial_delay=0.5, jitter="none", max_attempts=3))
    task = asyncio.create_task(runner.run(asyncio.Event()))
    await world.watch(runner, task)
    with pytest.raises(SourceTransientError, match="connection lost"):
        await task
    assert runner.lifecycle.state == State.FAILED and runner.state_name == "failed"
    assert world.clock.sleeps == [0.5, 1.0] and runner.restarts == 2
    assert "connection lost" in (runner.last_error or "")
    assert {"starting", "retrying"} <= set(world.seen)


async def test_an_error_a_restart_cannot_cure_fails_at_once(world: World) -> None:
    runner = world.runner(lambda: ConfigError("no such table"), RetryPolicy(jitter="none"))
    with pytest.raises(ConfigError):
        await asyncio.wait_for(runner.run(asyncio.Event()), 10)
    assert runner.state_name == "failed" and world.clock.sleeps == [] and runner.restarts == 0


async def test_stop_during_the_wait_stops_cleanly(world: World) -> None:
    runner = world.runner(failing([True] * 10), RetryPolicy(initial_delay=3600, jitter="none"))
    runner.clock = world.clock = FakeClock()

    async def never(seconds: float) -> None:
        await asyncio.Event().wait()  # a wait only ``stop`` ends

    world.clock.sleep = never  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: runner.state_name == "retrying", timeout=10, message="waiting to start over")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert runner.state_name == "stopped"


# --- the review queue ----------------------------------------------------------------------------


async def test_conflict_queue_reads_and_records_what_people_decide(world: World) -> None:
    stop = asyncio.Event()
    runner = world.runner(lambda: None, RetryPolicy(jitter="none"))
    task = asyncio.create_task(runner.run(stop))
    try:
        world.a.insert({"id": 1, "x": 0, "y": 0})
        await eventually(lambda: (1,) in world.b.rows, timeout=10, message="row copied")
        world.a.update((1,), {"y": 1})
        world.b.update((1,), {"y": 2})
        queue = ConflictQueue(world.store)
        [entry] = await eventually(queue.pending, timeout=10, message="a parked conflict")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    cid = entry["id"]
    assert cid == "p:1" and entry["field"] == "y" and await queue.pending("other") == []
    assert (await queue.get(cid) or {})["pending_resolution"] is None and await queue.requests() == {}
    with pytest.raises(ResolutionError):
        await queue.get("not-an-id")
    with pytest.raises(ResolutionError, match="no pending conflict"):
        await queue.request_resolution("p:99", take="a")
    res = await queue.request_resolution(cid, take="b", remember=True, by="ada", now=5.0)
    assert (res.field, res.rule_line) == ("y", "y: {prefer: b}")
    request = (await queue.requests("p"))[cid]
    assert (request["take"], request["by"]) == ("b", "ada")
    assert (await queue.get(cid) or {})["pending_resolution"] == request
    assert [h["conflict"] for h in await queue.history("p")] == [cid]
    assert await queue.forget_rule("p", "y") and not await queue.forget_rule("p", "y")
