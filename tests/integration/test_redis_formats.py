"""Every payload format through a real Redis stream: the redis sink writes it, the redis source reads it back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.integration.test_nats_formats import events
from tidesync.protocols import Context
from tidesync.sinks.redis.config import RedisSinkConfig
from tidesync.sinks.redis.sink import RedisSink
from tidesync.sources.redis.config import RedisSourceConfig
from tidesync.sources.redis.source import RedisSource
from tidesync.state import open_state_store
from tidesync.testing import read_batches

URL = "redis://127.0.0.1:6379"


@pytest.mark.parametrize("fmt", ["tidesync", "debezium", "cloudevents"])
async def test_each_format_round_trips_through_a_stream(fmt: str, tmp_path: Path) -> None:
    prefix = f"fmt{uuid.uuid4().hex[:10]}"
    stream = f"{prefix}.public.orders"
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    sink = RedisSink(
        RedisSinkConfig.model_validate(
            {"url": URL, "stream": prefix + ".{entity}", "format": fmt, "key_prefix": prefix}
        )
    )
    source = RedisSource(
        RedisSourceConfig.model_validate({"url": URL, "streams": [stream], "group": "g", "format": fmt})
    )
    client = aioredis.from_url(URL)
    try:
        await sink.open(Context(pipeline="p", name="sink", state=store))
        await sink.write(events())
        entries = await client.xrange(stream)
        assert len(entries) == 3
        body = json.loads(next(iter(entries[1][1].values())))
        if fmt == "debezium":
            assert body["op"] == "u" and body["after"]["note"] == "b" and body["source"]["table"] == "orders"
        elif fmt == "cloudevents":
            assert body["specversion"] == "1.0" and body["type"] == "io.tidesync.update"
        await source.open(Context(pipeline="p", name="source", state=store), None)
        batches = await read_batches(source, 3)
        read = [e for b in batches for e in b.events]
        assert [(e.entity, e.key, e.op, e.row.get("note")) for e in read] == [
            ("public.orders", (1,), "insert", "a"),
            ("public.orders", (1,), "update", "b"),
            ("public.orders", (1,), "delete", None),
        ]
        assert not any(b.rejected for b in batches)
        assert str(read[0].row["amount"]) == "12.50"
    finally:
        await source.close()
        await sink.close()
        await client.delete(stream, *await client.keys(f"{prefix}:*"))
        await client.aclose()
        await store.close()
