"""Connecting to RabbitMQ and the translation of the driver's errors (one boundary, for the sink and the source).

What a publish's failure means:

- transient (retry with the engine's backoff; a message that did land is
  published again, with the same ``message_id``): a refused, lost or reset
  connection, a closed channel, a ``nack`` (the broker could not take the
  message: an internal error, a queue over its limit with ``reject-publish``),
  and no confirm in time, which is also what a *blocked connection* looks
  like (a memory or disk alarm: the broker stops reading publishes until it
  clears, and the driver holds them meanwhile).
- systemic (every event would fail; the engine holds the batch and probes):
  a message returned as unroutable (``mandatory``: no queue is bound for its
  routing key, so it would be dropped), the exchange missing (deleted under a
  running sink, or ``declare`` off), an exchange of another type under the
  name, a refused login or vhost, a permission not granted.
- permanent (that event alone): an event that cannot be encoded, or whose
  routing key is longer than AMQP allows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq.exceptions as amqp
from aio_pika.abc import AbstractRobustConnection

from tidesync.errors import DeliveryError, SourceError, SourceTransientError, SystemicError, TransientError

log = logging.getLogger("tidesync.rabbitmq")

_REFUSED: tuple[type[BaseException], ...] = (
    amqp.AuthenticationError,
    amqp.ConnectionNotAllowed,
    amqp.ChannelAccessRefused,
)
_LOST: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError,
    amqp.AMQPConnectionError,  # includes a probable authentication error: a server closing during the handshake
    amqp.ChannelClosed,
    amqp.ChannelInvalidStateError,
    ConnectionError,
    OSError,
)


def _refused(exc: BaseException) -> bool:
    """A login, vhost or permission the broker refuses (retrying the same will not help)."""
    if isinstance(exc, amqp.ProbableAuthenticationError):  # the broker closed during the handshake: says why
        return "ACCESS_REFUSED" in str(exc)
    # a Connection.Close where Connection.OpenOk belongs: a vhost that is missing or not allowed to the user
    return isinstance(exc, (*_REFUSED, amqp.InvalidFrameError))


def safe_url(url: str) -> str:
    """The URL without its password (for messages)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{creds.split(':')[0]}@{host}" if at else url


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def publish_error(exc: BaseException, routing_key: str, exchange: str) -> DeliveryError:
    """The :mod:`tidesync.errors` class for a failed publish of one message (see the module docstring)."""
    where = f"exchange {exchange!r}, routing key {routing_key!r}"
    if isinstance(exc, amqp.PublishError):
        return SystemicError(f"RabbitMQ returned the message as unroutable: no queue is bound for {where}")
    if isinstance(exc, amqp.DeliveryError):
        return TransientError(f"RabbitMQ refused the message (nack) on {where}: {describe(exc)}")
    if isinstance(exc, asyncio.TimeoutError):
        return TransientError(f"no publisher confirm in time on {where} (a lost connection or a resource alarm)")
    if isinstance(exc, amqp.ChannelNotFoundEntity):
        return SystemicError(f"RabbitMQ: {where}: the exchange does not exist: {describe(exc)}")
    if _refused(exc) or isinstance(exc, amqp.ChannelPreconditionFailed):
        return SystemicError(f"RabbitMQ refused {where}: {describe(exc)}")
    if isinstance(exc, _LOST):
        return TransientError(f"RabbitMQ connection: {describe(exc)}")
    if isinstance(exc, amqp.AMQPError):
        return TransientError(f"RabbitMQ: {describe(exc)}")
    raise exc


def source_error(exc: BaseException, what: str) -> SourceError:
    """The :mod:`tidesync.errors` class for a failure of the source (``what`` says what it was doing)."""
    msg = f"RabbitMQ: {what}: {describe(exc)}"
    if _refused(exc) or isinstance(exc, amqp.ChannelPreconditionFailed):
        return SourceError(msg)
    if isinstance(exc, amqp.ChannelNotFoundEntity):  # a queue or exchange another process has not declared yet
        return SourceTransientError(msg)
    if isinstance(exc, (*_LOST, amqp.AMQPError)):
        return SourceTransientError(msg)
    raise exc


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (*_LOST, amqp.AMQPError))


async def connect(url: str, name: str, timeout: float, heartbeat: int) -> aio_pika.abc.AbstractConnection:
    """One plain connection (not a robust one: the engine decides when and how often to reconnect).

    Raises the driver's error when the connection fails (the caller translates it).
    """
    conn = await aio_pika.connect(
        url,
        timeout=timeout,
        heartbeat=heartbeat,
        client_properties={"connection_name": name},
    )
    assert not isinstance(conn, AbstractRobustConnection)
    return conn


async def close_quietly(conn: Any) -> None:
    """Close a connection that may already be broken: nothing is left to lose."""
    if conn is None or conn.is_closed:
        return
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception as exc:
        log.debug("closing a RabbitMQ connection: %s", describe(exc))
