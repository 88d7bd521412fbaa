"""The dead-letter writer owns the parked keys: loaded, marked, refreshed after a replay, and the batch's rejects."""

from __future__ import annotations

from typing import Any

import pytest

from tidesync.engine.delivery import DeadLetterWriter, RetryingWriter
from tidesync.engine.parked import ParkedKeys
from tidesync.engine.replay import bump_generation
from tidesync.event import ChangeEvent
from tidesync.retry import RetryPolicy
from tidesync.state import open_state_store
from tidesync.state.store import NewDeadLetter, StateChanges
from tidesync.testing import FakeClock, MemorySink


def ev(pos: int, key: int) -> ChangeEvent:
    return ChangeEvent("t", (key,), "insert", after={"id": key, "v": pos}, position=(pos,))


@pytest.fixture
async def store(state_url):  # type: ignore[no-untyped-def]
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


async def test_parked_keys_load_mark_and_reload_when_a_replay_changed_the_queue(store: Any) -> None:
    clock = FakeClock()
    letter = NewDeadLetter("p", "sink", ev(5, 1), "permanent", "bad")
    await store.commit("p", StateChanges(dead_letters=[letter]))
    keys = ParkedKeys("p", "sink", store, clock)
    await keys.load()
    assert keys.behind(ev(3, 1)) == "handled" and keys.behind(ev(9, 1)) == "blocked" and keys.behind(ev(9, 2)) is None
    keys.mark(ev(7, 2))
    assert keys.behind(ev(8, 2)) == "blocked"
    (entry,) = await store.dlq_list()
    await store.dlq_remove([entry.id])
    await bump_generation(store, "p")
    await keys.refresh()
    assert keys.behind(ev(9, 1)) == "blocked"  # looked less than a second ago: not yet
    clock.advance(1.0)
    await keys.refresh()
    assert keys.behind(ev(9, 1)) is None and keys.behind(ev(8, 2)) is None  # reloaded from the queue


async def test_rejected_records_park_in_source_order_and_hold_their_keys(store: Any) -> None:
    clock = FakeClock()
    sink = MemorySink()
    keys = ParkedKeys("p", "sink", store, clock)
    writer = DeadLetterWriter(RetryingWriter(sink, RetryPolicy(max_attempts=1), clock), "p", "sink", clock, keys=keys)
    events = [ev(0, 1), ev(2, 2), ev(3, 1), ev(4, 3)]
    done = await writer.deliver_batch(events, rejected=[(ev(1, 1), "cast failed")])
    assert [(x.event.position, x.error_class) for x in done.letters] == [((1,), "transform"), ((3,), "blocked")]
    assert done.unsaved == done.letters  # found before any write: committed with the checkpoint
    assert [e.position for e in done.written] == [(0,), (2,), (4,)]
    assert [e.position for e in sink.writes] == [(0,), (2,), (4,)]


async def test_a_repair_run_loads_the_queued_keys_and_parks_repairs_behind_them(
    store: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidesync.config import load_config_text
    from tidesync.reconcile import run
    from tidesync.schema import SchemaRegistry

    sink = MemorySink()
    monkeypatch.setattr(run, "build_sink", lambda spec: sink)
    loaded = load_config_text(
        f"pipelines:\n  - name: p\n    source: {{type: sqlite, path: {tmp_path}/a.db, tables: [t]}}\n"
        f"    sink: {{type: sqlite, path: {tmp_path}/b.db}}\n"
    )
    await store.commit("p", StateChanges(dead_letters=[NewDeadLetter("p", run.SINK_NAME, ev(5, 1), "permanent", "x")]))
    repairer = run.Repairer(loaded.pipeline("p"), store, FakeClock())
    await repairer.open(SchemaRegistry())
    assert await repairer([ev(9, 1), ev(9, 2)]) == 1  # key 1 waits in the queue: its repair waits behind it
    assert [e.key for e in sink.writes] == [(2,)]
    assert [(d.event.key, d.error_class) for d in await store.dlq_list()] == [((1,), "permanent"), ((1,), "blocked")]
    await repairer.close()
