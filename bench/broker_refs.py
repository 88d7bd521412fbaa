"""Reference publishers and cleanup for bench/brokers.py: plain client loops, one per broker.

Each reference publishes already-serialized messages with the library the
tidesync sink uses, doing what the sink's guarantee needs and nothing more:

- ``nats``: nats-py JetStream ``publish`` (each awaits its ack, with the sink's
  ``Nats-Msg-Id`` header), ``max_in_flight`` publishes awaited at once, to a
  stream of its own (file storage, as the sink creates it);
- ``redis``: redis-py ``XADD key MAXLEN ~ 1000000 * event <payload>``
  (the sink's trimming), in non-transactional pipelines of 1000;
- ``rabbitmq``: aio-pika, persistent messages with ``message_id`` on a
  channel with publisher confirms, ``max_in_flight`` confirms awaited at once,
  to a durable topic exchange with one queue bound (the sink publishes
  ``mandatory``, so a queue must be bound for it too);
- ``mqtt``: aiomqtt, MQTT 5, QoS 1 publishes carrying the sink's
  ``tidesync-id`` user property, ``max_in_flight`` PUBACKs awaited at once
  (the client's in-flight limit left at the library's default, as the sink leaves it).

The time runs from connecting to the last acknowledgement; the messages are
built before it. ``cleanup`` removes what a run created (streams, keys,
exchanges, queues, MQTT sessions) and never raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379"
AMQP_URL = "amqp://guest:guest@127.0.0.1/"
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
WINDOW = 1000  # the sinks' default max_in_flight, and the redis pipeline length
# aiomqtt warns on every publish beyond its tenth pending one; a window of 1000 is meant
QUIET = logging.getLogger("broker_refs.mqtt")
QUIET.setLevel(logging.ERROR)


def windows(n: int, size: int = WINDOW) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


async def publish_nats(stream: str, subject: str, payloads: Sequence[bytes], ids: Sequence[str]) -> float:
    import nats

    started = time.perf_counter()
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        for w in windows(len(payloads)):
            await asyncio.gather(
                *(
                    js.publish(subject, payloads[i], stream=stream, headers={"Nats-Msg-Id": ids[i]}, timeout=5.0)
                    for i in w
                )
            )
        return time.perf_counter() - started
    finally:
        await nc.close()


async def publish_redis(key: str, payloads: Sequence[bytes]) -> float:
    import redis.asyncio as aioredis

    started = time.perf_counter()
    client = aioredis.from_url(REDIS_URL)
    try:
        for w in windows(len(payloads)):
            pipe = client.pipeline(transaction=False)
            for i in w:
                pipe.xadd(key, {"event": payloads[i]}, maxlen=1_000_000, approximate=True)
            await pipe.execute()
        return time.perf_counter() - started
    finally:
        await client.aclose()


async def publish_rabbitmq(exchange: str, queue: str, payloads: Sequence[bytes], ids: Sequence[str]) -> float:
    import aio_pika

    started = time.perf_counter()
    conn = await aio_pika.connect(AMQP_URL)
    try:
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await channel.declare_queue(queue, durable=True)
        await q.bind(ex, "#")
        for w in windows(len(payloads)):
            await asyncio.gather(
                *(
                    ex.publish(
                        aio_pika.Message(
                            payloads[i],
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=ids[i],
                            type="insert",
                        ),
                        "bench.public.bench",
                        mandatory=True,
                        timeout=10.0,
                    )
                    for i in w
                )
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def publish_mqtt(topic: str, payloads: Sequence[bytes], ids: Sequence[str]) -> float:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = []
    for i in range(len(payloads)):
        p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        p.UserProperty = [("tidesync-id", ids[i])]
        props.append(p)
    started = time.perf_counter()
    async with aiomqtt.Client(
        MQTT_HOST,
        MQTT_PORT,
        protocol=aiomqtt.ProtocolVersion.V5,
        logger=QUIET,
    ) as client:
        for w in windows(len(payloads)):
            await asyncio.gather(*(client.publish(topic, payloads[i], qos=1, properties=props[i]) for i in w))
        return time.perf_counter() - started


async def cleanup(prefix: str, *, nats_streams: Sequence[str], mqtt_clients: Sequence[str]) -> list[str]:
    """Remove every broker object named with ``prefix`` (and the given streams and sessions); problems, as text."""
    problems: list[str] = []
    for name, step in (
        ("nats", _clean_nats(nats_streams)),
        ("redis", _clean_redis(prefix)),
        ("rabbitmq", _clean_rabbitmq(prefix)),
        ("mqtt", _clean_mqtt(mqtt_clients)),
    ):
        try:
            await asyncio.wait_for(step, 30)
        except Exception as exc:  # cleanup goes on with the next broker whatever happened
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    return problems


async def _clean_nats(streams: Sequence[str]) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for s in streams:
            try:
                await js.delete_stream(s)
            except NotFoundError:
                pass
    finally:
        await nc.close()


async def _clean_redis(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _clean_rabbitmq(prefix: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(AMQP_URL)
    try:
        # a failed delete closes the channel, so each name gets its own; the names are known up front
        for kind, name in (
            ("queue", f"{prefix}-ref"),
            ("queue", f"{prefix}-rt"),
            ("exchange", f"{prefix}-ref"),
            ("exchange", f"{prefix}-drain"),
            ("exchange", f"{prefix}-rt"),
            ("queue", f"{prefix}-drain"),
        ):
            channel = await conn.channel()
            try:
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            except aio_pika.exceptions.ChannelClosed:
                pass  # not created
    finally:
        await conn.close()


async def _clean_mqtt(client_ids: Sequence[str]) -> None:
    """Ends each persistent session: a clean start with session expiry 0 discards it when we disconnect."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    for cid in client_ids:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        async with aiomqtt.Client(
            MQTT_HOST,
            MQTT_PORT,
            identifier=cid,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            properties=props,
        ):
            pass
