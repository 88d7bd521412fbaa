"""Applying changes on each real database: upserts, field-level updates, deletes, truncate, order, exactly once."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.integration.sql_sinks.helpers import ITEMS, Dest, ev
from tidesync.errors import PartialBatchError
from tidesync.event import ChangeEvent


def item(i: int, name: str | None = None, qty: int | None = 0) -> dict[str, Any]:
    return {"id": i, "name": name if name is not None else f"item {i}", "qty": qty}


async def test_inserts_and_snapshot_rows_are_upserts(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(1, 4)])
    await sink.write([ev("snapshot", 2, 10, after=item(2, "again", 7)), ev("insert", 3, 11, after=item(3, "third", 9))])
    assert dest.rows() == [(1, "item 1", 0), (2, "again", 7), (3, "third", 9)]


async def test_snapshot_over_existing_rows_in_large_batches(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(100)])
    dest.exec('UPDATE "items" SET "qty" = 5 WHERE "id" = 3')
    # Half the rows exist (Postgres: the straight COPY fails on the key and the rows are staged instead).
    await sink.write([ev("snapshot", i, 100 + i, after={"id": i, "name": "again"}) for i in range(50, 150)])
    await sink.write([ev("insert", i, 300 + i, after=item(i, "new")) for i in range(150, 200)])
    rows = dest.rows()
    assert len(rows) == 200 and rows[3] == (3, "item 3", 5)
    assert rows[60] == (60, "again", 0) and rows[120] == (120, "again", None) and rows[199] == (199, "new", 0)


async def test_update_writes_only_changed_fields_and_keeps_a_concurrent_edit(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", 1, 1, after=item(1, "apple", 1)), ev("insert", 2, 2, after=item(2, "pear", 1))])
    dest.exec('UPDATE "items" SET "name" = ? WHERE "id" = ?', ["edited in the destination", 1])
    # The source's after image still holds the old name; only qty changed.
    await sink.write(
        [
            ev("update", 1, 3, after=item(1, "apple", 5), changed=("qty",)),
            # Absent from after means unknown: never written, even though it is in changed.
            ev("update", 2, 4, after={"id": 2, "qty": 8}, changed=("name", "qty")),
        ]
    )
    assert dest.rows() == [(1, "edited in the destination", 5), (2, "pear", 8)]


async def test_update_of_a_missing_row_inserts_what_the_event_knows(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("update", 7, 1, after=item(7, "from after", 3), changed=("qty",))])
    assert dest.rows() == [(7, "from after", 3)]


async def test_delete_and_truncate(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(1, 6)])
    await sink.write([ev("delete", 2, 10), ev("delete", 4, 11), ev("delete", 99, 12)])
    assert [r[0] for r in dest.rows()] == [1, 3, 5]
    truncate = ChangeEvent("public.items", (), "truncate", position=(20,))
    await sink.write([ev("insert", 6, 19, after=item(6)), truncate, ev("insert", 8, 21, after=item(8))])
    assert dest.rows() == [(8, "item 8", 0)]


async def test_per_key_order_within_one_batch(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write(
        [
            ev("insert", 1, 1, after=item(1, "first", 1)),
            ev("update", 1, 2, after=item(1, "first", 2), changed=("qty",)),
            ev("delete", 1, 3),
            ev("insert", 1, 4, after={"id": 1, "name": "second"}),
            ev("insert", 2, 5, after=item(2, "two", 1)),
            ev("delete", 2, 6),
            ev("update", 2, 7, after=item(2, "back", 3), changed=("qty",)),
            ev("insert", 3, 8, after=item(3, "three", 1)),
            ev("update", 3, 9, after=item(3, "renamed", 1), changed=("name",)),
            ev("update", 3, 10, after=item(3, "renamed", 4), changed=("qty",)),
        ]
    )
    assert dest.rows() == [(1, "second", None), (2, "back", 3), (3, "renamed", 4)]


async def test_hot_keys_fold_many_updates(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(5)])
    updates = [ev("update", n % 5, 100 + n, after=item(n % 5, qty=n), changed=("qty",)) for n in range(2500)]
    await sink.write(updates)
    assert dest.rows() == [(i, f"item {i}", 2495 + i) for i in range(5)]


async def test_large_batches_of_each_kind(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    n = 2500  # more than one statement's worth on MariaDB
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(n)])
    await sink.write([ev("update", i, n + i, after=item(i, qty=i * 2), changed=("qty",)) for i in range(n)])
    assert dest.query('SELECT count(*), sum("qty") FROM "items"')[0] == (n, sum(i * 2 for i in range(n)))
    await sink.write([ev("delete", i, 3 * n + i) for i in range(0, n, 2)])
    assert dest.query('SELECT count(*) FROM "items"')[0][0] == n // 2


async def test_key_change_moves_the_row(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", 1, 1, after=item(1, "one", 1)), ev("insert", 2, 2, after=item(2, "two", 2))])
    await sink.write(
        [
            ev("update", 1, 3, before={"id": 1}, after=item(10, "one", 5), changed=("id", "qty")),
            ev("update", 10, 4, after=item(10, "ten", 5), changed=("name",)),
            ev("update", 2, 5, after=item(2, "two", 6), changed=("qty",)),
        ]
    )
    assert dest.rows() == [(2, "two", 6), (10, "ten", 5)]


async def test_same_batch_twice_changes_nothing_unless_replayed(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    batch = [ev("insert", 1, 1, after=item(1, "a", 1)), ev("update", 1, 2, after=item(1, "a", 2), changed=("qty",))]
    await sink.write(batch)
    applied = dest.applied()
    dest.exec('UPDATE "items" SET "qty" = 100')
    await sink.write(batch)
    assert dest.rows() == [(1, "a", 100)]
    assert dest.applied() == applied
    # Half old, half new: only the new half is applied.
    await sink.write([*batch, ev("update", 1, 3, after=item(1, "b", 2), changed=("name",))])
    assert dest.rows() == [(1, "b", 100)]
    await sink.write(batch, replay=True)
    assert dest.rows() == [(1, "a", 2)]
    assert dest.applied() != applied  # position 3 stays stored: replay never moves it back
    await sink.write([ev("update", 1, 3, after=item(1, "c", 2), changed=("name",))])
    assert dest.rows() == [(1, "a", 2)]


async def test_positions_are_per_pipeline_and_compare_as_tuples(dest: Dest) -> None:
    dest.exec(ITEMS)
    first = await dest.sink("p1")
    second = await dest.sink("p2")
    e1 = ChangeEvent("public.items", (1,), "insert", after=item(1, "x", 1), position=(10, "b"))
    await first.write([e1])
    e2 = ChangeEvent("public.items", (1,), "update", after=item(1, "y", 1), changed=("name",), position=(9, "z"))
    await first.write([e2])  # (9, "z") < (10, "b"): already applied, skipped
    assert dest.rows() == [(1, "x", 1)]
    await second.write([e2])  # another pipeline has its own position
    assert dest.rows() == [(1, "y", 1)]
    e3 = e2.replace(position=(10, "c"), after=item(1, "z", 1))
    await first.write([e3])
    assert dest.rows() == [(1, "z", 1)]


async def test_new_sink_resumes_from_the_stored_position(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(1, 4)])
    await sink.close()
    again = await dest.sink()
    await again.write([ev("insert", i, i, after=item(i, "replayed")) for i in range(1, 6)])
    assert [r[1] for r in dest.rows()] == ["item 1", "item 2", "item 3", "replayed", "replayed"]


async def test_empty_batch_and_idempotent_close(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([])
    assert dest.applied() is None
    await sink.close()
    await sink.close()


async def test_table_without_key_is_append_only_and_exactly_once(dest: Dest) -> None:
    dest.exec('CREATE TABLE "history" ("tid" INTEGER, "delta" INTEGER, "note" VARCHAR(20))')
    sink = await dest.sink()
    batch = [
        ChangeEvent("public.history", (), "insert", after={"tid": i % 2, "delta": i, "note": "x"}, position=(i,))
        for i in range(1, 6)
    ]
    await sink.write(batch)
    await sink.write(batch)  # a replay after a crash: no duplicates
    assert dest.query('SELECT count(*), sum("delta") FROM "history"')[0] == (5, 15)
    bad = ChangeEvent("public.history", (), "update", after={"tid": 1, "delta": 0}, changed=("delta",), position=(6,))
    with pytest.raises(PartialBatchError) as info:
        await sink.write([bad, batch[0].replace(position=(7,))])
    assert list(info.value.failures) == [0]
    assert "no primary key" in str(info.value.failures[0])
    assert dest.query('SELECT count(*) FROM "history"')[0][0] == 6


async def test_keys_override_for_a_table_without_primary_key(dest: Dest) -> None:
    dest.exec('CREATE TABLE "accounts" ("num" INTEGER NOT NULL, "owner" VARCHAR(20), "balance" INTEGER)')
    dest.exec('CREATE TABLE "ledger" ("num" INTEGER NOT NULL, "owner" VARCHAR(20), "balance" INTEGER)')
    dest.exec('CREATE UNIQUE INDEX "ledger_num" ON "ledger" ("num")')
    sink = await dest.sink(keys={"accounts": ["num"], "public.ledger": ["num"]})
    for entity in ("public.accounts", "public.ledger"):

        def a(num: int, owner: str, balance: int, op: str, pos: int, entity: str = entity) -> ChangeEvent:
            row = {"num": num, "owner": owner, "balance": balance}
            return ChangeEvent(
                entity, (num,), op, after=row, changed=("balance",) if op == "update" else None, position=(pos,)
            )

        await sink.write([a(1, "ann", 10, "insert", 1), a(2, "bob", 20, "insert", 2)])
        await sink.write([a(1, "ann", 15, "update", 3), a(2, "bob", 25, "insert", 4), a(3, "cy", 1, "update", 5)])
        await sink.write([ChangeEvent(entity, (2,), "delete", before={"num": 2}, position=(6,))])
        table = entity.split(".")[1]
        assert dest.query(f'SELECT * FROM "{table}" ORDER BY "num"') == [(1, "ann", 15), (3, "cy", 1)]
        await sink.close()
        sink = await dest.sink(pipeline=f"after-{table}", keys={"accounts": ["num"], "public.ledger": ["num"]})


async def test_renamed_key_column_comes_from_the_row_image(dest: Dest) -> None:
    """Transforms may rename the key: the destination's key is read from after/before, not event.key."""
    dest.exec('CREATE TABLE "people" ("person_id" INTEGER PRIMARY KEY, "email" VARCHAR(50))')
    sink = await dest.sink(tables={"crm.people": "people"})
    mk = ChangeEvent
    await sink.write(
        [
            mk("crm.people", ("a",), "insert", after={"person_id": 1, "email": "a@x"}, position=(1,)),
            mk("crm.people", ("b",), "insert", after={"person_id": 2, "email": "b@x"}, position=(2,)),
            mk("crm.people", ("a",), "delete", before={"person_id": 1}, position=(3,)),
        ]
    )
    assert dest.query('SELECT * FROM "people"') == [(2, "b@x")]


class Model:
    """The reference: what the destination must hold after the same events, applied one by one."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}

    def apply(self, e: ChangeEvent) -> None:
        if e.op == "truncate":
            self.rows.clear()
        elif e.op == "delete":
            self.rows.pop(e.key[0], None)
        elif e.op == "update" and e.key[0] in self.rows:
            assert e.after is not None and e.changed is not None
            self.rows[e.key[0]].update({c: e.after[c] for c in e.changed if c in e.after})
        else:
            assert e.after is not None
            self.rows.setdefault(e.key[0], {}).update(e.after)

    def table(self) -> list[tuple[Any, ...]]:
        return [(k, r.get("name"), r.get("qty")) for k, r in sorted(self.rows.items())]


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_workload_matches_applying_one_by_one(dest: Dest, seed: int) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    rng = random.Random(seed)
    model = Model()
    events = []
    for pos in range(1, 1200):
        k = rng.randrange(12)
        r = rng.random()
        if r < 0.3:
            after = {"id": k, "name": rng.choice(["a", "b", None]), "qty": rng.randrange(5)}
            if rng.random() < 0.3:
                del after["qty"]
            e = ev(rng.choice(["insert", "snapshot"]), k, pos, after=after)
        elif r < 0.75:
            after = {"id": k, "name": rng.choice(["c", "d"]), "qty": rng.randrange(100)}
            changed = tuple(rng.sample(["name", "qty"], rng.randrange(3)))
            e = ev("update", k, pos, after=after, changed=changed)
        elif r < 0.99:
            e = ev("delete", k, pos)
        else:
            e = ChangeEvent("public.items", (), "truncate", position=(pos,))
        events.append(e)
    start = 0
    while start < len(events):
        size = rng.choice([1, 3, 50, 400])
        batch = events[start : start + size]
        await sink.write(batch)
        for e in batch:
            model.apply(e)
        assert dest.rows() == model.table(), f"after events {start}..{start + size}"
        start += size
