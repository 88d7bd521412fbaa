"""The MQTT sink: each event one message, published at QoS 1 and awaited until the broker's PUBACK.

At least once, de-duplicated by the reader
    MQTT has no server-side de-duplication: a write the engine replays
    after a crash (the events after its last checkpoint) is published again,
    and a subscriber receives those messages twice. Every message carries the
    event's idempotency id (pipeline, sink name, entity, key, op, position;
    the id the webhook and nats sinks send) in the MQTT 5 user property
    ``tidesync-id``, whatever the payload format, and the ``mqtt`` source
    drops a message whose id it journaled within its ``dedupe_window``. Other
    subscribers must de-duplicate by that property themselves.

Per-key order
    The events of one key go to one topic (the template's ``{partition}`` is a
    stable hash of the key) and are never in flight together: a write
    publishes in waves, the n-th event of each key in wave n, and a wave starts
    when every PUBACK of the one before it arrived. A failed publish stops the
    write; the engine retries the whole write (what did land is published
    again and dropped by the reader's de-duplication), so no later event of a
    key overtakes an earlier one. ``qos: 0`` gives up both the PUBACK and any
    guarantee: the broker may drop a message and no one knows.

Outcome of a write: every event acknowledged, or ``TransientError`` (some publish failed
transiently; the connection is dropped and the next write reconnects), or ``PartialBatchError``
when an event failed permanently (cannot be encoded, too large): it and the later events of its
key fail (``blocked``), the other keys are written.

Limit: aiomqtt does not hand a PUBACK's reason code to the caller, so a broker that acknowledges
a publish with a failure code (MQTT 5 "not authorized", "quota exceeded") is taken as a success.
Mosquitto refuses an unauthorised publish that way: give the sink's user write access to its topics.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aiomqtt

from tidesync.errors import DeliveryError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks import waves
from tidesync.sinks.mqtt.config import MqttSinkConfig
from tidesync.sinks.mqtt.topics import render
from tidesync.sinks.mqtt.wire import (
    Broker,
    connect,
    connect_error,
    describe,
    disconnect,
    make_client,
    publish_error,
    publish_properties,
)
from tidesync.sinks.payloads import Payloads

log = logging.getLogger("tidesync.mqtt")


@dataclass(slots=True)
class _Message:
    topic: str
    payload: bytes
    msg_id: str


class MqttSink:
    """Publishes events to an MQTT broker (see the module docstring for the guarantees)."""

    def __init__(self, config: MqttSinkConfig) -> None:
        self.config = config
        self.broker = Broker.parse(config.url)
        self.payloads = Payloads(config.format)
        self.client: aiomqtt.Client | None = None

    async def open(self, ctx: Context) -> None:
        self.payloads.name(ctx)
        await self._connect()

    async def _connect(self) -> aiomqtt.Client:
        if self.client is not None:
            return self.client
        cfg = self.config
        # A publisher keeps no session: a fresh id per connection, so two processes never kick each other off.
        ident = f"tidesync-{self.payloads.pipeline}-{self.payloads.sink}-{uuid.uuid4().hex[:8]}"[:64]
        client = make_client(self.broker, ident, timeout=cfg.timeout, keepalive=cfg.keepalive)
        client.pending_calls_threshold = cfg.max_in_flight + 1  # aiomqtt warns above it; we bound it ourselves
        try:
            await connect(client, cfg.connect_timeout)
        except Exception as exc:
            raise connect_error(exc, self.broker) from exc
        self.client = client
        return client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await disconnect(client)

    # --- write ------------------------------------------------------------------------------

    def _message(self, event: ChangeEvent) -> _Message:
        cfg = self.config
        return _Message(
            render(cfg.topic, event.entity, event.key, cfg.partitions),
            self.payloads.encode(event),
            self.payloads.id(event),
        )

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        client = await self._connect()
        planned = waves.plan(events, self._message, lambda exc: f"the event cannot be encoded: {describe(exc)}")
        down = await waves.publish(planned, lambda msg: self._publish(client, msg), self.config.max_in_flight)
        if down is not None:
            await self.close()  # a publish timed out or the link broke: the next write starts a new connection
        waves.raise_failures(planned.failures, len(events), "acknowledged")

    async def _publish(self, client: aiomqtt.Client, msg: _Message) -> DeliveryError | None:
        cfg = self.config
        try:
            await client.publish(
                msg.topic,
                msg.payload,
                qos=cfg.qos,
                retain=cfg.retain,
                properties=publish_properties(msg.msg_id, self.payloads.content_type),
                timeout=cfg.timeout,
            )
        except Exception as exc:
            return publish_error(exc, msg.topic)
        return None
