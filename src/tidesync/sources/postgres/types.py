"""Postgres text-format values to exact Python values, one converter per column, chosen once.

A relation's columns get a tuple of converter functions when its Relation
message (or, for a snapshot, its catalog entry) is seen; decoding a row is then
a loop over that tuple, with no per-value dispatch on the type.

The replication and snapshot sessions run with ``TimeZone=UTC``,
``DateStyle=ISO``, ``IntervalStyle=postgres``, ``bytea_output=hex`` and
``extra_float_digits=1`` (set as connection options), so the text forms below
are the only ones to parse.

========================  ==========================================================
Postgres                  Python
========================  ==========================================================
smallint, int, bigint,    int
oid
numeric                   Decimal (``NaN``, ``Infinity``, ``-Infinity`` included)
real, double precision    float (``nan``, ``inf``, ``-inf`` included)
text, varchar, char(n),   str (char(n) keeps its padding, as Postgres sends it)
name, "char", enums
bool                      bool
date                      date; ``infinity``/``-infinity`` -> ``date.max``/``date.min``
timestamp                 naive datetime; infinities -> ``datetime.max``/``datetime.min``
timestamptz               aware datetime in UTC; infinities -> max/min with tzinfo UTC
time / timetz             time / time with a fixed-offset tzinfo
interval                  timedelta, see below
uuid                      UUID
json, jsonb               the parsed document (dict, list, str, int, float, bool, None)
bytea                     bytes
arrays of the above       nested lists, NULL elements as None
domains                   the value of their base type
anything else             the text as str (ranges, inet, money, composites, ...)
========================  ==========================================================

Intervals: Postgres keeps months, days and microseconds apart, and a month
has no fixed length, so no timedelta is exact for ``1 mon``. The rule is the
one psycopg 3 uses, so a value reads the same through tidesync as through a
plain SELECT: a year is 365 days and a month 30 days; days and the time part
are exact. An interval without years or months is therefore exact.

Values Python cannot hold (dates BC or after 9999, ``24:00:00``) come through
as their text (str) instead of failing the pipeline.
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, TypeVar
from uuid import UUID

import msgspec

Converter = Callable[[bytes], Any]

UTC: Final = dt.UTC
T = TypeVar("T")


# --- scalar converters ------------------------------------------------------


def to_bool(b: bytes) -> bool:
    return b == b"t"


def to_decimal(b: bytes) -> Decimal:
    return Decimal(b.decode("ascii"))


def to_uuid(b: bytes) -> UUID:
    return UUID(b.decode("ascii"))


def to_bytea(b: bytes) -> bytes:
    if b[:2] == b"\\x":
        return binascii.unhexlify(b[2:])
    return _unescape_bytea(b)


def _unescape_bytea(b: bytes) -> bytes:
    # bytea_output=escape: \\ for a backslash, \ooo octal for other bytes
    out = bytearray()
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c == 0x5C and i + 1 < n and b[i + 1] == 0x5C:
            out.append(0x5C)
            i += 2
        elif c == 0x5C:
            out.append(int(b[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(c)
            i += 1
    return bytes(out)


_json_decode = msgspec.json.decode


def to_json(b: bytes) -> Any:
    try:
        return _json_decode(b)
    except msgspec.DecodeError:
        # numbers beyond float range and the like: the standard parser takes them
        try:
            return json.loads(b)
        except (ValueError, RecursionError):
            return b.decode("utf-8", "replace")


def _unparsed(b: bytes, highest: T, lowest: T) -> T | str:
    """A date or time text the ISO parser refused: ``infinity`` and ``-infinity`` as the
    type's extremes, anything else (a BC date, a year past 9999) kept as the server's text."""
    if b == b"infinity":
        return highest
    if b == b"-infinity":
        return lowest
    return b.decode("ascii")


def to_date(b: bytes) -> dt.date | str:
    try:
        return dt.date.fromisoformat(b.decode("ascii"))
    except ValueError:
        return _unparsed(b, dt.date.max, dt.date.min)


def to_timestamp(b: bytes) -> dt.datetime | str:
    try:
        return dt.datetime.fromisoformat(b.decode("ascii"))
    except ValueError:
        return _unparsed(b, dt.datetime.max, dt.datetime.min)


_UTC_MAX: Final = dt.datetime.max.replace(tzinfo=UTC)
_UTC_MIN: Final = dt.datetime.min.replace(tzinfo=UTC)


def to_timestamptz(b: bytes) -> dt.datetime | str:
    try:
        value = dt.datetime.fromisoformat(b.decode("ascii"))
    except ValueError:
        return _unparsed(b, _UTC_MAX, _UTC_MIN)
    if value.tzinfo is not UTC:
        # only when a server forces another TimeZone on the session
        value = value.astimezone(UTC)
    return value


def to_time(b: bytes) -> dt.time | str:
    try:
        return dt.time.fromisoformat(b.decode("ascii"))
    except ValueError:
        return b.decode("ascii")


_INTERVAL = re.compile(
    rb"(?:([-+]?\d+) years? ?)?(?:([-+]?\d+) mons? ?)?(?:([-+]?\d+) days? ?)?(?:([-+])?(\d+):(\d+):(\d+(?:\.\d+)?))?"
)


def to_interval(b: bytes) -> dt.timedelta | str:
    m = _INTERVAL.fullmatch(b)
    if m is None:
        return b.decode("ascii")
    years, months, days, sign, hours, minutes, seconds = m.groups()
    total_days = 0
    if years:
        total_days += 365 * int(years)
    if months:
        total_days += 30 * int(months)
    if days:
        total_days += int(days)
    secs = 0
    micros = 0
    if hours:
        secs = 3600 * int(hours) + 60 * int(minutes)
        micros = round(float(seconds) * 1_000_000)
        if sign == b"-":
            secs = -secs
            micros = -micros
    try:
        return dt.timedelta(days=total_days, seconds=secs, microseconds=micros)
    except OverflowError:
        return b.decode("ascii")


def text_converter(encoding: str) -> Converter:
    """str from the database encoding (``utf-8`` uses the fastest path)."""
    if encoding == "utf-8":
        return bytes.decode
    return lambda b: b.decode(encoding, "replace")


# --- arrays -----------------------------------------------------------------

_ARRAY_TOKENS: dict[bytes, re.Pattern[bytes]] = {}
_BACKSLASH = re.compile(rb"\\(.)", re.S)


def _array_tokens(delim: bytes) -> re.Pattern[bytes]:
    pattern = _ARRAY_TOKENS.get(delim)
    if pattern is None:
        d = re.escape(delim)
        pattern = re.compile(rb'"((?:[^"\\]|\\.)*)"|([{}])|([^{}"' + d + rb"]+)", re.S)
        _ARRAY_TOKENS[delim] = pattern
    return pattern


def parse_array(data: bytes, element: Converter, delim: bytes = b",") -> list[Any] | str:
    """A text-format array as nested lists; NULL elements (unquoted) as None.

    Dimension decorations (``[0:2]={...}``) are dropped, as psycopg 3 does.
    """
    if data[:1] == b"[":
        data = data[data.index(b"=") + 1 :]
    stack: list[list[Any]] = []
    current: list[Any] | None = None
    result: list[Any] | None = None
    for quoted, brace, bare in _array_tokens(delim).findall(data):
        if brace == b"{":
            new: list[Any] = []
            if current is not None:
                current.append(new)
                stack.append(current)
            current = new
        elif brace == b"}":
            if stack:
                current = stack.pop()
            else:
                result = current
                current = None
        elif current is None:
            break
        elif bare:
            bare = bare.strip()
            current.append(None if bare.upper() == b"NULL" else element(bare))
        else:
            current.append(element(_BACKSLASH.sub(rb"\1", quoted) if b"\\" in quoted else quoted))
    if result is None:
        return data.decode("utf-8", "replace")
    return result


def array_converter(element: Converter, delim: str = ",") -> Converter:
    d = delim.encode()
    return lambda b: parse_array(b, element, d)


# --- type knowledge ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scalar:
    name: str
    portable: str
    convert: Converter | None  # None: the database-encoding text converter


_S = Scalar
SCALARS: Final[dict[int, Scalar]] = {
    16: _S("boolean", "bool", to_bool),
    17: _S("bytea", "bytes", to_bytea),
    18: _S('"char"', "string", None),
    19: _S("name", "string", None),
    20: _S("bigint", "int64", int),
    21: _S("smallint", "int16", int),
    23: _S("integer", "int32", int),
    25: _S("text", "string", None),
    26: _S("oid", "int64", int),
    114: _S("json", "json", to_json),
    700: _S("real", "float32", float),
    701: _S("double precision", "float64", float),
    1042: _S("character", "string", None),
    1043: _S("character varying", "string", None),
    1082: _S("date", "date", to_date),
    1083: _S("time without time zone", "time", to_time),
    1114: _S("timestamp without time zone", "timestamp", to_timestamp),
    1184: _S("timestamp with time zone", "timestamptz", to_timestamptz),
    1186: _S("interval", "interval", to_interval),
    1266: _S("time with time zone", "timetz", to_time),
    1700: _S("numeric", "decimal", to_decimal),
    2950: _S("uuid", "uuid", to_uuid),
    3802: _S("jsonb", "json", to_json),
}

# array type oid -> element type oid, for the built-in scalars above
BUILTIN_ARRAYS: Final[dict[int, int]] = {
    1000: 16,
    1001: 17,
    1002: 18,
    1003: 19,
    1016: 20,
    1005: 21,
    1007: 23,
    1009: 25,
    1028: 26,
    199: 114,
    1021: 700,
    1022: 701,
    1014: 1042,
    1015: 1043,
    1182: 1082,
    1183: 1083,
    1115: 1114,
    1185: 1184,
    1187: 1186,
    1270: 1266,
    1231: 1700,
    2951: 2950,
    3807: 3802,
}


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """A row of ``pg_type``, as much as decoding needs.

    ``kind``: ``a`` array (output function ``array_out``), ``d`` domain,
    ``e`` enum, ``b`` base, ``c`` composite, ``r`` range, ``m`` multirange, ``p`` pseudo.
    """

    oid: int
    namespace: str
    name: str
    kind: str
    base_oid: int = 0
    elem_oid: int = 0
    delim: str = ","


class TypeMap:
    """Converters and portable types by type oid: built-ins known, the rest looked up once.

    ``missing(oids)`` names the oids whose ``pg_type`` rows must be fetched
    (with their domain bases and array elements) before ``converter`` or
    ``portable`` can answer exactly; unknown oids decode as text.
    """

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding
        self.text: Converter = text_converter(encoding)
        self.types: dict[int, TypeInfo] = {}

    def add(self, info: TypeInfo) -> None:
        self.types[info.oid] = info

    def missing(self, oids: set[int] | list[int]) -> set[int]:
        out: set[int] = set()
        for oid in oids:
            self._missing(oid, out, 0)
        return out

    def _missing(self, oid: int, out: set[int], depth: int) -> None:
        if depth > 10 or oid in SCALARS:
            return
        if oid in BUILTIN_ARRAYS:
            return
        info = self.types.get(oid)
        if info is None:
            out.add(oid)
            return
        for nxt in (info.base_oid, info.elem_oid if info.kind == "a" else 0):
            if nxt:
                self._missing(nxt, out, depth + 1)

    def converter(self, oid: int, _depth: int = 0) -> Converter:
        scalar = SCALARS.get(oid)
        if scalar is not None:
            return scalar.convert or self.text
        elem = BUILTIN_ARRAYS.get(oid)
        if elem is not None:
            return array_converter(self.converter(elem))
        info = self.types.get(oid)
        if info is None or _depth > 10:
            return self.text
        if info.kind == "d" and info.base_oid:
            return self.converter(info.base_oid, _depth + 1)
        if info.kind == "a" and info.elem_oid:
            return array_converter(self.converter(info.elem_oid, _depth + 1), info.delim)
        return self.text

    def portable(self, oid: int, _depth: int = 0) -> tuple[str, str | None]:
        """(portable type, portable element type for arrays)."""
        scalar = SCALARS.get(oid)
        if scalar is not None:
            return scalar.portable, None
        elem = BUILTIN_ARRAYS.get(oid)
        if elem is not None:
            return "array", self.portable(elem)[0]
        info = self.types.get(oid)
        if info is None or _depth > 10:
            return "unknown", None
        if info.kind == "e":
            return "string", None
        if info.kind == "d" and info.base_oid:
            return self.portable(info.base_oid, _depth + 1)
        if info.kind == "a" and info.elem_oid:
            return "array", self.portable(info.elem_oid, _depth + 1)[0]
        return "unknown", None

    def native(self, oid: int) -> str:
        scalar = SCALARS.get(oid)
        if scalar is not None:
            return scalar.name
        elem = BUILTIN_ARRAYS.get(oid)
        if elem is not None:
            return SCALARS[elem].name + "[]"
        info = self.types.get(oid)
        if info is None:
            return f"oid:{oid}"
        if info.kind == "a" and info.elem_oid:
            return self.native(info.elem_oid) + "[]"
        return info.name if info.namespace in ("pg_catalog", "public", "") else f"{info.namespace}.{info.name}"


def typmod_facts(portable: str, typmod: int) -> dict[str, int]:
    """precision/scale of numeric(p, s) and length of varchar(n)/char(n), from the type modifier."""
    if typmod < 4:
        return {}
    if portable == "decimal":
        raw = typmod - 4
        scale = ((raw & 0x7FF) ^ 1024) - 1024
        return {"precision": (raw >> 16) & 0xFFFF, "scale": scale}
    if portable == "string":
        return {"length": typmod - 4}
    return {}
