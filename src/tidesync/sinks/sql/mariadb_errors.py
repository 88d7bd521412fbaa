"""PyMySQL errors -> tidesync errors, for the MariaDB/MySQL sink: the one place they are translated.

By server error number (PyMySQL does not expose the SQLSTATE):

- transient (retry): 1205 lock wait timeout, 1213 deadlock, 1020/1412
  row or table changed under a consistent read, 1040 too many connections,
  1053/1077/1078/1079 server shutdown, 1927 connection killed, 1317 query
  interrupted, 2002/2003/2006/2013/2055 connection refused or lost, 1021 disk
  full, 1030 storage engine error; and socket errors.
- systemic (block the pipeline and probe; every event would fail): 1146
  missing table, 1054 unknown column, 1049 unknown database,
  1044/1045/1142/1143/1227 access denied.
- permanent (dead-letter): everything else, such as 1406 data too long, 1264
  out of range, 1265/1366/1292 bad value, 1048/1364 missing NOT NULL value,
  1062 duplicate key, 1451/1452 foreign key, 3819/4025 CHECK constraint.

Values the server would round without an error. Even in strict mode MariaDB
(10.11, measured) stores 1.235 in a DECIMAL(10,2) column as 1.24 with only a
note (1265), 2.5 in an INT column as 3 with nothing at all, and cuts
12:00:00.7 in a DATETIME(0) column to 12:00:00 with nothing at all. The sink
knows each destination column's type, so :func:`exact_check` makes a check per
such column and :func:`check_rows` fails the batch with a PermanentError
naming the table, column and value before anything is sent (the engine's
dead-letter wrapper then isolates the event). Too-long strings, out-of-range
numbers and zero dates the server refuses itself in the sink's SQL mode.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import pymysql

from tidesync.errors import DeliveryError, PermanentError, SystemicError, TransientError

Check = Callable[[Any], str | None]  # why a value cannot be stored exactly, or None

_TRANSIENT = {
    1205: "lock wait timeout",
    1213: "deadlock",
    1020: "row changed under a consistent read",
    1412: "table definition changed under a consistent read",
    1040: "too many connections",
    1021: "disk full",
    1030: "storage engine error",
    1317: "query interrupted",
}
_LOST = {
    1053: "the server is shutting down",
    1077: "the server is shutting down",
    1078: "the server is shutting down",
    1079: "the server is shutting down",
    1927: "the connection was killed",
    2002: "cannot connect",
    2003: "cannot connect",
    2006: "the server has gone away",
    2013: "the connection was lost",
    2055: "the connection was lost",
}
_SYSTEMIC = frozenset({1146, 1054, 1049, 1044, 1045, 1142, 1143, 1227})
_HINTS = {
    1146: "the table does not exist; create it or set create_tables: true",
    1054: "a column does not exist; add it, or set evolve: add_columns",
    1044: "the sink's user lacks a privilege; grant INSERT, UPDATE, DELETE on the table",
    1045: "access denied; check the user and password in the DSN",
    1142: "the sink's user lacks a privilege; grant INSERT, UPDATE, DELETE on the table",
    1143: "the sink's user lacks a privilege on a column; grant it",
    1227: "the sink's user lacks a privilege; grant it",
    1049: "the database does not exist; create it or fix the DSN",
    1406: "a value is too long for its column",
    1264: "a value is out of its column's range",
    1048: "a NOT NULL column got NULL",
    1364: "a NOT NULL column without default got no value (an update inserting a missing row "
    "only knows the event's fields)",
    4025: "a CHECK constraint rejects a row",
    3819: "a CHECK constraint rejects a row",
}


def classify(exc: BaseException, where: str) -> tuple[DeliveryError, bool]:
    """The tidesync error for ``exc``, and whether the connection is lost."""
    if isinstance(exc, OSError):
        return TransientError(f"connection to {where} lost or refused: {exc}; will reconnect"), True
    if isinstance(exc, pymysql.err.InterfaceError):
        return TransientError(f"connection to {where} is closed: {exc}; will reconnect"), True
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    code = args[0] if args and isinstance(args[0], int) else None
    message = str(args[1]) if len(args) > 1 else str(exc)
    if code in _LOST:
        return TransientError(f"{_LOST[code]} ({where}) [{code}]: {message}; will reconnect"), True
    if code in _TRANSIENT:
        return TransientError(f"{_TRANSIENT[code]} in {where} [{code}]: {message}"), False
    if code is None and isinstance(exc, pymysql.err.OperationalError):
        return TransientError(f"connection to {where} failed: {message}; will reconnect"), True
    if isinstance(exc, pymysql.err.MySQLError) or code is not None:
        hint = _HINTS.get(code or 0)
        if hint is None and code in (1265, 1366, 1292, 1367, 1411, 3140):
            hint = "a value does not fit its column's type"
        suffix = f" ({hint})" if hint else ""
        if code in _SYSTEMIC:
            return SystemicError(f"{where} refused the batch [{code}]: {message}{suffix}"), code in (1045, 1049)
        return PermanentError(f"{where} rejected the batch [{code}]: {message}{suffix}"), False
    return PermanentError(f"writing to {where} failed: {type(exc).__name__}: {exc}"), False


# --- values the server would round ------------------------------------------------------------

_INTEGERS = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"})
_TEMPORAL = frozenset({"datetime", "timestamp", "time"})
_FRACTION = re.compile(r"\d:\d\d\.(\d+)")  # the fraction of the seconds in a time's text


def _places(v: Any) -> int | None:
    """How many fractional digits ``v`` needs to be exact; None if it is no finite number."""
    t = type(v)
    if t is int or t is bool:
        return 0
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            return None
        v = Decimal(repr(v))  # the digits the driver sends
    elif t is str:
        try:
            v = Decimal(v.strip())
        except InvalidOperation:
            return None  # not a number: the server refuses it itself (1366)
    elif t is not Decimal:
        return None
    if not v.is_finite():
        return None
    _, digits, exp = v.as_tuple()
    assert isinstance(exp, int)
    if exp >= 0:
        return 0
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exp - zeros)


def _micros(v: Any) -> int | None:
    """The sub-second part of ``v`` in microseconds; None if ``v`` carries none the check can see."""
    if isinstance(v, (dt.datetime, dt.time)):
        return v.microsecond
    if isinstance(v, dt.timedelta):
        return v.microseconds
    if isinstance(v, str):
        m = _FRACTION.search(v)
        if m is None:
            return None
        digits = m.group(1).rstrip("0")
        return int(digits.ljust(6, "0")) if len(digits) <= 6 else 1  # more than 6 digits: never exact
    return None


def exact_check(data_type: str, column_type: str) -> Check | None:
    """The check of a column whose values the server would round silently, or None (nothing to check)."""
    kind = data_type.lower()
    if kind in ("decimal", "numeric"):
        m = re.search(r"\(\s*\d+\s*,\s*(\d+)\s*\)", column_type)
        scale = int(m.group(1)) if m else 0

        def decimal(v: Any) -> str | None:
            places = _places(v)
            if places is None or places <= scale:
                return None
            return f"has {places} fractional digits and the column ({column_type}) holds {scale}"

        return decimal
    if kind in _INTEGERS:

        def integer(v: Any) -> str | None:
            places = _places(v)
            return f"is not a whole number and the column is {column_type}" if places else None

        return integer
    if kind in _TEMPORAL:
        m = re.search(r"\((\d)\)", column_type)
        unit = 10 ** (6 - (int(m.group(1)) if m else 0))
        if unit == 1:
            return None

        def temporal(v: Any) -> str | None:
            us = _micros(v)
            if us is None or us % unit == 0:
                return None
            return f"has more fractional seconds than the column ({column_type}) holds"

        return temporal
    return None


# Types a check never objects to, so a column holding only these is not checked value by value.
_FINE = frozenset({int, bool, type(None), dt.date})


def check_rows(
    table: object, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], checks: Mapping[str, Check | None]
) -> None:
    """Raise a PermanentError for the first value the server would round (see the module docstring)."""
    for j, name in enumerate(columns):
        check = checks.get(name)
        if check is None or {type(r[j]) for r in rows} <= _FINE:
            continue
        for r in rows:
            why = check(r[j])
            if why is not None:
                raise PermanentError(
                    f"value {r[j]!r} for column {name!r} of {table} {why}: it would be rounded or cut, "
                    "and tidesync writes values exactly or not at all"
                )
