"""Row values to what each driver sends, by the kind of the destination column (choices: typemap).

An encoder is chosen once per column; columns whose values the driver takes
as they are get none, so the common case costs nothing per value.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from tidesync.event import json_dumps

Encoder = Callable[[Any], Any]
Rows = Sequence[tuple[Any, ...]]

UTC = dt.UTC
_CONTAINERS = (dict, list, tuple, set, frozenset)


def encode_rows(rows: Rows, encoders: Sequence[Encoder | None], plain: frozenset[type]) -> Rows:
    """``rows`` with values encoded column by column; a column whose values are all of a
    ``plain`` type (the driver sends them right) is left alone, so the common case costs a type scan."""
    todo = [(j, enc) for j, enc in enumerate(encoders) if enc is not None and not {type(r[j]) for r in rows} <= plain]
    return encode_columns(rows, todo) if todo else rows


def encode_columns(rows: Rows, todo: Sequence[tuple[int, Encoder]]) -> list[tuple[Any, ...]]:
    """``rows`` with column ``j`` of every row replaced by ``enc(value)``, for each ``(j, enc)`` in ``todo``."""
    out = []
    for row in rows:
        values = list(row)
        for j, enc in todo:
            values[j] = enc(values[j])
        out.append(tuple(values))
    return out


def json_text(value: Any) -> str:
    return json_dumps(value).decode()


def micros(value: dt.timedelta) -> int:
    """A timedelta as a whole number of microseconds (exact)."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _utc_naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _utc_time(value: dt.time) -> dt.time:
    if value.tzinfo is None:
        return value
    moment = dt.datetime.combine(dt.date(2000, 1, 3), value)
    return moment.astimezone(UTC).time()


# --- Postgres: psycopg adapts nearly everything itself ----------------------------------------


def _pg_json(v: Any) -> Any:
    # A str is taken as JSON text already (sources that read JSON as text deliver it so).
    if v is None or type(v) is str:
        return v
    return json_text(v)


def _pg_container(v: Any) -> Any:
    return json_text(v) if isinstance(v, _CONTAINERS) else v


def postgres_encoder(kind: str) -> Encoder | None:
    if kind == "json":
        return _pg_json
    if kind in ("string", "unknown"):
        return _pg_container
    return None


# --- MariaDB / MySQL: PyMySQL escapes values into the statement text ------------------------

MARIADB_PLAIN: frozenset[type] = frozenset({int, str, float, type(None), Decimal, bool, bytes, dt.date})


def mariadb_encoder(kind: str) -> Encoder:
    def encode(v: Any) -> Any:
        t = type(v)
        if t is int or t is str or v is None or t is float or t is Decimal or t is bool or t is bytes:
            return v
        if t is dt.datetime:
            if kind == "string":
                return v.isoformat(" ")
            return _utc_naive(v)
        if t is dt.date:
            return v
        if t is dt.time:
            return v.isoformat() if kind == "string" else _utc_time(v)
        if t is dt.timedelta:
            if kind == "time":
                return v
            if kind == "decimal":
                return Decimal(micros(v)).scaleb(-6)
            if kind in ("float32", "float64"):
                return v.total_seconds()
            if kind == "string":
                return str(v)
            return micros(v)
        if t is uuid.UUID:
            return v.bytes if kind == "bytes" else str(v)
        if isinstance(v, _CONTAINERS):
            return json_text(v)
        if isinstance(v, (bytearray, memoryview)):
            return bytes(v)
        return str(v)

    return encode


# --- SQLite: dynamic types; text keeps what SQLite has no type for -----------------------------

SQLITE_PLAIN: frozenset[type] = frozenset({int, str, float, type(None), bytes})


def sqlite_value(v: Any) -> Any:
    t = type(v)
    if t is int or t is str or v is None or t is float or t is bytes:
        return v
    if t is bool:
        return int(v)
    if t is Decimal:
        return str(v)
    if t is dt.datetime:
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
        return v.isoformat(" ")
    if t is dt.date or t is dt.time:
        return v.isoformat()
    if t is dt.timedelta:
        return micros(v)
    if t is uuid.UUID:
        return str(v)
    if isinstance(v, _CONTAINERS):
        return json_text(v)
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    return str(v)
