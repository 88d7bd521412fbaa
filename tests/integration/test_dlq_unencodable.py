"""An event the codec cannot store whole (nested 1,000 levels deep) is still dead-lettered, on both
state store backends, and the pipeline keeps running: a failed commit would otherwise fail it for good."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import pg_dsn
from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.event import ChangeEvent
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import FlakySink, ListSource, eventually


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, state_url: str) -> AsyncIterator[StateStore]:
    if request.param == "sqlite":
        url = state_url
    else:
        url = pg_dsn(request.getfixturevalue("pg_database").rsplit("/", 1)[1]) + "?schema=tidesync"
    s = open_state_store(url)
    await s.open()
    yield s
    await s.close()


async def test_a_deep_event_is_dead_lettered_as_text_and_the_pipeline_goes_on(store: StateStore) -> None:
    events = [ChangeEvent("t", (i,), "insert", after={"id": i, "v": i}) for i in range(20)]
    events[7] = ChangeEvent("t", (7,), "insert", after={"id": 7, "v": _deep(1000)})
    sink = FlakySink(poison=lambda e: not isinstance(e.after["v"], int))  # type: ignore[index]
    runner = PipelineRunner("deep", ListSource(events), sink, store, batch=BatchPolicy(5, 0.01))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: len(sink.tables.get("t", {})) == 19 or task.done(), message="the 19 good rows")
        await eventually(lambda: store.dlq_count("deep"), message="the dead letter")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert runner.state_name == "stopped"
    [entry] = await store.dlq_list()
    assert entry.key == (7,)
    assert "could not be stored whole" in entry.error and "nested deeper" in entry.error
    assert set(entry.event.after or {}) == {"unencodable"}
    assert sorted(sink.tables["t"]) == [(i,) for i in range(20) if i != 7]
