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

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aiomqtt

from tidesync import formats
from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, TransientError
from tidesync.event import ChangeEvent, Key
from tidesync.protocols import Context
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
from tidesync.sinks.webhook.envelope import idempotency_id

log = logging.getLogger("tidesync.mqtt")


class BlockedError(PermanentError):
    """Not published: an earlier event of the same key failed permanently in this write."""

    error_class = "blocked"


@dataclass(slots=True)
class _Message:
    index: int
    topic: str
    payload: bytes
    msg_id: str


class MqttSink:
    """Publishes events to an MQTT broker (see the module docstring for the guarantees)."""

    def __init__(self, config: MqttSinkConfig) -> None:
        self.config = config
        self.broker = Broker.parse(config.url)
        self.encode = formats.encoder(config.format, pipeline="", sink="sink")  # (named again at open)
        self.content_type = formats.content_type(config.format)
        self.pipeline = ""
        self.name = "sink"
        self.client: aiomqtt.Client | None = None

    async def open(self, ctx: Context) -> None:
        self.pipeline, self.name = ctx.pipeline, ctx.name
        self.encode = formats.encoder(self.config.format, pipeline=ctx.pipeline, sink=ctx.name)
        await self._connect()

    async def _connect(self) -> aiomqtt.Client:
        if self.client is not None:
            return self.client
        cfg = self.config
        # A publisher keeps no session: a fresh id per connection, so two processes never kick each other off.
        ident = f"tidesync-{self.pipeline}-{self.name}-{uuid.uuid4().hex[:8]}"[:64]
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

    def _message(self, index: int, event: ChangeEvent) -> _Message:
        cfg = self.config
        return _Message(
            index,
            render(cfg.topic, event.entity, event.key, cfg.partitions),
            self.encode(event),
            idempotency_id(self.pipeline, self.name, event),
        )

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        client = await self._connect()
        failures: dict[int, DeliveryError] = {}
        blocked: dict[tuple[str, Key], DeliveryError] = {}
        waves: list[list[tuple[tuple[str, Key], _Message]]] = []
        depth: dict[tuple[str, Key], int] = {}
        for i, e in enumerate(events):
            k = (e.entity, e.key)
            if k in blocked:
                failures[i] = _behind(blocked[k])
                continue
            try:
                msg = self._message(i, e)
            except (TypeError, ValueError, OverflowError) as exc:
                failures[i] = blocked[k] = PermanentError(f"the event cannot be encoded: {describe(exc)}")
                continue
            n = depth.get(k, 0)
            depth[k] = n + 1
            if n == len(waves):
                waves.append([])
            waves[n].append((k, msg))
        down: DeliveryError | None = None
        for wave in waves:
            if down is not None:
                for _, msg in wave:
                    failures[msg.index] = TransientError(f"not published after an earlier failure ({down})")
                continue
            results = await self._publish_wave(client, [msg for _, msg in wave])
            for (k, msg), err in zip(wave, results, strict=True):
                if k in blocked:
                    failures[msg.index] = _behind(blocked[k])
                elif err is not None:
                    failures[msg.index] = blocked[k] = err
                    if err.transient and down is None:
                        down = err
        if down is not None:
            await self.close()  # a publish timed out or the link broke: the next write starts a new connection
        if not failures:
            return
        if all(e.transient for e in failures.values()):
            first = next(iter(failures.values()))
            raise TransientError(f"{len(failures)} of {len(events)} event(s) not acknowledged: {first}")
        raise PartialBatchError(failures)

    async def _publish_wave(self, client: aiomqtt.Client, wave: list[_Message]) -> list[DeliveryError | None]:
        """Publish one wave (no two messages of one key), at most ``max_in_flight`` awaiting PUBACKs at once."""
        limit = asyncio.Semaphore(self.config.max_in_flight)

        async def one(msg: _Message) -> DeliveryError | None:
            async with limit:
                return await self._publish(client, msg)

        return list(await asyncio.gather(*(one(m) for m in wave)))

    async def _publish(self, client: aiomqtt.Client, msg: _Message) -> DeliveryError | None:
        cfg = self.config
        try:
            await client.publish(
                msg.topic,
                msg.payload,
                qos=cfg.qos,
                retain=cfg.retain,
                properties=publish_properties(msg.msg_id, self.content_type),
                timeout=cfg.timeout,
            )
        except Exception as exc:
            return publish_error(exc, msg.topic)
        return None


def _behind(earlier: DeliveryError) -> DeliveryError:
    if earlier.transient:
        return TransientError(f"waits behind an earlier failed event of the same key ({earlier})")
    return BlockedError(f"waits behind an earlier failed event of the same key ({earlier})")
