"""The pure half of the SQL sinks: planning a batch and choosing what to skip (no database)."""

from __future__ import annotations

import pytest

from tests.integration.sql_sinks.helpers import ev
from tidesync.errors import PermanentError
from tidesync.event import ChangeEvent
from tidesync.sinks.sql.common import live_events
from tidesync.sinks.sql.plan import APPEND, REKEY, UPSERT, Plan, build_plan
from tidesync.sinks.sql.tables import ColumnInfo, TableInfo, TableName, resolve_table


def table(
    key: tuple[str, ...] = ("id",), unique: bool = True, cols: tuple[str, ...] = ("id", "name", "qty")
) -> TableInfo:
    return TableInfo(TableName("items"), {c: ColumnInfo(c, "text") for c in cols}, key, unique, True)


def plan(events: list[ChangeEvent], info: TableInfo | None = None, **tables: TableInfo | None) -> Plan:
    mapping = {"public.items": info or table(), **{k.replace("_", "."): v for k, v in tables.items()}}
    return build_plan(
        events,
        range(len(events)),
        mapping,
        missing_table=lambda e: f"no table for {e}",
        missing_column=lambda t, cols: f"no {cols} in {t.name}",
    )


def shape(p: Plan) -> list[tuple[str, tuple[str, ...], list[tuple[object, ...]]]]:
    return [(s.kind, s.columns, s.rows) for tp in p.tables for s in tp.steps]


def test_distinct_keys_make_one_statement_per_shape() -> None:
    p = plan([ev("insert", i, i, after={"id": i, "name": "n", "qty": i}) for i in range(3)] + [ev("delete", 9, 9)])
    assert shape(p) == [
        ("delete", ("id",), [(9,)]),
        (UPSERT, ("id", "name", "qty"), [(0, "n", 0), (1, "n", 1), (2, "n", 2)]),
    ]


def test_insert_then_updates_fold_into_one_upsert() -> None:
    p = plan(
        [
            ev("insert", 1, 1, after={"id": 1, "name": "a", "qty": 1}),
            ev("update", 1, 2, after={"id": 1, "name": "a", "qty": 2}, changed=("qty",)),
            ev("update", 1, 3, after={"id": 1, "name": "b"}, changed=("name", "qty")),
        ]
    )
    assert shape(p) == [(UPSERT, ("id", "name", "qty"), [(1, "b", 2)])]


def test_updates_fold_and_keep_the_full_image_for_a_missing_row() -> None:
    p = plan(
        [
            ev("update", 1, 1, after={"id": 1, "name": "a", "qty": 1}, changed=("qty",)),
            ev("update", 1, 2, after={"id": 1, "name": "b", "qty": 1}, changed=("name",)),
        ]
    )
    [step] = p.tables[0].steps
    assert (step.kind, step.columns, step.rows) == ("update", ("id", "qty", "name"), [(1, 1, "b")])
    assert step.fallback(0) == {"id": 1, "name": "b", "qty": 1}


def test_delete_then_insert_go_to_successive_levels() -> None:
    p = plan(
        [
            ev("delete", 1, 1),
            ev("insert", 1, 2, after={"id": 1, "name": "x"}),
            ev("insert", 2, 3, after={"id": 2, "name": "y"}),
        ]
    )
    assert shape(p) == [
        ("delete", ("id",), [(1,)]),
        (UPSERT, ("id", "name"), [(2, "y")]),
        (UPSERT, ("id", "name"), [(1, "x")]),
    ]


def test_anything_then_delete_is_a_delete() -> None:
    p = plan(
        [
            ev("insert", 1, 1, after={"id": 1}),
            ev("update", 1, 2, after={"id": 1, "qty": 3}, changed=("qty",)),
            ev("delete", 1, 3),
        ]
    )
    assert shape(p) == [("delete", ("id",), [(1,)])]


def test_truncate_drops_what_came_before_it() -> None:
    events = [
        ev("insert", 1, 1, after={"id": 1}),
        ChangeEvent("public.items", (), "truncate"),
        ev("insert", 2, 2, after={"id": 2}),
    ]
    p = plan(events)
    assert p.tables[0].truncate
    assert shape(p) == [(UPSERT, ("id",), [(2,)])]


def test_key_change_is_a_barrier() -> None:
    p = plan(
        [
            ev("insert", 5, 1, after={"id": 5, "name": "five"}),
            ev("update", 1, 2, before={"id": 1}, after={"id": 2, "name": "moved"}, changed=("id", "name")),
            ev("insert", 6, 3, after={"id": 6, "name": "six"}),
        ]
    )
    assert [s.kind for s in p.tables[0].steps] == [UPSERT, REKEY, UPSERT]
    assert p.tables[0].steps[1].old_keys == [(1,)] and p.tables[0].steps[1].rows == [(2, "moved")]


def test_key_without_unique_index_upserts_by_update_then_insert() -> None:
    p = plan([ev("insert", 1, 1, after={"id": 1, "name": "a"})], table(unique=False))
    [step] = p.tables[0].steps
    assert step.kind == "update" and step.fallback(0) == {"name": "a", "id": 1}


def test_append_only_table() -> None:
    info = table(key=())
    p = plan([ev("insert", 1, 1, after={"id": 1}), ev("insert", 1, 2, after={"id": 1}), ev("delete", 1, 3)], info)
    assert shape(p) == [(APPEND, ("id",), [(1,), (1,)])]
    assert list(p.failures) == [2] and "no primary key" in str(p.failures[2])


def test_failures_block_later_events_of_their_key_only() -> None:
    p = plan(
        [
            ev("insert", 1, 1, after={"id": 1, "colour": "red"}),
            ev("update", 1, 2, after={"id": 1, "qty": 2}, changed=("qty",)),
            ev("insert", 2, 3, after={"id": 2}),
            ev("insert", 3, 4, after={"name": "no key"}),
            ev("insert", 1, 5, entity="public.nowhere", after={"id": 1}),
        ],
        public_nowhere=None,
    )
    assert sorted(p.failures) == [0, 1, 3, 4]
    assert "colour" in str(p.failures[0]) and "earlier event of this key" in str(p.failures[1])
    assert "no value for key column 'id'" in str(p.failures[3])
    assert str(p.failures[4]) == "no table for public.nowhere"
    assert all(isinstance(e, PermanentError) for e in p.failures.values())
    assert shape(p) == [(UPSERT, ("id",), [(2,)])]
    assert {t.name.name: cols for t, cols in p.missing_columns.items()} == {"items": {"colour": "public.items"}}


def test_key_from_the_source_key_names_when_the_image_lacks_it() -> None:
    events = [ChangeEvent("public.items", (7,), "delete", before=None, position=(1,))]
    p = build_plan(
        events,
        [0],
        {"public.items": table()},
        missing_table=str,
        missing_column=str,
        source_keys={"public.items": ("id",)},
    )
    assert shape(p) == [("delete", ("id",), [(7,)])]


def test_live_events_skip_what_was_applied_unless_replayed() -> None:
    events = [ev("insert", 1, p, after={"id": 1}) for p in (1, 2, 3)] + [ChangeEvent("x", (1,), "insert", after={})]
    assert live_events(events, None, False) == ([0, 1, 2, 3], (3,))
    assert live_events(events, (2,), False) == ([2, 3], (3,))
    assert live_events(events, (3,), False) == ([3], None)
    assert live_events(events, (5,), True) == ([0, 1, 2, 3], None)
    with pytest.raises(PermanentError, match="cannot be compared"):
        live_events(events, ("lsn", 1), False)


def test_table_names() -> None:
    assert resolve_table("public.customers", {}, keep_schema=True) == TableName("customers", "public")
    assert resolve_table("public.customers", {}, keep_schema=False) == TableName("customers")
    assert resolve_table("customers", {}, keep_schema=True) == TableName("customers")
    assert resolve_table("public.customers", {"public.customers": "crm.accounts"}, keep_schema=False) == TableName(
        "accounts", "crm"
    )
