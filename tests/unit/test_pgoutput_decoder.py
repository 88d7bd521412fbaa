"""The pgoutput decoder against a test encoder: round trips, garbage, truncation, and the fast row path."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidesync.errors import SourceError
from tidesync.sources.postgres.pgoutput import (
    STREAMABLE,
    UNCHANGED,
    Begin,
    Binary,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    PgoutputDecodeError,
    Relation,
    RelationColumn,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
    commit_time,
    decode_message,
    decode_tuple,
    lsn_to_str,
    read_tuple,
    str_to_lsn,
)

# --- a test encoder: the protocol as documented, written independently of the decoder


def enc_tuple(values: tuple[Any, ...]) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        elif isinstance(v, Binary):
            out += b"b" + struct.pack(">i", len(v.data)) + v.data
        else:
            out += b"t" + struct.pack(">i", len(v)) + v
    return out


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def encode(msg: Any) -> bytes:
    """pgoutput bytes for a message value; messages with an xid are written as inside a stream."""

    def x(kind: bytes) -> bytes:
        xid = getattr(msg, "xid", None)
        return kind + (
            struct.pack(">I", xid) if xid is not None and kind in (b"R", b"Y", b"I", b"U", b"D", b"T", b"M") else b""
        )

    if isinstance(msg, Begin):
        return b"B" + struct.pack(">QqI", msg.final_lsn, msg.commit_ts, msg.xid)
    if isinstance(msg, Commit):
        return b"C" + struct.pack(">BQQq", msg.flags, msg.commit_lsn, msg.end_lsn, msg.commit_ts)
    if isinstance(msg, Origin):
        return b"O" + struct.pack(">Q", msg.commit_lsn) + cstr(msg.name)
    if isinstance(msg, Relation):
        out = x(b"R") + struct.pack(">I", msg.oid) + cstr(msg.namespace) + cstr(msg.name)
        out += msg.replica_identity.encode() + struct.pack(">h", len(msg.columns))
        for c in msg.columns:
            out += bytes([c.flags]) + cstr(c.name) + struct.pack(">Ii", c.type_oid, c.typmod)
        return out
    if isinstance(msg, Type):
        return x(b"Y") + struct.pack(">I", msg.oid) + cstr(msg.namespace) + cstr(msg.name)
    if isinstance(msg, Insert):
        return x(b"I") + struct.pack(">I", msg.relation_oid) + b"N" + enc_tuple(msg.new)
    if isinstance(msg, Update):
        out = x(b"U") + struct.pack(">I", msg.relation_oid)
        if msg.old_kind is not None:
            out += msg.old_kind.encode() + enc_tuple(msg.old)
        return out + b"N" + enc_tuple(msg.new)
    if isinstance(msg, Delete):
        return x(b"D") + struct.pack(">I", msg.relation_oid) + msg.old_kind.encode() + enc_tuple(msg.old)
    if isinstance(msg, Truncate):
        return (
            x(b"T")
            + struct.pack(">iB", len(msg.relation_oids), msg.options)
            + b"".join(struct.pack(">I", o) for o in msg.relation_oids)
        )
    if isinstance(msg, Message):
        return (
            x(b"M")
            + bytes([1 if msg.transactional else 0])
            + struct.pack(">Q", msg.lsn)
            + cstr(msg.prefix)
            + struct.pack(">i", len(msg.content))
            + msg.content
        )
    if isinstance(msg, StreamStart):
        return b"S" + struct.pack(">IB", msg.xid, 1 if msg.first_segment else 0)
    if isinstance(msg, StreamStop):
        return b"E"
    if isinstance(msg, StreamCommit):
        return b"c" + struct.pack(">IBQQq", msg.xid, msg.flags, msg.commit_lsn, msg.end_lsn, msg.commit_ts)
    if isinstance(msg, StreamAbort):
        return b"A" + struct.pack(">II", msg.xid, msg.subxid)
    raise TypeError(msg)


# --- strategies

u8 = st.integers(0, 255)
u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
name = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
value = st.one_of(st.none(), st.just(UNCHANGED), st.binary(max_size=40), st.builds(Binary, st.binary(max_size=10)))
tuples = st.lists(value, max_size=8).map(tuple)
xids = st.one_of(st.none(), u32)


def messages() -> st.SearchStrategy[Any]:
    column = st.builds(RelationColumn, u8, name, u32, i32)
    return st.one_of(
        st.builds(Begin, u64, i64, u32),
        st.builds(Commit, u8, u64, u64, i64),
        st.builds(Origin, u64, name),
        st.builds(Relation, xids, u32, name, name, st.sampled_from("dnfi"), st.lists(column, max_size=6).map(tuple)),
        st.builds(Type, xids, u32, name, name),
        st.builds(Insert, xids, u32, tuples),
        st.one_of(
            st.builds(Update, xids, u32, st.none(), st.none(), tuples),
            st.builds(Update, xids, u32, st.sampled_from("KO"), tuples, tuples),
        ),
        st.builds(Delete, xids, u32, st.sampled_from("KO"), tuples),
        st.builds(Truncate, xids, u8, st.lists(u32, max_size=5).map(tuple)),
        st.builds(Message, xids, st.booleans(), u64, name, st.binary(max_size=30)),
        st.builds(StreamStart, u32, st.booleans()),
        st.just(StreamStop()),
        st.builds(StreamCommit, u32, u8, u64, u64, i64),
        st.builds(StreamAbort, u32, u32),
    )


def in_stream(msg: Any) -> bool:
    return getattr(msg, "xid", None) is not None and type(msg) in (
        Relation,
        Type,
        Insert,
        Update,
        Delete,
        Truncate,
        Message,
    )


@given(messages())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_message_round_trips(msg: Any) -> None:
    data = encode(msg)
    assert decode_message(data, in_stream=in_stream(msg)) == msg


@given(messages())
@settings(max_examples=300)
def test_every_truncated_message_raises_a_decode_error(msg: Any) -> None:
    data = encode(msg)
    for cut in range(len(data)):
        with pytest.raises(PgoutputDecodeError):
            decode_message(data[:cut], in_stream=in_stream(msg))


@given(messages(), st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_an_error(msg: Any, extra: bytes) -> None:
    with pytest.raises(PgoutputDecodeError, match="trailing"):
        decode_message(encode(msg) + extra, in_stream=in_stream(msg))


@given(st.binary(max_size=64), st.booleans())
@settings(max_examples=2000)
def test_garbage_never_raises_anything_but_a_decode_error(data: bytes, stream: bool) -> None:
    try:
        decode_message(data, in_stream=stream)
    except PgoutputDecodeError as exc:
        assert isinstance(exc, SourceError)


@given(st.sampled_from(sorted(STREAMABLE)), st.binary(max_size=40))
def test_garbage_after_a_valid_type_byte(kind: int, rest: bytes) -> None:
    for stream in (False, True):
        try:
            decode_message(bytes([kind]) + rest, in_stream=stream)
        except PgoutputDecodeError:
            pass


def test_null_unchanged_text_and_binary_stay_distinct() -> None:
    data = enc_tuple((None, UNCHANGED, b"", b"x", Binary(b"\x00\x01")))
    values, end = decode_tuple(data, 0)
    assert values == (None, UNCHANGED, b"", b"x", Binary(b"\x00\x01"))
    assert end == len(data)
    assert values[0] is None and values[1] is UNCHANGED and values[1] is not None


def test_unknown_message_type_and_tuple_kind() -> None:
    with pytest.raises(PgoutputDecodeError, match="unknown pgoutput message type 'Z'"):
        decode_message(b"Z")
    with pytest.raises(PgoutputDecodeError, match="tuple column kind"):
        decode_message(b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"q")
    with pytest.raises(PgoutputDecodeError):
        decode_message(b"")


def test_lsn_text_and_timestamps() -> None:
    assert lsn_to_str(0x16B374D848) == "16/B374D848"
    assert str_to_lsn("16/B374D848") == 0x16B374D848
    assert commit_time(0) == 946_684_800.0
    assert commit_time(1_500_000) == 946_684_801.5


# --- the fast row path agrees with the reference decoder plus converters


def _conv(b: bytes) -> Any:
    return ("c", b)


@given(st.lists(st.one_of(st.none(), st.just(UNCHANGED), st.binary(max_size=20)), max_size=8))
def test_read_tuple_matches_decode_tuple(values: list[Any]) -> None:
    data = b"prefix" + enc_tuple(tuple(values)) + b"suffix"
    cols = tuple((f"c{i}", _conv) for i in range(len(values)))
    row, missing, end = read_tuple(data, 6, cols)
    ref, ref_end = decode_tuple(data, 6)
    assert end == ref_end == len(data) - 6
    expect = {f"c{i}": (None if v is None else _conv(v)) for i, v in enumerate(ref) if v is not UNCHANGED}
    assert row == expect
    assert (missing or []) == [f"c{i}" for i, v in enumerate(ref) if v is UNCHANGED]


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=5), st.data())
def test_read_tuple_rejects_truncated_tuples(values: list[bytes], data: st.DataObject) -> None:
    raw = enc_tuple(tuple(values))
    cut = data.draw(st.integers(0, len(raw) - 1))
    cols = tuple((f"c{i}", bytes.decode) for i in range(len(values)))
    with pytest.raises(PgoutputDecodeError):
        read_tuple(raw[:cut], 0, cols)


def test_read_tuple_keeps_text_when_a_converter_refuses() -> None:
    raw = enc_tuple((b"12", b"not a number"))
    row, missing, _ = read_tuple(raw, 0, (("a", int), ("b", int)))
    assert row == {"a": 12, "b": "not a number"}
    assert missing is None


def test_read_tuple_column_count_mismatch() -> None:
    with pytest.raises(PgoutputDecodeError, match="columns"):
        read_tuple(enc_tuple((b"1",)), 0, (("a", int), ("b", int)))
