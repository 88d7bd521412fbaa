"""The broker URL, connecting (MQTT 5), the idempotency-id property, and the translation of the driver's errors.

Every connection speaks MQTT 5: the sink puts each event's idempotency id in a user property
(:data:`ID_PROPERTY`), which MQTT 3.1.1 cannot carry, and the source's persistent session is an
MQTT 5 session with an expiry interval.

What is transient (retry with the engine's backoff): a refused or lost connection, a timeout
waiting for a CONNACK or a PUBACK, the client's queue full, a broker that answers "server
unavailable" / "server busy" / "quota exceeded". Refused credentials or authorisation at connect
are systemic (every event would fail: the pipeline blocks and probes). A payload larger than the
client or broker accepts, or a topic the client refuses, is permanent (that event alone).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tidesync.errors import DeliveryError, PermanentError, SystemicError, TransientError

log = logging.getLogger("tidesync.mqtt")

ID_PROPERTY: Final = "tidesync-id"  # the user property holding the event's idempotency id
# CONNACK reason codes (MQTT 5, and 3.1.1's return codes 2, 4, 5) that retrying will not fix.
_REFUSED: Final = {2, 4, 5, 0x85, 0x86, 0x87, 0x8A, 0x8C}
# Reason codes that say "later": server unavailable, busy, quota exceeded, connection rate exceeded.
_BUSY: Final = {3, 0x88, 0x89, 0x97, 0x9F}


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Broker:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if tls else 1883),
            tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    def redacted(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def make_client(
    broker: Broker,
    identifier: str,
    *,
    timeout: float,
    keepalive: int,
    clean_start: bool = True,
    session_expiry: int = 0,
    receive_maximum: int | None = None,
) -> aiomqtt.Client:
    """An MQTT 5 client (not yet connected). ``session_expiry`` seconds keeps the session after a disconnect."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry:
        props.SessionExpiryInterval = session_expiry
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=clean_start,
        properties=props,
        timeout=timeout,
        keepalive=keepalive,
        tls_context=ssl.create_default_context() if broker.tls else None,
        logger=log,
    )


async def connect(client: aiomqtt.Client, timeout: float) -> None:
    """Connect ``client``; raises the driver's error (the caller translates it)."""
    await asyncio.wait_for(client.__aenter__(), timeout)


async def disconnect(client: aiomqtt.Client) -> None:
    """Disconnect, quietly: closing a broken connection has nothing left to lose."""
    try:
        await asyncio.wait_for(client.__aexit__(None, None, None), 2.0)
    except Exception as exc:
        log.debug("closing MQTT: %s", describe(exc))
    # aiomqtt keeps a lost connection's error in a future only a message reader awaits; take it, so a
    # publisher's lost connection is not reported again as "exception never retrieved".
    lost = client._disconnected
    if lost.done() and not lost.cancelled():
        lost.exception()


def publish_properties(msg_id: str, content_type: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [(ID_PROPERTY, msg_id)]
    props.ContentType = content_type
    return props


def message_id(properties: Properties | None) -> str | None:
    """The idempotency id a tidesync sink put on a message, or None (another publisher's message)."""
    for name, value in getattr(properties, "UserProperty", None) or ():
        if name == ID_PROPERTY:
            return str(value)
    return None


def _code(exc: BaseException) -> int | None:
    rc = getattr(exc, "rc", None)
    if isinstance(rc, ReasonCode):
        return int(rc.value)
    return rc if isinstance(rc, int) else None


def refused(exc: BaseException) -> bool:
    """The broker refused the connection for a reason retrying will not fix (credentials, authorisation, id)."""
    return isinstance(exc, MqttConnectError) and _code(exc) in _REFUSED


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (aiomqtt.MqttError, asyncio.TimeoutError, ConnectionError, OSError))


def connect_error(exc: BaseException, broker: Broker) -> DeliveryError:
    """The :mod:`tidesync.errors` class for a failed connection attempt of the sink."""
    what = f"cannot connect to MQTT broker {broker.redacted()}: {describe(exc)}"
    if refused(exc):
        return SystemicError(what)
    if is_connection_error(exc):
        return TransientError(what)
    raise exc


def publish_error(exc: BaseException, topic: str) -> DeliveryError:
    """The :mod:`tidesync.errors` class for a failed publish of one message."""
    if isinstance(exc, ValueError):  # paho refuses a payload over 268,435,455 bytes or a bad topic
        return PermanentError(f"cannot publish to {topic!r}: {exc}")
    if isinstance(exc, aiomqtt.MqttCodeError):
        code = _code(exc)
        if code == paho.MQTT_ERR_PAYLOAD_SIZE:
            return PermanentError(f"the event is too large to publish to {topic!r}: {exc}")
        if code in _BUSY:
            return TransientError(f"the broker refused {topic!r} for now: {exc}")
    if is_connection_error(exc):
        return TransientError(f"MQTT publish to {topic!r}: {describe(exc)}")
    raise exc


def describe(exc: Any) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
