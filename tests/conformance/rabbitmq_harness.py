"""The RabbitMQ sink and source under the conformance suite, on the real RabbitMQ at 127.0.0.1:5672.

Every harness declares its own exchange and queue (a random suffix) and deletes both at cleanup,
so the cases run in parallel under xdist.

Sink: the destination is a durable queue bound to the sink's exchange. ``rows()`` takes every
message from it and applies it to a table (as a consumer would: the fields an event names),
dropping a message whose ``message_id`` it applied before, as the ``rabbitmq`` source does
(RabbitMQ has no server-side de-duplication: a write delivered twice is on the queue twice,
``copies`` counts them). The sink reaches the broker through a proxy that can cut connections
(a transient fault) or hold the bytes it carries (a slow destination).

Source: changes are ChangeEvents published to the source's exchange in the tidesync format, each
with a ``message_id``, as the rabbitmq sink writes them; bad input is a message that is not an event.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aio_pika

from tests.conformance.nats_harness import HoldingProxy, ProxyCut, run_sync
from tidesync.event import ChangeEvent, from_json, to_json
from tidesync.protocols import Sink, Source
from tidesync.sinks.rabbitmq.config import RabbitMQSinkConfig
from tidesync.sinks.rabbitmq.sink import RabbitMQSink
from tidesync.sources.rabbitmq.config import RabbitMQSourceConfig
from tidesync.sources.rabbitmq.source import RabbitMQSource
from tidesync.testing import TcpProxy

URL = "amqp://guest:guest@127.0.0.1:5672/"
PORT = 5672
Rows = dict[tuple[Any, ...], dict[str, Any]]


async def declare(exchange: str, queue: str, binding: str) -> None:
    """A durable topic exchange and a durable queue bound to it."""
    conn = await aio_pika.connect(URL)
    try:
        ch = await conn.channel()
        ex = await ch.declare_exchange(exchange, "topic", durable=True)
        q = await ch.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})
        await q.bind(ex, binding)
    finally:
        await conn.close()


async def delete(exchange: str, queue: str) -> None:
    conn = await aio_pika.connect(URL)
    try:
        ch = await conn.channel()
        await ch.queue_delete(queue)
        await ch.exchange_delete(exchange)
    finally:
        await conn.close()


async def publish(exchange: str, routing_key: str, bodies: list[tuple[str, bytes]]) -> None:
    """Publish ``(message_id, body)`` pairs, persistent and confirmed."""
    conn = await aio_pika.connect(URL)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(exchange)
        for mid, body in bodies:
            message = aio_pika.Message(body, message_id=mid, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await ex.publish(message, routing_key)
    finally:
        await conn.close()


async def take_all(queue: str) -> list[tuple[str, bytes]]:
    """Every message on ``queue`` as ``(message_id, body)``, removed from it."""
    conn = await aio_pika.connect(URL)
    out: list[tuple[str, bytes]] = []
    try:
        ch = await conn.channel()
        q = await ch.get_queue(queue)
        while (msg := await q.get(no_ack=True, fail=False)) is not None:
            out.append((msg.message_id or "", msg.body))
    finally:
        await conn.close()
    return out


class RabbitMQSinkHarness:
    """The rabbitmq sink publishing into a fresh exchange; the queue bound to it is the destination."""

    entity = "items"
    # A value JSON cannot carry: the sink fails that event alone, before publishing it.
    bad_row: dict[str, Any] | None = {"name": object(), "qty": 2}
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.exchange = f"tsconf.{self.suffix}"
        self.queue = f"tsconf.{self.suffix}.dest"
        run_sync(lambda: declare(self.exchange, self.queue, "conf.#"))
        self.proxies: list[TcpProxy] = []
        self.slow = self._proxy(HoldingProxy(PORT))
        self.tables: Rows = {}
        self.applied: set[str] = set()
        self.copies = 0  # messages found on the queue a second time (same message_id)

    def _proxy(self, proxy: HoldingProxy) -> HoldingProxy:
        proxy.start()
        self.proxies.append(proxy)
        return proxy

    def _sink(self, port: int, timeout: float) -> RabbitMQSink:
        return RabbitMQSink(
            RabbitMQSinkConfig(
                url=f"amqp://guest:guest@127.0.0.1:{port}/",
                exchange=self.exchange,
                routing_key="conf.{partition}.{entity}",
                partitions=3,
                max_in_flight=64,
                timeout=timeout,
                connect_timeout=1,
            )
        )

    def make_sink(self) -> Sink:
        return self._sink(self.slow.port, 10)

    def make_slow(self) -> HoldingProxy:
        return self.slow

    def make_faulty_sink(self) -> tuple[Sink, ProxyCut]:
        proxy = self._proxy(HoldingProxy(PORT))
        return self._sink(proxy.port, 1), ProxyCut(proxy)

    def rows(self) -> Rows:
        for mid, body in run_sync(lambda: take_all(self.queue)):
            assert mid, "a message without message_id"
            if mid in self.applied:
                self.copies += 1
                continue
            self.applied.add(mid)
            event = from_json(body)
            if event.op == "delete":
                self.tables.pop(event.key, None)
                continue
            row = self.tables.setdefault(event.key, {})
            after = event.after or {}
            for f in event.fields_to_write():
                if f in after:
                    row[f] = after[f]
        return {k: dict(v) for k, v in self.tables.items()}

    def set_column(self, key: int, column: str, value: Any) -> None:
        self.rows()
        self.tables[(key,)][column] = value

    def cleanup(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        run_sync(lambda: delete(self.exchange, self.queue))


class RabbitMQSourceHarness:
    """A queue the source declares and binds (``bind:``); the harness publishes tidesync events to its exchange."""

    entity = "items"
    every_change = True
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.exchange = f"tsconfsrc.{self.suffix}"
        self.queue = f"tsconfsrc.{self.suffix}"
        # Declared here as the source declares it, so that what is published before the source opens is kept.
        run_sync(lambda: declare(self.exchange, self.queue, "#"))

    def make_source(self) -> Source:
        return RabbitMQSource(
            RabbitMQSourceConfig.model_validate(
                {"url": URL, "queue": self.queue, "bind": {"exchange": self.exchange, "routing_keys": ["#"]}}
            )
        )

    async def _publish(self, payloads: list[bytes]) -> None:
        await publish(self.exchange, "items", [(uuid.uuid4().hex, p) for p in payloads])

    async def insert(self, ids: range) -> None:
        await self._publish(
            [to_json(ChangeEvent("items", (i,), "insert", after={"id": i, "name": f"item {i}", "qty": 0})) for i in ids]
        )

    async def update(self, ids: range, qty: int) -> None:
        await self._publish(
            [to_json(ChangeEvent("items", (i,), "update", after={"id": i, "qty": qty}, changed=("qty",))) for i in ids]
        )

    async def delete(self, ids: range) -> None:
        await self._publish([to_json(ChangeEvent("items", (i,), "delete", before={"id": i})) for i in ids])

    async def feed_bad_input(self, key: int) -> None:
        await self._publish([b'{"this is": "not a change event"'])

    def cleanup(self) -> None:
        run_sync(lambda: delete(self.exchange, self.queue))
