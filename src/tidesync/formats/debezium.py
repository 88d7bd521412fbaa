"""``debezium``: the change-event envelope of Debezium's PostgreSQL connector.

Written as Debezium's JSON converter writes the value with ``schemas.enable=false``: the bare
payload, no ``schema``/``payload`` wrapper (the decoder reads both forms)::

    {"before": {...} | null, "after": {...} | null,
     "source": {"version": "tidesync-<version>", "connector": "postgresql", "name": <pipeline>,
                "ts_ms", "ts_us", "ts_ns", "snapshot": "true" | "false", "db": <pipeline>,
                "sequence": null, "schema", "table", "txId", "lsn", "xmin": null,
                "tidesync_position", "tidesync_key", ["tidesync_changed"], ["tidesync_origin"],
                ["tidesync_types"]},
     "op": "c" | "u" | "d" | "r" | "t", "ts_ms", "ts_us", "ts_ns", "transaction": null}

Choices, field by field:

- ``op``: insert -> ``c``, update -> ``u``, delete -> ``d``, snapshot -> ``r``, truncate -> ``t``.
  A truncate has no ``before``/``after`` (as in Debezium); a delete has ``after: null``.
  Debezium's tombstones (a null value after a delete) and ``m`` (logical message) records are
  not written; the decoder refuses them with a :class:`~tidesync.formats.errors.FormatError`.
- ``source.connector`` is always ``postgresql``, whatever the event's source was, so consumers
  written for that connector read every tidesync event. ``name`` (Debezium's topic prefix) and
  ``db`` (a database name tidesync does not know) are the pipeline's name; ``version`` is
  tidesync's.
- ``schema``/``table``: the entity split at its first dot (``public.customers`` -> ``public``,
  ``customers``); an entity without a dot has ``schema: null`` and is the table. The decoder joins
  them again, so every entity name round-trips.
- ``lsn``: the commit LSN of a Postgres event (its position is ``(commit_lsn, index)``, both
  integers, the LSN positive); null for every other position (a snapshot row, another source).
  Debezium writes the LSN of the change itself, which tidesync does not keep. ``sequence`` and
  ``xmin`` are null. ``txId``: the event's ``txid``.
- ``ts_ms``/``ts_us``/``ts_ns`` in ``source``: the commit time (``committed_at``). The top-level
  ones are Debezium's processing time; tidesync writes the commit time there too, so the same
  event always encodes to the same bytes (a replay sends identical messages).
- ``snapshot``: ``"true"`` for snapshot rows, else ``"false"`` (Debezium's ``"last"`` is not known).
- ``transaction``: null (no transaction metadata).
- Values: see :mod:`tidesync.formats.debezium_values` (timestamps as epoch microseconds, decimals
  as strings, bytes as base64, dicts as JSON text, ...).
- What tidesync needs and Debezium has no field for goes in ``source`` under ``tidesync_``
  names: ``tidesync_position`` (the exact position, a list, so a broker source resumes where it
  was), ``tidesync_key`` (the key, written like row values), ``tidesync_changed`` (when not
  None), ``tidesync_origin`` (when not None), ``tidesync_types`` (``{"before": {field: tag},
  "after": {...}, "key": {index: tag}}``, only the typed ones; omitted when none).

Decoding a record without those fields (one Debezium wrote):

- the entity is ``schema.table`` (``table`` alone without a schema; the ``entity`` argument when
  the record names no table);
- the key: Debezium puts it in the message key, not the value, so name the key columns with
  ``mapping={"key": ["id", ...]}``; their values are read from ``after`` (``before`` for a
  delete). Without them a row event is a FormatError; a truncate has the key ``()``;
- the position: ``(last_commit_lsn, lsn)`` from ``source.sequence`` when it holds two LSNs
  (that order is Debezium's own: commit order, then WAL order), else ``(lsn,)``, else ``()``;
- ``changed``: for an update with a ``before``, the fields whose value differs; else None;
- ``committed_at``: ``source.ts_us`` (else ``ts_ms``) as seconds; ``txid``: ``source.txId``;
- values: typed through the record's ``schema`` when it carries one, otherwise JSON values.

Losses in a tidesync round trip: ``committed_at`` is kept to the microsecond; an aware datetime
comes back in UTC; tuples come back as lists; typed values inside lists and dicts come back as
their JSON forms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

import tidesync
from tidesync.event import ChangeEvent, ValueTooDeep, check_depth, diff_fields, json_dumps
from tidesync.formats.debezium_values import (
    DEBEZIUM_NAMES,
    BadValue,
    connect_decimal,
    decode_value,
    encode_row,
    encode_value,
)
from tidesync.formats.errors import FormatError

OP_CODES: Final = {"insert": "c", "update": "u", "delete": "d", "snapshot": "r", "truncate": "t"}
OPS_BY_CODE: Final = {code: op for op, code in OP_CODES.items()}
VERSION: Final = f"tidesync-{tidesync.__version__}"
Reader = Callable[[Any], Any]


def _lsn(position: tuple[Any, ...]) -> int | None:
    if len(position) == 2 and all(type(p) is int for p in position) and position[0] > 0:
        return int(position[0])
    return None


def _split(entity: str) -> tuple[str | None, str]:
    schema, dot, table = entity.partition(".")
    return (schema, table) if dot else (None, entity)


def encoder(*, pipeline: str) -> Callable[[ChangeEvent], bytes]:
    def encode(event: ChangeEvent) -> bytes:
        try:
            return json_dumps(_record(event, pipeline))
        except (TypeError, ValueError, OverflowError) as exc:
            raise FormatError(f"debezium: the event cannot be written: {type(exc).__name__}: {exc}") from exc

    return encode


def _record(e: ChangeEvent, pipeline: str) -> dict[str, Any]:
    op = OP_CODES.get(e.op)
    if op is None:
        raise ValueError(f"op {e.op!r} has no Debezium code")
    check_depth(e.before)  # list values are converted by recursion: bound it first (ValueTooDeep)
    check_depth(e.after)
    check_depth(e.key)
    us = round(e.committed_at * 1_000_000)
    ms, ns = us // 1000, us * 1000
    schema, table = _split(e.entity)
    key: list[Any] = []
    key_tags: dict[str, str] = {}
    for i, value in enumerate(e.key):
        written, tag = encode_value(value)
        key.append(written)
        if tag is not None:
            key_tags[str(i)] = tag
    source: dict[str, Any] = {
        "version": VERSION, "connector": "postgresql", "name": pipeline,
        "ts_ms": ms, "ts_us": us, "ts_ns": ns,
        "snapshot": "true" if e.op == "snapshot" else "false", "db": pipeline, "sequence": None,
        "schema": schema, "table": table, "txId": e.txid, "lsn": _lsn(e.position), "xmin": None,
        "tidesync_position": list(e.position), "tidesync_key": key,
    }  # fmt: skip
    if e.changed is not None:
        source["tidesync_changed"] = list(e.changed)
    if e.origin is not None:
        source["tidesync_origin"] = e.origin
    record: dict[str, Any] = {}
    types: dict[str, dict[str, str]] = {}
    if op != "t":
        record["before"], before_tags = encode_row(e.before)
        record["after"], after_tags = encode_row(e.after)
        types = {name: tags for name, tags in (("before", before_tags), ("after", after_tags)) if tags}
    if key_tags:
        types["key"] = key_tags
    if types:
        source["tidesync_types"] = types
    record.update(source=source, op=op, ts_ms=ms, ts_us=us, ts_ns=ns, transaction=None)
    return record


# --- decoding ---------------------------------------------------------------------------------


def decoder(*, key_fields: tuple[str, ...] | None, entity: str | None) -> Callable[[bytes], ChangeEvent]:
    return functools.partial(decode, key_fields=key_fields, entity=entity)


def _fail(what: str) -> FormatError:
    return FormatError(f"debezium: {what}")


def decode(data: bytes, *, key_fields: tuple[str, ...] | None = None, entity: str | None = None) -> ChangeEvent:
    try:
        doc = msgspec.json.decode(data)
    except RecursionError:
        raise _fail(f"the record is nested too deep ({ValueTooDeep()})") from None
    except msgspec.DecodeError as exc:
        raise _fail(f"not valid JSON: {exc}") from None
    schema: Any = None
    if isinstance(doc, dict) and "payload" in doc and "schema" in doc:  # schemas.enable=true
        schema, doc = doc["schema"], doc["payload"]
    if doc is None:
        raise _fail("a tombstone (null value) carries no change")
    if not isinstance(doc, dict):
        raise _fail(f"expected a JSON object, got {type(doc).__name__}")
    code = doc.get("op")
    op = OPS_BY_CODE.get(code) if isinstance(code, str) else None
    if op is None:
        raise _fail(f"op {str(code)[:20]!r} is not one of c, u, d, r, t")
    source = doc.get("source")
    if not isinstance(source, dict):
        raise _fail("no source block")
    ours = "tidesync_position" in source
    readers = _tidesync_readers(source) if ours else _schema_readers(schema)
    before = _row(doc, "before", readers.get("before", {}))
    after = _row(doc, "after", readers.get("after", {}))
    return ChangeEvent(
        entity=_entity(source, entity),
        key=_key(source, readers.get("key", {}), op, before, after, key_fields),
        op=op,
        before=before,
        after=after,
        changed=_changed(source, ours, op, before, after),
        position=_position(source) if ours else _derived_position(source),
        committed_at=_committed_at(source),
        origin=_opt(source, "tidesync_origin", str),
        txid=_opt(source, "txId", int),
    )


def _opt(source: Mapping[str, Any], name: str, t: type) -> Any:
    value = source.get(name)
    if value is None or (isinstance(value, t) and not isinstance(value, bool)):
        return value
    raise _fail(f"source.{name} must be a {t.__name__} or null")


def _entity(source: Mapping[str, Any], default: str | None) -> str:
    schema, table = source.get("schema"), source.get("table")
    if isinstance(table, str) and table:
        return f"{schema}.{table}" if isinstance(schema, str) else table
    if default:
        return default
    raise _fail("source.table is missing: the record names no table")


def _tidesync_readers(source: Mapping[str, Any]) -> dict[str, dict[str, Reader]]:
    types = source.get("tidesync_types", {})
    if not isinstance(types, dict) or not all(isinstance(v, dict) for v in types.values()):
        raise _fail("source.tidesync_types must be an object of objects")
    return {
        part: {name: functools.partial(decode_value, tag=str(tag)) for name, tag in tags.items()}
        for part, tags in types.items()
    }


def _schema_readers(schema: Any) -> dict[str, dict[str, Reader]]:
    """Readers by field from a record's Kafka Connect schema: its semantic type names, decimals, bytes."""
    out: dict[str, dict[str, Reader]] = {}
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        return out
    for part in schema["fields"]:
        if not isinstance(part, dict) or part.get("field") not in ("before", "after"):
            continue
        readers: dict[str, Reader] = {}
        for f in part.get("fields") or ():
            if not isinstance(f, dict) or not isinstance(f.get("field"), str):
                continue
            name, params = f.get("name"), f.get("parameters") or {}
            if name == "org.apache.kafka.connect.data.Decimal" and isinstance(params, dict):
                readers[f["field"]] = functools.partial(connect_decimal, scale=int(params.get("scale", 0)))
            elif name in DEBEZIUM_NAMES:
                readers[f["field"]] = functools.partial(decode_value, tag=DEBEZIUM_NAMES[name])
            elif name is None and f.get("type") == "bytes":
                readers[f["field"]] = functools.partial(decode_value, tag="bytes")
        out[str(part["field"])] = readers
    return out


def _row(doc: Mapping[str, Any], part: str, readers: Mapping[str, Reader]) -> dict[str, Any] | None:
    row = doc.get(part)
    if row is None:
        return None
    if not isinstance(row, dict):
        raise _fail(f"{part} must be an object or null")
    for name, read in readers.items():
        if name in row:
            try:
                row[name] = read(row[name])
            except BadValue as exc:
                raise _fail(f"{part}.{name}: {exc}") from None
    return row


def _key(
    source: Mapping[str, Any],
    readers: Mapping[str, Reader],
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    key_fields: tuple[str, ...] | None,
) -> tuple[Any, ...]:
    if "tidesync_key" in source:
        key = source["tidesync_key"]
        if not isinstance(key, list):
            raise _fail("source.tidesync_key must be a list")
        try:
            return tuple(readers[str(i)](v) if str(i) in readers else v for i, v in enumerate(key))
        except BadValue as exc:
            raise _fail(f"source.tidesync_key: {exc}") from None
    if op == "truncate":
        return ()
    row = after if after is not None else before
    if not key_fields:
        raise _fail(
            "the record carries no key (Debezium puts it in the message key): name the key columns "
            'with mapping: {key: ["id", ...]}'
        )
    if row is None:
        raise _fail("neither before nor after holds the row, so the key cannot be read")
    missing = [f for f in key_fields if f not in row]
    if missing:
        raise _fail(f"key column(s) {', '.join(missing)} not in the row")
    return tuple(row[f] for f in key_fields)


def _changed(
    source: Mapping[str, Any], ours: bool, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[str, ...] | None:
    if ours:
        changed = source.get("tidesync_changed")
        if changed is None:
            return None
        if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
            raise _fail("source.tidesync_changed must be a list of field names")
        return tuple(changed)
    if op == "update" and before is not None and after is not None:
        return diff_fields(before, after)
    return None


def _position(source: Mapping[str, Any]) -> tuple[Any, ...]:
    position = source["tidesync_position"]
    if not isinstance(position, list):
        raise _fail("source.tidesync_position must be a list")
    return tuple(position)


def _derived_position(source: Mapping[str, Any]) -> tuple[Any, ...]:
    sequence = source.get("sequence")
    if isinstance(sequence, str):
        try:
            pair = msgspec.json.decode(sequence)
        except msgspec.DecodeError:
            pair = None
        if isinstance(pair, list) and len(pair) == 2 and pair[1] is not None:
            try:
                return (int(pair[0] or 0), int(pair[1]))
            except (TypeError, ValueError):
                pass
    lsn = source.get("lsn")
    if isinstance(lsn, int) and not isinstance(lsn, bool):
        return (lsn,)
    return ()


def _committed_at(source: Mapping[str, Any]) -> float:
    for name, scale in (("ts_us", 1e6), ("ts_ms", 1e3)):
        value = source.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value / scale
    return 0.0
