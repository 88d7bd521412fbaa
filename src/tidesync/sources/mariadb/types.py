"""Exact values from MariaDB/MySQL columns, whether they come from the binlog or from a snapshot query.

Every captured column gets a :class:`ColType` (from the binlog's table map, or from
``information_schema`` for a snapshot); both paths turn a value into the same Python value:

===========================  =====================================  ===========
column                       value                                  portable
===========================  =====================================  ===========
TINYINT..BIGINT              int (UNSIGNED read as unsigned)        int16/32/64; BIGINT UNSIGNED: decimal(20,0)
DECIMAL(p,s)                 Decimal, every digit                   decimal(p,s)
FLOAT / DOUBLE               float (FLOAT: the stored 32-bit value) float32 / float64
DATETIME(fsp)                naive datetime, microseconds kept      timestamp
TIMESTAMP(fsp)               datetime in UTC (tz-aware)             timestamptz
DATE / TIME / YEAR           date / timedelta (-838:59:59..) / int  date / interval / int16
CHAR, VARCHAR, TEXT family   str (4-byte UTF-8 intact)              string
BINARY, VARBINARY, BLOB fam. bytes                                  bytes
ENUM                         str ('' for the invalid-value index)   string
SET                          str, members in definition order, ','  string
BIT(1) / BIT(n)              bool / int                             bool / int64
JSON                         the parsed document                    json
GEOMETRY                     bytes (the server's internal form)     bytes
===========================  =====================================  ===========

MariaDB's JSON is a LONGTEXT with a ``json_valid`` check; such columns are found in
``information_schema.CHECK_CONSTRAINTS`` and parsed. MySQL's binary JSON comes parsed
from the binlog decoder.

Zero dates (policy ``zero_dates``): a DATE, DATETIME or TIMESTAMP holding
``0000-00-00`` (or a zero month or day, which MariaDB accepts outside strict mode)
has no Python value. ``null`` (the default) gives None and logs one warning per
column; ``dead_letter`` rejects the row (the engine parks it with the reason).
A TIMESTAMP cannot hold 1970-01-01 00:00:00 UTC (its range starts one second later),
so the binlog's 0 is always the zero date.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE  # type: ignore[import-untyped]

from tidesync.schema import Column

UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1)


class ZeroDate(ValueError):
    """A zero date, which has no Python value (see the module docstring for the policy)."""


@dataclass(frozen=True, slots=True)
class ColType:
    """One column as the source decodes it. ``kind`` is one of the keys of :data:`_PORTABLE`."""

    name: str
    kind: str
    native: str
    width: int = 0  # integers: bytes of storage (1, 2, 3, 4, 8)
    unsigned: bool = False
    precision: int | None = None
    scale: int | None = None
    members: tuple[str, ...] = ()  # SET members in definition order
    pad: int = 0  # BINARY(n): n (the binlog drops trailing zero bytes; a query returns them)
    nullable: bool = True

    def column(self, ident: int | None = None) -> Column:
        return Column(
            name=self.name,
            type=_portable(self),
            nullable=self.nullable,
            native=self.native,
            precision=20 if self.kind == "int" and self.width == 8 and self.unsigned else self.precision,
            scale=0 if self.kind == "int" and self.width == 8 and self.unsigned else self.scale,
            ident=ident,
        )


def _portable(c: ColType) -> str:
    if c.kind == "int":
        width = c.width + (1 if c.unsigned else 0)
        if width <= 2:
            return "int16"
        if width <= 4:
            return "int32"
        return "int64" if width <= 8 else "decimal"
    return _PORTABLE[c.kind]


_PORTABLE = {
    "year": "int16",
    "decimal": "decimal",
    "float32": "float32",
    "float64": "float64",
    "datetime": "timestamp",
    "timestamp": "timestamptz",
    "date": "date",
    "time": "interval",
    "string": "string",
    "bytes": "bytes",
    "enum": "string",
    "set": "string",
    "bit1": "bool",
    "bit": "int64",
    "json": "json",
}

_INT_WIDTH = {FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4, FIELD_TYPE.LONGLONG: 8}
_BINLOG_KIND = {
    FIELD_TYPE.NEWDECIMAL: "decimal",
    FIELD_TYPE.FLOAT: "float32",
    FIELD_TYPE.DOUBLE: "float64",
    FIELD_TYPE.DATETIME: "datetime",
    FIELD_TYPE.DATETIME2: "datetime",
    FIELD_TYPE.TIMESTAMP: "timestamp",
    FIELD_TYPE.TIMESTAMP2: "timestamp",
    FIELD_TYPE.DATE: "date",
    FIELD_TYPE.NEWDATE: "date",
    FIELD_TYPE.TIME: "time",
    FIELD_TYPE.TIME2: "time",
    FIELD_TYPE.YEAR: "year",
    FIELD_TYPE.ENUM: "enum",
    FIELD_TYPE.SET: "set",
    FIELD_TYPE.JSON: "json",
    FIELD_TYPE.GEOMETRY: "bytes",
}
_TEXTUAL = {FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING, FIELD_TYPE.BLOB, FIELD_TYPE.TINY_BLOB,
            FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.LONG_BLOB}  # fmt: skip


def from_table_map(col: Any, nullable: bool, json_columns: frozenset[str]) -> ColType:
    """A binlog table map's column (with ``binlog_row_metadata=FULL``) as a :class:`ColType`."""
    t = col.type
    name = col.name
    if t in _INT_WIDTH:
        return ColType(name, "int", f"int{_INT_WIDTH[t] * 8}", _INT_WIDTH[t], bool(col.unsigned), nullable=nullable)
    if t == FIELD_TYPE.BIT:
        return ColType(name, "bit1" if col.bits == 1 else "bit", f"bit({col.bits})", nullable=nullable)
    if t in _TEXTUAL:
        if name in json_columns:
            return ColType(name, "json", "json", nullable=nullable)
        binary = col.character_set_name in (None, "binary")
        if binary and t == FIELD_TYPE.STRING:
            return ColType(name, "bytes", "binary", pad=int(col.max_length), nullable=nullable)
        return ColType(name, "bytes" if binary else "string", "blob" if binary else "text", nullable=nullable)
    kind = _BINLOG_KIND.get(t)
    if kind is None:
        raise ValueError(f"column {name!r} has binlog type {t}, which this source cannot decode")
    if kind == "decimal":
        return ColType(name, kind, "decimal", precision=col.precision, scale=col.decimals, nullable=nullable)
    if kind == "set":
        return ColType(name, kind, "set", members=tuple(col.set_values or ()), nullable=nullable)
    return ColType(name, kind, kind, nullable=nullable)


_SCHEMA_INT = {"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "bigint": 8}
_SCHEMA_KIND = {
    "decimal": "decimal", "float": "float32", "double": "float64", "datetime": "datetime",
    "timestamp": "timestamp", "date": "date", "time": "time", "year": "year", "enum": "enum", "set": "set",
    "json": "json", "char": "string", "varchar": "string", "tinytext": "string", "text": "string",
    "mediumtext": "string", "longtext": "string", "binary": "bytes", "varbinary": "bytes", "tinyblob": "bytes",
    "blob": "bytes", "mediumblob": "bytes", "longblob": "bytes",
}  # fmt: skip


def from_information_schema(row: dict[str, Any], json_columns: frozenset[str]) -> ColType:
    """An ``information_schema.COLUMNS`` row (COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE,
    NUMERIC_PRECISION, NUMERIC_SCALE) as the same :class:`ColType` the binlog gives."""
    name = row["COLUMN_NAME"]
    data_type = str(row["DATA_TYPE"]).lower()
    column_type = str(row["COLUMN_TYPE"]).lower()
    nullable = row["IS_NULLABLE"] == "YES"
    if data_type in _SCHEMA_INT:
        w = _SCHEMA_INT[data_type]
        return ColType(name, "int", f"int{w * 8}", w, "unsigned" in column_type, nullable=nullable)
    if data_type == "bit":
        bits = int(row["NUMERIC_PRECISION"] or 1)
        return ColType(name, "bit1" if bits == 1 else "bit", f"bit({bits})", nullable=nullable)
    if name in json_columns:
        return ColType(name, "json", "json", nullable=nullable)
    kind = _SCHEMA_KIND.get(data_type, "bytes")  # geometry types: the server's internal bytes, as the binlog has them
    if kind == "decimal":
        return ColType(name, kind, "decimal", precision=int(row["NUMERIC_PRECISION"]),
                       scale=int(row["NUMERIC_SCALE"]), nullable=nullable)  # fmt: skip
    if kind == "set":
        return ColType(name, kind, "set", members=_set_members(column_type), nullable=nullable)
    if data_type == "binary":
        return ColType(name, "bytes", "binary", pad=int(column_type[7:-1] or 1), nullable=nullable)
    if kind in ("string", "bytes"):
        return ColType(name, kind, "text" if kind == "string" else "blob", nullable=nullable)
    return ColType(name, kind, kind, nullable=nullable)


def _set_members(column_type: str) -> tuple[str, ...]:
    inner = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    return tuple(m[1:-1].replace("''", "'") for m in _split_quoted(inner))


def _split_quoted(text: str) -> list[str]:
    out, cur, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if ch == "'" and quoted and text[i + 1 : i + 2] == "'":
            cur += "''"
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


# --- converters -------------------------------------------------------------
#
# A converter takes the decoder's value (never None: NULL is handled before) and returns
# the exact value, or raises ZeroDate. One per (path, kind); built once per table shape.

Convert = Callable[[Any], Any]


def _same(v: Any) -> Any:
    return v


def _f32(v: Any) -> float:
    # The server prints a FLOAT rounded to 6 digits; the binlog holds the 32-bit value. Both paths give the latter.
    return float(struct.unpack("<f", struct.pack("<f", float(v)))[0])


def _json_value(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode()
    if isinstance(v, str):
        return json.loads(v)
    return _json_text(v)


def _json_text(v: Any) -> Any:
    """MySQL's binary JSON decodes with bytes keys and strings: make them str."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, dict):
        return {_json_text(k): _json_text(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_text(x) for x in v]
    return v


def _zero(_: Any) -> Any:
    raise ZeroDate


def _binlog_timestamp(v: dt.datetime) -> dt.datetime:
    if v == _EPOCH:
        raise ZeroDate
    return v.replace(tzinfo=UTC)


def _query_timestamp(v: Any) -> dt.datetime:
    if not isinstance(v, dt.datetime):
        raise ZeroDate  # PyMySQL hands back the text of a value it cannot convert: 0000-00-00 ...
    return v.replace(tzinfo=UTC)  # the snapshot session runs with time_zone '+00:00'


def _query_date(v: Any) -> Any:
    if not isinstance(v, (dt.date, dt.datetime)):
        raise ZeroDate
    return v


def _bits(v: str) -> int:
    return int(v, 2) if v else 0


def _query_bits(v: bytes) -> int:
    return int.from_bytes(v, "big")


def binlog_converter(c: ColType) -> Convert:
    """For values from the binlog decoder (mysql-replication)."""
    k = c.kind
    if k == "timestamp":
        return _binlog_timestamp
    if k == "bit1":
        return lambda v: _bits(v) == 1
    if k == "bit":
        return _bits
    if k == "set":
        members = c.members
        return lambda v: ",".join(m for m in members if m in v)
    if k == "json":
        return _json_value
    if k == "string":
        return lambda v: v.decode() if isinstance(v, bytes) else v
    if k == "bytes":
        # The decoder "decodes" binary strings with the charset name 'binary', which Python does not know,
        # so it keeps the bytes; but an empty one decodes to '' without a codec lookup.
        pad = c.pad
        if pad:
            return lambda v: (v.encode() if isinstance(v, str) else v).ljust(pad, b"\x00")
        return lambda v: v.encode() if isinstance(v, str) else v
    return _same


def query_converter(c: ColType) -> Convert:
    """For values PyMySQL returns to a snapshot query."""
    k = c.kind
    if k == "timestamp":
        return _query_timestamp
    if k in ("date", "datetime"):
        return _query_date
    if k == "bit1":
        return lambda v: _query_bits(v) == 1
    if k == "bit":
        return _query_bits
    if k == "float32":
        return _f32
    if k == "json":
        return _json_value
    if k == "string":
        return lambda v: v.decode() if isinstance(v, bytes) else v
    if k == "bytes":
        return lambda v: v.encode() if isinstance(v, str) else v
    return _same


# The decoder's reasons for a None that was not a NULL (its ``none_sources``): a date it could not build.
ZERO_SOURCES = frozenset({"out of date range", "out of datetime range", "out of datetime2 range"})
