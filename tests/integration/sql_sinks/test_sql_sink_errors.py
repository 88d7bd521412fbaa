"""Each error class on each real database: what is transient, what is permanent, and that a failure leaves nothing.

A failed write must roll back: no row of the batch and no new stored
position. Permanent errors reach the dead-letter queue through the engine's
own delivery wrappers, which split the batch until the bad event is alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from tests.integration.sql_sinks.helpers import ITEMS, Dest, ev
from tidesync.engine.delivery import DeadLetterWriter, RetryingWriter
from tidesync.errors import PermanentError, SystemicError, TransientError
from tidesync.protocols import Context
from tidesync.retry import RetryPolicy
from tidesync.sinks.sql.common import SqlSink
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig
from tidesync.sinks.sql.mariadb import MariadbSink
from tidesync.sinks.sql.postgres import PostgresSink
from tidesync.testing import FakeClock, eventually

SERVERS = pytest.mark.parametrize("dest", ["postgres", "mariadb"], indirect=True)


def item(i: int, name: str = "ok", qty: int | None = 1) -> dict[str, Any]:
    return {"id": i, "name": name, "qty": qty}


# --- values and constraints the destination rejects --------------------------------------------


async def test_bad_value_fails_the_batch_leaves_nothing_and_is_isolated(dest: Dest) -> None:
    check = ' CHECK (length("name") <= 5)' if dest.kind == "sqlite" else ""
    dest.exec(f'CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "name" VARCHAR(5){check}, "qty" INTEGER)')
    dest.exec('CREATE TABLE "other" ("id" INTEGER PRIMARY KEY, "name" VARCHAR(50), "qty" INTEGER)')
    sink = await dest.sink()
    batch = [
        ev("insert", 1, 1, entity="public.other", after=item(1)),
        ev("insert", 1, 2, after=item(1)),
        ev("insert", 2, 3, after=item(2, "far too long")),
        ev("insert", 3, 4, after=item(3)),
    ]
    with pytest.raises(PermanentError) as info:
        await sink.write(batch)
    assert "too long" in str(info.value) or "CHECK" in str(info.value) or "constraint" in str(info.value)
    assert dest.rows() == [] and dest.rows("other") == []
    assert dest.applied() is None
    # The engine's dead-letter wrapper splits the batch: only the bad event is parked.
    clock = FakeClock()
    writer = DeadLetterWriter(RetryingWriter(sink, RetryPolicy(max_attempts=1), clock), "p1", "sink", clock)
    letters = await writer.deliver(batch)
    assert [(d.event.position, d.error_class) for d in letters] == [((3,), "permanent")]
    assert dest.rows() == [(1, "ok", 1), (3, "ok", 1)] and dest.rows("other") == [(1, "ok", 1)]


@pytest.mark.parametrize(
    ("ddl", "event", "words"),
    [
        ('"qty" INTEGER CHECK ("qty" >= 0)', ev("insert", 1, 1, after=item(1, qty=-1)), "check"),
        ('"qty" INTEGER NOT NULL', ev("update", 1, 1, after={"id": 1, "name": "x"}, changed=("name",)), "null"),
        ('"qty" INTEGER UNIQUE', ev("insert", 2, 1, after=item(2, qty=7)), "duplicate|unique"),
        ('"qty" INTEGER', ev("insert", 1, 1, after=item(1, qty="seven")), "integer|incorrect|datatype|cannot store"),
    ],
    ids=["check", "not-null", "unique", "bad-type"],
)
async def test_constraint_and_type_violations_are_permanent(dest: Dest, ddl: str, event: Any, words: str) -> None:
    # SQLite checks types only in STRICT tables (which know no VARCHAR).
    strict = dest.kind == "sqlite"
    name_type = "TEXT" if strict else "VARCHAR(50)"
    dest.exec(
        f'CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "name" {name_type}, {ddl}){" STRICT" if strict else ""}'
    )
    dest.exec('INSERT INTO "items" ("id", "name", "qty") VALUES (5, ?, 7)', ["existing"])
    sink = await dest.sink()
    with pytest.raises(PermanentError) as info:
        await sink.write([ev("insert", 3, 0, after=item(3)), event])
    message = str(info.value).lower()
    assert any(w in message for w in words.split("|")), message
    assert dest.rows() == [(5, "existing", 7)]
    assert dest.applied() is None


async def test_missing_table_is_systemic_and_writes_nothing(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    batch = [ev("insert", 1, 1, entity="public.accounts", after=item(1)), ev("insert", 1, 2, after=item(1))]
    # Every event of public.accounts would fail: the engine holds the batch (blocked) instead of dead-lettering.
    with pytest.raises(SystemicError) as info:
        await sink.write(batch)
    message = str(info.value)
    assert "accounts does not exist in" in message and "create_tables: true" in message
    assert info.value.entity == "public.accounts" and not isinstance(info.value, PermanentError)
    assert dest.rows() == [] and dest.applied() is None  # nothing applied, no position stored
    # The table is created; the engine's probe (the same batch) goes through.
    dest.exec(ITEMS.replace('"items"', '"accounts"'))
    await sink.write(batch)
    assert dest.rows() == [(1, "ok", 1)] and dest.rows("accounts") == [(1, "ok", 1)]


async def test_missing_column_is_systemic_and_writes_nothing(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    with pytest.raises(SystemicError) as info:
        await sink.write(
            [
                ev("insert", 1, 1, after=item(1)),
                ev("update", 1, 2, after={"id": 1, "email": "a@x"}, changed=("email",)),
                ev("update", 1, 3, after=item(1, "later"), changed=("name",)),
                ev("insert", 2, 4, after=item(2)),
            ]
        )
    assert "email" in str(info.value) and "evolve: add_columns" in str(info.value)
    assert info.value.entity == "public.items"
    assert dest.rows() == [] and dest.applied() is None


# --- permissions -------------------------------------------------------------------------------


@pytest.fixture
def limited_user(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Makes a user that may read but not write ``items``; dropped afterwards."""
    made: list[tuple[Dest, str]] = []

    def make(d: Dest) -> str:
        name = f"ts_ro_{uuid.uuid4().hex[:8]}"
        made.append((d, name))
        if d.kind == "postgres":
            d.exec(f"CREATE ROLE {name} LOGIN")
            d.exec(f"GRANT SELECT ON items TO {name}")
            d.exec(
                "CREATE TABLE _tidesync_applied (pipeline text, sink text, position bytea NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink))"
            )
            d.exec(f"GRANT ALL ON _tidesync_applied TO {name}")
            return d.target.replace("postgresql://postgres@", f"postgresql://{name}@")
        db = d.target.rsplit("/", 1)[1]
        d.exec(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'pw'")
        d.exec(f"GRANT SELECT ON `{db}`.* TO '{name}'@'%'")
        d.exec(f"GRANT ALL ON `{db}`.`_tidesync_applied` TO '{name}'@'%'")
        d.exec(
            "CREATE TABLE _tidesync_applied (pipeline VARCHAR(191), sink VARCHAR(191), position VARBINARY(4096) "
            "NOT NULL, applied_at DATETIME(6) NOT NULL, PRIMARY KEY (pipeline, sink))"
        )
        return f"mysql://{name}:pw@127.0.0.1:3306/{db}"

    yield make
    for d, name in made:
        if d.kind == "postgres":
            d.exec(f"DROP OWNED BY {name}")
            d.exec(f"DROP ROLE {name}")
        else:
            d.exec(f"DROP USER '{name}'@'%'")


@SERVERS
async def test_missing_privilege_is_systemic(dest: Dest, limited_user: Any) -> None:
    d = dest
    d.exec(ITEMS)
    dsn = limited_user(d)
    sink = await d.sink(target=dsn)
    with pytest.raises(SystemicError) as info:
        await sink.write([ev("insert", 1, 1, after=item(1))])
    assert "privilege" in str(info.value) or "denied" in str(info.value)
    assert d.rows() == []


# --- waiting for locks -------------------------------------------------------------------------


async def test_lock_timeout_is_transient_and_the_retry_succeeds(dest: Dest) -> None:
    dest.exec(ITEMS)
    dest.exec('INSERT INTO "items" VALUES (1, ?, 1)', ["held"])
    sink = await dest.sink(lock_timeout=0.2)
    other = dest.other()
    try:
        if dest.kind == "sqlite":
            other.execute("BEGIN IMMEDIATE")
        else:
            other.cursor().execute(dest.sql('UPDATE "items" SET "qty" = 2 WHERE "id" = 1'))
        batch = [ev("insert", 2, 1, after=item(2)), ev("update", 1, 2, after=item(1, "new", 5), changed=("qty",))]
        with pytest.raises(TransientError) as info:
            await sink.write(batch)
        assert "lock" in str(info.value).lower()
    finally:
        other.rollback() if dest.kind != "sqlite" else other.execute("ROLLBACK")
        other.close()
    assert dest.rows() == [(1, "held", 1)]
    assert dest.applied() is None
    await sink.write(batch)
    assert dest.rows() == [(1, "held", 5), (2, "ok", 1)]


async def _waiting_for_lock(d: Dest, table: str) -> bool:
    """Whether the sink's statement on ``table`` is waiting (for a row lock the test holds)."""
    if d.kind == "postgres":
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database() AND query LIKE ?"
        )
        rows = d.query(query, [f'UPDATE %"{table}" AS _d%'])
    else:
        # INNODB_TRX may not list the waiting transaction yet; the process list shows the statement.
        query = "SELECT count(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND INFO LIKE ?"
        rows = d.query(query, [f"UPDATE `{table}` AS _d%"])
    return bool(rows[0][0])


@SERVERS
async def test_deadlock_is_transient_and_rolled_back(dest: Dest) -> None:
    d, kind = dest, dest.kind
    for t in ("a", "b"):
        d.exec(f'CREATE TABLE "{t}" ("id" INTEGER PRIMARY KEY, "name" VARCHAR(50), "qty" INTEGER)')
        d.exec(f'INSERT INTO "{t}" VALUES (1, ?, 0)', ["start"])
    d.exec('CREATE TABLE "bulk" ("id" INTEGER PRIMARY KEY)')
    d.exec(
        'INSERT INTO "bulk" VALUES (0)'
    )  # not empty: MariaDB logs bulk inserts into an empty table as one undo record
    sink = await d.sink()
    other = d.other()
    try:
        cur = other.cursor()
        if kind == "postgres":
            cur.execute("SET deadlock_timeout = '20s'")  # the sink's session, waiting first, detects the cycle
        else:  # InnoDB aborts the lighter transaction: make the other one heavier
            cur.execute("INSERT INTO bulk VALUES " + ", ".join(f"({i})" for i in range(1, 200)))
        cur.execute(d.sql('UPDATE "b" SET "qty" = 9 WHERE "id" = 1'))
        batch = [
            ev("update", 1, 1, entity="public.a", after=item(1, "sink", 1), changed=("qty",)),
            ev("update", 1, 2, entity="public.b", after=item(1, "sink", 1), changed=("qty",)),
        ]
        write = asyncio.create_task(sink.write(batch))
        await eventually(lambda: _waiting_for_lock(d, "b"), message="the sink waiting for the row lock")
        closing = asyncio.create_task(asyncio.to_thread(cur.execute, d.sql('UPDATE "a" SET "qty" = 9 WHERE "id" = 1')))
        with pytest.raises(TransientError) as info:
            await write
        assert "deadlock" in str(info.value).lower()
        await closing
    finally:
        other.rollback()
        other.close()
    assert d.rows("a") == [(1, "start", 0)] and d.applied() is None
    await sink.write(batch)
    assert d.rows("a") == [(1, "start", 1)] and d.rows("b") == [(1, "start", 1)]


@pytest.mark.parametrize("dest", ["postgres"], indirect=True)
async def test_serialization_failure_is_transient(dest: Dest) -> None:
    pg_dest = dest
    # The sink runs READ COMMITTED, where Postgres raises 40001 only in rare races; a trigger
    # raising the same SQLSTATE makes the destination answer exactly as such a race would.
    pg_dest.exec(ITEMS)
    pg_dest.exec(
        "CREATE FUNCTION conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure'; END $$"
    )
    pg_dest.exec("CREATE TRIGGER conflict BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION conflict()")
    sink = await pg_dest.sink()
    with pytest.raises(TransientError) as info:
        await sink.write([ev("insert", 1, 1, after=item(1))])
    assert "serialization failure" in str(info.value) and "40001" in str(info.value)
    pg_dest.exec("DROP TRIGGER conflict ON items")
    await sink.write([ev("insert", 1, 1, after=item(1))])
    assert pg_dest.rows() == [(1, "ok", 1)]


# --- connections -------------------------------------------------------------------------------


def _kill_sink_sessions(d: Dest, spare: Any = None) -> None:
    """End every session on the destination but the test's own and ``spare`` (another test connection)."""
    if d.kind == "postgres":
        keep = spare.info.backend_pid if spare is not None else 0
        d.exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> ?",
            [keep],
        )
    else:
        me = d.query("SELECT CONNECTION_ID()")[0][0]
        keep = spare.thread_id() if spare is not None else 0
        db = d.target.rsplit("/", 1)[1]
        query = "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> ? AND ID <> ?"
        for (pid,) in d.query(query, [db, me, keep]):
            try:
                d.exec(f"KILL {int(pid)}")
            except pymysql.err.OperationalError:
                pass  # already gone


@SERVERS
async def test_lost_connection_is_transient_and_the_next_write_reconnects(dest: Dest) -> None:
    d = dest
    d.exec(ITEMS)
    sink = await d.sink()
    await sink.write([ev("insert", 1, 1, after=item(1))])
    _kill_sink_sessions(d)
    with pytest.raises(TransientError) as info:
        await sink.write([ev("insert", 2, 2, after=item(2))])
    assert "reconnect" in str(info.value)
    await sink.write([ev("insert", 2, 2, after=item(2))])
    assert d.rows() == [(1, "ok", 1), (2, "ok", 1)]


@SERVERS
async def test_connection_killed_mid_write_leaves_nothing(dest: Dest) -> None:
    d, kind = dest, dest.kind
    d.exec(ITEMS)
    d.exec('INSERT INTO "items" VALUES (1, ?, 1)', ["held"])
    sink = await d.sink()
    await sink.write([ev("insert", 3, 1, after=item(3))])
    applied = d.applied()
    other = d.other()
    try:
        other.cursor().execute(d.sql('UPDATE "items" SET "qty" = 2 WHERE "id" = 1'))
        batch = [ev("insert", 2, 2, after=item(2)), ev("update", 1, 3, after=item(1, "x", 7), changed=("qty",))]
        write = asyncio.create_task(sink.write(batch))
        await eventually(lambda: _waiting_for_lock(d, "items"), message="the sink waiting for the row lock")
        _kill_sink_sessions(d, spare=other)
        with pytest.raises(TransientError) as info:
            await write
        if kind == "postgres":
            assert "administrator command" in str(info.value) or "lost" in str(info.value)
    finally:
        other.rollback()
        other.close()
    assert d.rows() == [(1, "held", 1), (3, "ok", 1)] and d.applied() == applied
    await sink.write(batch)
    assert d.rows() == [(1, "held", 7), (2, "ok", 1), (3, "ok", 1)]


@pytest.mark.parametrize("dest", ["sqlite"], indirect=True)
async def test_sqlite_closed_connection_reconnects(dest: Dest) -> None:
    dest.exec(ITEMS)
    sink = await dest.sink()
    await sink.write([ev("insert", 1, 1, after=item(1))])
    backend: Any = sink.backend
    await backend._w.call(backend._c.conn.close)  # the file handle goes away behind the sink's back
    with pytest.raises(TransientError):
        await sink.write([ev("insert", 2, 2, after=item(2))])
    await sink.write([ev("insert", 2, 2, after=item(2))])
    assert dest.rows() == [(1, "ok", 1), (2, "ok", 1)]


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://postgres@127.0.0.1:1/postgres", "mysql://root@127.0.0.1:1/nothing"],
    ids=["postgres", "mariadb"],
)
async def test_connection_refused_is_transient(dsn: str) -> None:
    sink: SqlSink
    if dsn.startswith("postgresql"):
        sink = PostgresSink(PostgresSinkConfig(dsn=dsn, connect_timeout=2))
    else:
        sink = MariadbSink(MariadbSinkConfig(dsn=dsn, connect_timeout=2))
    with pytest.raises(TransientError) as info:
        await sink.open(Context(pipeline="p1", name="sink", state=None))  # type: ignore[arg-type]
    assert "127.0.0.1" in str(info.value) or "refused" in str(info.value).lower()
