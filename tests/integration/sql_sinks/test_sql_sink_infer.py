"""create_tables for entities without a schema (webhooks, HTTP APIs): columns inferred from the events."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.sql_sinks.helpers import Dest
from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.engine.delivery import DeadLetterWriter, RetryingWriter
from tidesync.errors import PartialBatchError, PermanentError
from tidesync.event import ChangeEvent
from tidesync.retry import RetryPolicy
from tidesync.sinks.sql.infer import infer_column, infer_schema
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import FakeClock, ListSource, eventually

ENTITY = "stripe.charge"
# Every database's default schema, so that the test's queries find the tables by bare name.
TABLES = {ENTITY: "charge", "hooks.ping": "ping"}
AT = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


def charge(i: int, pos: int, op: str = "insert", **fields: Any) -> ChangeEvent:
    after = {
        "id": f"ch_{i}",
        "amount": 100 * i,
        "fee": 1.5,
        "exact": Decimal("10.25"),
        "paid": True,
        "currency": "eur",
        "created": AT,
        "day": dt.date(2024, 5, 1),
        "metadata": {"order": i},
        "tags": ["a", "b"],
        "refunded_at": None,
        **fields,
    }
    return ChangeEvent(ENTITY, (f"ch_{i}",), op, after=after, position=(pos,))


# The portable kind each inferred column reads back as, per database (typemap).
EXPECTED = {
    "postgres": {
        "id": "string",
        "amount": "int64",
        "fee": "float64",
        "exact": "decimal",
        "paid": "bool",
        "currency": "string",
        "created": "timestamptz",
        "day": "date",
        "metadata": "json",
        "tags": "json",
        "refunded_at": "string",
    },
    "mariadb": {
        "id": "string",
        "amount": "int64",
        "fee": "float64",
        "exact": "decimal",
        "paid": "bool",
        "currency": "string",
        "created": "timestamp",  # DATETIME(6) in UTC
        "day": "date",
        "metadata": "string",  # JSON is LONGTEXT with a check in MariaDB
        "tags": "string",
        "refunded_at": "string",
    },
    "sqlite": {
        "id": "string",
        "amount": "int64",
        "fee": "float64",
        "exact": "string",  # TEXT keeps decimals exact
        "paid": "int64",  # 0/1
        "currency": "string",
        "created": "string",
        "day": "string",
        "metadata": "string",
        "tags": "string",
        "refunded_at": "string",
    },
}


async def test_create_tables_infers_a_table_for_an_entity_without_schema(dest: Dest) -> None:
    assert dest.schemas.get(ENTITY) is None
    sink = await dest.sink(tables=TABLES, create_tables=True)
    await sink.write([charge(1, 1), charge(2, 2), charge(1, 3, "update", amount=150)])
    info = await sink.backend.describe(sink._table_name(ENTITY), None)
    assert info is not None
    assert info.key == ("id",)  # the field holding the event key
    assert {n: c.kind for n, c in info.columns.items()} == EXPECTED[dest.kind]
    assert next(iter(info.columns)) == "id" and not info.columns["id"].nullable
    rows = dest.query('SELECT "id", "amount", "fee", "paid", "currency" FROM "charge" ORDER BY "id"')
    paid = True if dest.kind == "postgres" else 1
    assert rows == [("ch_1", 150, 1.5, paid, "eur"), ("ch_2", 200, 1.5, paid, "eur")]
    exact = dest.query('SELECT "exact" FROM "charge" WHERE "id" = ?', ["ch_1"])[0][0]
    assert Decimal(str(exact)) == Decimal("10.25")


async def test_a_new_field_adds_a_typed_column_with_evolve(dest: Dest) -> None:
    sink = await dest.sink(tables=TABLES, create_tables=True, evolve="add_columns")
    await sink.write([charge(1, 1)])
    await sink.write([charge(2, 2, refunds=3), charge(3, 3, "update", dispute="open", amount=7)])
    info = await sink.backend.describe(sink._table_name(ENTITY), None)
    assert info is not None
    assert info.columns["refunds"].kind == "int64"
    assert info.columns["dispute"].kind == "string"
    assert dest.query('SELECT "id", "amount", "refunds", "dispute" FROM "charge" ORDER BY "id"') == [
        ("ch_1", 100, None, None),
        ("ch_2", 200, 3, None),
        ("ch_3", 7, None, "open"),
    ]


async def test_mixed_types_widen_and_a_key_no_field_holds_gets_a_column(dest: Dest) -> None:
    sink = await dest.sink(tables=TABLES, create_tables=True)
    events = [
        ChangeEvent("hooks.ping", (7,), "insert", after={"n": 1, "note": None, "v": 1}, position=(1,)),
        ChangeEvent("hooks.ping", (8,), "insert", after={"n": 2.5, "note": None, "v": "x"}, position=(2,)),
    ]
    await sink.write(events)
    info = await sink.backend.describe(sink._table_name("hooks.ping"), None)
    assert info is not None and info.key == ("key",)
    assert info.columns["key"].kind == "int64"
    assert info.columns["n"].kind == "float64"  # int and float
    assert info.columns["note"].kind == "string"  # only None: text
    assert info.columns["v"].kind == "string"  # int and str: text
    assert dest.query('SELECT "key", "n" FROM "ping" ORDER BY "key"') == [(7, 1.0), (8, 2.5)]
    # A delete without a row image finds its row by the event key.
    await sink.write([ChangeEvent("hooks.ping", (7,), "delete", position=(3,))])
    assert dest.query('SELECT "key" FROM "ping"') == [(8,)]


async def test_keys_setting_names_the_key_of_an_inferred_table(dest: Dest) -> None:
    sink = await dest.sink(tables=TABLES, create_tables=True, keys={"charge": ["currency", "id"]})
    await sink.write([charge(1, 1), charge(2, 2, currency="usd")])
    info = await sink.backend.describe(sink._table_name(ENTITY), None)
    assert info is not None and info.key == ("currency", "id")
    assert dest.query('SELECT "currency", "id" FROM "charge" ORDER BY "id"') == [("eur", "ch_1"), ("usd", "ch_2")]


async def test_a_value_not_fitting_an_inferred_column_is_dead_lettered_alone(dest: Dest) -> None:
    sink = await dest.sink(tables=TABLES, create_tables=True)
    await sink.write([charge(1, 1)])
    bad = charge(2, 2, amount="a lot")  # text in the integer column inferred from charge 1
    batch = [bad, charge(3, 3)]
    with pytest.raises(PermanentError):
        await sink.write(batch)
    clock = FakeClock()
    writer = DeadLetterWriter(RetryingWriter(sink, RetryPolicy(max_attempts=1), clock), "p1", "sink", clock)
    letters = await writer.deliver(batch)
    assert [(d.event.key, d.error_class) for d in letters] == [(("ch_2",), "permanent")]
    assert dest.query('SELECT "id", "amount" FROM "charge" ORDER BY "id"') == [("ch_1", 100), ("ch_3", 300)]


async def test_a_bad_field_name_is_left_out_of_the_created_table(dest: Dest) -> None:
    if dest.kind == "sqlite":
        bad, words = "nul\x00", "NUL"
    else:
        bad, words = "q" * 70, ("70 bytes" if dest.kind == "postgres" else "70 characters")
    sink = await dest.sink(tables=TABLES, create_tables=True)
    with pytest.raises(PartialBatchError) as info:
        await sink.write([charge(1, 1), charge(2, 2, **{bad: 1}), charge(3, 3)])
    assert list(info.value.failures) == [1]
    assert words in str(info.value.failures[1])
    assert dest.query('SELECT "id" FROM "charge" ORDER BY "id"') == [("ch_1",), ("ch_3",)]


# --- the rules themselves (pure) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([1, 2], "int64"),
        ([1, 2.5], "float64"),
        ([1, Decimal("1.5")], "decimal"),
        ([1.5, Decimal("1.5")], "decimal"),
        ([True, False], "bool"),
        ([True, 1], "string"),  # a bool is not a number here
        ([dt.date(2024, 1, 1), dt.datetime(2024, 1, 1, 1)], "timestamp"),
        ([dt.datetime(2024, 1, 1), AT], "timestamptz"),
        ([{"a": 1}, [1]], "json"),
        ([{"a": 1}, "x"], "string"),
        ([None, None], "unknown"),
        ([None, "x"], "string"),
    ],
)
def test_column_types_merge_by_the_documented_rules(values: list[Any], kind: str) -> None:
    events = [ChangeEvent("e", (i,), "insert", after={"id": i, "v": v}) for i, v in enumerate(values)]
    assert infer_column("v", events).type == kind


def test_key_columns_are_the_fields_holding_the_key_in_every_event() -> None:
    events = [
        ChangeEvent("e", (1, "a"), "insert", after={"n": 1, "id": 1, "code": "a"}),
        ChangeEvent("e", (2, "b"), "insert", after={"n": 3, "id": 2, "code": "b"}),  # n no longer holds it
    ]
    schema = infer_schema("e", events)
    assert schema.primary_key == ("id", "code")
    assert [(c.name, c.type, c.nullable) for c in schema.columns] == [
        ("id", "int64", False),
        ("code", "string", False),
        ("n", "int64", True),
    ]
    # A key value no field holds gets a column of its own, named clear of the fields.
    odd = infer_schema("e", [ChangeEvent("e", ("x",), "insert", after={"key": 1})])
    assert odd.primary_key == ("_key",) and odd.names == ("_key", "key")


# --- through a whole pipeline ------------------------------------------------------------------


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


async def test_a_pipeline_from_a_schema_less_source_creates_and_evolves_its_table(
    dest: Dest, store: StateStore
) -> None:
    # ListSource publishes no schema, as webhook and HTTP sources do not.
    events = [charge(i, 0) for i in range(1, 21)]
    events += [charge(i, 0, "update", amount=i, refunds=i) for i in range(1, 11)]  # a new field later on
    sink = await dest.sink(tables=TABLES, create_tables=True, evolve="add_columns")
    runner = PipelineRunner("p1", ListSource(events), sink, store, batch=BatchPolicy(20, 0.01))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(
            lambda: runner.stats.events_written + runner.stats.dead_lettered >= len(events) or task.done(),
            timeout=30,
            message="every event written or dead-lettered",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert await store.dlq_count("p1") == 0
    assert runner.stats.events_written == len(events)
    rows = dest.query('SELECT "id", "amount", "refunds" FROM "charge" ORDER BY "amount"')
    assert len(rows) == 20
    assert rows[0] == ("ch_1", 1, 1) and ("ch_20", 2000, None) in rows
