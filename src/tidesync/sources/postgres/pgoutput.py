"""pgoutput, the built-in logical decoding plugin's binary protocol: bytes in, message values out.

Pure: no I/O, no clock, no database. Covers protocol versions 1 and 2 (v2 adds
streamed in-progress transactions: Stream Start/Stop/Commit/Abort, and a
transaction id in front of every message sent inside a stream block).

Tuple data keeps the four column states apart, because they mean different
things downstream::

    None        'n'  SQL NULL
    UNCHANGED   'u'  an unchanged TOASTed value the server did not send
    bytes       't'  the value in text format (the type's output function)
    Binary      'b'  the value in binary format (only with the ``binary`` option)

Garbage raises :class:`PgoutputDecodeError` (a :class:`~tidesync.errors.SourceError`),
never IndexError or struct.error, so a corrupted stream stops the source with
a message instead of a traceback from deep inside.

One reader of TupleData serves both uses. :func:`read_tuple` reads a tuple
straight into ``{column: value}``, calling one converter per column as it
goes: the source's hot path (the assembler) uses it with the relation's type
converters, together with the header layouts below (``BEGIN``, ``COMMIT``,
``U32`` for a change's relation oid), so it never builds a message value per
row. :func:`decode_tuple`, behind every message value here, is the same
reader with no conversion, so the two cannot disagree about the wire format.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tidesync.errors import SourceError

PG_EPOCH_OFFSET: Final = 946_684_800  # seconds from 1970-01-01 to 2000-01-01 (UTC)


class PgoutputDecodeError(SourceError):
    """A pgoutput message could not be decoded (corrupt stream or unsupported protocol)."""


class _Unchanged:
    """The 'u' state: an unchanged TOASTed value the server did not send."""

    __slots__ = ()
    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


@dataclass(frozen=True, slots=True)
class Binary:
    """A column value sent in binary format."""

    data: bytes


Value = None | _Unchanged | bytes | Binary
TupleData = tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record: every change of the transaction is ordered by it
    commit_ts: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    flags: int  # bit 1: part of the replica identity key
    name: str
    type_oid: int
    typmod: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    xid: int | None
    oid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True, slots=True)
class Type:
    xid: int | None
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    xid: int | None
    relation_oid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    xid: int | None
    relation_oid: int
    old_kind: str | None  # 'K' (key columns only), 'O' (whole old row) or None
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    xid: int | None
    relation_oid: int
    old_kind: str  # 'K' or 'O'
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    xid: int | None
    options: int  # bit 1: CASCADE, bit 2: RESTART IDENTITY
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Message:
    xid: int | None
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    subxid: int


PgoutputMessage = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | Message
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
)

# Message types that carry a transaction id when sent inside a stream block.
STREAMABLE: Final = frozenset(b"RYIUDTM")

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
U32: Final = struct.Struct(">I")  # a relation oid, a transaction id
_U32 = U32
_U64 = struct.Struct(">Q")
BEGIN: Final = struct.Struct(">QqI")  # final_lsn, commit_ts, xid
COMMIT: Final = struct.Struct(">BQQq")  # flags, commit_lsn, end_lsn, commit_ts
_BEGIN = BEGIN
_COMMIT = COMMIT
_STREAM_COMMIT = struct.Struct(">IBQQq")
_REL_COL_TAIL = struct.Struct(">Ii")
_unpack_i16 = _I16.unpack_from
_unpack_u32 = _U32.unpack_from


def commit_time(commit_ts: int) -> float:
    """A pgoutput timestamp (µs since 2000-01-01 UTC) as seconds since the Unix epoch."""
    return commit_ts / 1_000_000 + PG_EPOCH_OFFSET


def lsn_to_str(lsn: int) -> str:
    """``16/B374D848`` form, as Postgres prints LSNs."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def str_to_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)  # ValueError when missing: translated by decode_message
    return data[pos:end].decode("utf-8"), end + 1


Converter = Callable[[bytes], Any]


def read_tuple(
    data: bytes, pos: int, cols: tuple[tuple[Any, Converter], ...], binary: Converter = bytes
) -> tuple[dict[Any, Any], list[Any] | None, int]:
    """Read TupleData at ``pos`` straight into ``{name: converter(text)}`` for ``cols`` (name, converter).

    Returns the row, the names of the unchanged-TOAST ('u') columns (None when
    there are none; they are absent from the row) and the position after the
    tuple. NULL ('n') is None; a binary value ('b') goes through ``binary``.
    A converter that refuses its value (ValueError, TypeError, ArithmeticError)
    gets the tuple read again with such values kept as text (str), so one odd
    value never stops a stream. Raises :class:`PgoutputDecodeError` on
    malformed data, including a column count other than ``len(cols)``.
    """
    origin = pos
    try:
        (n,) = _unpack_i16(data, pos)
        if n != len(cols):
            raise PgoutputDecodeError(f"tuple has {n} columns, the relation {len(cols)}")
        pos += 2
        row: dict[Any, Any] = {}
        missing: list[Any] | None = None
        for name, conv in cols:
            kind = data[pos]
            if kind == 116:  # 't'
                start = pos + 5
                # read unsigned: a negative length becomes one past the end, caught below
                pos = start + _unpack_u32(data, pos + 1)[0]
                row[name] = conv(data[start:pos])
            elif kind == 110:  # 'n'
                row[name] = None
                pos += 1
            elif kind == 117:  # 'u'
                if missing is None:
                    missing = [name]
                else:
                    missing.append(name)
                pos += 1
            elif kind == 98:  # 'b'
                start = pos + 5
                pos = start + _unpack_u32(data, pos + 1)[0]
                row[name] = binary(data[start:pos])
            else:
                raise PgoutputDecodeError(f"unknown tuple column kind {kind!r}")
        if pos > len(data):
            raise PgoutputDecodeError("a column value runs past the end of the message")
        return row, missing, pos
    except PgoutputDecodeError:
        raise
    except (IndexError, struct.error) as exc:
        raise PgoutputDecodeError(f"malformed tuple data: {exc}") from exc
    except (ValueError, TypeError, ArithmeticError):
        return _read_tuple_lenient(data, origin, cols, binary)


def _read_tuple_lenient(
    data: bytes, pos: int, cols: tuple[tuple[Any, Converter], ...], binary: Converter
) -> tuple[dict[Any, Any], list[Any] | None, int]:
    raw, missing, end = read_tuple(data, pos, tuple((name, bytes) for name, _ in cols), Binary)
    row: dict[Any, Any] = {}
    for name, conv in cols:
        value = raw.get(name, UNCHANGED)
        if value is None:
            row[name] = None
        elif isinstance(value, Binary):
            row[name] = binary(value.data)
        elif isinstance(value, bytes):
            try:
                row[name] = conv(value)
            except (ValueError, TypeError, ArithmeticError):
                row[name] = value.decode("utf-8", "replace")
    return row, missing, end


_RAW: dict[int, tuple[tuple[int, Converter], ...]] = {}


def decode_tuple(data: bytes, pos: int) -> tuple[TupleData, int]:
    """TupleData at ``pos``: the column values as sent, and the position after them.

    :func:`read_tuple` with no conversion: text values stay bytes, binary ones
    become :class:`Binary`, unchanged ones :data:`UNCHANGED`.
    """
    try:
        (n,) = _unpack_i16(data, pos)
    except struct.error as exc:
        raise PgoutputDecodeError(f"malformed tuple data: {exc}") from exc
    if n < 0:
        raise PgoutputDecodeError(f"negative column count {n} in tuple data")
    cols = _RAW.get(n)
    if cols is None:
        cols = _RAW[n] = tuple((i, bytes) for i in range(n))
    row, _missing, end = read_tuple(data, pos, cols, Binary)
    return tuple([row.get(i, UNCHANGED) for i in range(n)]), end


def decode_message(data: bytes, *, in_stream: bool = False) -> PgoutputMessage:
    """Decode one pgoutput message.

    ``in_stream`` is true between Stream Start and Stream Stop, where the
    messages of :data:`STREAMABLE` types carry a transaction id.
    Raises :class:`PgoutputDecodeError` for anything that is not a complete,
    valid message (including trailing bytes).
    """
    try:
        msg, end = _decode(bytes(data), in_stream)
    except PgoutputDecodeError:
        raise
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as exc:
        kind = chr(data[0]) if data else "empty"
        raise PgoutputDecodeError(f"malformed pgoutput message {kind!r}: {exc}") from exc
    if end != len(data):
        raise PgoutputDecodeError(
            f"{len(data) - end} unexpected trailing bytes after pgoutput message {chr(data[0])!r}"
        )
    return msg


def _decode(data: bytes, in_stream: bool) -> tuple[PgoutputMessage, int]:
    kind = data[0]
    pos = 1
    xid: int | None = None
    if in_stream and kind in STREAMABLE:
        (xid,) = _U32.unpack_from(data, pos)
        pos += 4
    if kind == 0x42:  # 'B'
        final_lsn, ts, bxid = _BEGIN.unpack_from(data, pos)
        return Begin(final_lsn, ts, bxid), pos + _BEGIN.size
    if kind == 0x43:  # 'C'
        flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(data, pos)
        return Commit(flags, commit_lsn, end_lsn, ts), pos + _COMMIT.size
    if kind == 0x49:  # 'I'
        (oid,) = _U32.unpack_from(data, pos)
        if data[pos + 4] != 0x4E:
            raise PgoutputDecodeError(f"insert: expected 'N', got {data[pos + 4]!r}")
        new, pos = decode_tuple(data, pos + 5)
        return Insert(xid, oid, new), pos
    if kind == 0x55:  # 'U'
        (oid,) = _U32.unpack_from(data, pos)
        pos += 4
        old_kind: str | None = None
        old: TupleData | None = None
        marker = data[pos]
        if marker in (0x4B, 0x4F):  # 'K', 'O'
            old_kind = chr(marker)
            old, pos = decode_tuple(data, pos + 1)
            marker = data[pos]
        if marker != 0x4E:
            raise PgoutputDecodeError(f"update: expected 'N', got {marker!r}")
        new, pos = decode_tuple(data, pos + 1)
        return Update(xid, oid, old_kind, old, new), pos
    if kind == 0x44:  # 'D'
        (oid,) = _U32.unpack_from(data, pos)
        marker = data[pos + 4]
        if marker not in (0x4B, 0x4F):
            raise PgoutputDecodeError(f"delete: expected 'K' or 'O', got {marker!r}")
        old, pos = decode_tuple(data, pos + 5)
        return Delete(xid, oid, chr(marker), old), pos
    if kind == 0x52:  # 'R'
        (oid,) = _U32.unpack_from(data, pos)
        namespace, pos = _cstring(data, pos + 4)
        name, pos = _cstring(data, pos)
        ident = chr(data[pos])
        (ncols,) = _I16.unpack_from(data, pos + 1)
        if ncols < 0:
            raise PgoutputDecodeError(f"relation {name!r}: negative column count {ncols}")
        pos += 3
        cols: list[RelationColumn] = []
        for _ in range(ncols):
            flags = data[pos]
            cname, pos = _cstring(data, pos + 1)
            type_oid, typmod = _REL_COL_TAIL.unpack_from(data, pos)
            pos += _REL_COL_TAIL.size
            cols.append(RelationColumn(flags, cname, type_oid, typmod))
        return Relation(xid, oid, namespace, name, ident, tuple(cols)), pos
    if kind == 0x59:  # 'Y'
        (oid,) = _U32.unpack_from(data, pos)
        namespace, pos = _cstring(data, pos + 4)
        name, pos = _cstring(data, pos)
        return Type(xid, oid, namespace, name), pos
    if kind == 0x4F:  # 'O'
        (lsn,) = _U64.unpack_from(data, pos)
        name, pos = _cstring(data, pos + 8)
        return Origin(lsn, name), pos
    if kind == 0x54:  # 'T'
        (n,) = _I32.unpack_from(data, pos)
        if n < 0:
            raise PgoutputDecodeError(f"truncate: negative relation count {n}")
        options = data[pos + 4]
        pos += 5
        oids = struct.unpack_from(f">{n}I", data, pos)
        return Truncate(xid, options, oids), pos + 4 * n
    if kind == 0x4D:  # 'M'
        flags = data[pos]
        (lsn,) = _U64.unpack_from(data, pos + 1)
        prefix, pos = _cstring(data, pos + 9)
        (length,) = _I32.unpack_from(data, pos)
        if length < 0 or pos + 4 + length > len(data):
            raise PgoutputDecodeError(f"message content of {length} bytes runs past the end")
        content = data[pos + 4 : pos + 4 + length]
        return Message(xid, bool(flags & 1), lsn, prefix, content), pos + 4 + length
    if kind == 0x53:  # 'S'
        (sxid,) = _U32.unpack_from(data, pos)
        return StreamStart(sxid, data[pos + 4] == 1), pos + 5
    if kind == 0x45:  # 'E'
        return StreamStop(), pos
    if kind == 0x63:  # 'c'
        sxid, flags, commit_lsn, end_lsn, ts = _STREAM_COMMIT.unpack_from(data, pos)
        return StreamCommit(sxid, flags, commit_lsn, end_lsn, ts), pos + _STREAM_COMMIT.size
    if kind == 0x41:  # 'A'
        sxid, subxid = struct.unpack_from(">II", data, pos)
        return StreamAbort(sxid, subxid), pos + 8
    raise PgoutputDecodeError(f"unknown pgoutput message type {chr(kind)!r} (0x{kind:02x})")
