"""``Transform.map_schema``: the shape of an entity after the steps, as sinks see it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from tidesync.schema import Column, EntitySchema
from tidesync.transform import compile_transforms

SOURCE = EntitySchema(
    "public.customers",
    (
        Column("id", "int64", nullable=False, native="bigint"),
        Column("email", "string", native="text"),
        Column("phone", "int64", native="bigint"),
        Column("score", "string", native="varchar", length=20),
        Column("internal_notes", "string"),
        Column("price", "decimal", precision=10, scale=2),
    ),
    primary_key=("id",),
    version=3,
)


def mapped(steps: list[dict[str, Any]], schema: EntitySchema = SOURCE) -> EntitySchema:
    return compile_transforms(steps).map_schema(schema)


def test_rename_keeps_position_and_maps_primary_key() -> None:
    s = mapped([{"rename": {"email": "email_address", "id": "customer_id"}}])
    assert s.names == ("customer_id", "email_address", "phone", "score", "internal_notes", "price")
    assert s.primary_key == ("customer_id",)
    assert s.column("email_address") == Column("email_address", "string", native="text")
    assert s.version == 3


def test_rename_onto_an_existing_column_replaces_it() -> None:
    assert mapped([{"rename": {"score": "phone"}}]).names == ("id", "email", "phone", "internal_notes", "price")
    assert mapped([{"rename": {"score": "phone"}}]).column("phone") == Column(
        "phone", "string", native="varchar", length=20
    )


def test_select_orders_and_drop_removes() -> None:
    assert mapped([{"select": ["email", "id", "nope"]}]).names == ("email", "id")
    s = mapped([{"drop": ["internal_notes", "id"]}])
    assert s.names == ("email", "phone", "score", "price")
    assert s.primary_key == ()


@pytest.mark.parametrize(
    ("cast", "type_"),
    [
        ("string", "string"),
        ("int", "int64"),
        ("float", "float64"),
        ("decimal", "decimal"),
        ("bool", "bool"),
        ("timestamp", "timestamptz"),
        ("date", "date"),
        ("iso8601", "string"),
        ("epoch", "int64"),
        ("epoch_ms", "int64"),
        ("json", "json"),
    ],
)
def test_cast_sets_the_portable_type(cast: str, type_: str) -> None:
    column = mapped([{"cast": {"phone": cast}}]).column("phone")
    assert column is not None and column.type == type_
    if type_ != "int64":
        assert column.native is None  # the source's native type no longer describes it


def test_cast_to_the_same_type_keeps_the_column_details() -> None:
    assert mapped([{"cast": {"price": "decimal"}}]).column("price") == SOURCE.column("price")


def test_set_types_from_the_constant() -> None:
    s = mapped(
        [
            {
                "set": {
                    "source_system": "crm",
                    "n": 1,
                    "f": 1.5,
                    "b": True,
                    "d": Decimal("1.5"),
                    "day": dt.date(2024, 1, 1),
                    "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                    "doc": {"a": 1},
                    "nothing": None,
                    "email": "fixed",
                }
            }
        ]
    )
    types = {c.name: c.type for c in s.columns}
    assert types["source_system"] == "string"
    assert (types["n"], types["f"], types["b"], types["d"]) == ("int64", "float64", "bool", "decimal")
    assert (types["day"], types["at"], types["doc"], types["nothing"]) == ("date", "timestamptz", "json", "unknown")
    assert s.names[:3] == ("id", "email", "phone")  # an existing column is retyped in place
    assert s.column("source_system").nullable is False  # type: ignore[union-attr]
    assert s.column("nothing").nullable is True  # type: ignore[union-attr]


def test_compute_is_string_unless_a_cast_follows() -> None:
    s = mapped([{"compute": {"full": "email + '!'", "score2": "score * 2"}}, {"cast": {"score2": "decimal"}}])
    assert s.column("full") == Column("full", "string")
    assert s.column("score2") == Column("score2", "decimal")


def test_filter_and_functions_keep_the_shape() -> None:
    assert mapped([{"filter": "id > 1"}, {"function": "tidesync.event:diff_fields"}]) == SOURCE


def test_only_steps_scoped_to_the_entity_apply() -> None:
    s = mapped([{"drop": ["email"], "entity": "crm.*"}, {"drop": ["phone"], "entity": "public.*"}])
    assert s.names == ("id", "email", "score", "internal_notes", "price")
