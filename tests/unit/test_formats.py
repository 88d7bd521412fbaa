"""Payload formats: round trips per format and op, Debezium op codes and fields, CloudEvents as the SDK reads them."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, get_args

import msgspec
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.v1.event import CloudEvent

from tidesync.errors import ConfigError, PermanentError
from tidesync.event import ChangeEvent, from_json, to_json, to_jsonable
from tidesync.formats import (
    FORMATS,
    SOURCE_FORMATS,
    FormatError,
    SinkFormat,
    SourceFormat,
    content_type,
    decoder,
    encoder,
)
from tidesync.sinks.webhook.envelope import idempotency_id

AT = 1_700_000_000.25  # exact in binary and to the microsecond
ROW_BEFORE: dict[str, Any] = {
    "id": 7,
    "price": Decimal("12.50"),
    "seen": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
    "paid_at": dt.datetime(2024, 3, 1, 8, 0, 0, 500, tzinfo=dt.UTC),
    "day": dt.date(1969, 12, 31),
    "alarm": dt.time(6, 30, 0, 42),
    "wait": dt.timedelta(days=2, seconds=5, microseconds=7),
    "ref": uuid.UUID("6f1c1b8e-5a4e-4c0b-9a55-0d5a2b6f7e11"),
    "blob": b"\x00\xffbytes",
    "note": None,
    "doc": {"tags": ["a", "b"], "n": {"deep": [1, 2.5, None, True]}},
    "list": [1, "two", None],
    "ok": True,
    "ratio": 0.5,
}
ROW_AFTER = {**ROW_BEFORE, "price": Decimal("13.00"), "note": "changed"}
KEY = (7, uuid.UUID("00000000-0000-0000-0000-00000000002a"))


def sample(op: str) -> ChangeEvent:
    before = ROW_BEFORE if op in ("update", "delete") else None
    after = ROW_AFTER if op in ("insert", "update", "snapshot") else None
    position: tuple[Any, ...] = (0, 3, 0, 1, 9) if op == "snapshot" else (0x16B3748, 4)
    return ChangeEvent(
        entity="public.orders",
        key=() if op == "truncate" else KEY,
        op=op,
        before=before,
        after=after,
        changed=("price", "note") if op == "update" else None,
        position=position,
        committed_at=AT,
        origin="crm" if op == "insert" else None,
        txid=None if op == "snapshot" else 556,
    )


OPS = ("insert", "update", "delete", "snapshot", "truncate")
CODES = {"insert": "c", "update": "u", "delete": "d", "snapshot": "r", "truncate": "t"}


def test_the_names_are_the_interface() -> None:
    assert FORMATS == ("tidesync", "debezium", "cloudevents") == get_args(SinkFormat)
    assert SOURCE_FORMATS == (*FORMATS, "json") == get_args(SourceFormat)
    assert content_type("tidesync") == content_type("debezium") == content_type("json") == "application/json"
    assert content_type("cloudevents") == "application/cloudevents+json"


@pytest.mark.parametrize("op", OPS)
def test_tidesync_round_trip_is_to_json_unchanged(op: str) -> None:
    e = sample(op)
    body = encoder("tidesync", pipeline="p", sink="s")(e)
    assert body == to_json(e)
    back = decoder("tidesync")(body)
    assert back == from_json(to_json(e))
    assert (back.entity, back.op, back.position, back.changed, back.txid) == (
        e.entity, e.op, e.position, e.changed, e.txid
    )  # fmt: skip
    assert back.key == (7, str(KEY[1])) if e.key else back.key == ()  # JSON types: a UUID comes back as text


@pytest.mark.parametrize("op", OPS)
def test_debezium_round_trip_gives_the_same_event_with_its_types(op: str) -> None:
    e = sample(op)
    body = encoder("debezium", pipeline="p", sink="s")(e)
    back = decoder("debezium")(body)
    assert back == e  # same entity, key, op, rows (typed values included), changed, position, time, origin, txid
    assert type(back.after["price"] if back.after else Decimal()) is Decimal


@pytest.mark.parametrize("op", OPS)
def test_debezium_op_codes_and_source_block(op: str) -> None:
    record = msgspec.json.decode(encoder("debezium", pipeline="crm-sync", sink="s")(sample(op)))
    assert record["op"] == CODES[op]
    source = record["source"]
    assert source["connector"] == "postgresql" and source["name"] == "crm-sync"
    assert (source["schema"], source["table"]) == ("public", "orders")
    assert source["ts_ms"] == 1_700_000_000_250 and source["ts_us"] == 1_700_000_000_250_000
    assert source["snapshot"] == ("true" if op == "snapshot" else "false")
    assert source["lsn"] == (None if op == "snapshot" else 0x16B3748)  # the commit LSN of a Postgres position
    assert source["txId"] == (None if op == "snapshot" else 556)
    assert source["tidesync_position"] == list(sample(op).position)
    if op == "truncate":
        assert "before" not in record and "after" not in record
    else:
        assert set(record) >= {"before", "after", "source", "op", "ts_ms"}
    if op == "delete":
        assert record["after"] is None and record["before"]["id"] == 7


def test_debezium_values_follow_the_connectors_defaults() -> None:
    after = msgspec.json.decode(encoder("debezium", pipeline="p", sink="s")(sample("insert")))["after"]
    assert after["price"] == "13.00"  # decimal.handling.mode=string
    assert after["seen"] == 1_709_251_198_123_456  # MicroTimestamp: microseconds since the epoch
    assert after["paid_at"] == "2024-03-01T08:00:00.000500Z"  # ZonedTimestamp, UTC
    assert after["day"] == -1  # Date: days since the epoch
    assert after["alarm"] == (6 * 3600 + 30 * 60) * 1_000_000 + 42  # MicroTime
    assert after["wait"] == (2 * 86400 + 5) * 1_000_000 + 7  # MicroDuration
    assert after["ref"] == "6f1c1b8e-5a4e-4c0b-9a55-0d5a2b6f7e11" and after["blob"] == "AP9ieXRlcw=="
    assert msgspec.json.decode(after["doc"]) == ROW_BEFORE["doc"]  # io.debezium.data.Json: JSON as text
    assert after["list"] == [1, "two", None] and after["note"] == "changed"


def test_debezium_entity_without_a_dot_and_other_sources_positions() -> None:
    e = ChangeEvent("sheet:leads", ("row-9",), "update", after={"a": 1}, position=(12,), committed_at=5.0)
    record = msgspec.json.decode(encoder("debezium", pipeline="p", sink="s")(e))
    assert record["source"]["schema"] is None and record["source"]["table"] == "sheet:leads"
    assert record["source"]["lsn"] is None  # (12,) is not a Postgres position
    assert decoder("debezium")(msgspec.json.encode(record)) == e


@pytest.mark.parametrize("op", OPS)
def test_cloudevents_round_trip_and_attributes(op: str) -> None:
    e = sample(op)
    body = encoder("cloudevents", pipeline="crm sync", sink="hook")(e)
    doc = msgspec.json.decode(body)
    assert doc["specversion"] == "1.0" and doc["id"] == idempotency_id("crm sync", "hook", e)
    assert doc["source"] == "tidesync/crm%20sync" and doc["type"] == f"io.tidesync.{op}"
    assert doc["subject"] == ("public.orders" if op == "truncate" else f"public.orders/7/{KEY[1]}")
    assert doc["time"] == "2023-11-14T22:13:20.250000Z" and doc["datacontenttype"] == "application/json"
    assert doc["data"] == to_jsonable(e)
    assert decoder("cloudevents")(body) == from_json(to_json(e))


@pytest.mark.parametrize("op", OPS)
def test_the_cloudevents_sdk_reads_a_valid_structured_event(op: str) -> None:
    e = sample(op)
    body = encoder("cloudevents", pipeline="p", sink="s")(e)
    parsed = from_http_event(HTTPMessage(headers={"content-type": content_type("cloudevents")}, body=body))
    assert isinstance(parsed, CloudEvent)  # the v1.0 class validates every attribute as it is made
    assert parsed.get_specversion() == "1.0" and parsed.get_id() == idempotency_id("p", "s", e)
    assert parsed.get_type() == f"io.tidesync.{op}" and parsed.get_source() == "tidesync/p"
    assert parsed.get_time() == dt.datetime.fromtimestamp(AT, dt.UTC)
    assert parsed.get_datacontenttype() == "application/json" and parsed.get_data() == to_jsonable(e)
    CloudEvent(parsed.get_attributes(), parsed.get_data())  # validates again: raises on any invalid attribute


def test_cloudevents_leaves_out_an_unknown_commit_time() -> None:
    e = ChangeEvent("t", (1,), "insert", after={"x": 1})
    doc = msgspec.json.decode(encoder("cloudevents", pipeline="p", sink="s")(e))
    assert "time" not in doc
    from_http_event(HTTPMessage(headers={"content-type": content_type("cloudevents")}, body=msgspec.json.encode(doc)))


def test_json_maps_a_document_with_the_generic_webhook_mapping() -> None:
    mapping = {"entity_path": "kind", "entity_prefix": "shop.", "key": ["data.id"], "op": "action",
               "ops": {"created": "insert", "removed": "delete"}, "after": "data", "timestamp": "at"}  # fmt: skip
    decode = decoder("json", mapping=mapping)
    e = decode(b'{"kind": "order", "action": "created", "at": 1700000000, "data": {"id": 12345678901234567890123}}')
    assert (e.entity, e.key, e.op, e.committed_at, e.position) == (
        "shop.order",
        (Decimal("12345678901234567890123"),),
        "insert",
        1_700_000_000.0,
        (),
    )  # fmt: skip  -- big integers stay exact, as the webhook source parses them
    fixed = decoder("json", mapping={"key": ["id"]}, entity="crm.contact")(b'{"id": "c1", "name": "Ann"}')
    assert (fixed.entity, fixed.key, fixed.op, fixed.after) == (
        "crm.contact",
        ("c1",),
        "update",
        {"id": "c1", "name": "Ann"},
    )
    with pytest.raises(FormatError, match=r"json: no key value at data\.id"):
        decode(b'{"kind": "order", "action": "created", "at": 1, "data": {}}')


def test_unknown_formats_and_bad_mappings_are_config_errors_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown format 'avro'; sinks write one of: tidesync, debezium, cloudevents"):
        encoder("avro", pipeline="p", sink="s")
    with pytest.raises(ConfigError, match="'json' can only be read"):
        encoder("json", pipeline="p", sink="s")
    with pytest.raises(ConfigError, match="sources read one of: tidesync, debezium, cloudevents, json"):
        decoder("protobuf")
    with pytest.raises(ConfigError, match="use one of"):
        content_type("xml")
    with pytest.raises(ConfigError, match="format json needs a mapping"):
        decoder("json")
    with pytest.raises(ConfigError, match="key"):
        decoder("json", mapping={"entity": "x"})
    with pytest.raises(ConfigError, match="a message is one"):
        decoder("json", mapping={"entity": "x", "key": ["id"], "events": "items"})
    with pytest.raises(ConfigError, match="takes no mapping"):
        decoder("tidesync", mapping={"key": ["id"]})
    with pytest.raises(ConfigError, match=r"mapping must be \{key"):
        decoder("debezium", mapping={"key": "id"})


GARBAGE = [b"", b"not json", b"[1, 2]", b'"text"', b"null", b'{"a": 1}', b"{" * 5000, b'{"op": 5}']


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
def test_malformed_input_is_a_format_error_never_a_bare_exception(fmt: str, data: bytes) -> None:
    decode = decoder(fmt, mapping={"entity": "x", "key": ["id"]} if fmt == "json" else None)
    with pytest.raises(FormatError) as info:
        decode(data)
    assert isinstance(info.value, PermanentError) and str(info.value).startswith(f"{fmt}: ")


@pytest.mark.parametrize(
    ("fmt", "body", "why"),
    [
        ("debezium", b'{"op": "m", "source": {}}', "op 'm' is not one of"),
        ("debezium", b'{"op": "u", "after": {"id": 1}}', "no source block"),
        ("debezium", b'{"op": "u", "after": {"id": 1}, "source": {"table": "t"}}', "carries no key"),
        ("debezium", b'{"op": "u", "after": [], "source": {"table": "t", "tidesync_position": []}}', "after must be"),
        ("debezium", b'{"op": "c", "after": {"d": "x"}, "source": {"table": "t", "tidesync_position": [1], '
                     b'"tidesync_key": [1], "tidesync_types": {"after": {"d": "date"}}}}',
         "after.d: 'x' is not a date"),
        ("debezium", b'{"schema": {}, "payload": null}', "tombstone"),
        ("cloudevents", b'{"specversion": "0.3", "id": "1", "source": "s", "type": "t", "data": {}}', "not 1.0"),
        ("cloudevents", b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t"}', "no data"),
        ("cloudevents", b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"x": 1}}',
         "not a tidesync event"),
        ("tidesync", b'{"entity": "x", "key": [1], "op": "insert", "after": 5}', "not a tidesync event"),
    ],
)  # fmt: skip
def test_decoders_say_what_is_wrong(fmt: str, body: bytes, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        decoder(fmt)(body)


def test_a_debezium_record_with_its_schema_is_read_with_its_types() -> None:
    fields = [
        {"type": "int32", "optional": False, "field": "id"},
        {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp", "field": "seen"},
        {"type": "string", "optional": True, "name": "io.debezium.data.Uuid", "field": "ref"},
        {"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal",
         "parameters": {"scale": "2"}, "field": "price"},
        {"type": "bytes", "optional": True, "field": "blob"},
    ]  # fmt: skip
    record = {
        "schema": {"type": "struct", "fields": [{"type": "struct", "fields": fields, "field": "after"}]},
        "payload": {
            "before": None,
            "after": {"id": 3, "seen": 1_000_000, "ref": str(KEY[1]), "price": "BOI=", "blob": "AAE="},
            "source": {
                "connector": "postgresql",
                "schema": "public",
                "table": "t",
                "lsn": 99,
                "txId": 5,
                "ts_ms": 2000,
            },
            "op": "c",
            "ts_ms": 2500,
        },
    }
    e = decoder("debezium", mapping={"key": ["id"]})(msgspec.json.encode(record))
    assert e.after == {"id": 3, "seen": dt.datetime(1970, 1, 1, 0, 0, 1), "ref": KEY[1],
                       "price": Decimal("12.50"), "blob": b"\x00\x01"}  # fmt: skip
    assert (e.entity, e.key, e.op, e.position, e.txid, e.committed_at) == ("public.t", (3,), "insert", (99,), 5, 2.0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_event_a_format_cannot_carry_is_a_format_error(fmt: str) -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(FormatError):
        encoder(fmt, pipeline="p", sink="s")(ChangeEvent("t", (1,), "insert", after={"v": deep}))
    if fmt == "debezium":
        with pytest.raises(FormatError, match="no Debezium code"):
            encoder(fmt, pipeline="p", sink="s")(ChangeEvent("t", (1,), "upsert", after={}))
