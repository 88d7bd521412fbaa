"""Every payload format through a real RabbitMQ: the rabbitmq sink publishes it, the rabbitmq source reads it back."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

import aio_pika
import pytest

from tests.conformance.rabbitmq_harness import URL, delete
from tidesync.event import DELETE, INSERT, UPDATE, ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.rabbitmq.config import RabbitMQSinkConfig
from tidesync.sinks.rabbitmq.sink import RabbitMQSink
from tidesync.sources.rabbitmq.config import RabbitMQSourceConfig
from tidesync.sources.rabbitmq.source import RabbitMQSource
from tidesync.state import open_state_store
from tidesync.testing import read_batches

AT = dt.datetime(2026, 12, 5, 10, 30, tzinfo=dt.UTC)


def events() -> list[ChangeEvent]:
    row = {"id": 1, "amount": Decimal("12.50"), "note": "a", "at": AT.isoformat()}
    return [
        ChangeEvent("public.orders", (1,), INSERT, None, row, None, (100, 0), AT.timestamp(), txid=7),
        ChangeEvent(
            "public.orders", (1,), UPDATE, None, {**row, "note": "b"}, ("note",), (101, 0), AT.timestamp(), txid=8
        ),
        ChangeEvent("public.orders", (1,), DELETE, {"id": 1}, None, None, (102, 0), AT.timestamp(), txid=9),
    ]


async def _peek(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """The messages on ``queue``, left there (taken without an ack, then returned by closing)."""
    conn = await aio_pika.connect(URL)
    try:
        ch = await conn.channel()
        q = await ch.get_queue(queue)
        out = []
        while (msg := await q.get(no_ack=False, fail=False)) is not None:
            out.append(msg)
        return out
    finally:
        await conn.close()


@pytest.mark.parametrize("fmt", ["tidesync", "debezium", "cloudevents"])
async def test_each_format_round_trips_through_a_queue(fmt: str, tmp_path: Path) -> None:
    name = f"tsfmt.{uuid.uuid4().hex[:10]}"
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    sink = RabbitMQSink(
        RabbitMQSinkConfig.model_validate({"url": URL, "exchange": name, "routing_key": "{entity}", "format": fmt})
    )
    source = RabbitMQSource(
        RabbitMQSourceConfig.model_validate(
            {"url": URL, "queue": name, "bind": {"exchange": name, "routing_keys": ["#"]}, "format": fmt}
        )
    )
    try:
        # The source declares and binds the queue first: the sink's mandatory publishes need a queue to route to.
        await source.open(Context(pipeline="p", name="source", state=store), None)
        await source.close()
        await sink.open(Context(pipeline="p", name="sink", state=store))
        await sink.write(events())
        stored = await _peek(name)
        assert [m.content_type for m in stored] == ["application/cloudevents+json" if fmt == "cloudevents" else
                                                    "application/json"] * 3  # fmt: skip
        assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT and m.message_id for m in stored)
        body = json.loads(stored[1].body)
        if fmt == "debezium":
            assert body["op"] == "u" and body["after"]["note"] == "b" and body["source"]["table"] == "orders"
        elif fmt == "cloudevents":
            assert body["specversion"] == "1.0" and body["type"] == "io.tidesync.update"
        await source.open(Context(pipeline="p", name="source", state=store), None)
        batches = await read_batches(source, 3)
        read = [e for b in batches for e in b.events]
        got = [(e.entity, e.key, e.op, e.row.get("note"), e.position) for e in read]
        assert got == [
            ("public.orders", (1,), "insert", "a", (1,)),
            ("public.orders", (1,), "update", "b", (2,)),
            ("public.orders", (1,), "delete", None, (3,)),
        ]
        assert not any(b.rejected for b in batches)
        assert str(read[0].row["amount"]) == "12.50"  # as a decimal or its exact text
        remembered = [i for b in batches if b.state is not None for ids in b.state.kv_put.values() for i in ids]
        assert len(remembered) == 3  # the ids it applies
    finally:
        await source.close()
        await sink.close()
        await delete(name, name)
        await store.close()
