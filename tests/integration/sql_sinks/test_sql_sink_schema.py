"""Destination schema: creating missing tables from the entity's schema, and new columns (evolve)."""

from __future__ import annotations

import pytest

from tests.integration.sql_sinks.helpers import ITEMS, Dest, ev
from tidesync.errors import PartialBatchError
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
    sink = await dest.sink(create_tables=True)
    with pytest.raises(PartialBatchError) as info:
        await sink.write([order(1)])
    message = str(info.value.failures[0])
    assert "no schema for shop.orders" in message and "create the table" in message


async def test_missing_table_without_create_tables_says_what_to_do(dest: Dest) -> None:
    dest.schemas.put(ORDERS)
    sink = await dest.sink()
    with pytest.raises(PartialBatchError) as info:
        await sink.write([order(1)])
    assert "create it or set create_tables: true" in str(info.value.failures[0])


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


async def test_evolve_dead_letter_is_the_default_and_the_rest_is_written(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    with pytest.raises(PartialBatchError) as info:
        await sink.write(
            [ev("insert", 1, 1, after={"id": 1, "name": "a", "colour": "red"}), ev("insert", 2, 2, after={"id": 2})]
        )
    assert list(info.value.failures) == [0]
    message = str(info.value.failures[0])
    assert "colour" in message and "add them, or set evolve: add_columns" in message
    assert dest.rows() == [(2, None, None)]
    info = await sink.backend.describe(sink._table_name("public.items"), None)
    assert info is not None and "colour" not in info.columns  # nothing was added
    # Replayed from the dead-letter queue after the column was added by hand, the event goes through.
    dest.exec('ALTER TABLE "items" ADD COLUMN "colour" VARCHAR(10)')
    await sink.write([ev("insert", 1, 1, after={"id": 1, "name": "a", "colour": "red"})], replay=True)
    assert dest.query('SELECT "id", "colour" FROM "items" ORDER BY "id"') == [(1, "red"), (2, None)]
