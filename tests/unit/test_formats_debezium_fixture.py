"""The debezium format against a record shaped as Debezium's PostgreSQL connector documents an update.

``tests/fixtures/debezium_postgres_update.json`` is written by hand after the connector's
documented update event (the ``customers`` table of its examples, with REPLICA IDENTITY FULL so
that ``before`` holds the whole old row), as the JSON converter writes it with
``schemas.enable=false``: field names, op code and the source block's fields as documented;
the values are made up. It carries no ``tidesync_*`` fields: tidesync reads it as a record
Debezium wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tidesync.event import ChangeEvent
from tidesync.formats import FormatError, decoder, encoder

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "debezium_postgres_update.json"


def fixture() -> dict[str, Any]:
    record: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return record


def test_a_debezium_update_decodes_to_the_change_it_describes() -> None:
    record = fixture()
    e = decoder("debezium", mapping={"key": ["id"]})(FIXTURE.read_bytes())
    assert (e.entity, e.key, e.op) == ("public.customers", (1,), "update")
    assert e.before == record["before"] and e.after == record["after"]
    assert e.changed == ("email",)  # the whole old row is known: only the field that differs
    assert e.position == (34612280, 34612488)  # from source.sequence: (last commit LSN, this change's LSN)
    assert e.txid == 771 and e.committed_at == 1724150000.123456
    assert e.origin is None


def test_the_position_falls_back_to_the_lsn_and_the_key_is_required() -> None:
    record = fixture()
    record["source"]["sequence"] = None
    e = decoder("debezium", mapping={"key": ["id"]})(json.dumps(record).encode())
    assert e.position == (34612488,)
    with pytest.raises(FormatError, match="carries no key"):  # Debezium keeps the key in the message key
        decoder("debezium")(FIXTURE.read_bytes())


def _shape(value: Any) -> Any:
    """The JSON type of a value (null where it is null)."""
    return None if value is None else type(value).__name__


def test_tidesync_writes_the_same_fields_in_the_same_structure() -> None:
    record = fixture()
    event = ChangeEvent(
        "public.customers", (1,), "update", before=record["before"], after=record["after"], changed=("email",),
        position=(34612600, 0), committed_at=1724150000.123456, txid=771,
    )  # fmt: skip
    ours = json.loads(encoder("debezium", pipeline="inventory_server", sink="s")(event))
    assert list(ours) == list(record)  # the same top-level fields, in the documented order
    assert set(ours["source"]) - set(record["source"]) == {"tidesync_position", "tidesync_key", "tidesync_changed"}
    assert [k for k in ours["source"] if not k.startswith("tidesync_")] == list(record["source"])
    for name, value in record["source"].items():
        if value is not None and ours["source"][name] is not None:
            assert _shape(ours["source"][name]) == _shape(value), name
    assert ours["source"]["sequence"] is None  # tidesync keeps no per-change LSN (see the module docstring)
    for name in ("op", "before", "after"):
        assert ours[name] == record[name], name
    for name in ("ts_ms", "ts_us", "ts_ns"):
        assert _shape(ours[name]) == _shape(record[name]) == "int"
    assert (ours["source"]["connector"], ours["source"]["schema"], ours["source"]["table"]) == (
        "postgresql", "public", "customers"
    )  # fmt: skip
    assert ours["source"]["txId"] == 771 and ours["source"]["lsn"] == 34612600
    assert decoder("debezium")(json.dumps(ours).encode()) == event
