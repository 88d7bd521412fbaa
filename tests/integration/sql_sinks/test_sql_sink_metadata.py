"""Metadata columns and soft deletes on each real database: values, soft deletes, exactly once, field level."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from tests.integration.sql_sinks.helpers import ITEMS, Dest, ev
from tidesync.errors import SystemicError
from tidesync.event import ChangeEvent

META = {
    "synced_at": "_synced_at",
    "committed_at": "_committed_at",
    "op": "_op",
    "deleted": "_deleted",
    "position": "_position",
}
COLS = '"id", "name", "qty", "_synced_at", "_committed_at", "_op", "_deleted", "_position"'
T0 = 1_700_000_000.0


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def moment(v: Any) -> dt.datetime | None:
    """A timestamp as each database returns it (aware, naive UTC, ISO text), as an aware datetime."""
    if v is None:
        return None
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v)
    return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)


def table(dest: Dest) -> dict[int, tuple[Any, ...]]:
    """id -> (name, qty, synced_at, committed_at, op, deleted, position), values made portable."""
    out = {}
    for r in dest.query(f'SELECT {COLS} FROM "items" ORDER BY "id"'):
        out[r[0]] = (r[1], r[2], moment(r[3]), moment(r[4]), r[5], bool(r[6]), r[7])
    return out


def e(op: str, key: int, pos: int, committed: float, **kw: Any) -> ChangeEvent:
    return ev(op, key, pos, **kw).replace(committed_at=committed)


async def test_values_on_insert_update_and_soft_delete(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink(metadata=META, deletes="soft", create_tables=True)  # adds the metadata columns
    before = dt.datetime.now(dt.UTC)
    await sink.write(
        [
            e("insert", 1, 1, T0, after={"id": 1, "name": "a", "qty": 1}),
            e("insert", 2, 2, T0 + 1, after={"id": 2, "name": "b", "qty": 2}),
            e("insert", 3, 3, T0 + 2, after={"id": 3, "name": "c", "qty": 3}),
            e("delete", 3, 4, T0 + 3),  # inserted and soft-deleted in one batch: the row stays, flagged
            e("delete", 9, 5, T0 + 4),  # a soft delete of a row the destination never held writes nothing
        ]
    )
    first = table(dest)
    assert sorted(first) == [1, 2, 3]
    s1 = first[1][2]
    assert s1 is not None and before - dt.timedelta(seconds=1) <= s1 <= dt.datetime.now(dt.UTC)
    assert first[1] == ("a", 1, s1, at(T0), "insert", False, "[1]")
    assert first[3] == ("c", 3, s1, at(T0 + 3), "delete", True, "[4]")
    await sink.write(
        [
            e("update", 1, 6, T0 + 5, after={"id": 1, "name": "a", "qty": 10}, changed=("qty",)),
            e("delete", 2, 7, T0 + 6, before={"id": 2}),
        ]
    )
    second = table(dest)
    s2 = second[1][2]
    assert s2 is not None and s2 >= s1
    assert second[1] == ("a", 10, s2, at(T0 + 5), "update", False, "[6]")
    assert second[2] == ("b", 2, s2, at(T0 + 6), "delete", True, "[7]")  # data kept, flagged
    # Inserted again at the source: live again.
    await sink.write([e("insert", 2, 8, T0 + 7, after={"id": 2, "name": "b2", "qty": 5})])
    assert table(dest)[2][:2] == ("b2", 5) and table(dest)[2][4:] == ("insert", False, "[8]")


async def test_hard_deletes_remove_the_row_and_new_tables_get_the_columns(dest: Dest) -> None:
    # No table: create_tables makes it from the events, metadata columns included.
    sink = await dest.sink(metadata=["synced_at", "op"], create_tables=True)
    await sink.write([ev("insert", i, i, after={"id": i, "name": f"n{i}", "qty": i}) for i in (1, 2)])
    await sink.write([ev("delete", 1, 3)])
    got = dest.query('SELECT "id", "_tidesync_op", "_tidesync_synced_at" FROM "items" ORDER BY "id"')
    assert [(r[0], r[1]) for r in got] == [(2, "insert")] and moment(got[0][2]) is not None


async def test_a_batch_delivered_again_writes_nothing_twice(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink(metadata=META, deletes="soft", create_tables=True)
    batch = [
        e("insert", 1, 1, T0, after={"id": 1, "name": "a", "qty": 1}),
        e("insert", 2, 2, T0, after={"id": 2, "name": "b", "qty": 1}),
        e("delete", 2, 3, T0),
    ]
    await sink.write(batch)
    applied = table(dest)
    position = dest.applied()
    await sink.write(batch)  # the same sink, again
    await sink.close()
    again = await dest.sink(metadata=META, deletes="soft")  # a restarted one, with one new event after them
    await again.write([*batch, e("update", 1, 4, T0 + 1, after={"id": 1, "qty": 2}, changed=("qty",))])
    final = table(dest)
    assert final[2] == applied[2]  # synced_at of the first apply, unchanged
    assert final[1][1] == 2 and final[1][2] is not None and final[1][2] >= applied[1][2]  # type: ignore[operator]
    assert final[1][6] == "[4]" and dest.applied() != position


async def test_an_update_keeps_a_destination_edit_of_another_column(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink(metadata=META, deletes="soft", create_tables=True)
    await sink.write([e("insert", 1, 1, T0, after={"id": 1, "name": "source", "qty": 1})])
    dest.exec('UPDATE "items" SET "name" = ? WHERE "id" = ?', ["edited in the destination", 1])
    await sink.write([e("update", 1, 2, T0 + 1, after={"id": 1, "name": "source", "qty": 7}, changed=("qty",))])
    row = table(dest)[1]
    assert row[:2] == ("edited in the destination", 7) and row[4:] == ("update", False, "[2]")
    await sink.write([e("delete", 1, 3, T0 + 2)])
    row = table(dest)[1]
    assert row[:2] == ("edited in the destination", 7) and row[4:] == ("delete", True, "[3]")


async def test_a_missing_metadata_column_blocks_with_the_alter_table_to_run(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink(metadata=META, deletes="soft")
    batch = [e("insert", 1, 1, T0, after={"id": 1, "name": "a", "qty": 1})]
    with pytest.raises(SystemicError) as caught:
        await sink.write(batch)
    message = str(caught.value)
    assert "_synced_at" in message and "create_tables: true" in message
    assert dest.query('SELECT COUNT(*) FROM "items"') == [(0,)]
    m = re.search(r"run: (ALTER TABLE .*?) -- or", message)
    assert m is not None, message
    for statement in m.group(1).split("; "):  # SQLite: one ALTER TABLE per column
        dest.exec(statement)
    await sink.write(batch)  # resumes once the columns exist
    assert table(dest)[1][4:] == ("insert", False, "[1]")
