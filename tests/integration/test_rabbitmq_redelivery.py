"""Nothing applied twice through RabbitMQ, which has no server-side de-duplication.

Both ways a message reaches the rabbitmq source twice, made on purpose against the real broker: a
second copy (the sink published the same events again, as after its own crash) and a redelivery
(the source's process died after the engine's checkpoint and before its acks). The source's
message-id window, committed to the state store with each batch, drops both.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conformance.rabbitmq_harness import URL, delete, take_all
from tidesync.event import ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.sinks.rabbitmq.config import RabbitMQSinkConfig
from tidesync.sinks.rabbitmq.sink import RabbitMQSink
from tidesync.sources.rabbitmq.config import RabbitMQSourceConfig
from tidesync.sources.rabbitmq.source import RabbitMQSource
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore


def ev(i: int, pos: int) -> ChangeEvent:
    return ChangeEvent("items", (i,), "insert", after={"id": i, "qty": pos}, position=(pos,), committed_at=1.0)


async def _read_all(source: RabbitMQSource, store: StateStore, want: int) -> tuple[list[ChangeEvent], Position | None]:
    """Read until ``want`` events, committing each batch's checkpoint and state as the engine does (no ack yet)."""
    got: list[ChangeEvent] = []
    position: Position | None = None
    for _ in range(100):
        batch = await source.read(100, 0.05)
        if batch.position is not None:
            got.extend(batch.events)
            position = batch.position
            await store.commit("p", StateChanges(checkpoint=position).merge(batch.state or StateChanges()))
        if len(got) >= want:
            break
    return got, position


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_second_copy_and_a_redelivery_are_dropped_by_message_id(queue_type: str, tmp_path: Path) -> None:
    name = f"tsredeliver.{uuid.uuid4().hex[:10]}"
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    ctx = Context(pipeline="p", name="source", state=store)
    cfg = RabbitMQSourceConfig.model_validate(
        {"url": URL, "queue": name, "queue_type": queue_type, "bind": {"exchange": name, "routing_keys": ["#"]}}
    )
    sink = RabbitMQSink(RabbitMQSinkConfig(url=URL, exchange=name, routing_key="{entity}"))
    first, again, last = RabbitMQSource(cfg), RabbitMQSource(cfg), RabbitMQSource(cfg)
    try:
        await first.open(ctx, None)  # declares the queue and binds it
        await sink.open(Context(pipeline="p", name="sink", state=store))
        await sink.write([ev(i, i) for i in range(1, 11)])
        await sink.write([ev(i, i) for i in range(1, 6)])  # the same events again: a second copy of each

        events, checkpoint = await _read_all(first, store, 10)
        for _ in range(100):  # the copies may come in a later delivery than the first ten (or 5 s)
            if first.duplicates >= 5:
                break
            more = await first.read(100, 0.05)
            assert more.events == []
        assert [e.key for e in events] == [(i,) for i in range(1, 11)]
        assert first.duplicates == 5  # the copies, dropped as they came (held: not yet committed)
        await first.close()  # dies after the checkpoint, before commit(): nothing was acked

        assert checkpoint == await store.load_checkpoint("p")
        await again.open(ctx, checkpoint)
        replayed: list[ChangeEvent] = []
        for _ in range(100):  # until all 15 came back (or 5 s)
            replayed += (await again.read(100, 0.05)).events
            if again.redelivered >= 15:
                break
        assert replayed == []  # every redelivery was applied before
        assert again.redelivered == 15 and again.duplicates == 15
        await sink.write([ev(11, 11)])
        new, position = await _read_all(again, store, 1)
        assert [e.key for e in new] == [(11,)] and position is not None and position > checkpoint
        await again.commit(position)
        await again.close()
        assert await take_all(name) == []  # the redeliveries were acked with the skip, the new one by commit

        await last.open(ctx, position)
        assert (await last.read(10, 0.2)).events == []
    finally:
        for s in (first, again, last):
            await s.close()
        await sink.close()
        await delete(name, name)
        await store.close()
