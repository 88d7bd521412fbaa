"""Every payload format through the real Mosquitto: the mqtt sink publishes it, the mqtt source reads it back.

Each format's events carry the sink's ``tidesync-id`` user property, so the source drops a second
publish of the same write (the replay after a crash) in every format.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

import aiomqtt
import pytest

from tests.conformance.mqtt_harness import drop_session
from tidesync.event import DELETE, INSERT, UPDATE, ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.mqtt.config import MqttSinkConfig
from tidesync.sinks.mqtt.sink import MqttSink
from tidesync.sinks.mqtt.wire import ID_PROPERTY
from tidesync.sources.mqtt.config import MqttSourceConfig
from tidesync.sources.mqtt.source import MqttSource
from tidesync.state import open_state_store

URL = "mqtt://127.0.0.1:1883"
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
async def test_each_format_round_trips_through_the_broker(fmt: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:10]
    prefix, reader = f"fmt{run}", f"fmt-{run}"
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    sink = MqttSink(MqttSinkConfig.model_validate({"url": URL, "topic": f"{prefix}/{{entity}}", "format": fmt}))
    source = MqttSource(
        MqttSourceConfig.model_validate({"url": URL, "topics": [f"{prefix}/#"], "client_id": reader, "format": fmt})
    )
    raw: list[aiomqtt.Message] = []
    try:
        await source.open(Context(pipeline="p", name="source", state=store), None)  # the session exists first
        async with aiomqtt.Client("127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5) as watcher:
            await watcher.subscribe(f"{prefix}/#", qos=1)
            await sink.open(Context(pipeline="p", name="sink", state=store))
            await sink.write(events())
            await sink.write(events())  # a replay: published again, dropped by the source
            async for msg in watcher.messages:
                raw.append(msg)
                if len(raw) == 6:
                    break
        body = json.loads(bytes(raw[1].payload))  # type: ignore[arg-type]
        if fmt == "debezium":
            assert body["op"] == "u" and body["after"]["note"] == "b" and body["source"]["table"] == "orders"
        elif fmt == "cloudevents":
            assert body["specversion"] == "1.0" and body["type"] == "io.tidesync.update"
        assert raw[0].topic.value == f"{prefix}/public.orders"
        ids = [dict(m.properties.UserProperty)[ID_PROPERTY] for m in raw]  # type: ignore[union-attr]
        assert len(set(ids)) == 3 and ids[:3] == ids[3:]  # one id per event, the same on the replay
        got: list[ChangeEvent] = []
        for _ in range(50):
            batch = await source.read(10, 0.1)
            assert not batch.rejected
            got.extend(batch.events)
            if len(got) >= 3 and source.duplicates >= 3:
                break
        assert [(e.entity, e.key, e.op, e.row.get("note"), e.position) for e in got] == [
            ("public.orders", (1,), "insert", "a", (1,)),
            ("public.orders", (1,), "update", "b", (2,)),
            ("public.orders", (1,), "delete", None, (3,)),
        ]
        assert source.duplicates == 3
        assert str(got[0].row["amount"]) == "12.50"  # as a decimal or its exact text
    finally:
        await source.close()
        await sink.close()
        await drop_session(reader)
        await store.close()
