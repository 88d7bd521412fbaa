"""A fast decoder of binlog row images: bytes -> exact values, one precompiled reader per column.

mysql-replication decodes every value through a chain of Python method calls
(profile: 80% of the source's time). For the types below this module reads the
row images of an event itself, from one ``bytes`` object with ``int.from_bytes``
and ``struct.unpack_from``, producing the same values as ``types.py`` defines
(the type matrix test runs both this and the snapshot path against one expected
row). A table with a column outside this list, an event whose images are not
FULL, or MySQL's partial JSON updates are left to mysql-replication.

Formats (MySQL's ``log_event.cc``/``my_time.cc``, which MariaDB writes the same):
integers little-endian; FLOAT/DOUBLE IEEE little-endian; DECIMAL the packed
9-digits-per-4-bytes form with the sign in the top bit (negative: every byte
inverted); DATE 3 bytes LE ``year<<9 | month<<5 | day``; DATETIME2 5 bytes BE
``1 sign bit, 17 bits year*13+month, 5 day, 5 hour, 6 minute, 6 second`` plus
``(fsp+1)//2`` fraction bytes; TIMESTAMP2 4 bytes BE seconds plus fraction; TIME2
3 bytes BE offset by 0x800000 plus a signed fraction; strings and BLOBs a 1-4 byte
LE length (VARCHAR: 2 bytes when the column may hold more than 255 bytes); ENUM an
index, SET a bitmask (1-8 bytes LE); BIT big-endian; YEAR one byte, 1900-based.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pymysql.charset import charset_by_name
from pymysqlreplication.constants import FIELD_TYPE  # type: ignore[import-untyped]

from tidesync.sources.mariadb.types import ColType

ZERO: Any = object()  # a zero date: the caller applies the zero_dates policy
Reader = Callable[[bytes, int], tuple[Any, int]]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_FLOAT = struct.Struct("<f").unpack_from
_DOUBLE = struct.Struct("<d").unpack_from


def _int(width: int, signed: bool) -> Reader:
    frm = int.from_bytes

    def read(b: bytes, p: int) -> tuple[Any, int]:
        e = p + width
        return frm(b[p:e], "little", signed=signed), e

    return read


def _float(b: bytes, p: int) -> tuple[Any, int]:
    return _FLOAT(b, p)[0], p + 4


def _double(b: bytes, p: int) -> tuple[Any, int]:
    return _DOUBLE(b, p)[0], p + 8


def _year(b: bytes, p: int) -> tuple[Any, int]:
    v = b[p]
    return (v + 1900 if v else 0), p + 1


def _decimal(precision: int, scale: int) -> Reader:
    intg = precision - scale
    intg0, intg0x = divmod(intg, 9)
    frac0, frac0x = divmod(scale, 9)
    lead, tail = _DIG2BYTES[intg0x], _DIG2BYTES[frac0x]
    size = intg0 * 4 + lead + frac0 * 4 + tail
    # (start, end, zero-padded width) of each digit group, integer part then fraction
    groups = [(0, lead, 0)] if lead else []
    o = lead
    for _ in range(intg0):
        groups.append((o, o + 4, 9))
        o += 4
    n_int = len(groups)
    for _ in range(frac0):
        groups.append((o, o + 4, 9))
        o += 4
    if tail:
        groups.append((o, o + tail, frac0x))
    frm = int.from_bytes
    flip = 0x80

    def read(b: bytes, p: int) -> tuple[Any, int]:
        raw = b[p : p + size]
        positive = raw[0] & 0x80
        raw = bytes([raw[0] ^ flip]) + raw[1:]  # the sign bit off
        if not positive:  # a negative number is stored with every byte inverted
            raw = bytes(x ^ 0xFF for x in raw)
        digits = [
            str(frm(raw[s:e], "big")).zfill(width) if width else str(frm(raw[s:e], "big")) for s, e, width in groups
        ]
        text = ("".join(digits[:n_int]) or "0") + ("." + "".join(digits[n_int:]) if scale else "")
        return Decimal(text if positive else "-" + text), p + size

    return read


def _fraction(fsp: int) -> tuple[int, int]:
    """(bytes, multiplier to microseconds) of a fractional-seconds part."""
    n = (fsp + 1) // 2
    return n, 10 ** (6 - 2 * n)


def _date(b: bytes, p: int) -> tuple[Any, int]:
    v = b[p] | b[p + 1] << 8 | b[p + 2] << 16
    day, month, year = v & 31, (v >> 5) & 15, v >> 9
    if not (day and month and year):
        return ZERO, p + 3
    return dt.date(year, month, day), p + 3


def _datetime2(fsp: int) -> Reader:
    n, mult = _fraction(fsp)
    frm = int.from_bytes

    def read(b: bytes, p: int) -> tuple[Any, int]:
        v = frm(b[p : p + 5], "big")
        us = frm(b[p + 5 : p + 5 + n], "big") * mult if n else 0
        ym = (v >> 22) & 0x1FFFF
        year, month = divmod(ym, 13)
        day = (v >> 17) & 31
        if not (year and month and day):
            return ZERO, p + 5 + n
        return dt.datetime(year, month, day, (v >> 12) & 31, (v >> 6) & 63, v & 63, us), p + 5 + n

    return read


def _timestamp2(fsp: int) -> Reader:
    n, mult = _fraction(fsp)
    frm = int.from_bytes
    delta = dt.timedelta

    def read(b: bytes, p: int) -> tuple[Any, int]:
        sec = frm(b[p : p + 4], "big")
        us = frm(b[p + 4 : p + 4 + n], "big") * mult if n else 0
        if not sec and not us:
            return ZERO, p + 4 + n  # TIMESTAMP cannot hold the epoch itself: 0 is the zero date
        return _EPOCH + delta(seconds=sec, microseconds=us), p + 4 + n

    return read


def _time2(fsp: int) -> Reader:
    n, _ = _fraction(fsp)
    frm = int.from_bytes

    def read(b: bytes, p: int) -> tuple[Any, int]:
        # MySQL's my_time_packed_from_binary: a packed value (hms << 24 | microseconds), signed.
        if n == 3:
            packed = frm(b[p : p + 6], "big") - 0x800000000000
        else:
            intpart = frm(b[p : p + 3], "big") - 0x800000
            frac = frm(b[p + 3 : p + 3 + n], "big") if n else 0
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x100 if n == 1 else 0x10000
            packed = (intpart << 24) + frac * (10000 if n == 1 else 100)
        sign = -1 if packed < 0 else 1
        packed = abs(packed)
        hms, us = packed >> 24, packed % (1 << 24)
        value = dt.timedelta(hours=(hms >> 12) % 1024, minutes=(hms >> 6) % 64, seconds=hms % 64, microseconds=us)
        return (-value if sign < 0 else value), p + 3 + n

    return read


def _blob(length_size: int, then: Callable[[bytes], Any]) -> Reader:
    frm = int.from_bytes

    def read(b: bytes, p: int) -> tuple[Any, int]:
        size = frm(b[p : p + length_size], "little")
        s = p + length_size
        return then(b[s : s + size]), s + size

    return read


def _encoding(col: Any) -> str | None:
    name = col.character_set_name
    if name in (None, "binary"):
        return None
    cs = charset_by_name(name)
    return cs.encoding if cs else str(name)


def _text(encoding: str) -> Callable[[bytes], Any]:
    return lambda raw: raw.decode(encoding)


def _set(members: tuple[str, ...], size: int) -> Reader:
    def read(b: bytes, p: int) -> tuple[Any, int]:
        mask = int.from_bytes(b[p : p + size], "little")
        return ",".join(m for i, m in enumerate(members) if mask >> i & 1), p + size

    return read


def _enum(values: list[str], size: int) -> Reader:
    def read(b: bytes, p: int) -> tuple[Any, int]:
        i = int.from_bytes(b[p : p + size], "little")
        return (values[i] if i < len(values) else ""), p + size

    return read


def _bit(nbytes: int, single: bool) -> Reader:
    def read(b: bytes, p: int) -> tuple[Any, int]:
        v = int.from_bytes(b[p : p + nbytes], "big")
        return (v == 1 if single else v), p + nbytes

    return read


def column_reader(col: Any, ct: ColType) -> Reader | None:
    """The reader of one table-map column (``col``) decoded as ``ct``; None when this module cannot."""
    t = col.type
    ints = {FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4, FIELD_TYPE.LONGLONG: 8}
    if t in ints:
        return _int(ints[t], not col.unsigned)
    if t == FIELD_TYPE.FLOAT:
        return _float
    if t == FIELD_TYPE.DOUBLE:
        return _double
    if t == FIELD_TYPE.YEAR:
        return _year
    if t == FIELD_TYPE.NEWDECIMAL:
        return _decimal(col.precision, col.decimals)
    if t in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return _date
    if t == FIELD_TYPE.DATETIME2:
        return _datetime2(col.fsp)
    if t == FIELD_TYPE.TIMESTAMP2:
        return _timestamp2(col.fsp)
    if t == FIELD_TYPE.TIME2:
        return _time2(col.fsp)
    if t == FIELD_TYPE.ENUM and col.enum_values:
        return _enum(list(col.enum_values), col.size)
    if t == FIELD_TYPE.SET and col.set_values is not None:
        return _set(tuple(col.set_values), col.size)
    if t == FIELD_TYPE.BIT:
        return _bit(col.bytes, col.bits == 1)
    if t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING):
        size = 2 if col.max_length > 255 else 1
        enc = _encoding(col)
        if enc is None:
            pad = ct.pad
            return _blob(size, (lambda raw: bytes(raw).ljust(pad, b"\x00")) if pad else bytes)
        return _blob(size, _text(enc))
    if t in (FIELD_TYPE.BLOB, FIELD_TYPE.GEOMETRY):
        enc = _encoding(col)
        if ct.kind == "json":
            return _blob(col.length_size, lambda raw: json.loads(raw.decode(enc or "utf-8")))
        return _blob(col.length_size, bytes if enc is None or t == FIELD_TYPE.GEOMETRY else _text(enc))
    return None


class RowImages:
    """Decodes the row images of one table's events; built per table map (see :func:`rows_decoder`)."""

    def __init__(self, names: tuple[str, ...], readers: list[Reader]) -> None:
        self.names = names
        # (name, reader, byte and bit of the column in the null bitmap)
        self.cols = [(n, r, i >> 3, 1 << (i & 7)) for i, (n, r) in enumerate(zip(names, readers, strict=True))]
        self.null_bytes = (len(names) + 7) // 8
        self.full = bytes([0xFF] * (len(names) // 8)) + (
            bytes([(1 << (len(names) % 8)) - 1]) if len(names) % 8 else b""
        )

    def image(self, b: bytes, p: int) -> tuple[dict[str, Any], list[str], int]:
        """One row image at ``p``: (row, names of the columns holding a zero date, the offset after it)."""
        nb = self.null_bytes
        nulls = b[p : p + nb]
        p += nb
        row: dict[str, Any] = {}
        zero: list[str] = []
        for name, read, at, bit in self.cols:
            if nulls[at] & bit:
                row[name] = None
                continue
            v, p = read(b, p)
            if v is ZERO:
                zero.append(name)
                v = None
            row[name] = v
        return row, zero, p


def rows_decoder(columns: list[Any], types: tuple[ColType, ...]) -> RowImages | None:
    """A decoder for a table map's columns, or None when one of them is not covered here."""
    readers = []
    for col, ct in zip(columns, types, strict=True):
        r = column_reader(col, ct)
        if r is None:
            return None
        readers.append(r)
    return RowImages(tuple(ct.name for ct in types), readers)


def event_payload(ev: Any) -> bytes:
    """The rest of a rows event after its header and present-columns bitmap(s): the row images."""
    return bytes(ev.packet.read(ev.event_size - ev.packet.read_bytes))


def full_images(ev: Any, decoder: RowImages, update: bool) -> bool:
    """Every column present in the event's images (``binlog_row_image=FULL``)."""
    want = decoder.full
    if bytes(ev.columns_present_bitmap) != want:
        return False
    return not update or bytes(ev.columns_present_bitmap2) == want
