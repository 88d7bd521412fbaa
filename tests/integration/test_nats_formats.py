"""Every payload format through a real JetStream stream: the nats sink writes it, the nats source reads it back."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

import nats
import pytest

from tests.conformance.nats_harness import delete_stream
from tidesync.event import DELETE, INSERT, UPDATE, ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.nats.config import NatsSinkConfig
from tidesync.sinks.nats.sink import NatsSink
from tidesync.sources.nats.config import NatsSourceConfig
from tidesync.sources.nats.source import NatsSource
from tidesync.state import open_state_store
from tidesync.testing import read_batches

URL = "nats://127.0.0.1:4222"
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


@pytest.mark.parametrize("fmt", ["tidesync", "debezium", "cloudevents"])
async def test_each_format_round_trips_through_a_stream(fmt: str, tmp_path: Path) -> None:
    name = f"F{uuid.uuid4().hex[:10]}"
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    sink = NatsSink(NatsSinkConfig.model_validate({"url": URL, "stream": name, "subject": f"{name}.{{entity}}",
                                                   "format": fmt}))  # fmt: skip
    source = NatsSource(
        NatsSourceConfig.model_validate(
            {"url": URL, "stream": name, "consumer": "c1", "subjects": [f"{name}.>"], "format": fmt}
        )
    )
    try:
        await sink.open(Context(pipeline="p", name="sink", state=store))
        await sink.write(events())
        nc = await nats.connect(URL)
        try:
            stored = await nc.jetstream().get_msg(name, 2)
        finally:
            await nc.close()
        body = json.loads(stored.data or b"")
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
    finally:
        await source.close()
        await sink.close()
        await delete_stream(name)
        await store.close()
