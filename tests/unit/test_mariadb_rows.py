"""The binlog source's compiled row decoder (``sources/mariadb/rows.py``) against an encoder written from the format.

Rows of random values (NULLs included) are written as a rows event's images the way the
server writes them (MySQL's ``log_event.cc``/``decimal.c``/``my_time.cc``), decoded by
the function compiled for the table, and must come back as exactly the values written:
same value, same type, same DECIMAL exponent. No server needed; the integration tests
check the same decoder against MariaDB's own binlog.
"""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Context, Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysqlreplication.constants import FIELD_TYPE  # type: ignore[import-untyped]

from tidesync.event import diff_fields
from tidesync.sources.mariadb.rows import compile_decoder
from tidesync.sources.mariadb.types import ColType

_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def col(name: str, type_: int, **attrs: Any) -> SimpleNamespace:
    base = {"name": name, "type": type_, "unsigned": False, "character_set_name": None}
    return SimpleNamespace(**{**base, **attrs})


def encode_decimal(value: Decimal, precision: int, scale: int) -> bytes:
    text = format(value.copy_abs(), "f")  # abs() would round to the context's 28 digits
    ip, _, fp = text.partition(".")
    intg = precision - scale
    ip, fp = ip.zfill(intg)[-intg:] if intg else "", fp.ljust(scale, "0")
    parts: list[tuple[str, int]] = []
    if intg % 9:
        parts.append((ip[: intg % 9], _DIG2BYTES[intg % 9]))
    parts += [(ip[i : i + 9], 4) for i in range(intg % 9, intg, 9)]
    parts += [(fp[i : i + 9], 4) for i in range(0, scale - scale % 9, 9)]
    if scale % 9:
        parts.append((fp[scale - scale % 9 :], _DIG2BYTES[scale % 9]))
    raw = bytearray(b"".join(int(digits).to_bytes(size, "big") for digits, size in parts))
    if value.is_signed():
        raw = bytearray(x ^ 0xFF for x in raw)
    raw[0] ^= 0x80
    return bytes(raw)


def encode_datetime2(v: dt.datetime, fsp: int) -> bytes:
    packed = 1 << 39 | (v.year * 13 + v.month) << 22 | v.day << 17 | v.hour << 12 | v.minute << 6 | v.second
    n = (fsp + 1) // 2
    frac = (v.microsecond // 10 ** (6 - 2 * n)).to_bytes(n, "big") if n else b""
    return packed.to_bytes(5, "big") + frac


def encode_date(v: dt.date) -> bytes:
    return (v.year << 9 | v.month << 5 | v.day).to_bytes(3, "little")


SCALE = 4  # of the column d
COLUMNS = [
    (col("id", FIELD_TYPE.LONGLONG), ColType("id", "int", "int64", 8, nullable=False)),
    (col("u", FIELD_TYPE.LONG, unsigned=True), ColType("u", "int", "int32", 4, True)),
    (col("m", FIELD_TYPE.INT24), ColType("m", "int", "int24", 3)),
    (col("t", FIELD_TYPE.TINY), ColType("t", "int", "int8", 1)),
    (col("d", FIELD_TYPE.NEWDECIMAL, precision=30, decimals=4), ColType("d", "decimal", "decimal", 0, False, 30, 4)),
    (col("k", FIELD_TYPE.NEWDECIMAL, precision=12, decimals=0), ColType("k", "decimal", "decimal", 0, False, 12, 0)),
    (col("at", FIELD_TYPE.DATETIME2, fsp=3), ColType("at", "datetime", "datetime")),
    (col("at6", FIELD_TYPE.DATETIME2, fsp=6), ColType("at6", "datetime", "datetime")),
    (col("day", FIELD_TYPE.DATE), ColType("day", "date", "date")),
    (col("y", FIELD_TYPE.YEAR), ColType("y", "year", "year")),
    (col("f", FIELD_TYPE.DOUBLE), ColType("f", "float64", "float64")),
    (col("s", FIELD_TYPE.VARCHAR, max_length=1000, character_set_name="utf8mb4"), ColType("s", "string", "text")),
    (col("txt", FIELD_TYPE.BLOB, length_size=2, character_set_name="utf8mb4"), ColType("txt", "string", "text")),
    (col("bn", FIELD_TYPE.STRING, max_length=4), ColType("bn", "bytes", "binary", pad=4)),
]  # fmt: skip

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "id": st.integers(-(2**63), 2**63 - 1),
    "u": st.integers(0, 2**32 - 1),
    "m": st.integers(-(2**23), 2**23 - 1),
    "t": st.integers(-128, 127),
    "d": st.decimals(-(10**26) + 1, 10**26 - 1, places=SCALE, allow_nan=False, allow_infinity=False),
    "k": st.integers(-(10**12) + 1, 10**12 - 1).map(Decimal),
    "at": st.datetimes(dt.datetime(1000, 1, 1)).map(lambda v: v.replace(microsecond=v.microsecond // 1000 * 1000)),
    "at6": st.datetimes(dt.datetime(1000, 1, 1)),
    "day": st.dates(dt.date(1000, 1, 1)),
    "y": st.integers(1901, 2155),
    "f": st.floats(allow_nan=False),
    "s": st.text(max_size=300),
    "txt": st.text(max_size=50),
    "bn": st.binary(max_size=4).map(lambda v: v.rstrip(b"\x00")),
}


def encode(name: str, v: Any) -> bytes:
    c = next(c for c, _ in COLUMNS if c.name == name)
    if name == "id":
        return struct.pack("<q", v)
    if name == "u":
        return struct.pack("<I", v)
    if name == "m":
        return (v & 0xFFFFFF).to_bytes(3, "little")
    if name == "t":
        return struct.pack("<b", v)
    if name in ("d", "k"):
        return encode_decimal(v, c.precision, c.decimals)
    if name in ("at", "at6"):
        return encode_datetime2(v, c.fsp)
    if name == "day":
        return encode_date(v)
    if name == "y":
        return bytes([v - 1900])
    if name == "f":
        return struct.pack("<d", v)
    if name == "s":
        raw = v.encode()
        return len(raw).to_bytes(2, "little") + raw
    if name == "txt":
        raw = v.encode()
        return len(raw).to_bytes(2, "little") + raw
    assert name == "bn"
    return bytes([len(v)]) + v


def encode_row(row: dict[str, Any]) -> bytes:
    names = [c.name for c, _ in COLUMNS]
    nulls = bytearray((len(names) + 7) // 8)
    body = b""
    for i, name in enumerate(names):
        if row[name] is None:
            nulls[i >> 3] |= 1 << (i & 7)
        else:
            body += encode(name, row[name])
    return bytes(nulls) + body


def rows() -> st.SearchStrategy[dict[str, Any]]:
    nullable = {n: (s if n == "id" else st.none() | s) for n, s in VALUES.items()}
    return st.fixed_dictionaries(nullable)


DECODER = compile_decoder([c for c, _ in COLUMNS], tuple(t for _, t in COLUMNS))


def expected(row: dict[str, Any]) -> dict[str, Any]:
    out = {c.name: row[c.name] for c, _ in COLUMNS}  # in column order, as the decoder builds rows
    if out["bn"] is not None:
        out["bn"] = out["bn"].ljust(4, b"\x00")  # BINARY(4) comes back padded, as a query returns it
    if out["d"] is not None:
        # the column's scale, every digit
        out["d"] = out["d"].quantize(Decimal(1).scaleb(-SCALE), context=Context(prec=100))
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k] == b[k] and type(a[k]) is type(b[k]), (k, a[k], b[k])
        if isinstance(a[k], Decimal):
            assert a[k].as_tuple() == b[k].as_tuple(), (k, a[k], b[k])


@settings(max_examples=60, deadline=None)
@given(st.lists(rows(), min_size=1, max_size=8))
def test_every_row_decodes_to_exactly_the_values_written(images: list[dict[str, Any]]) -> None:
    assert DECODER is not None
    got, zeros = DECODER.decode(b"".join(encode_row(r) for r in images))
    assert zeros is None
    assert len(got) == len(images)
    for g, r in zip(got, images, strict=True):
        same(g, expected(r))


@settings(max_examples=40, deadline=None)
@given(rows(), rows())
def test_the_compiled_diff_is_the_events_diff(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert DECODER is not None
    (b, a), _ = DECODER.decode(encode_row(before) + encode_row(after))
    assert DECODER.diff(b, a) == diff_fields(b, a)
    assert DECODER.diff(b, b) == ()


def test_zero_dates_are_none_and_named_per_row() -> None:
    assert DECODER is not None
    good = {n: None for n in VALUES} | {"id": 1}
    zero_day = b"\x00\x00\x00"
    zero_at = (1 << 39).to_bytes(5, "big") + b"\x00\x00"
    names = [c.name for c, _ in COLUMNS]
    nulls = bytearray(2)
    for i, n in enumerate(names):
        if n not in ("id", "at", "day"):
            nulls[i >> 3] |= 1 << (i & 7)
    zero_row = bytes(nulls) + struct.pack("<q", 2) + zero_at + zero_day
    got, zeros = DECODER.decode(encode_row(good) + zero_row)
    assert zeros == {1: ["at", "day"]}
    assert got[1]["at"] is None and got[1]["day"] is None and got[1]["id"] == 2


def test_negative_zero_and_extremes_of_a_decimal() -> None:
    c = col("n", FIELD_TYPE.NEWDECIMAL, precision=65, decimals=30)
    dec = compile_decoder([c], (ColType("n", "decimal", "decimal", precision=65, scale=30),))
    assert dec is not None
    big = Decimal("9" * 35 + "." + "9" * 30)
    tiny = Decimal("-0." + "0" * 29 + "1")
    for v in (big, big.copy_negate(), Decimal("0E-30"), Decimal("-0E-30"), tiny):
        (row,), _ = dec.decode(b"\x00" + encode_decimal(v, 65, 30))
        assert row["n"].as_tuple() == v.as_tuple(), (row["n"], v)


def test_a_column_the_compiler_does_not_cover_leaves_the_table_to_the_library() -> None:
    c = col("j", FIELD_TYPE.JSON, length_size=4)
    assert compile_decoder([c], (ColType("j", "json", "json"),)) is None


def test_column_names_are_data_never_code() -> None:
    name = "x'] + __import__('os').getcwd() + ['"
    dec = compile_decoder([col(name, FIELD_TYPE.TINY)], (ColType(name, "int", "int8", 1),))
    assert dec is not None
    (row,), _ = dec.decode(b"\x00\x05")
    assert row == {name: 5}


def test_images_that_run_past_the_event_are_an_error_not_garbage() -> None:
    assert DECODER is not None
    whole = encode_row({n: None for n in VALUES} | {"id": 7, "s": "abc"})
    with pytest.raises(ValueError, match="past the event"):
        DECODER.decode(whole[:-1])
