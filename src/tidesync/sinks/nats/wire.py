"""Connecting to NATS, the payload codec, and the translation of the driver's errors (one boundary).

What is transient (retry with the engine's backoff; nothing is lost, the
publish is de-duplicated by its ``Nats-Msg-Id`` when it did land):
no responders (no stream listens on the subject, JetStream down), a timeout
waiting for the ack, a lost or refused connection, the client's reconnect
buffer full, and a stream that refuses for its limits (``discard: new`` with
the stream full, insufficient resources, a 503). A payload above the server's
``max_payload`` is permanent (that event alone); a stream that is not the
configured one answering on the subject is systemic (every event would fail).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from tidesync.errors import DeliveryError, PermanentError, SystemicError, TransientError

log = logging.getLogger("tidesync.nats")

# JetStream error codes (nats-server server/errors.json) a publish may meet.
_FULL = {10077, 10078, 10047, 10023}  # max messages / max bytes / insufficient resources / no space
_WRONG_STREAM = {10060}  # expected stream does not match
_TOO_BIG = {10054}  # message size exceeds maximum allowed
STATUS, DESCRIPTION, NO_RESPONDERS = "Status", "Description", "503"  # a status reply's headers (as nats-py parses them)

_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError,  # nats.errors.TimeoutError is one too
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.errors.FlushTimeoutError,
    ConnectionError,
    OSError,
)


def publish_error(exc: BaseException, subject: str, stream: str) -> DeliveryError:
    """The :mod:`tidesync.errors` class for a failed publish of one message."""
    if isinstance(exc, (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError)):
        return TransientError(f"no stream answers on {subject!r} (is stream {stream} there, JetStream up?)")
    if isinstance(exc, asyncio.TimeoutError):
        return TransientError(f"no publish ack for {subject!r} in time")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PermanentError(f"the event is larger than the server's max_payload: {exc}")
    if isinstance(exc, nats.js.errors.APIError):
        return _refused(exc.code or 0, exc.err_code or 0, exc.description, subject, stream)
    if isinstance(exc, _TRANSIENT):
        return TransientError(f"NATS connection: {type(exc).__name__}: {exc}")
    if isinstance(exc, nats.errors.Error):
        return TransientError(f"NATS: {type(exc).__name__}: {exc}")
    raise exc


def _refused(code: int, err: int, description: str | None, subject: str, stream: str) -> DeliveryError:
    what = f"stream {stream} refused {subject!r}: {description} (code {code}, err_code {err})"
    if err in _FULL or code >= 500:
        return TransientError(what)
    if err in _WRONG_STREAM:
        return SystemicError(what)
    return PermanentError(what)


def ack_outcome(msg: Msg, subject: str, stream: str) -> DeliveryError | bool:
    """What the reply to one publish says: an error, or whether the stream stored it (False: a duplicate).

    The reply is JetStream's PubAck JSON (``{"stream":…, "seq":…, "duplicate": true}`` or
    ``{"error": {"code":…, "err_code":…, "description":…}}``), or a bare status message: 503 when
    nothing listens on the subject (no responders: no stream captures it, or JetStream is down).
    """
    headers = msg.headers
    if headers and not msg.data and STATUS in headers:
        status = headers[STATUS]
        if status == NO_RESPONDERS:
            return TransientError(f"no stream answers on {subject!r} (is stream {stream} there, JetStream up?)")
        return TransientError(f"NATS answered {status} {headers.get(DESCRIPTION, '')} for {subject!r}")
    try:
        reply = msgspec.json.decode(msg.data)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested past what the parser can recurse
        return TransientError(f"an unreadable publish ack for {subject!r}: {msg.data[:100]!r}")
    if not isinstance(reply, dict):
        return TransientError(f"an unreadable publish ack for {subject!r}: {msg.data[:100]!r}")
    error = reply.get("error")
    if error is not None:
        if not isinstance(error, dict):
            return TransientError(f"stream {stream} refused {subject!r}: {error!r}")
        code, err = int(error.get("code") or 0), int(error.get("err_code") or 0)
        return _refused(code, err, error.get("description"), subject, stream)
    return not reply.get("duplicate", False)


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (*_TRANSIENT, nats.errors.Error))


async def connect(
    url: str, name: str, connect_timeout: float, on_disconnect: Callable[[], None] | None = None
) -> Client:
    """A client of ``url`` (comma-separated: a cluster's nodes) that reconnects forever (the engine decides
    when to give up), with pings every 5 s.

    Raises the driver's error when the first connection fails (the caller translates it).
    """

    async def quiet(exc: Exception) -> None:  # the default callback logs every reconnect attempt as an error
        log.debug("nats %s: %s", name, exc)

    async def disconnected() -> None:
        log.info("nats %s: disconnected from %s, reconnecting", name, url)
        if on_disconnect is not None:
            on_disconnect()

    async def reconnected() -> None:
        log.info("nats %s: reconnected to %s", name, url)

    return await nats.connect(
        servers=[u.strip() for u in url.split(",")],  # every node of a cluster: the client fails over
        name=name,
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        ping_interval=5,
        max_outstanding_pings=2,
        error_cb=quiet,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
    )


def describe(exc: Any) -> str:
    return f"{type(exc).__name__}: {exc}"
