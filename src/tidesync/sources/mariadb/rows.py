"""Binlog row images -> exact values, by a function compiled for each table map.

Why generated code: mysql-replication decodes every value through a chain of Python
method calls (80% of the source's time, first profile). Reading the images with one
reader function per column halved that, and then the calls between values were the cost:
a profile of ``bench/mariadb_source.py --changes 200000`` (cProfile) had 65% of the
source's time in that decoding, mostly per-value calls, tuples and the loop over the
columns. So :func:`compile_decoder` writes out, once per table map, one function that
reads a rows event's images straight through with every value in a local variable and
no call for the common types (integers and floats by ``struct``, strings and BLOBs by a
slice and ``decode``, DATE/DATETIME/YEAR by shifts, DECIMAL as one big-endian integer
split into its 9-digit groups), and a copy of that code without null checks for rows
whose null bitmap is all zero. A DECIMAL or DATETIME is built once per distinct stored
value in a rows event (an update's after image repeats most of its before image). TIME,
TIMESTAMP, ENUM, SET, BIT, JSON and GEOMETRY call the readers below. The update diff is
compiled the same way. Column names and encodings reach the generated text only as
``repr`` literals, never as code. With it, and records made per event (``records.py``),
the bench's drain went from 4.2-5.8 to 1.65-2.06 CPU seconds (the ratio to
``mariadb-binlog --verbose`` from 0.05-0.07 to 0.15-0.20; ``stream.py`` has where the rest
goes). ``tests/unit/test_mariadb_rows.py`` checks the generated code
against an encoder written from the formats below.

A table with a column outside these types (MySQL's binary JSON, the pre-5.6 temporal
formats), an event whose images are not FULL, or MySQL's partial JSON updates are
left to mysql-replication (``records.py``). Values are those ``types.py`` defines; the
type matrix test runs both paths and the snapshot's against one expected row.

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
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from typing import Any

from pymysql.charset import charset_by_name
from pymysqlreplication.constants import FIELD_TYPE  # type: ignore[import-untyped]

from tidesync.sources.mariadb.types import ColType

ZERO: Any = object()  # a zero date: the caller applies the zero_dates policy
Reader = Callable[[bytes, int], tuple[Any, int]]
Row = dict[str, Any]
Zeros = dict[int, list[str]]  # a row's index in the decoded list -> its columns that held a zero date

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_INT_WIDTH = {FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4, FIELD_TYPE.LONGLONG: 8}
_INT_FORMAT = {1: "b", 2: "h", 4: "i", 8: "q"}
_TEXT = (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING)

# --- readers of the types the generated code calls ------------------------------


def _fraction(fsp: int) -> tuple[int, int]:
    """(bytes, multiplier to microseconds) of a fractional-seconds part."""
    n = (fsp + 1) // 2
    return n, 10 ** (6 - 2 * n)


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


def encoding_of(col: Any) -> str | None:
    """The Python codec of a table-map column's character set; None for binary columns."""
    name = col.character_set_name
    if name in (None, "binary"):
        return None
    cs = charset_by_name(name)
    return cs.encoding if cs else str(name)


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


def _called(col: Any, ct: ColType) -> Reader | None:
    """The reader of a column the generated code calls; None when this module cannot decode it."""
    t = col.type
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
    if t == FIELD_TYPE.GEOMETRY:
        return _blob(col.length_size, bytes)
    if t == FIELD_TYPE.BLOB and ct.kind == "json":
        enc = encoding_of(col) or "utf-8"
        return _blob(col.length_size, lambda raw: json.loads(raw.decode(enc)))
    return None


# --- the generated decoder ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowDecoder:
    """A table map's compiled decoder: ``decode(images)`` -> (the row images in order, zero dates
    or None when no row had one); ``diff(before, after)`` is ``event.diff_fields`` for two of its images.
    ``full`` is the present-columns bitmap of a FULL image."""

    names: tuple[str, ...]
    full: bytes
    decode: Callable[[bytes], tuple[list[Row], Zeros | None]]
    diff: Callable[[Row, Row], tuple[str, ...]]
    source: str


def _overrun(p: int, end: int) -> None:
    raise ValueError(f"a rows event's images end at byte {p}, past the event's {end}: not the table map's columns")


def _note_zero(zeros: Zeros | None, row: int, name: str) -> Zeros:
    zeros = {} if zeros is None else zeros
    zeros.setdefault(row, []).append(name)
    return zeros


# The payload is padded with 8 zero bytes, so an integer of up to 8 bytes is read with one ``struct`` call,
# also near the end: ``>Q`` at its start, shifted right past the bytes that follow it.
_PAD = bytes(8)
_STRUCTS = {"_bQ": ">Q", "_lH": "<H", "_lI": "<I"}
# DECIMAL digits (up to 65) are scaled exactly whatever the thread's decimal context (default: 28 digits)
_EXACT = Context(prec=100, Emax=MAX_EMAX, Emin=MIN_EMIN)
_NEG_ZERO = Decimal("-0")


def _big_endian(size: int) -> str:
    """The expression of an unsigned big-endian integer of ``size`` bytes at ``p``."""
    if size <= 8:
        return "_bQ(b, p)[0]" + (f" >> {8 * (8 - size)}" if size < 8 else "")
    return f"_frm(b[p:p + {size}], 'big')"


def _length(size: int) -> str:
    """The expression of a little-endian length of ``size`` bytes at ``p``."""
    return {1: "b[p]", 2: "_lH(b, p)[0]", 3: "(_lI(b, p)[0] & 16777215)", 4: "_lI(b, p)[0]"}[size]


def _decimal_lines(v: str, precision: int, scale: int) -> list[str]:
    intg0, intg0x = divmod(precision - scale, 9)
    frac0, frac0x = divmod(scale, 9)
    groups = [(_DIG2BYTES[intg0x], intg0x)] if intg0x else []
    groups += [(4, 9)] * (intg0 + frac0) + ([(_DIG2BYTES[frac0x], frac0x)] if frac0x else [])
    size = sum(nbytes for nbytes, _ in groups)
    top = 1 << (8 * size - 1)
    expr, shift = "", 8 * size
    for nbytes, ndigits in groups:  # the digits as one integer: each group times the power of ten it stands for
        shift -= 8 * nbytes
        group = f"(x >> {shift} & {(1 << 8 * nbytes) - 1})" if shift else f"(x & {(1 << 8 * nbytes) - 1})"
        expr = f"({expr}) * {10**ndigits} + {group}" if expr else group
    return _cached(
        v,
        f"{_big_endian(size)}; p += {size}",
        [
            f"if x & {top}: x ^= {top}; n = {expr}",  # the sign bit set: positive
            # negative: every byte inverted (and a negative zero, which the text path read as -0, stays one)
            f"else: x ^= {((1 << 8 * size) - 1) ^ top}; n = -({expr}) or _NEG_ZERO",
            f"{v} = _scaleb(_dec(n), {-scale}, _EXACT)",
        ],
    )


def _cached(v: str, read: str, build: list[str]) -> list[str]:
    """Lines that read a value's bytes as the integer ``x`` and ``build`` ``v`` from it, once per integer per
    rows event: an update's after image repeats most of its before image, a multi-row insert its defaults."""
    cache = f"c{v[1:]}"
    return (
        [f"k = {read}", f"{v} = {cache}.get(k)", f"if {v} is None:", "    x = k"]
        + ["    " + line for line in build]
        + [f"    {cache}[k] = {v}"]
    )


def _column_lines(i: int, col: Any, ct: ColType, ns: dict[str, Any]) -> list[str] | None:
    """Lines that set ``v{i}`` to the column's value at ``p`` and move ``p`` past it; None: not covered."""
    v, t = f"v{i}", col.type
    zero = [f"if {v} is _ZERO: {v} = None; zeros = _note_zero(zeros, len(out), {ct.name!r})"]
    if t in _INT_WIDTH:
        w = _INT_WIDTH[t]
        if w == 3:
            signed = "" if col.unsigned else f"; {v} -= ({v} & 8388608) << 1"
            return [f"{v} = _lI(b, p)[0] & 16777215; p += 3{signed}"]
        fmt = _INT_FORMAT[w].upper() if col.unsigned else _INT_FORMAT[w]
        ns[f"_u{fmt}"] = struct.Struct("<" + fmt).unpack_from
        return [f"{v} = _u{fmt}(b, p)[0]; p += {w}"]
    if t in (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE):
        fmt, w = ("f", 4) if t == FIELD_TYPE.FLOAT else ("d", 8)
        ns[f"_u{fmt}"] = struct.Struct("<" + fmt).unpack_from
        return [f"{v} = _u{fmt}(b, p)[0]; p += {w}"]
    if t == FIELD_TYPE.YEAR:
        return [f"{v} = b[p]; p += 1", f"if {v}: {v} += 1900"]
    if t in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return [
            "x = _lI(b, p)[0]; p += 3",
            f"{v} = _date(x >> 9 & 32767, x >> 5 & 15, x & 31) if x & 31 and x >> 5 & 15 and x >> 9 & 32767 else _ZERO",
            *zero,
        ]
    if t == FIELD_TYPE.DATETIME2:
        n, mult = _fraction(col.fsp)  # fraction bytes after the 5 of the date and time
        frac = [f"us = (x & {(1 << 8 * n) - 1}) * {mult}; x >>= {8 * n}"] if n else ["us = 0"]
        build = [
            *frac,
            "ym = x >> 22 & 131071; y = ym // 13; m = ym % 13; d = x >> 17 & 31",
            f"{v} = _datetime(y, m, d, x >> 12 & 31, x >> 6 & 63, x & 63, us) if y and m and d else _ZERO",
        ]
        return [*_cached(v, f"{_big_endian(5 + n)}; p += {5 + n}", build), *zero]
    if t == FIELD_TYPE.NEWDECIMAL:
        return _decimal_lines(v, col.precision, col.decimals)
    if t in _TEXT or (t == FIELD_TYPE.BLOB and ct.kind != "json"):
        size = col.length_size if t == FIELD_TYPE.BLOB else (2 if col.max_length > 255 else 1)
        enc = encoding_of(col)
        take = f"b[p:e].decode({enc!r})" if enc is not None else "b[p:e]"
        if enc is None and ct.pad:
            take += f".ljust({ct.pad}, b'\\x00')"  # BINARY(n): the binlog drops trailing zero bytes
        return [f"e = p + {size} + {_length(size)}; p += {size}", f"{v} = {take}; p = e"]
    read_value = _called(col, ct)
    if read_value is None:
        return None
    ns[f"_r{i}"] = read_value
    return [f"{v}, p = _r{i}(b, p)", *(zero if t == FIELD_TYPE.TIMESTAMP2 else [])]


def compile_decoder(columns: list[Any], types: tuple[ColType, ...]) -> RowDecoder | None:
    """The decoder of a table map's ``columns`` (decoded as ``types``); None when one of them is not covered."""
    ns: dict[str, Any] = {name: struct.Struct(fmt).unpack_from for name, fmt in _STRUCTS.items()}
    ns.update(_frm=int.from_bytes, _ZERO=ZERO, _note_zero=_note_zero, _date=dt.date, _datetime=dt.datetime,
              _dec=Decimal, _scaleb=Decimal.scaleb, _EXACT=_EXACT, _NEG_ZERO=_NEG_ZERO, _PAD=_PAD,
              _overrun=_overrun)  # fmt: skip
    per_column = []
    for i, (col, ct) in enumerate(zip(columns, types, strict=True)):
        lines = _column_lines(i, col, ct, ns)
        if lines is None:
            return None
        per_column.append(lines)
    names = tuple(ct.name for ct in types)
    nb = (len(names) + 7) // 8  # bytes of the null bitmap
    no_nulls = "not b[p]" if nb == 1 else f"b[p:p + {nb}] == {bytes(nb)!r}"
    row = "{" + ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names)) + "}"
    caches = "".join(f"; c{i} = {{}}" for i, lines in enumerate(per_column) if lines[0].startswith("k = "))
    src = ["def decode(b):", f"    out = []; zeros = None; append = out.append; p = 0; end = len(b); b += _PAD{caches}"]
    src += ["    while p < end:", f"        if {no_nulls}:", f"            p += {nb}"]
    src += ["            " + line for lines in per_column for line in lines]
    src += [f"            append({row})", "            continue", f"        nulls = b[p:p + {nb}]; p += {nb}"]
    for i, lines in enumerate(per_column):
        src += [f"        if nulls[{i >> 3}] & {1 << (i & 7)}: v{i} = None", "        else:"]
        src += ["            " + line for line in lines]
    src += [f"        append({row})", "    if p != end:", "        _overrun(p, end)", "    return out, zeros"]
    src += ["", "def diff(a, b):", "    c = []"]
    for n in names:
        src += [f"    x = a[{n!r}]; y = b[{n!r}]", f"    if x != y or type(x) is not type(y): c.append({n!r})"]
    text = "\n".join([*src, "    return tuple(c)", ""])
    exec(compile(text, "<tidesync binlog row decoder>", "exec"), ns)  # our own text: see the module docstring
    count = len(names)
    full = bytes([0xFF] * (count // 8)) + (bytes([(1 << (count % 8)) - 1]) if count % 8 else b"")
    return RowDecoder(names, full, ns["decode"], ns["diff"], text)


def event_payload(ev: Any) -> bytes:
    """The rest of a rows event after its header and present-columns bitmap(s): the row images."""
    return bytes(ev.packet.read(ev.event_size - ev.packet.read_bytes))


def full_images(ev: Any, decoder: RowDecoder, update: bool) -> bool:
    """Every column present in the event's images (``binlog_row_image=FULL``)."""
    want = decoder.full
    if bytes(ev.columns_present_bitmap) != want:
        return False
    return not update or bytes(ev.columns_present_bitmap2) == want
