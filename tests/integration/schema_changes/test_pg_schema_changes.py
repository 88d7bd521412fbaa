"""Schema changes at a Postgres source reach Postgres and MariaDB sinks, under load, before the new rows.

Each test: a table with rows, a pipeline running in this process, a writer
inserting and updating rows while the DDL runs at the source, then the writer
stops and the destination must equal the source (a checksum over the rows),
with the change applied as the pipeline's ``schema_changes: evolve`` promises:
ADD COLUMN with its default in the existing destination rows, DROP COLUMN kept
and nullable, RENAME COLUMN renamed, widened types widened (values that need
the width arrive whole), a narrowing blocks visibly until the destination
column is changed by hand, and a table added to the publication flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.integration.e2e_support import mariadb_checksum, pg_checksum
from tidesync.config import load_config_text
from tidesync.engine.build import build_engine
from tidesync.sources.postgres.config import default_name
from tidesync.testing import eventually

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}", tables: [public.items], heartbeat_interval: 0.5}}
    sink: {sink}
    batch: {{max_events: 50, max_wait_ms: 20}}
    probe: {{initial_delay: 0.05, max_delay: 0.3}}
    schema_changes: {policy}
"""
N = 200


def _mdb(dsn: str) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=dsn.rsplit("/", 1)[1])


class Dest:
    """The destination database, Postgres or MariaDB, read synchronously."""

    def __init__(self, kind: str, dsn: str) -> None:
        self.kind, self.dsn = kind, dsn

    @property
    def sink(self) -> str:
        return f'{{type: {self.kind}, dsn: "{self.dsn}", create_tables: true}}'

    def table(self, name: str) -> str:
        return f"public.{name}" if self.kind == "postgres" else name

    def query(self, q: str) -> list[tuple[Any, ...]]:
        if self.kind == "postgres":
            with psycopg.connect(self.dsn) as conn:
                return conn.execute(q).fetchall()
        conn = _mdb(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(q)
                return list(cur.fetchall())
        finally:
            conn.close()

    def execute(self, q: str) -> None:
        if self.kind == "postgres":
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(q)
            return
        conn = _mdb(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(q)
            conn.commit()
        finally:
            conn.close()

    def checksum(self, table: str, columns: str) -> tuple[int, int]:
        if self.kind == "postgres":
            return pg_checksum(self.dsn, self.table(table), columns)
        return mariadb_checksum(self.dsn, table, columns)

    def columns(self, table: str) -> dict[str, tuple[str, bool]]:
        """name -> (type text, nullable)."""
        if self.kind == "postgres":
            rows = self.query(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull FROM pg_attribute a "
                f"WHERE a.attrelid = 'public.{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            )
        else:
            rows = [
                (n, t, nl == "YES")
                for n, t, nl in self.query(
                    "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
                    f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
                )
            ]
        return {n: (t, nl) for n, t, nl in rows}


@pytest.fixture(params=["postgres", "mariadb"])
def dest(request: pytest.FixtureRequest) -> Dest:
    if request.param == "postgres":
        return Dest("postgres", request.getfixturevalue("pg_database_b"))
    return Dest("mariadb", request.getfixturevalue("mariadb_database"))


class Run:
    def __init__(self, tmp: Path, src: str, dest: Dest, policy: str = "evolve") -> None:
        self.name = f"sc{uuid.uuid4().hex[:10]}"
        self.src, self.dest = src, dest
        text = CONFIG.format(tmp=tmp, name=self.name, src=src, sink=dest.sink, policy=policy)
        self.engine = build_engine(load_config_text(text))
        self.runner = self.engine.runner(self.name)
        self.task: asyncio.Task[int] | None = None

    @property
    def publication(self) -> str:
        return default_name(self.name)

    async def stop(self) -> None:
        self.engine.request_stop()
        assert self.task is not None
        assert await asyncio.wait_for(self.task, 60) == 0


@contextlib.asynccontextmanager
async def running(tmp: Path, src: str, dest: Dest, policy: str = "evolve") -> AsyncIterator[Run]:
    run = Run(tmp, src, dest, policy)
    run.task = asyncio.create_task(run.engine.run(install_signals=False))
    try:
        yield run
    finally:
        if not run.task.done():
            await run.stop()


async def setup_source(src: str) -> None:
    async with await psycopg.AsyncConnection.connect(src, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, name varchar(20) NOT NULL, qty int4 NOT NULL, "
            "price numeric(10,2), note text NOT NULL DEFAULT '')"
        )
        await conn.execute(
            "INSERT INTO items SELECT i, 'n' || i, i, i * 1.25, 'note' || i FROM generate_series(1, %s) i", (N,)
        )


class Writer:
    """Inserts and updates rows until stopped; ``wide`` makes later rows need the widened types."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.stop = asyncio.Event()
        self.wide = False
        self.next_id = N + 1
        self.ops = 0

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.src, autocommit=True) as conn:
            while not self.stop.is_set():
                i = self.next_id
                self.next_id += 1
                wide = (i, "w" * 35, 2**40 + i, "123456789.125")
                values = wide if self.wide else (i, f"n{i}", i, f"{i}.5")
                # positional: the statements keep working through a rename or an added column
                await conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s)", values)
                await conn.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", ((i * 7) % (i - 1) + 1,))
                self.ops += 2
                await asyncio.sleep(0.005)  # pacing the load, not waiting for a condition


async def under_load(src: str, ddl: Callable[[psycopg.AsyncConnection[Any], Writer], Any]) -> Writer:
    writer = Writer(src)
    task = asyncio.create_task(writer.run())
    try:
        await eventually(lambda: writer.ops >= 60, timeout=30, message="writer busy")
        async with await psycopg.AsyncConnection.connect(src, autocommit=True) as conn:
            await ddl(conn, writer)
        ops = writer.ops
        await eventually(lambda: writer.ops >= ops + 60, timeout=30, message="writer busy after the DDL")
    finally:
        writer.stop.set()
        await task
    return writer


def src_checksum(src: str, columns: str, table: str = "public.items") -> tuple[int, int]:
    return pg_checksum(src, table, columns)


async def converged(dest: Dest, src: str, columns: str, table: str = "items", timeout: float = 90) -> None:
    want = src_checksum(src, columns, f"public.{table}")

    def same() -> bool:
        try:
            return dest.checksum(table, columns) == want
        except Exception:
            return False

    await eventually(same, timeout=timeout, interval=0.2, message=f"{table} equal at the destination")


async def started(run: Run, dest: Dest) -> None:
    def loaded() -> bool:
        try:
            return dest.query(f"SELECT count(*) FROM {dest.table('items')}")[0][0] >= N
        except Exception:
            return False

    await eventually(loaded, timeout=60, interval=0.1, message="snapshot at the destination")


async def test_add_column_with_default(pg_database: str, dest: Dest, tmp_path: Path) -> None:
    await setup_source(pg_database)
    async with running(tmp_path, pg_database, dest) as run:
        await started(run, dest)

        async def ddl(conn: psycopg.AsyncConnection[Any], w: Writer) -> None:
            await conn.execute("ALTER TABLE items ADD COLUMN status varchar(10) NOT NULL DEFAULT 'new'")
            await conn.execute("ALTER TABLE items ADD COLUMN score numeric(6,2) DEFAULT 1.5")

        await under_load(pg_database, ddl)
        async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as conn:
            await conn.execute("UPDATE items SET status = 'old' WHERE id <= 5")
        await converged(dest, pg_database, "id, name, qty, price, note, status, score")
    cols = dest.columns("items")
    assert "status" in cols and "score" in cols
    # rows that existed before the ADD hold the default at the destination too
    assert (
        dest.query(f"SELECT count(*) FROM {dest.table('items')} WHERE status = 'new' AND id > 5 AND id <= 50")[0][0]
        == 45
    )


async def test_drop_column_kept_nullable(pg_database: str, dest: Dest, tmp_path: Path) -> None:
    await setup_source(pg_database)
    async with running(tmp_path, pg_database, dest) as run:
        await started(run, dest)
        assert dest.columns("items")["note"][1] is False  # NOT NULL as at the source

        async def ddl(conn: psycopg.AsyncConnection[Any], w: Writer) -> None:
            await conn.execute("ALTER TABLE items DROP COLUMN note")

        await under_load(pg_database, ddl)
        await converged(dest, pg_database, "id, name, qty, price")
    cols = dest.columns("items")
    assert "note" in cols and cols["note"][1] is True  # kept, nullable
    assert dest.query(f"SELECT note FROM {dest.table('items')} WHERE id = 7") == [("note7",)]


async def test_rename_column(pg_database: str, dest: Dest, tmp_path: Path) -> None:
    await setup_source(pg_database)
    async with running(tmp_path, pg_database, dest) as run:
        await started(run, dest)

        async def ddl(conn: psycopg.AsyncConnection[Any], w: Writer) -> None:
            await conn.execute("ALTER TABLE items RENAME COLUMN name TO title")

        await under_load(pg_database, ddl)
        await converged(dest, pg_database, "id, title, qty, price, note")
    cols = dest.columns("items")
    assert "title" in cols and "name" not in cols


async def test_widen_types(pg_database: str, dest: Dest, tmp_path: Path) -> None:
    await setup_source(pg_database)
    async with running(tmp_path, pg_database, dest) as run:
        await started(run, dest)

        async def ddl(conn: psycopg.AsyncConnection[Any], w: Writer) -> None:
            await conn.execute(
                "ALTER TABLE items ALTER COLUMN qty TYPE int8, ALTER COLUMN name TYPE varchar(40), "
                "ALTER COLUMN price TYPE numeric(12,3)"
            )
            w.wide = True

        writer = await under_load(pg_database, ddl)
        assert writer.wide
        await converged(dest, pg_database, "id, name, qty, price, note")
    wide = dest.query(f"SELECT count(*) FROM {dest.table('items')} WHERE qty > 2147483647 AND price = 123456789.125")
    assert wide[0][0] > 0
    assert run.runner.delivery.keys.newest == {}  # nothing dead-lettered


async def test_narrowing_blocks_visibly(pg_database: str, dest: Dest, tmp_path: Path) -> None:
    await setup_source(pg_database)
    async with running(tmp_path, pg_database, dest) as run:
        await started(run, dest)

        async def ddl(conn: psycopg.AsyncConnection[Any], w: Writer) -> None:
            await conn.execute("ALTER TABLE items ALTER COLUMN price TYPE numeric(9,1)")

        await under_load(pg_database, ddl)

        async def blocked() -> Any:
            status = await run.engine.state.status_get(run.name)
            return status if status is not None and status.state == "blocked" else None

        status = await eventually(blocked, timeout=60, interval=0.1, message="pipeline blocked")
        error = status.last_error or ""
        assert "price" in error and "items" in error, error
        assert "numeric(10,2)" in error and "numeric(9,1)" in error, error
        assert "by hand" in error, error
        # nothing of the new shape was written past the block, and nothing was dead-lettered
        assert run.runner.delivery.keys.newest == {}
        # the person applies the same conversion at the destination: the pipeline resumes by itself
        if dest.kind == "postgres":
            dest.execute("ALTER TABLE public.items ALTER COLUMN price TYPE numeric(9,1)")
        else:
            dest.execute("ALTER TABLE items MODIFY COLUMN price DECIMAL(9,1)")
        await converged(dest, pg_database, "id, name, qty, price, note")
        status = await run.engine.state.status_get(run.name)
        assert status is not None and status.state == "running"


async def test_table_added_to_publication(pg_database: str, dest: Dest, tmp_path: Path) -> None:
    await setup_source(pg_database)
    async with running(tmp_path, pg_database, dest) as run:
        await started(run, dest)

        async def ddl(conn: psycopg.AsyncConnection[Any], w: Writer) -> None:
            await conn.execute("CREATE TABLE extra (id int PRIMARY KEY, label text NOT NULL, amount numeric(8,2))")
            await conn.execute(f'ALTER PUBLICATION "{run.publication}" ADD TABLE extra')
            for i in range(1, 101):
                await conn.execute("INSERT INTO extra VALUES (%s, %s, %s)", (i, f"x{i}", f"{i}.25"))
            await conn.execute("UPDATE extra SET label = label || '!' WHERE id % 3 = 0")

        await under_load(pg_database, ddl)
        await converged(dest, pg_database, "id, name, qty, price, note")
        await converged(dest, pg_database, "id, label, amount", table="extra")
