"""Metadata columns and soft deletes: the config rules and the plan (pure, no database)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from tidesync.event import ChangeEvent
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig, SqliteSinkConfig
from tidesync.sinks.sql.metadata import Metadata, alter_statement
from tidesync.sinks.sql.plan import UPDATE, UPSERT, build_plan
from tidesync.sinks.sql.tables import ColumnInfo, TableInfo, TableName

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_metadata_as_a_map_or_a_list() -> None:
    cfg = SqliteSinkConfig(path="x.db", metadata={"synced_at": "_synced_at", "deleted": "_deleted"}, deletes="soft")
    assert cfg.metadata_columns == {"synced_at": "_synced_at", "deleted": "_deleted"}
    cfg = SqliteSinkConfig(path="x.db", metadata=["synced_at", "op"])
    assert cfg.metadata_columns == {"synced_at": "_tidesync_synced_at", "op": "_tidesync_op"}
    assert SqliteSinkConfig(path="x.db").metadata_columns == {}


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"deletes": "soft"}, "deletes: soft needs the deleted column"),
        ({"metadata": {"op": "_op"}, "deletes": "soft"}, "deletes: soft needs the deleted column"),
        ({"metadata": {"op": "x", "deleted": "x"}}, "named for two fields"),
        ({"metadata": {"synced": "x"}}, "synced_at"),  # an unknown field lists the known ones
        ({"metadata": ["op", "op"]}, "listed twice"),
        ({"metadata": {"op": "o" * 70}}, "metadata.op"),
        ({"deletes": "sometimes"}, "hard"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PostgresSinkConfig(dsn="postgresql://x/y", **options)  # type: ignore[arg-type]
    assert words in str(caught.value)


def test_alter_statements_per_database() -> None:
    cols = Metadata({"synced_at": "_s", "op": "_o", "deleted": "_d"}).table_columns()
    assert alter_statement("postgres", TableName("items", "public"), cols) == (
        'ALTER TABLE "public"."items" ADD COLUMN "_s" timestamptz, ADD COLUMN "_o" varchar(8), '
        'ADD COLUMN "_d" boolean DEFAULT false'
    )
    assert alter_statement("mysql", TableName("items"), cols[:1]) == "ALTER TABLE `items` ADD COLUMN `_s` DATETIME(6)"
    assert alter_statement("sqlite", TableName("items"), cols[1:]) == (
        'ALTER TABLE "items" ADD COLUMN "_o" TEXT; ALTER TABLE "items" ADD COLUMN "_d" INTEGER DEFAULT 0'
    )
    assert MariadbSinkConfig(dsn="mysql://u@h/db", metadata=["deleted"], deletes="soft").deletes == "soft"


def items() -> TableInfo:
    names = ("id", "name", "_s", "_op", "_del", "_pos", "_c")
    return TableInfo(TableName("items"), {n: ColumnInfo(n, "text") for n in names}, key=("id",), key_unique=True)


META = Metadata({"synced_at": "_s", "op": "_op", "deleted": "_del", "position": "_pos", "committed_at": "_c"}, True)


def plan(events: list[ChangeEvent], meta: Metadata = META):  # type: ignore[no-untyped-def]
    table = items()
    return build_plan(
        events,
        range(len(events)),
        {"items": table},
        missing_table=str,
        missing_column=lambda t, c: "missing",
        metadata=meta,
        synced_at=NOW,
    )


def test_an_update_writes_its_changed_fields_and_the_metadata_only() -> None:
    update = ChangeEvent(
        "items", (1,), "update", after={"id": 1, "name": "n"}, changed=("name",), position=(5, 1), committed_at=10.0
    )
    (step,) = plan([update]).tables[0].steps
    assert step.kind == UPDATE
    assert dict(zip(step.columns, step.rows[0], strict=True)) == {
        "id": 1,
        "name": "n",
        "_s": NOW,
        "_c": dt.datetime.fromtimestamp(10.0, dt.UTC),
        "_op": "update",
        "_del": False,
        "_pos": "[5,1]",
    }


def test_a_soft_delete_is_an_update_of_the_metadata_that_inserts_nothing() -> None:
    delete = ChangeEvent("items", (1,), "delete", before={"id": 1}, position=(7,))
    (step,) = plan([delete]).tables[0].steps
    assert step.kind == UPDATE and set(step.columns) == {"id", "_s", "_op", "_del", "_pos", "_c"}
    row = dict(zip(step.columns, step.rows[0], strict=True))
    assert row["_del"] is True and row["_op"] == "delete" and row["_c"] is None
    assert step.fallback(0) is None  # a missing row is not made up from a delete


def test_insert_then_soft_delete_in_one_batch_is_one_flagged_upsert() -> None:
    events = [
        ChangeEvent("items", (1,), "insert", after={"id": 1, "name": "a"}, position=(1,)),
        ChangeEvent("items", (1,), "delete", before={"id": 1}, position=(2,)),
        ChangeEvent("items", (2,), "delete", before={"id": 2}, position=(3,)),
        ChangeEvent("items", (2,), "insert", after={"id": 2, "name": "b"}, position=(4,)),
    ]
    steps = plan(events).tables[0].steps
    rows = {(s.kind, r[0]): dict(zip(s.columns, r, strict=True)) for s in steps for r in s.rows}
    assert rows[(UPSERT, 1)]["name"] == "a" and rows[(UPSERT, 1)]["_del"] is True
    assert rows[(UPDATE, 2)]["_del"] is True and rows[(UPSERT, 2)]["_del"] is False  # deleted, then live again
    kinds = [s.kind for s in steps]
    assert kinds.index(UPDATE) < max(i for i, k in enumerate(kinds) if k == UPSERT)  # in source order


def test_hard_deletes_stay_deletes() -> None:
    delete = ChangeEvent("items", (1,), "delete", before={"id": 1}, position=(7,))
    (step,) = plan([delete], Metadata({"op": "_op"})).tables[0].steps
    assert step.kind == "delete" and step.columns == ("id",)
