"""The sink's Lua step on the real Redis: all or nothing; events at or before the stored position are skipped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tidesync.errors import SystemicError
from tidesync.event import ChangeEvent, from_json
from tidesync.protocols import Context
from tidesync.sinks.redis.config import RedisSinkConfig
from tidesync.sinks.redis.sink import RedisSink, decode_position, encode_position
from tidesync.state import open_state_store


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    sfx = uuid.uuid4().hex[:10]
    yield f"tsunit{sfx}", f"unit.{sfx}"
    with redis.Redis(host="127.0.0.1", port=6379) as r:
        r.delete(*r.scan_iter(f"tsunit{sfx}:*"), *r.scan_iter(f"unit.{sfx}.*"))


async def _sink(prefix: str, stream: str, tmp: Path) -> tuple[RedisSink, Any]:
    store = open_state_store(f"sqlite:///{tmp / 'state.db'}")
    await store.open()
    sink = RedisSink(RedisSinkConfig(stream=stream + ".{entity}", key_prefix=prefix))
    await sink.open(Context(pipeline="p", name="s", state=store))
    return sink, store


def ev(entity: str, i: int, pos: int) -> ChangeEvent:
    return ChangeEvent(entity, (i,), "insert", after={"id": i}, position=(pos,))


async def test_a_key_of_another_type_refuses_the_whole_write(names: tuple[str, str], tmp_path: Path) -> None:
    prefix, stream = names
    sink, store = await _sink(prefix, stream, tmp_path)
    with redis.Redis(host="127.0.0.1", port=6379) as r:
        r.set(f"{stream}.b", "not a stream")
        with pytest.raises(SystemicError, match="WRONGTYPE"):
            await sink.write([ev("a", 1, 1), ev("b", 2, 2)])
        assert r.xlen(f"{stream}.a") == 0  # nothing of the batch was written
        assert r.get(f"{prefix}:applied:p:s") is None  # nor the position
    await sink.close()
    await store.close()


async def test_events_at_or_before_a_position_stored_by_another_writer_are_skipped(
    names: tuple[str, str], tmp_path: Path
) -> None:
    prefix, stream = names
    sink, store = await _sink(prefix, stream, tmp_path)
    await sink.write([ev("a", 1, 1)])
    with redis.Redis(host="127.0.0.1", port=6379) as r:
        key = f"{prefix}:applied:p:s"
        assert decode_position(r.get(key)) == (1,)
        # Another writer of the same pipeline and sink got further meanwhile: events up to 3 are applied.
        r.set(key, encode_position((3,)))
        await sink.write([ev("a", 2, 2), ev("a", 3, 3), ev("a", 4, 4)])
        ids = [from_json(f[b"event"]).key[0] for _, f in r.xrange(f"{stream}.a")]
        assert ids == [1, 4] and decode_position(r.get(key)) == (4,)
    await sink.close()
    await store.close()
