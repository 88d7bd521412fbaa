"""What the Redis Streams sink and source share: the client, error translation, entry ids, the payload codec.

Errors are translated here, once (``delivery_error`` for the sink,
``source_error`` for the source). Transient (retry, reconnect): a refused or
lost connection, a timeout, ``LOADING`` (a restarted server reading its data),
``READONLY`` (a replica, or a primary failing over), ``OOM`` (maxmemory
reached with a no-eviction policy), ``MASTERDOWN``, ``TRYAGAIN``, ``BUSY``, and
a ``WATCH`` conflict. Refusals every write would meet (authentication,
``NOPERM``, a stream name that holds a key of another type, an unknown server
error) are systemic: the engine holds the batch and probes.

The client has the driver's own retries switched off: a command whose answer
was lost may have run (an XREADGROUP that moved the group on, an EXEC), so the
caller decides what a retry means, by position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rx
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tidesync import formats
from tidesync.errors import (
    DeliveryError,
    SourceError,
    SourceTransientError,
    SystemicError,
    TransientError,
)
from tidesync.event import ChangeEvent

EVENT_FIELD = b"event"  # the entry field that holds the payload
_TRANSIENT_TYPES = (
    rx.ConnectionError,  # refused, reset, closed (BusyLoadingError is one too)
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.OutOfMemoryError,
    rx.TryAgainError,
    rx.MasterDownError,
    rx.WatchError,
    OSError,
)
_REFUSED_TYPES = (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError)
_TRANSIENT_PREFIXES = ("LOADING", "READONLY", "OOM", "MASTERDOWN", "TRYAGAIN", "BUSY ", "NOREPLICAS", "CLUSTERDOWN")
_REFUSED_PREFIXES = ("NOAUTH", "WRONGPASS", "NOPERM", "WRONGTYPE")


def where(url: str) -> str:
    """``redis at host:port`` for messages: never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"redis at {parts.path}"
    return f"redis at {parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def connect(url: str, timeout: float, *, read_timeout: float | None = None) -> aioredis.Redis:
    """A client (lazy: it connects at the first command) without the driver's own retries."""
    return aioredis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=read_timeout if read_timeout is not None else timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        health_check_interval=0,
    )


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _REFUSED_TYPES):  # subclasses of ConnectionError in the driver, but no outage
        return False
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    return isinstance(exc, rx.ResponseError) and str(exc).upper().startswith(_TRANSIENT_PREFIXES)


def delivery_error(exc: BaseException, url: str) -> DeliveryError:
    """The tidesync error for a driver error met while writing."""
    if isinstance(exc, DeliveryError):
        return exc
    text = f"{where(url)}: {type(exc).__name__}: {exc}"
    if is_transient(exc):
        return TransientError(text)
    if isinstance(exc, _REFUSED_TYPES):
        return SystemicError(f"{text}; check the user and password in the url and the user's ACL")
    if isinstance(exc, rx.ResponseError) and str(exc).upper().startswith(_REFUSED_PREFIXES):
        return SystemicError(text)
    return SystemicError(f"{text} (the server refused the write)")


def source_error(exc: BaseException, url: str) -> SourceError:
    """The tidesync error for a driver error met while reading: transient ones reopen the source."""
    if isinstance(exc, SourceError):
        return exc
    text = f"{where(url)}: {type(exc).__name__}: {exc}"
    if is_transient(exc) or (isinstance(exc, rx.ResponseError) and str(exc).startswith("NOGROUP")):
        # NOGROUP: the stream or its group vanished (a server restarted without persistence, a DEL);
        # reopening creates the group again.
        return SourceTransientError(text)
    return SourceError(text)


def entry_id(raw: bytes | str) -> tuple[int, int]:
    """``b"1700000000000-3"`` -> ``(1700000000000, 3)``: an entry id as ints, ordered as the stream orders them."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_text(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


# --- payload ---------------------------------------------------------------------------------


def encoder(fmt: str, pipeline: str = "", sink: str = "sink") -> Callable[[ChangeEvent], bytes]:
    return formats.encoder(fmt, pipeline=pipeline, sink=sink)


def decoder(fmt: str, mapping: Any = None) -> Callable[[bytes], ChangeEvent]:
    return formats.decoder(fmt, mapping=mapping)


def fields_of(raw: Any) -> dict[bytes, bytes] | None:
    """An entry's fields as a dict (None for an entry that was deleted while pending)."""
    if raw is None:
        return None
    if isinstance(raw, dict):
        return raw
    it = iter(raw)
    return dict(zip(it, it, strict=False))
