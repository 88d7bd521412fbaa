"""The one type that flows: :class:`ChangeEvent`, and the :class:`Batch` that carries it.

A ChangeEvent is an immutable msgspec Struct: creating one costs well under a
microsecond, and it serialises to msgpack (type-preserving, for the state store)
and JSON (for people and for webhooks) without a schema step.

Positions
    A position is a tuple of ints and strings owned by the source that produced
    it (Postgres: ``(commit_lsn, index_in_tx)``; SQLite change log: ``(seq,)``).
    Positions of one source compare with ``<`` in source order; positions of
    different sources are never compared. Positions serialise as JSON lists.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

Op = Literal["insert", "update", "delete", "snapshot", "truncate"]
INSERT: Final = "insert"
UPDATE: Final = "update"
DELETE: Final = "delete"
SNAPSHOT: Final = "snapshot"
TRUNCATE: Final = "truncate"
OPS: Final = frozenset({INSERT, UPDATE, DELETE, SNAPSHOT, TRUNCATE})

Position = tuple[Any, ...]
Key = tuple[Any, ...]
Row = dict[str, Any]
RecordVersion = tuple[float, str]  # (created or version number, event id): orders one record's versions
StateT = TypeVar("StateT")


class ChangeEvent(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One change of one record.

    ``changed`` names the fields an update changed; unchanged fields are never
    written to a destination. For inserts and snapshot rows it is None, meaning
    "every field in ``after``". A field that the source could not provide (an
    unchanged TOASTed column in Postgres) is absent from ``after`` and from
    ``changed``: absent means unknown, ``None`` means SQL NULL.

    ``committed_at`` is the source's commit time in seconds since the epoch
    (UTC); every latency measurement starts there.
    """

    entity: str
    key: Key
    op: str
    before: Row | None = None
    after: Row | None = None
    changed: tuple[str, ...] | None = None
    position: Position = ()
    committed_at: float = 0.0
    origin: str | None = None
    txid: int | None = None

    @property
    def row(self) -> Row:
        """The newest known state of the record: ``after``, else ``before``."""
        if self.after is not None:
            return self.after
        return self.before or {}

    def fields_to_write(self) -> tuple[str, ...]:
        """The fields a destination must write for this event."""
        if self.changed is not None:
            return self.changed
        return tuple(self.after) if self.after else ()

    def replace(self, **changes: Any) -> ChangeEvent:
        return msgspec.structs.replace(self, **changes)


def diff_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the fields whose value differs between two row images, in ``after`` order."""
    if before is None:
        return tuple(after)
    missing = object()
    return tuple(k for k, v in after.items() if before.get(k, missing) != v or type(before.get(k)) is not type(v))


@dataclass(slots=True)
class Batch(Generic[StateT]):
    """Events moving between stages, in source order.

    ``position`` is the checkpoint the source may resume *after* once every
    event in this batch, and in every earlier batch, is durably handled. It is
    None when the batch ends inside a source transaction that cannot be
    resumed from (the next batch will carry the position).

    ``state`` holds the source's own state changes (a
    :class:`~tidesync.state.store.StateChanges`: shadow rows, counters);
    the engine commits them in the same state-store transaction as this
    batch's checkpoint (so a source's ``read`` returns
    ``Batch[StateChanges]``, see :class:`tidesync.protocols.Source`).
    ``rejected`` holds records the source read but could not turn into an
    event, as ``(placeholder event, reason)``: the engine
    dead-letters them as it does events a transform rejects. ``versions`` is
    empty, or holds each event's :data:`RecordVersion` (None where the sender
    gives none), aligned with ``events``; a hybrid source matches on them.
    """

    events: list[ChangeEvent]
    position: Position | None = None
    read_at: float = 0.0
    # A StateChanges or None, named through the type parameter: importing it here, even for type
    # checking only, would make this module and tidesync.state.store (which builds on it) a circle.
    state: StateT | None = None
    rejected: list[tuple[ChangeEvent, str]] = field(default_factory=list)
    versions: list[RecordVersion | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)


# --- serialisation ---------------------------------------------------------
#
# msgpack keeps exact Python types through msgpack extension codes, because the
# dead-letter queue and shadow state must give back the Decimal, datetime or
# UUID the source produced, not its string form. msgspec encodes these natively
# as strings, so values are tagged before encoding (a walk that descends only
# into containers; scalars of JSON types are passed through untouched).
#
# Nesting is bounded: msgspec encodes and decodes containers by recursion in C,
# which shares Python's recursion limit, so a value nested a thousand levels
# deep would raise RecursionError from wherever it happens to be encoded. Every
# codec here refuses a value nested deeper than MAX_DEPTH containers with
# ValueTooDeep instead (a ValueError: the caller dead-letters that one value);
# a value that passes also decodes, and also encodes as JSON.

MAX_DEPTH: Final = 200


class ValueTooDeep(ValueError):
    """A value nests containers (dict, list, tuple) deeper than :data:`MAX_DEPTH`; it cannot be encoded."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        self.limit = limit
        super().__init__(f"value nested deeper than {limit} levels")


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`ValueTooDeep` if ``value`` nests more than ``limit`` containers. Iterative, never recurses."""
    t = type(value)
    if t is not dict and t is not list and t is not tuple:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            raise ValueTooDeep(limit)
        for child in node.values() if type(node) is dict else node:
            c = type(child)
            if c is dict or c is list or c is tuple:
                push((child, depth + 1))


_EXT_DECIMAL = 1
_EXT_UUID = 2
_EXT_DATETIME = 3
_EXT_DATE = 4
_EXT_TIME = 5
_EXT_TIMEDELTA = 6
_EXT_TUPLE = 7

_TAGGERS: dict[type, tuple[int, Any]] = {
    Decimal: (_EXT_DECIMAL, str),
    uuid.UUID: (_EXT_UUID, lambda v: v.bytes),
    dt.datetime: (_EXT_DATETIME, dt.datetime.isoformat),
    dt.date: (_EXT_DATE, dt.date.isoformat),
    dt.time: (_EXT_TIME, dt.time.isoformat),
    dt.timedelta: (_EXT_TIMEDELTA, lambda v: f"{v.days}:{v.seconds}:{v.microseconds}"),
}
# Types msgspec encodes as they are: no call to _tag for them (the common case in a row).
_PLAIN: Final = frozenset({str, int, float, bool, type(None), bytes})


def _tag(value: Any, depth: int = 0) -> Any:
    """``value`` with exact types wrapped as extensions; ``depth`` containers enclose it. Raises ValueTooDeep."""
    t = type(value)
    if t in _PLAIN:
        return value
    tagger = _TAGGERS.get(t)
    if tagger is not None:
        code, conv = tagger
        payload = conv(value)
        return msgspec.msgpack.Ext(code, payload.encode() if isinstance(payload, str) else payload)
    if t is dict or t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise ValueTooDeep
        d = depth + 1
        if t is dict:
            return {k: v if type(v) in _PLAIN else _tag(v, d) for k, v in value.items()}
        items = [v if type(v) in _PLAIN else _tag(v, d) for v in value]
        return items if t is list else msgspec.msgpack.Ext(_EXT_TUPLE, _packer.encode(items))
    return value


def _untag(code: int, data: memoryview) -> Any:
    raw = bytes(data)
    if code == _EXT_DECIMAL:
        return Decimal(raw.decode())
    if code == _EXT_UUID:
        return uuid.UUID(bytes=raw)
    if code == _EXT_DATETIME:
        return dt.datetime.fromisoformat(raw.decode())
    if code == _EXT_DATE:
        return dt.date.fromisoformat(raw.decode())
    if code == _EXT_TIME:
        return dt.time.fromisoformat(raw.decode())
    if code == _EXT_TIMEDELTA:
        d, s, us = (int(x) for x in raw.decode().split(":"))
        return dt.timedelta(days=d, seconds=s, microseconds=us)
    if code == _EXT_TUPLE:
        return tuple(_unpacker.decode(raw))
    raise ValueError(f"unknown msgpack extension code {code}")


_packer = msgspec.msgpack.Encoder()
_unpacker = msgspec.msgpack.Decoder(ext_hook=_untag)


def _decode(decoder: Any, data: Any) -> Any:
    # msgspec has no depth limit of its own: bytes from elsewhere (not made by this
    # module, which bounds depth) may nest deeper than the C recursion allows.
    try:
        return decoder.decode(data)
    except RecursionError:
        raise ValueTooDeep from None


def pack_value(value: Any) -> bytes:
    """Encode any row value, row or key to msgpack, keeping exact types. Raises ValueTooDeep (a ValueError)."""
    return _packer.encode(_tag(value))


def unpack_value(data: bytes) -> Any:
    """Decode what :func:`pack_value` made. Raises ValueTooDeep for foreign bytes nested too deep."""
    return _decode(_unpacker, data)


def _event_fields(e: ChangeEvent) -> list[Any]:
    return [
        e.entity,
        _tag(e.key),
        e.op,
        _tag(e.before),
        _tag(e.after),
        list(e.changed) if e.changed is not None else None,
        _tag(e.position),
        e.committed_at,
        e.origin,
        e.txid,
    ]


def to_msgpack(event: ChangeEvent) -> bytes:
    """Type-preserving binary form (state store, brokers between tidesync processes).

    Raises ValueTooDeep (a ValueError) when a row, key or position nests deeper than :data:`MAX_DEPTH`.
    """
    return _packer.encode(_event_fields(event))


def from_msgpack(data: bytes) -> ChangeEvent:
    entity, key, op, before, after, changed, position, committed_at, origin, txid = _decode(_unpacker, data)
    return ChangeEvent(
        entity=entity,
        key=tuple(key) if isinstance(key, list) else key,
        op=op,
        before=before,
        after=after,
        changed=tuple(changed) if changed is not None else None,
        position=tuple(position) if isinstance(position, list) else position,
        committed_at=committed_at,
        origin=origin,
        txid=txid,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_json_encoder = msgspec.json.Encoder(enc_hook=_json_default, decimal_format="string")


def _encode_json(value: Any) -> bytes:
    # Only a value that fails msgpack's MAX_DEPTH can get here this deep, so no walk on the way in.
    try:
        return _json_encoder.encode(value)
    except RecursionError:
        raise ValueTooDeep from None


def to_json(event: ChangeEvent) -> bytes:
    """JSON for people and HTTP peers: Decimal as string, bytes as base64, times as ISO 8601.

    Raises ValueTooDeep (a ValueError) for rows nested deeper than the encoder can recurse.
    """
    return _encode_json(event)


def to_jsonable(event: ChangeEvent) -> dict[str, Any]:
    jsonable: dict[str, Any] = msgspec.json.decode(to_json(event))  # an event encodes as a JSON object
    return jsonable


def from_json(data: bytes | str) -> ChangeEvent:
    """Parse the JSON form. Types that JSON cannot carry come back as strings."""
    raw = _decode(msgspec.json, data)
    raw["key"] = tuple(raw.get("key", ()))
    raw["position"] = tuple(raw.get("position", ()))
    if raw.get("changed") is not None:
        raw["changed"] = tuple(raw["changed"])
    return msgspec.convert(raw, ChangeEvent)


def json_dumps(value: Any) -> bytes:
    """JSON for any value tidesync shows (rows, keys, positions). Raises ValueTooDeep like :func:`to_json`."""
    return _encode_json(value)


def keys_of(events: Iterable[ChangeEvent]) -> set[tuple[str, Key]]:
    return {(e.entity, e.key) for e in events}
