"""Bulk updates and deletes on Postgres and SQLite: many column sets, key order, and failures inside a step.

The sinks run an update or delete step's rows in key order (Postgres: one
``UPDATE ... FROM unnest`` / ``DELETE ... = ANY`` per column set, staged
through COPY when arrays cannot carry a column; SQLite: one ``executemany`` per
column set, deletes on a one-column key one ``DELETE ... IN (...)`` per chunk
of keys). These check that the order a step's rows run in never shows:
field-level semantics per column set, per-key order across levels, and that a
row a constraint rejects fails the whole transaction, then alone once split;
and that SQLite's chunked deletes remove exactly the rows the keys name.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.integration.sql_sinks.helpers import ITEMS, Dest, ev
from tidesync.engine.delivery import DeadLetterWriter, RetryingWriter
from tidesync.errors import PermanentError
from tidesync.retry import RetryPolicy
from tidesync.sinks.sql import sqlite as sqlite_sink
from tidesync.testing import FakeClock

BULK = pytest.mark.parametrize("dest", ["postgres", "sqlite"], indirect=True)
N = 300  # well over the few rows that take the small-batch path


def item(i: int, name: str | None = None, qty: int | None = 0) -> dict[str, Any]:
    return {"id": i, "name": name if name is not None else f"item {i}", "qty": qty}


@BULK
async def test_many_column_sets_in_one_batch_write_only_their_fields(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i, qty=i)) for i in range(N)])
    # Edited in the destination: an update that does not change a field must not overwrite it.
    dest.exec('UPDATE "items" SET "name" = ?, "qty" = ? WHERE "id" - ("id" / 7) * 7 = 0', ["edited", -1])
    sets = [("name",), ("qty",), ("name", "qty"), ()]
    keys = list(range(N))
    random.Random(3).shuffle(keys)  # rows of each column set arrive in random key order
    batch = [
        ev("update", k, N + p, after=item(k, f"new {k}", 1000 + k), changed=sets[k % 4]) for p, k in enumerate(keys)
    ]
    await sink.write(batch)
    expected = []
    for i in range(N):
        name, qty = ("edited", -1) if i % 7 == 0 else (f"item {i}", i)
        changed = sets[i % 4]
        expected.append((i, f"new {i}" if "name" in changed else name, 1000 + i if "qty" in changed else qty))
    assert dest.rows() == expected


@BULK
async def test_update_delete_insert_of_one_key_in_one_batch(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(N)])
    batch = []
    pos = N
    for k in reversed(range(N)):  # each key: update, delete, insert again, update; keys out of order
        batch.append(ev("update", k, pos := pos + 1, after=item(k, "gone", 5), changed=("name", "qty")))
        batch.append(ev("delete", k, pos := pos + 1))
        if k % 3:
            batch.append(ev("insert", k, pos := pos + 1, after={"id": k, "name": f"again {k}"}))
        if k % 3 == 1:
            batch.append(ev("update", k, pos := pos + 1, after=item(k, "ignored", k * 2), changed=("qty",)))
    # Keys never seen before: insert, update, delete, all in this batch.
    for k in range(N, N + 20):
        batch.append(ev("insert", k, pos := pos + 1, after=item(k)))
        batch.append(ev("update", k, pos := pos + 1, after=item(k, qty=9), changed=("qty",)))
        batch.append(ev("delete", k, pos := pos + 1))
    await sink.write(batch)
    expected = [(k, f"again {k}", k * 2 if k % 3 == 1 else None) for k in range(N) if k % 3]
    assert dest.rows() == expected
    # The same batch again is skipped whole: the position was stored with the data.
    dest.exec('UPDATE "items" SET "qty" = 0')
    await sink.write(batch)
    assert dest.rows() == [(k, name, 0) for k, name, _ in expected]


@BULK
async def test_constraint_violation_inside_a_bulk_update_fails_alone_once_split(dest: Dest) -> None:
    dest.exec('CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "name" VARCHAR(50), "qty" INTEGER CHECK ("qty" >= 0))')
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(N)])
    bad = 137

    def update(k: int, p: int) -> Any:
        # Mixed Python types in "name" keep Postgres from sending arrays: the rows go through
        # the staging table (COPY, then UPDATE ... FROM it).
        name: Any = k if k % 2 else f"name {k}"
        return ev("update", k, p, after={"id": k, "name": name, "qty": -1 if k == bad else k}, changed=("name", "qty"))

    keys = list(range(N))
    random.Random(5).shuffle(keys)
    batch = [update(k, N + p) for p, k in enumerate(keys)]
    with pytest.raises(PermanentError) as info:
        await sink.write(batch)
    assert "check" in str(info.value).lower() or "constraint" in str(info.value).lower()
    assert dest.rows() == [(i, f"item {i}", 0) for i in range(N)]  # nothing applied
    stored = dest.applied()
    # The engine's dead-letter wrapper splits the batch until the bad event is alone.
    clock = FakeClock()
    writer = DeadLetterWriter(RetryingWriter(sink, RetryPolicy(max_attempts=1), clock), "p1", "sink", clock)
    letters = await writer.deliver(batch)
    assert [d.event.key for d in letters] == [(bad,)]
    rows = dest.rows()
    assert rows[bad] == (bad, f"item {bad}", 0)
    assert all(r == (k, str(k) if k % 2 else f"name {k}", k) for k, r in enumerate(rows) if k != bad)
    assert dest.applied() != stored


@BULK
async def test_bulk_deletes_in_random_order_with_a_two_column_key(dest: Dest) -> None:
    dest.exec(
        'CREATE TABLE "pairs" ("a" INTEGER NOT NULL, "b" VARCHAR(10) NOT NULL, "v" INTEGER, PRIMARY KEY ("a", "b"))'
    )
    sink = await dest.sink()
    keys = [(a, b) for a in range(30) for b in ("x", "y", "z")]
    await sink.write(
        [ev("insert", 0, p, entity="public.pairs", after={"a": a, "b": b, "v": p}) for p, (a, b) in enumerate(keys, 1)]
    )
    gone = keys[::2]
    order = list(gone)
    random.Random(7).shuffle(order)
    await sink.write(
        [ev("delete", 0, 1000 + p, entity="public.pairs", before={"a": a, "b": b}) for p, (a, b) in enumerate(order)]
    )
    left = dest.query('SELECT "a", "b" FROM "pairs" ORDER BY "a", "b"')
    assert left == sorted(k for k in keys if k not in set(gone))


@pytest.mark.parametrize("dest", ["sqlite"], indirect=True)
async def test_sqlite_deletes_in_chunks_of_keys_with_a_padded_last_chunk(
    dest: Dest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite deletes on a one-column key with DELETE ... IN (...) per chunk of keys, the last chunk
    # padded with a repeated key: small chunks here, so that a batch spans several and ends part-full.
    monkeypatch.setattr(sqlite_sink, "DELETE_CHUNK", 16)
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", i, i, after=item(i)) for i in range(N)])
    gone = [k for k in range(N) if k % 3 == 0] + [N + 5, N + 9]  # 100 rows, and 2 keys with no row
    random.Random(11).shuffle(gone)
    await sink.write([ev("delete", k, N + p) for p, k in enumerate(gone)])
    assert [r[0] for r in dest.rows()] == [k for k in range(N) if k % 3]
    # A lone delete (one key, padded to a full statement) removes its row only.
    await sink.write([ev("delete", 1, 2 * N)])
    assert [r[0] for r in dest.rows()] == [k for k in range(N) if k % 3 and k != 1]


@pytest.mark.parametrize("dest", ["sqlite"], indirect=True)
async def test_sqlite_bulk_delete_compares_keys_as_the_column_does(dest: Dest) -> None:
    # A key column's collation and affinity decide which row a key names, for IN (...) as for "=":
    # 'ABC' names 'abc' in a NOCASE column; in an INTEGER column, the text '7' names 7.
    dest.exec('CREATE TABLE "tags" ("name" TEXT COLLATE NOCASE PRIMARY KEY, "v" INTEGER)')
    dest.exec(ITEMS)
    sink = await dest.sink()
    names = ["abc", "Def", "ghi", "JKL"]
    await sink.write([ev("insert", 0, p, entity="public.tags", after={"name": n, "v": p}) for p, n in enumerate(names)])
    await sink.write([ev("insert", i, 10 + i, after=item(i)) for i in range(10)])
    await sink.write(
        [
            ev("delete", 0, 100, entity="public.tags", before={"name": "ABC"}),
            ev("delete", 0, 101, entity="public.tags", before={"name": "jkl"}),
            ev("delete", 7, 102, before={"id": "7"}),
        ]
    )
    assert dest.query('SELECT "name" FROM "tags" ORDER BY "name"') == [("Def",), ("ghi",)]
    assert [r[0] for r in dest.rows()] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
