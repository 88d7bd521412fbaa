"""Brokers (NATS JetStream, Redis, RabbitMQ, MQTT): the connection opens; NATS: JetStream is on, the stream is there.

Each check opens one connection with the connector's own timeout and closes it;
nothing is published, declared or acknowledged (RabbitMQ queues and exchanges are
looked up passively).
"""

from __future__ import annotations

from typing import Any, Literal

from tidesync.checks import Check, Endpoint

TYPES = frozenset({"nats", "redis", "rabbitmq", "mqtt"})


def _failed(e: Endpoint, where: str, exc: BaseException) -> list[Check]:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return [
        e.check("reachable", "fail", f"cannot connect to {where}: {text}", f"fix {e.where}.url, or start the broker")
    ]


async def check_broker(e: Endpoint) -> list[Check]:
    checks = {"nats": _nats, "redis": _redis, "rabbitmq": _rabbitmq, "mqtt": _mqtt}
    return await checks[e.type](e)


async def _nats(e: Endpoint) -> list[Check]:
    import nats
    from nats.js.errors import NotFoundError

    cfg = e.config

    async def quiet(exc: Exception) -> None:  # the driver would log each failed attempt as an error
        return None

    try:
        nc = await nats.connect(
            servers=[cfg.url],
            connect_timeout=cfg.connect_timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
        )
    except Exception as exc:
        return _failed(e, cfg.url, exc)
    try:
        out = [e.ok("reachable", cfg.url)]
        js = nc.jetstream()
        try:
            await js.account_info()
        except Exception as exc:
            return [
                *out,
                e.check(
                    "jetstream",
                    "fail",
                    f"JetStream is not enabled: {exc}",
                    "start nats-server with -js (or jetstream {} in its config)",
                ),
            ]
        out.append(e.ok("jetstream", "enabled"))
        try:
            await js.stream_info(cfg.stream)
            out.append(e.ok(f"stream {cfg.stream}", "exists"))
        except NotFoundError:
            if e.role == "sink" and cfg.create_stream:
                out.append(e.ok(f"stream {cfg.stream}", "missing; created at start (create_stream)"))
            else:
                fix = f"nats stream add {cfg.stream}" + (
                    f", or set create_stream: true in {e.where}" if e.role == "sink" else ""
                )
                out.append(e.check(f"stream {cfg.stream}", "fail", "does not exist", fix))
        return out
    finally:
        await nc.close()


async def _redis(e: Endpoint) -> list[Check]:
    from tidesync.sinks.redis.wire import connect, where

    cfg = e.config
    client = connect(str(cfg.url), cfg.timeout)
    try:
        await client.ping()
    except Exception as exc:
        return _failed(e, where(str(cfg.url)), exc)
    finally:
        await client.aclose()
    return [e.ok("reachable", f"{where(str(cfg.url))} answers PING")]


async def _rabbitmq(e: Endpoint) -> list[Check]:
    import aio_pika

    from tidesync.sinks.rabbitmq.wire import close_quietly, safe_url

    cfg = e.config
    url = str(cfg.url)
    try:
        conn: Any = await aio_pika.connect(url, timeout=cfg.connect_timeout)
    except Exception as exc:
        return _failed(e, safe_url(url), exc)
    try:
        out = [e.ok("reachable", safe_url(url))]
        if e.role == "source" and cfg.bind is None:
            fix = f"declare it, or set bind: in {e.where} so that tidesync declares it"
            out.append(await _passive(e, conn, "queue", cfg.queue, fix))
        elif e.role == "sink" and not cfg.declare:
            fix = f"declare it, or set declare: true in {e.where}"
            out.append(await _passive(e, conn, "exchange", cfg.exchange, fix))
        return out
    finally:
        await close_quietly(conn)


async def _passive(e: Endpoint, conn: Any, kind: Literal["queue", "exchange"], name: str, fix: str) -> Check:
    """Whether the ``kind`` ``name`` exists, looked up passively on a channel of its own (a miss closes it)."""
    import aio_pika

    channel = await conn.channel()
    declare = channel.declare_queue if kind == "queue" else channel.declare_exchange
    try:
        await declare(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return e.check(f"{kind} {name}", "fail", "does not exist", fix)
    return e.ok(f"{kind} {name}", "exists")


async def _mqtt(e: Endpoint) -> list[Check]:
    from tidesync.sinks.mqtt.wire import Broker, connect, disconnect, make_client

    cfg = e.config
    broker = Broker.parse(str(cfg.url))
    client = make_client(broker, f"tidesync-check-{id(e)}", timeout=cfg.connect_timeout, keepalive=10)
    try:
        await connect(client, cfg.connect_timeout)
    except Exception as exc:
        return _failed(e, broker.redacted(), exc)
    await disconnect(client)
    return [e.ok("reachable", broker.redacted())]
