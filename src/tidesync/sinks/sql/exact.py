"""Values a database would store rounded or cut without an error: found before writing, so they fail instead.

MariaDB (even in strict mode, with a note only) and Postgres (by an assignment
cast, or a type's precision) round some values silently: digits past a
decimal's scale, a fraction into an integer column, seconds past a time
column's precision. tidesync writes values exactly or not at all, so a sink
checks the values it is about to send against the column types it read, and
such a value fails its own event (a PermanentError naming the column).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from tidesync.errors import PermanentError

Check = Callable[[Any], str | None]  # why a value cannot be stored exactly, or None


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


_PG_INTEGERS = {"int2": "smallint", "int4": "int", "int8": "bigint"}
_PG_TEMPORAL = {"timestamp": "timestamp", "timestamptz": "timestamp", "time": "time", "timetz": "time"}


def exact_check_postgres(typname: str, native: str) -> Check | None:
    """The same checks for a Postgres column (``pg_type.typname``, ``format_type`` text).

    Postgres, too, rounds without a word: digits past a ``numeric(p,s)``'s
    scale, a numeric into an integer column (an assignment cast), seconds
    past a ``timestamp(n)``'s precision. An unconstrained ``numeric`` holds
    any scale and a plain ``timestamp`` microseconds: nothing to check.
    """
    if typname == "numeric":
        return exact_check("numeric", native) if "," in native else None
    if typname in _PG_INTEGERS:
        return exact_check(_PG_INTEGERS[typname], native)
    if typname in _PG_TEMPORAL and "(" in native:
        return exact_check(_PG_TEMPORAL[typname], native)
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
