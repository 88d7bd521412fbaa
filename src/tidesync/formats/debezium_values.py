"""Row values in the Debezium envelope: how each Python type is written, and how it is read back.

tidesync writes what the Debezium PostgreSQL connector writes with its default settings
(``time.precision.mode=adaptive``, ``interval.handling.mode=numeric``, ``binary.handling.mode=bytes``)
and the JSON converter with ``schemas.enable=false``, except for decimals:

============================  =======================================  =====================
Python value                  written as                               tag (``tidesync_types``)
============================  =======================================  =====================
None, bool, int, float, str   itself                                   (none)
Decimal                       a string, ``"12.50"`` (Debezium's        ``decimal``
                              ``decimal.handling.mode=string``: its
                              default, ``precise``, writes base64 bytes
                              whose scale only the schema knows)
datetime without a zone       microseconds since the epoch             ``timestamp``
                              (``io.debezium.time.MicroTimestamp``)
datetime with a zone          ISO 8601 text in UTC, ``...Z``           ``timestamptz``
                              (``io.debezium.time.ZonedTimestamp``)
date                          days since the epoch                     ``date``
                              (``io.debezium.time.Date``)
time without a zone           microseconds since midnight              ``time``
                              (``io.debezium.time.MicroTime``)
time with a zone              ISO 8601 text (``ZonedTime``)             ``timetz``
timedelta                     microseconds (``MicroDuration``)          ``interval``
UUID                          its text (``io.debezium.data.Uuid``)      ``uuid``
bytes                         base64 text (how the JSON converter      ``bytes``
                              writes Connect ``bytes``)
dict                          its JSON as text (``io.debezium.data.     ``json``
                              Json``, how json/jsonb columns arrive)
list, tuple                   a JSON array (Postgres arrays), items    (none)
                              written by this table, untagged
============================  =======================================  =====================

A JSON document carries no types, so the encoder records each tagged field's tag in the
source block (``source.tidesync_types``), and the decoder reads values back through the same
table: a tidesync record round-trips to the same Python values (an aware datetime comes back in
UTC, equal as an instant; a tuple comes back as a list; typed items inside a list or dict come
back as their JSON forms). A record from Debezium itself has no ``tidesync_types``; when it
carries its ``schema`` (``schemas.enable=true``), the semantic type names there are read through
:data:`DEBEZIUM_NAMES`, otherwise its values stay JSON values (a timestamp stays an integer).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec

from tidesync.event import json_dumps

_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_DATE: Final = dt.date(1970, 1, 1)
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_value(value: Any) -> tuple[Any, str | None]:
    """``value`` as the envelope writes it, and its tag (None for a value JSON carries as it is)."""
    t = type(value)
    if t in _PLAIN:
        return value, None
    if isinstance(value, bool | int | float | str):  # subclasses (an IntEnum, a str subclass)
        return value, None
    if isinstance(value, Decimal):
        return str(value), "decimal"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return _micros(value - _EPOCH), "timestamp"
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"), "timestamptz"
    if isinstance(value, dt.date):
        return (value - _EPOCH_DATE).days, "date"
    if isinstance(value, dt.time):
        if value.tzinfo is not None:
            return value.isoformat(), "timetz"
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond, "time"
    if isinstance(value, dt.timedelta):
        return _micros(value), "interval"
    if isinstance(value, uuid.UUID):
        return str(value), "uuid"
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii"), "bytes"
    if isinstance(value, dict):
        return json_dumps(value).decode(), "json"
    if isinstance(value, list | tuple):
        return [encode_value(v)[0] for v in value], None
    raise TypeError(f"no Debezium form for a {type(value).__name__}")


def encode_row(row: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """A row as the envelope writes it, and the tags of its typed fields."""
    if row is None:
        return None, {}
    out: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for name, value in row.items():
        out[name], tag = encode_value(value)
        if tag is not None:
            tags[name] = tag
    return out, tags


def _time(micros: int) -> dt.time:
    seconds, us = divmod(micros, 1_000_000)
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return dt.time(h, m, s, us)


def _zoned(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


_READERS: Final[dict[str, Callable[[Any], Any]]] = {
    "decimal": lambda v: Decimal(str(v)),
    "timestamp": lambda v: _EPOCH + dt.timedelta(microseconds=v),
    "timestamp_ms": lambda v: _EPOCH + dt.timedelta(milliseconds=v),
    "timestamp_ns": lambda v: _EPOCH + dt.timedelta(microseconds=v // 1000),
    "timestamptz": _zoned,
    "date": lambda v: _EPOCH_DATE + dt.timedelta(days=v),
    "time": _time,
    "time_ms": lambda v: _time(v * 1000),
    "time_ns": lambda v: _time(v // 1000),
    "timetz": lambda v: dt.time.fromisoformat(v.replace("Z", "+00:00")),
    "interval": lambda v: dt.timedelta(microseconds=v),
    "uuid": uuid.UUID,
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "json": msgspec.json.decode,
}

# Debezium's semantic type names (the ``name`` of a field in a record's schema) -> a tag above.
DEBEZIUM_NAMES: Final = {
    "io.debezium.time.Timestamp": "timestamp_ms",
    "io.debezium.time.MicroTimestamp": "timestamp",
    "io.debezium.time.NanoTimestamp": "timestamp_ns",
    "io.debezium.time.ZonedTimestamp": "timestamptz",
    "io.debezium.time.Date": "date",
    "io.debezium.time.Time": "time_ms",
    "io.debezium.time.MicroTime": "time",
    "io.debezium.time.NanoTime": "time_ns",
    "io.debezium.time.ZonedTime": "timetz",
    "io.debezium.time.MicroDuration": "interval",
    "io.debezium.data.Uuid": "uuid",
    "io.debezium.data.Json": "json",
    "org.apache.kafka.connect.data.Date": "date",
}


class BadValue(ValueError):
    """A value does not fit its tag; the message names the tag."""


def decode_value(value: Any, tag: str) -> Any:
    """``value`` read back through ``tag``; None stays None. Raises :class:`BadValue`."""
    if value is None:
        return None
    reader = _READERS.get(tag)
    if reader is None:
        raise BadValue(f"unknown type tag {tag!r}")
    try:
        return reader(value)
    except (TypeError, ValueError, OverflowError, InvalidOperation, binascii.Error, msgspec.DecodeError) as exc:
        raise BadValue(f"{str(value)[:40]!r} is not a {tag} value ({type(exc).__name__})") from None


def connect_decimal(value: Any, scale: int) -> Decimal:
    """Kafka Connect's ``Decimal``: base64 of the unscaled value's big-endian two's complement bytes."""
    try:
        unscaled = int.from_bytes(base64.b64decode(value, validate=True), "big", signed=True)
    except (TypeError, ValueError, binascii.Error):
        raise BadValue(f"{str(value)[:40]!r} is not a Connect decimal") from None
    return Decimal(unscaled).scaleb(-scale)
