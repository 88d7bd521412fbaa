"""Every source: resume after a checkpoint yields nothing at or before it; open/close idempotent; empty reads."""

from __future__ import annotations

import inspect
from typing import Any

from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.testing import MemorySink


async def change(result: Any) -> None:
    """Await a harness's change method when it is a coroutine (a webhook source is fed through its async intake)."""
    if inspect.isawaitable(result):
        await result


def key(harness: Any, i: int) -> tuple[Any, ...]:
    """The key of record ``i`` at this source (``(i,)`` unless the harness names records otherwise)."""
    return harness.key(i) if hasattr(harness, "key") else (i,)


async def _drain(source: Any, want: int, rounds: int = 200) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for _ in range(rounds):
        batch = await source.read(100, 0.02)
        out.extend(batch.events)
        if len(out) >= want:
            break
    return out


async def test_reads_every_change_in_order_with_increasing_positions(source_harness: Any, source_ctx: Context) -> None:
    src = source_harness.make_source()
    await src.open(source_ctx, None)
    await change(source_harness.insert(range(1, 51)))
    await change(source_harness.update(range(1, 11), qty=5))
    await change(source_harness.delete(range(41, 51)))
    if not source_harness.every_change:
        # A polling source reads the net state: 40 rows, 1-10 with qty 5; 41-50 came and went unseen.
        events = await _drain(src, 40)
        await src.close()
        net = MemorySink()
        net.apply([e.replace(entity="items") for e in events])
        item = getattr(source_harness, "as_item", lambda row: {c: row.get(c) for c in ("id", "name", "qty")})
        got = {k: item(row) for k, row in net.tables["items"].items()}
        want = {i: {"id": i, "name": f"item {i}", "qty": 5 if i <= 10 else 0} for i in range(1, 41)}
        assert got == {key(source_harness, i): row for i, row in want.items()}
        positions = [e.position for e in events]
        assert positions == sorted(positions) and len(set(positions)) == len(events)
        return
    events = await _drain(src, 70)
    await src.close()
    assert len(events) == 70
    assert [e.op for e in events] == ["insert"] * 50 + ["update"] * 10 + ["delete"] * 10
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 70
    assert all(e.entity.endswith(source_harness.entity) for e in events)


async def test_resume_after_checkpoint_yields_nothing_at_or_before_it(source_harness: Any, source_ctx: Context) -> None:
    src = source_harness.make_source()
    await src.open(source_ctx, None)
    await change(source_harness.insert(range(1, 31)))
    first: list[ChangeEvent] = []
    checkpoint = None
    while len(first) < 30:
        batch = await src.read(7, 0.02)
        first.extend(batch.events)
        if batch.position is not None and len(first) >= 14 and checkpoint is None:
            checkpoint = batch.position
    assert checkpoint is not None
    await src.commit(checkpoint)
    await src.close()
    await change(source_harness.insert(range(31, 41)))
    again = source_harness.make_source()
    await again.open(source_ctx, checkpoint)
    rest = await _drain(again, 40 - sum(1 for e in first if e.position <= checkpoint))
    await again.close()
    assert rest, "resumed source produced nothing"
    assert all(e.position > checkpoint for e in rest)
    keys = {e.key for e in first if e.position <= checkpoint} | {e.key for e in rest}
    assert keys == {key(source_harness, i) for i in range(1, 41)}  # nothing lost across the restart


async def test_open_close_are_idempotent_and_empty_reads_are_fine(source_harness: Any, source_ctx: Context) -> None:
    src = source_harness.make_source()
    await src.close()  # close before open
    await src.open(source_ctx, None)
    batch = await src.read(10, 0.01)
    assert batch.events == []
    await src.close()
    await src.close()
