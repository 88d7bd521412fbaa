"""What the rabbitmq sink and source make of a broken topology, on the real broker: an unroutable message,
an exchange of another type, an exchange deleted under a running sink, a queue deleted under a running source."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from tests.conformance.rabbitmq_harness import URL, declare, delete, take_all
from tidesync.errors import SourceError, SourceTransientError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.rabbitmq.config import RabbitMQSinkConfig
from tidesync.sinks.rabbitmq.sink import RabbitMQSink
from tidesync.sources.rabbitmq.config import RabbitMQSourceConfig
from tidesync.sources.rabbitmq.source import RabbitMQSource
from tidesync.state import open_state_store
from tidesync.state.store import StateStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await s.open()
    yield s
    await s.close()


def ev(i: int) -> ChangeEvent:
    return ChangeEvent("items", (i,), "insert", after={"id": i}, position=(i,), committed_at=1.0)


async def _exchange(name: str, kind: str) -> None:
    conn = await aio_pika.connect(URL)
    try:
        await (await conn.channel()).declare_exchange(name, kind, durable=True)
    finally:
        await conn.close()


async def test_an_unroutable_message_blocks_until_a_queue_is_bound(store: StateStore) -> None:
    name = f"tserr.{uuid.uuid4().hex[:10]}"
    sink = RabbitMQSink(RabbitMQSinkConfig(url=URL, exchange=name, routing_key="{entity}"))
    try:
        await sink.open(Context(pipeline="p", name="sink", state=store))
        with pytest.raises(SystemicError, match="unroutable") as failed:
            await sink.write([ev(1), ev(2)])
        assert failed.value.entity == "items"
        await declare(name, name, "#")  # someone binds a queue: the probe goes through
        await sink.write([ev(1), ev(2)])
        assert len(await take_all(name)) == 2  # the returned ones were not stored: only the probe's
    finally:
        await sink.close()
        await delete(name, name)


async def test_without_mandatory_an_unroutable_message_is_dropped(store: StateStore) -> None:
    name = f"tserr.{uuid.uuid4().hex[:10]}"
    sink = RabbitMQSink(RabbitMQSinkConfig(url=URL, exchange=name, mandatory=False))
    try:
        await sink.open(Context(pipeline="p", name="sink", state=store))
        await sink.write([ev(1)])
    finally:
        await sink.close()
        await delete(name, name)


async def test_an_exchange_of_another_type_is_systemic(store: StateStore) -> None:
    name = f"tserr.{uuid.uuid4().hex[:10]}"
    await _exchange(name, "fanout")
    sink = RabbitMQSink(RabbitMQSinkConfig(url=URL, exchange=name, exchange_type="topic"))
    try:
        with pytest.raises(SystemicError, match="cannot use exchange"):
            await sink.open(Context(pipeline="p", name="sink", state=store))
    finally:
        await sink.close()
        await delete(name, name)


async def test_an_exchange_deleted_under_a_running_sink_is_systemic_then_the_sink_reconnects(
    store: StateStore,
) -> None:
    name = f"tserr.{uuid.uuid4().hex[:10]}"
    sink = RabbitMQSink(RabbitMQSinkConfig(url=URL, exchange=name, declare=False))
    await _exchange(name, "topic")
    await declare(name, name, "#")
    try:
        await sink.open(Context(pipeline="p", name="sink", state=store))
        await sink.write([ev(1)])
        await delete(name, "unused-" + name)  # the exchange goes (the broker closes the channel at the next publish)
        with pytest.raises(SystemicError):
            await sink.write([ev(2)])
        await _exchange(name, "topic")
        await declare(name, name, "#")
        await sink.write([ev(2)])  # a new channel
        assert sink.connects == 2
        assert len(await take_all(name)) == 2
    finally:
        await sink.close()
        await delete(name, name)


async def test_a_queue_deleted_under_a_running_source_is_transient(store: StateStore) -> None:
    name = f"tserr.{uuid.uuid4().hex[:10]}"
    cfg = RabbitMQSourceConfig.model_validate({"url": URL, "queue": name, "bind": {"exchange": name}})
    source = RabbitMQSource(cfg)
    ctx = Context(pipeline="p", name="source", state=store)
    try:
        await source.open(ctx, None)
        assert (await source.read(10, 0.01)).events == []
        await delete(name, name)  # the broker cancels the consumer
        with pytest.raises(SourceTransientError, match="cancelled"):
            for _ in range(100):
                await source.read(10, 0.02)
        await source.close()
        await source.open(ctx, None)  # the engine's reopen declares and binds it again
        assert (await source.read(10, 0.01)).events == []
    finally:
        await source.close()
        await delete(name, name)


async def test_a_refused_login_is_systemic_for_the_sink_and_fatal_for_the_source(store: StateStore) -> None:
    url = "amqp://guest:not-the-password@127.0.0.1/"
    sink = RabbitMQSink(RabbitMQSinkConfig(url=url, exchange="tserr.never"))
    with pytest.raises(SystemicError, match="ACCESS_REFUSED") as failed:
        await sink.open(Context(pipeline="p", name="sink", state=store))
    assert "not-the-password" not in str(failed.value)
    source = RabbitMQSource(RabbitMQSourceConfig(url=url, queue="tserr.never"))
    with pytest.raises(SourceError) as refused:
        await source.open(Context(pipeline="p", name="source", state=store), None)
    assert not isinstance(refused.value, SourceTransientError)
    await sink.close()
    await source.close()
