"""Destination schema: creating missing tables from the entity's schema, and new columns (evolve)."""

from __future__ import annotations

import pytest

from tests.integration.sql_sinks.helpers import ITEMS, Dest, ev
from tidesync.errors import PartialBatchError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.schema import Column, EntitySchema

ORDERS = EntitySchema(
    "shop.orders",
    (
        Column("order_id", "int64", nullable=False),
        Column("customer", "string", length=40),
        Column("total", "decimal", precision=10, scale=2),
        Column("points", "int64"),
    ),
    primary_key=("order_id",),
)


def order(i: int, **extra: object) -> ChangeEvent:
    after = {"order_id": i, "customer": f"c{i}", "total": None, **extra}
    return ChangeEvent("shop.orders", (i,), "insert", after=after, position=(i,))


async def test_create_tables_makes_the_missing_table_with_its_key(dest: Dest) -> None:
    dest.schemas.put(ORDERS)
    sink = await dest.sink(create_tables=True, tables={"shop.orders": "orders_copy"})
    await sink.write([order(1), order(2), order(1, customer="again")])
    assert dest.query('SELECT "order_id", "customer" FROM "orders_copy" ORDER BY 1') == [(1, "again"), (2, "c2")]
    info = await sink.backend.describe(sink._table_name("shop.orders"), None)
    assert info is not None and info.key == ("order_id",) and list(info.columns) == list(ORDERS.names)


async def test_create_tables_keeps_the_postgres_schema(dest: Dest) -> None:
    dest.schemas.put(ORDERS)
    sink = await dest.sink(create_tables=True)
    await sink.write([order(1)])
    table = '"shop"."orders"' if dest.kind == "postgres" else '"orders"'
    assert dest.query(f"SELECT count(*) FROM {table}") == [(1,)]


async def test_create_tables_without_a_schema_says_what_to_do(dest: Dest) -> None:
    # Without a schema, columns are inferred from the batch's rows (test_sql_sink_infer.py);
    # a batch with no row of the entity (a truncate) has nothing to infer them from.
    sink = await dest.sink(create_tables=True)
    with pytest.raises(PartialBatchError) as info:
        await sink.write([ChangeEvent("shop.orders", (), "truncate", position=(1,))])
    message = str(info.value.failures[0])
    assert "no schema for shop.orders" in message and "create the table" in message


async def test_missing_table_without_create_tables_says_what_to_do(dest: Dest) -> None:
    dest.schemas.put(ORDERS)
    sink = await dest.sink()
    # Every event of the entity would fail: systemic, so the engine blocks instead of dead-lettering.
    with pytest.raises(SystemicError) as info:
        await sink.write([order(1)])
    assert "create it or set create_tables: true" in str(info.value) and info.value.entity == "shop.orders"


async def test_evolve_add_columns_adds_them_with_the_schema_type_or_text(dest: Dest) -> None:
    dest.exec(ITEMS)
    dest.schemas.put(
        EntitySchema(
            "public.items",
            (Column("id", "int32"), Column("name", "string"), Column("qty", "int32"), Column("weight", "int64")),
            ("id",),
        )
    )
    sink = await dest.sink(evolve="add_columns")
    await sink.write(
        [
            ev("insert", 1, 1, after={"id": 1, "name": "a", "qty": 1, "weight": 2**40}),
            ev("update", 1, 2, after={"id": 1, "colour": "red"}, changed=("colour",)),
        ]
    )
    assert dest.query('SELECT "id", "name", "qty", "weight", "colour" FROM "items"') == [(1, "a", 1, 2**40, "red")]
    info = await sink.backend.describe(sink._table_name("public.items"), None)
    assert info is not None
    assert info.columns["weight"].kind == "int64"
    assert info.columns["colour"].kind == "string"  # not in the schema: text


async def test_evolve_block_is_the_default_and_a_missing_column_holds_the_batch(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    batch = [ev("insert", 1, 1, after={"id": 1, "name": "a", "colour": "red"}), ev("insert", 2, 2, after={"id": 2})]
    # A missing column fails every event that writes it: systemic, nothing of the batch is written.
    with pytest.raises(SystemicError) as info:
        await sink.write(batch)
    message = str(info.value)
    assert "colour" in message and "add them, or set evolve: add_columns" in message
    assert dest.rows() == [] and dest.applied() is None
    described = await sink.backend.describe(sink._table_name("public.items"), None)
    assert described is not None and "colour" not in described.columns  # nothing was added
    # The engine probes with the same batch; once the column was added by hand, it goes through.
    dest.exec('ALTER TABLE "items" ADD COLUMN "colour" VARCHAR(10)')
    await sink.write(batch)
    assert dest.query('SELECT "id", "colour" FROM "items" ORDER BY "id"') == [(1, "red"), (2, None)]


async def test_evolve_dead_letter_rejects_only_the_events_writing_a_missing_column(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink(evolve="dead_letter")
    batch = [ev("insert", 1, 1, after={"id": 1, "name": "a", "colour": "red"}), ev("insert", 2, 2, after={"id": 2})]
    with pytest.raises(PartialBatchError) as info:
        await sink.write(batch)
    assert list(info.value.failures) == [0] and "colour" in str(info.value.failures[0])
    assert [r[0] for r in dest.rows()] == [2]
