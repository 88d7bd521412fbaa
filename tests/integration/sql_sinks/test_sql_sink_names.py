"""Column names each database cannot take: one event fails permanently, never the pipeline.

Each case once wedged a pipeline: ``ADD COLUMN`` created another name than the
field's (Postgres cuts names at 63 bytes and at a NUL; MariaDB takes ``Email``
for ``email``), the write kept finding the column missing, and the transient
error was retried forever with every later event behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from tests.integration.sql_sinks.helpers import ITEMS, Dest, ev
from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.errors import PartialBatchError, PermanentError
from tidesync.event import ChangeEvent
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig, SqliteSinkConfig
from tidesync.state import open_state_store
from tidesync.state.store import DeadLetterFilter, StateStore
from tidesync.testing import ListSource, eventually

LONG_PG = "x" * 70  # 70 bytes
UMLAUTS_64 = "ä" * 32  # 32 characters, 64 bytes of UTF-8
UMLAUTS_63 = "ä" * 31 + "a"  # 63 bytes: the longest Postgres name


def item(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": i, "name": f"n{i}", "qty": i, **extra}


def columns(dest: Dest) -> list[str]:
    if dest.kind == "sqlite":
        return [r[1] for r in dest.query('PRAGMA table_info("items")')]
    rows = dest.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'items' "
        + ("AND table_schema = DATABASE()" if dest.kind == "mariadb" else "AND table_schema = 'public'")
        + " ORDER BY ordinal_position"
    )
    return [r[0] for r in rows]


async def rejects_one(dest: Dest, field: str, words: list[str], **options: Any) -> None:
    """A batch whose second event writes ``field``: only that event fails, permanently, and a
    second batch goes through."""
    dest.exec(ITEMS)
    sink = await dest.sink(evolve="add_columns", **options)
    batch = [
        ev("insert", 1, 1, after=item(1)),
        ev("insert", 2, 2, after=item(2, **{field: "v"})),
        ev("update", 2, 3, after={"id": 2, "qty": 20}, changed=("qty",)),  # waits behind its key
        ev("insert", 3, 4, after=item(3, colour="red")),  # a good new column is still added
    ]
    with pytest.raises(PartialBatchError) as info:
        await sink.write(batch)
    assert sorted(info.value.failures) == [1, 2]
    error = info.value.failures[1]
    assert isinstance(error, PermanentError) and not error.transient
    message = str(error)
    for w in words:
        assert w in message, message
    assert "earlier event of this key failed" in str(info.value.failures[2])
    assert dest.query('SELECT "id", "colour" FROM "items" ORDER BY "id"') == [(1, None), (3, "red")]
    assert columns(dest) == ["id", "name", "qty", "colour"]  # nothing was added for the bad name
    # No wedge: the next batch is written at once.
    await sink.write(
        [ev("insert", 4, 5, after=item(4)), ev("update", 1, 6, after={"id": 1, "qty": 9}, changed=("qty",))]
    )
    assert dest.query('SELECT "id", "qty" FROM "items" ORDER BY "id"') == [(1, 9), (3, 3), (4, 4)]


@pytest.mark.parametrize("dest", ["postgres"], indirect=True)
async def test_postgres_name_over_63_bytes_fails_its_event_only(dest: Dest) -> None:
    await rejects_one(dest, LONG_PG, ["column name 'xxxxxxxx", "…", "is 70 bytes; Postgres allows 63"])


@pytest.mark.parametrize("dest", ["postgres"], indirect=True)
async def test_postgres_counts_bytes_not_characters(dest: Dest) -> None:
    await rejects_one(dest, UMLAUTS_64, ["is 64 bytes; Postgres allows 63"])
    sink = dest.sinks[0]
    await sink.write([ev("insert", 5, 7, after=item(5, **{UMLAUTS_63: "fits"}))])
    assert UMLAUTS_63 in columns(dest)
    assert dest.query(f'SELECT "{UMLAUTS_63}" FROM "items" WHERE "id" = 5') == [("fits",)]


async def test_nul_in_a_name_fails_its_event_only(dest: Dest) -> None:
    db = {"postgres": "Postgres", "mariadb": "MariaDB", "sqlite": "SQLite"}[dest.kind]
    await rejects_one(dest, "bad\x00name", ["'bad\\x00name'", f"contains a NUL character, which {db} does not allow"])


@pytest.mark.parametrize("dest", ["mariadb"], indirect=True)
async def test_mariadb_name_over_64_characters_fails_its_event_only(dest: Dest) -> None:
    await rejects_one(dest, "y" * 65, ["column name 'yyyy", "is 65 characters; MariaDB allows 64"])
    sink = dest.sinks[0]
    await sink.write([ev("insert", 5, 7, after=item(5, **{"z" * 64: "fits"}))])
    assert "z" * 64 in columns(dest)


@pytest.mark.parametrize("dest", ["mariadb"], indirect=True)
async def test_mariadb_refuses_trailing_space_and_emoji(dest: Dest) -> None:
    await rejects_one(dest, "size ", ["'size '", "ends with a space"])
    sink = dest.sinks[0]
    with pytest.raises(PartialBatchError) as info:
        await sink.write([ev("insert", 6, 8, after=item(6, **{"mood😀": "x"})), ev("insert", 7, 9, after=item(7))])
    assert list(info.value.failures) == [0]
    assert "beyond U+FFFF" in str(info.value.failures[0])


@pytest.mark.parametrize("dest", ["mariadb", "sqlite"], indirect=True)
async def test_a_name_differing_in_case_writes_the_existing_column(dest: Dest) -> None:
    dest.exec(ITEMS)
    for evolve in ("block", "dead_letter", "add_columns"):
        sink = await dest.sink(evolve=evolve)
        await sink.write(
            [
                ev("insert", 1, 1, after={"ID": 1, "Name": "first", "QTY": 1}),
                ev("update", 1, 2, after={"id": 1, "NAME": "second"}, changed=("NAME",)),
            ],
            replay=True,
        )
        assert dest.rows() == [(1, "second", 1)]
        assert columns(dest) == ["id", "name", "qty"]  # no second column
        await sink.write([ev("delete", 1, 3, before={"ID": 1, "Name": "second"})], replay=True)
        assert dest.rows() == []


@pytest.mark.parametrize("dest", ["mariadb", "sqlite"], indirect=True)
async def test_two_fields_naming_one_column_fail_their_event(dest: Dest) -> None:
    await rejects_one(dest, "NAME", ["fields 'name' and 'NAME'", "both name column 'name'", "ignore"])


@pytest.mark.parametrize("dest", ["mariadb"], indirect=True)
async def test_mariadb_taking_a_new_name_for_an_existing_column_is_permanent(dest: Dest) -> None:
    # MariaDB takes 'İ' (capital dotted I) as the existing column 'i'; the sink's fold does not
    # (it never matches wider than the database), so it adds the column, sees it still missing,
    # and fails the event rather than retrying.
    dest.exec('CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "name" VARCHAR(50), "qty" INTEGER, "i" INTEGER)')
    sink = await dest.sink(evolve="add_columns")
    with pytest.raises(PartialBatchError) as info:
        await sink.write([ev("insert", 1, 1, after={"id": 1, "İ": 5}), ev("insert", 2, 2, after=item(2))])
    assert list(info.value.failures) == [0]
    message = str(info.value.failures[0])
    assert isinstance(info.value.failures[0], PermanentError)
    assert "'İ' is still missing" in message and "after ALTER TABLE ... ADD COLUMN ran" in message
    assert dest.query('SELECT "id", "i" FROM "items"') == [(2, None)]
    await sink.write([ev("insert", 3, 3, after=item(3))])
    assert [r[0] for r in dest.query('SELECT "id" FROM "items" ORDER BY "id"')] == [2, 3]


# --- through a whole pipeline ------------------------------------------------------------------


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


@pytest.mark.parametrize(("dest", "field"), [("postgres", LONG_PG), ("mariadb", "Y" * 65)], indirect=["dest"])
async def test_a_pipeline_dead_letters_the_bad_name_and_keeps_flowing(
    dest: Dest, field: str, store: StateStore
) -> None:
    dest.exec(ITEMS)
    events = [ev("insert", i, i, after=item(i)) for i in range(1, 6)]
    events[2] = ev("insert", 3, 3, after=item(3, **{field: "v"}))
    events += [ev("update", i, 0, after={"id": i, "qty": 100 + i}, changed=("qty",)) for i in range(1, 6)]
    events += [ev("insert", i, 0, after=item(i, colour="blue")) for i in range(6, 40)]
    sink = await dest.sink(evolve="add_columns")
    runner = PipelineRunner("p1", ListSource(events), sink, store, batch=BatchPolicy(4, 0.01))
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
    letters = await store.dlq_list(DeadLetterFilter(pipeline="p1"))
    assert [(e.key, e.error_class) for e in letters] == [((3,), "permanent"), ((3,), "blocked")]
    assert "column name" in letters[0].error and ("bytes" in letters[0].error or "characters" in letters[0].error)
    rows = dest.query('SELECT "id", "qty", "colour" FROM "items" ORDER BY "id"')
    assert [r[0] for r in rows] == [1, 2, *range(4, 40)]
    assert rows[0] == (1, 101, None) and rows[-1] == (39, 39, "blue")
    assert runner.stats.events_written == len(events) - 2


@pytest.mark.parametrize("dest", ["postgres", "mariadb"], indirect=True)
async def test_a_table_name_the_database_cannot_take_is_not_created(dest: Dest) -> None:
    long = "t" * 70
    sink = await dest.sink(create_tables=True)
    with pytest.raises(PartialBatchError) as info:
        await sink.write(
            [
                ChangeEvent(f"hooks.{long}", (1,), "insert", after={"id": 1}, position=(1,)),
                ev("insert", 1, 2, after=item(1)),
            ]
        )
    assert list(info.value.failures) == [0]  # the other entity's table was created and written
    message = str(info.value.failures[0])
    assert isinstance(info.value.failures[0], PermanentError)
    assert "cannot be created: table name 'tttt" in message
    assert (
        "is 70 bytes; Postgres allows 63" if dest.kind == "postgres" else "is 70 characters; MariaDB allows 64"
    ) in message
    assert dest.query('SELECT "id" FROM "items"') == [(1,)]


def test_configured_names_the_database_cannot_take_fail_at_start() -> None:
    with pytest.raises(ValidationError, match=r"tables\.shop\.orders: table name 'o.*64 bytes; Postgres allows 63"):
        PostgresSinkConfig(dsn="postgresql://x/y", tables={"shop.orders": "o" * 64})
    with pytest.raises(ValidationError, match=r"keys\.orders: key column name 'a ' ends with a space"):
        MariadbSinkConfig(dsn="mysql://root@h/db", keys={"orders": ["a "]})
    with pytest.raises(ValidationError, match=r"tables\.e: table name 'sqlite_e' starts with 'sqlite_'"):
        SqliteSinkConfig(path="x.db", tables={"e": "sqlite_e"})
    assert PostgresSinkConfig(dsn="postgresql://x/y", tables={"e": "public." + "o" * 63}).tables
