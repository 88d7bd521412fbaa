"""Explicit, strict value conversions: the ``cast:`` step and the ``int()``/``float()``/``str()`` functions.

Every converter takes a value that is not None and returns the converted value,
or raises :class:`CastFailure` whose message names the value and the target
(``cannot convert 'abc' to decimal``). None is never passed in: the callers
keep None as None for every cast. Nothing is silently truncated:

- ``string``: str unchanged (so a phone number ``'+49 030 1234'`` keeps its
  ``+`` and leading zeros; a number the source already stored as an int has no
  zeros left to keep); bool as ``true``/``false``; float by its shortest
  round-trip form; Decimal without exponent (``1E+3`` -> ``'1000'``);
  date/time as ISO 8601; UUID; UTF-8 bytes; timedelta as an ISO 8601 duration;
  dicts and lists as JSON text.
- ``int``: int; bool as 0/1; float and Decimal only when integral
  (``3.0`` -> 3, ``3.5`` fails); str holding an integer (``' 42 '``, ``'3.0'``).
- ``float``: the nearest float of an int, bool, Decimal or numeric str; never
  inf or NaN from a finite-looking input.
- ``decimal``: int, bool, Decimal, float (by its shortest repr: ``0.1`` ->
  ``Decimal('0.1')``) and numeric str; NaN and infinities fail.
- ``bool``: bool; int 0/1; str ``true false yes no 1 0 t f`` in any case.
- ``timestamp``: timezone-aware datetime from a datetime, a date (midnight),
  an ISO 8601 str or an epoch number (seconds). Naive values are UTC.
- ``date``: a date, or a datetime / ISO str whose time of day is exactly zero.
- ``iso8601``: datetime (naive as UTC), date or time as an ISO 8601 str; an
  ISO str is normalised; an epoch number (seconds) becomes a UTC timestamp.
- ``epoch`` / ``epoch_ms``: whole seconds / milliseconds since 1970-01-01 UTC
  from anything ``timestamp`` accepts. The unit is the precision asked for:
  sub-second (sub-millisecond) parts of a datetime are floored to it; numbers
  are epoch seconds and must be whole for ``epoch``.
- ``json``: a JSON text (str or UTF-8 bytes) parsed; dicts, lists, numbers and
  bools pass through (they already are JSON values).

No conversion costs more than the size of its input (see
:mod:`tidesync.transform.limits`): a Decimal becomes an ``int`` only with at
most ``MAX_INT_DIGITS`` digits, a ``string`` only when its plain form is under
``MAX_VALUE_SIZE`` characters, and a ``timestamp`` only below 10**13 seconds;
beyond that the value fails, though ``Decimal('1E+100000000')`` is 12 characters.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, get_args

import msgspec

from tidesync.transform.limits import MAX_INT_DIGITS, MAX_VALUE_SIZE

CastType = Literal[
    "string", "int", "float", "decimal", "bool", "timestamp", "date", "iso8601", "epoch", "epoch_ms", "json"
]
CAST_TYPES: Final[tuple[str, ...]] = get_args(CastType)

# The portable schema type (see tidesync.schema) a cast produces.
SCHEMA_TYPE: Final[dict[str, str]] = {
    "string": "string",
    "int": "int64",
    "float": "float64",
    "decimal": "decimal",
    "bool": "bool",
    "timestamp": "timestamptz",
    "date": "date",
    "iso8601": "string",
    "epoch": "int64",
    "epoch_ms": "int64",
    "json": "json",
}

Converter = Callable[[Any], Any]
UTC: Final = dt.UTC
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=UTC)


class CastFailure(ValueError):
    """A value cannot be converted; the message names the value and the target type."""


def show(value: Any, limit: int = 60) -> str:
    """A short, unambiguous rendering of a value for failure reasons."""
    text = f"{type(value).__name__} {value.isoformat()}" if isinstance(value, dt.date | dt.time) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(value: Any, target: str, why: str = "") -> CastFailure:
    return CastFailure(f"cannot convert {show(value)} to {target}" + (f": {why}" if why else ""))


def _numeric_text(value: str, target: str) -> str:
    text = value.strip()
    if not text or "_" in text:  # Python accepts '1_000'; data sources do not mean it
        raise _fail(value, target)
    return text


def _decimal_from_text(value: str, target: str) -> Decimal:
    try:
        d = Decimal(_numeric_text(value, target))
    except InvalidOperation:
        raise _fail(value, target) from None
    if not d.is_finite():
        raise _fail(value, target, "not a finite number")
    return d


# Each converter's fast path tests ``type(value) is X`` once, through a local ``t``; a type
# checker cannot narrow ``value`` through ``t``, so the unchanged value is handed back through
# a local annotated with the target type (free at run time, unlike a ``typing.cast`` call).


def to_string(value: Any) -> str:
    t = type(value)
    if t is str:
        same: str = value
        return same
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        return repr(value)
    if t is Decimal:
        if not -MAX_VALUE_SIZE < value.adjusted() < MAX_VALUE_SIZE:
            # Without an exponent, Decimal('1E+100000000') is 100 million characters.
            raise _fail(value, "string", f"more than {MAX_VALUE_SIZE:,} characters without an exponent")
        return format(value, "f")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(value, "string", "not valid UTF-8") from None
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    if isinstance(value, dict | list):
        return msgspec.json.encode(value, enc_hook=to_string).decode()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(int(value))
    raise _fail(value, "string")


def _iso_duration(value: dt.timedelta) -> str:
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    seconds = value.seconds + value.microseconds / 1_000_000
    secs = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{sign}P{value.days}DT{secs}S"


def to_int(value: Any) -> int:
    t = type(value)
    if t is int:
        same: int = value
        return same
    if t is bool:
        return int(value)
    if t is str:
        text = _numeric_text(value, "int")
        try:
            return int(text)
        except ValueError:
            pass
        d = _decimal_from_text(text, "int")
        if d != d.to_integral_value():
            raise _fail(value, "int", "not a whole number")
        return _int_of_decimal(value, d)
    if t is float:
        if not value.is_integer():
            raise _fail(value, "int", "not a whole number")
        return int(value)
    if t is Decimal:
        if not value.is_finite() or value != value.to_integral_value():
            raise _fail(value, "int", "not a whole number")
        return _int_of_decimal(value, value)
    if isinstance(value, int):
        return int(value)
    raise _fail(value, "int")


def _int_of_decimal(value: Any, d: Decimal) -> int:
    # int(Decimal('1E+100000000')) computes 10**100000000: seconds of CPU for a 12-character value.
    if d.adjusted() >= MAX_INT_DIGITS:
        raise _fail(value, "int", f"more than {MAX_INT_DIGITS} digits")
    return int(d)


def to_float(value: Any) -> float:
    t = type(value)
    if t is float:
        same: float = value
        return same
    if t is str:
        try:
            result = float(_numeric_text(value, "float"))
        except ValueError:
            raise _fail(value, "float") from None
    elif t is int or t is bool or t is Decimal:
        try:
            result = float(value)
        except OverflowError:
            raise _fail(value, "float", "out of range") from None
    else:
        raise _fail(value, "float")
    if not math.isfinite(result):
        raise _fail(value, "float", "not a finite number")
    return result


def to_decimal(value: Any) -> Decimal:
    t = type(value)
    if t is Decimal:
        same: Decimal = value
        return same
    if t is str:
        return _decimal_from_text(value, "decimal")
    if t is int or t is bool:
        return Decimal(int(value))
    if t is float:
        if not math.isfinite(value):
            raise _fail(value, "decimal", "not a finite number")
        return Decimal(repr(value))
    raise _fail(value, "decimal")


_BOOL_WORDS: Final = {
    "true": True,
    "t": True,
    "yes": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "0": False,
}


def to_bool(value: Any) -> bool:
    t = type(value)
    if t is bool:
        same: bool = value
        return same
    if t is str:
        result = _BOOL_WORDS.get(value.strip().lower())
        if result is not None:
            return result
    elif t is int and value in (0, 1):
        return bool(value)
    raise _fail(value, "bool")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def to_timestamp(value: Any, target: str = "timestamp") -> dt.datetime:
    if isinstance(value, dt.datetime):
        return _aware(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    t = type(value)
    try:
        if t is str:
            return _aware(dt.datetime.fromisoformat(value.strip()))
        if t is int or t is float:
            return dt.datetime.fromtimestamp(value, UTC)
        if t is Decimal:
            if not value.is_finite():
                raise _fail(value, target, "not a finite number")
            if value.adjusted() > 12:  # beyond year 9999 in seconds; int() of it could be huge
                raise _fail(value, target, "out of range")
            return EPOCH + dt.timedelta(microseconds=int((value * 1_000_000).to_integral_value()))
    except (ValueError, OverflowError, OSError) as exc:
        if isinstance(exc, CastFailure):
            raise
        raise _fail(value, target) from None
    raise _fail(value, target)


def to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        if value.time() != dt.time(0):
            raise _fail(value, "date", "it has a time of day")
        return value.date()
    if isinstance(value, dt.date):
        return value
    if type(value) is str:
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise _fail(value, "date") from None
        if parsed.time() != dt.time(0):
            raise _fail(value, "date", "it has a time of day")
        return parsed.date()
    raise _fail(value, "date")


def to_iso8601(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _aware(value).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if type(value) is str:
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    if type(value) is bool:
        raise _fail(value, "iso8601")
    return to_timestamp(value, "iso8601").isoformat()


def _since_epoch(value: Any, target: str) -> dt.timedelta:
    if type(value) is bool:
        raise _fail(value, target)
    return to_timestamp(value, target) - EPOCH


def to_epoch(value: Any) -> int:
    t = type(value)
    if t is int:
        same: int = value
        return same
    if t is float or t is Decimal:
        try:
            return to_int(value)
        except CastFailure:
            raise _fail(value, "epoch", "not a whole number of seconds") from None
    delta = _since_epoch(value, "epoch")
    return delta.days * 86_400 + delta.seconds


def to_epoch_ms(value: Any) -> int:
    delta = _since_epoch(value, "epoch_ms")
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def to_json(value: Any) -> Any:
    if isinstance(value, str | bytes | bytearray):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise _fail(value, "json", "not valid JSON") from None
    if isinstance(value, dict | list | int | float) and not isinstance(value, Decimal):
        return value
    raise _fail(value, "json")


CONVERTERS: Final[dict[str, Converter]] = {
    "string": to_string,
    "int": to_int,
    "float": to_float,
    "decimal": to_decimal,
    "bool": to_bool,
    "timestamp": to_timestamp,
    "date": to_date,
    "iso8601": to_iso8601,
    "epoch": to_epoch,
    "epoch_ms": to_epoch_ms,
    "json": to_json,
}
