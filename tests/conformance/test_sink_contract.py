"""Every sink: re-delivery changes nothing, per-key order within a batch, field-level updates, empty batches."""

from __future__ import annotations

from typing import Any

from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.state.store import StateStore


def ev(op: str, i: int, pos: int, **row: Any) -> ChangeEvent:
    after = {"id": i, **row} if op != "delete" else None
    before = {"id": i} if op == "delete" else None
    changed = tuple(row) if op == "update" else None
    return ChangeEvent(
        "items", (i,), op, before=before, after=after, changed=changed, position=(pos,), committed_at=1.0
    )


async def _open(h: Any, store: StateStore, sink: Any = None) -> Any:
    """Open ``sink`` (default: a new one from the harness) as the engine would, with an open state store."""
    sink = sink or h.make_sink()
    await sink.open(Context(pipeline="conformance", name="sink", state=store))
    return sink


async def test_redelivering_a_batch_changes_nothing(sink_harness: Any, sink_store: StateStore) -> None:
    sink = await _open(sink_harness, sink_store)
    batch = [ev("insert", i, i, name=f"n{i}", qty=i) for i in range(1, 21)]
    batch += [ev("update", 3, 21, qty=300), ev("delete", 4, 22)]
    await sink.write(batch)
    once = sink_harness.rows()
    await sink.write(batch)
    await sink.write(batch[5:])
    assert sink_harness.rows() == once
    assert once[(3,)]["qty"] == 300 and (4,) not in once and len(once) == 19
    await sink.close()


async def test_per_key_order_within_a_batch(sink_harness: Any, sink_store: StateStore) -> None:
    sink = await _open(sink_harness, sink_store)
    await sink.write(
        [
            ev("insert", 1, 1, name="a", qty=1),
            ev("update", 1, 2, qty=2),
            ev("delete", 1, 3),
            ev("insert", 1, 4, name="b", qty=4),
            ev("update", 1, 5, name="c"),
            ev("insert", 2, 6, name="x", qty=0),
            ev("delete", 2, 7),
        ]
    )
    assert sink_harness.rows() == {(1,): {"id": 1, "name": "c", "qty": 4}}
    await sink.close()


async def test_update_writes_only_changed_fields(sink_harness: Any, sink_store: StateStore) -> None:
    sink = await _open(sink_harness, sink_store)
    await sink.write([ev("insert", 1, 1, name="a", qty=1)])
    sink_harness.set_column(1, "name", "edited in the destination")
    await sink.write([ev("update", 1, 2, qty=7)])
    assert sink_harness.rows()[(1,)] == {"id": 1, "name": "edited in the destination", "qty": 7}
    await sink.close()


async def test_empty_batch_and_idempotent_open_close(sink_harness: Any, sink_store: StateStore) -> None:
    sink = await _open(sink_harness, sink_store)
    await sink.write([])
    await sink.close()
    await sink.close()
    sink2 = await _open(sink_harness, sink_store)
    await sink2.write([ev("insert", 9, 1, name="z", qty=9)])
    await sink2.close()
    assert sink_harness.rows()[(9,)]["qty"] == 9


async def test_replay_writes_even_at_or_before_the_applied_position(sink_harness: Any, sink_store: StateStore) -> None:
    sink = await _open(sink_harness, sink_store)
    await sink.write([ev("insert", 1, 1, name="a", qty=1), ev("insert", 2, 5, name="b", qty=2)])
    await sink.write([ev("update", 1, 3, qty=30)], replay=True)  # parked earlier, replayed now
    assert sink_harness.rows()[(1,)]["qty"] == 30
    await sink.close()
