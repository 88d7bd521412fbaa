"""The RabbitMQ sink: each event one persistent message, published with a confirm and a ``message_id``.

At least once, de-duplicated by the reader
    Every message is persistent (``delivery_mode`` 2) and published on a
    channel with publisher confirms: a write returns only when the broker
    confirmed every message (stored it, in every queue it routes to). Every
    message carries ``message_id`` = the event's idempotency id (pipeline,
    sink name, entity, key, op, position; the same id the webhook and nats
    sinks send). RabbitMQ has no server-side de-duplication: a write the
    engine retries (a confirm lost with the connection) or replays after a
    crash (events after the last checkpoint) publishes those messages again,
    with the same ``message_id``. The ``rabbitmq`` source drops a message
    whose ``message_id`` it applied within its ``dedupe_window``; another
    consumer must do the same to see each event once.

Per-key order
    The events of one key get one routing key (``{partition}`` is a stable
    hash of the key) and are never in flight together: a write publishes in
    waves, the n-th event of each key in wave n, and a wave starts when every
    confirm of the one before it arrived. Up to ``max_in_flight`` publishes
    of a wave await their confirms at once. A failed publish stops the write;
    the engine retries the whole write, so no later event of that key goes
    before it.

Unroutable messages
    With ``mandatory`` (the default) a message no queue is bound for comes
    back (``basic.return``), and that is a :class:`~tidesync.errors.SystemicError`:
    it is a topology fault (a queue not declared or not bound yet, a routing
    key that matches no binding) that every later event of that routing key
    would meet, and dead-lettering would fill the queue with good events. The
    pipeline shows ``blocked`` and probes until a queue is bound, then
    resumes; the events of the write that did route are published again then
    (duplicates the reader drops). With ``mandatory: false`` such a message
    is dropped by the broker, as AMQP does by default.

Outcome of a write: every event confirmed, or ``TransientError`` (a publish
failed transiently: retry the write), ``SystemicError`` (see above), or
``PartialBatchError`` when an event failed permanently (cannot be encoded, a
routing key too long): it and the later events of its key fail
(``blocked``), the other keys are written. A write after a lost connection
or a closed channel connects again first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from tidesync.errors import DeliveryError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks import waves
from tidesync.sinks.payloads import Payloads
from tidesync.sinks.rabbitmq.config import RabbitMQSinkConfig
from tidesync.sinks.rabbitmq.routing import render
from tidesync.sinks.rabbitmq.wire import (
    close_quietly,
    connect,
    describe,
    is_connection_error,
    publish_error,
    safe_url,
)

log = logging.getLogger("tidesync.rabbitmq")


@dataclass(slots=True)
class _Message:
    entity: str
    routing_key: str
    message: aio_pika.Message


class RabbitMQSink:
    """Publishes events to an exchange (see the module docstring for the guarantees)."""

    def __init__(self, config: RabbitMQSinkConfig) -> None:
        self.config = config
        self.payloads = Payloads(config.format)
        self.conn: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.connects = 0  # connections made (the first, and one after each loss)

    async def open(self, ctx: Context) -> None:
        self.payloads.name(ctx)
        await self._ensure()

    async def _ensure(self) -> AbstractExchange:
        """The exchange on an open confirming channel: connects (again) when there is none."""
        if self.exchange is not None and self.channel is not None and not self.channel.is_closed:
            return self.exchange
        cfg = self.config
        await self._drop()
        try:
            self.conn = await connect(
                cfg.url, f"tidesync:{self.payloads.pipeline}:{self.payloads.sink}", cfg.connect_timeout, cfg.heartbeat
            )
            self.channel = await self.conn.channel(publisher_confirms=True, on_return_raises=True)
            self.connects += 1
        except Exception as exc:
            await self._drop()
            if not is_connection_error(exc):
                raise
            kind = type(publish_error(exc, "-", cfg.exchange))  # transient, or systemic for a refusal
            raise kind(f"cannot connect to RabbitMQ at {safe_url(cfg.url)}: {describe(exc)}") from exc
        try:
            if cfg.declare:
                self.exchange = await self.channel.declare_exchange(
                    cfg.exchange, cfg.exchange_type, durable=True, timeout=cfg.timeout
                )
            else:
                self.exchange = await self.channel.get_exchange(cfg.exchange, ensure=True)
        except Exception as exc:
            await self._drop()
            if not is_connection_error(exc):
                raise
            err = publish_error(exc, "-", cfg.exchange)
            if isinstance(err, SystemicError):
                raise SystemicError(f"cannot use exchange {cfg.exchange!r}: {describe(exc)}") from exc
            raise err from exc
        return self.exchange

    async def _drop(self) -> None:
        conn, self.conn, self.channel, self.exchange = self.conn, None, None, None
        await close_quietly(conn)

    async def close(self) -> None:
        await self._drop()

    # --- write ------------------------------------------------------------------------------

    def _message(self, event: ChangeEvent) -> _Message:
        cfg = self.config
        body = aio_pika.Message(
            self.payloads.encode(event),
            content_type=self.payloads.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=self.payloads.id(event),
            type=event.op,
        )
        return _Message(event.entity, render(cfg.routing_key, event.entity, event.key, cfg.partitions), body)

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        exchange = await self._ensure()
        planned = waves.plan(events, self._message, lambda exc: f"the event cannot be published: {describe(exc)}")
        down = await waves.publish(planned, lambda msg: self._publish(exchange, msg), self.config.max_in_flight)
        if down is not None and (self.channel is None or self.channel.is_closed):
            await self._drop()  # the next write connects again
        systemic = next((e for e in planned.failures.values() if isinstance(e, SystemicError)), None)
        if systemic is not None:
            raise systemic
        waves.raise_failures(planned.failures, len(events), "confirmed")

    async def _publish(self, exchange: AbstractExchange, msg: _Message) -> DeliveryError | None:
        cfg = self.config
        try:
            await exchange.publish(msg.message, msg.routing_key, mandatory=cfg.mandatory, timeout=cfg.timeout)
        except Exception as exc:
            err = publish_error(exc, msg.routing_key, cfg.exchange)
            if isinstance(err, SystemicError):
                err.entity = msg.entity
            return err
        return None
