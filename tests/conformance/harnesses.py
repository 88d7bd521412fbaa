"""Connectors under the conformance suite: how to make each one and how to see its effects.

A source harness makes changes upstream and builds a source over them; a sink
harness builds a sink over a fresh destination holding the table ``items``
(``id`` integer primary key, ``name`` text, ``qty`` integer) and reads it back.
Adding a connector to the suite means adding a harness here and its name to
SOURCES or SINKS.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

from tidesync.protocols import Sink, Source
from tidesync.sources.sqlite import SqliteSource, SqliteSourceConfig
from tidesync.testing import MemorySink

Rows = dict[tuple[Any, ...], dict[str, Any]]


class SourceHarness(Protocol):
    entity: str

    def make_source(self) -> Source: ...

    def insert(self, ids: range) -> None: ...

    def update(self, ids: range, qty: int) -> None: ...

    def delete(self, ids: range) -> None: ...

    def cleanup(self) -> None: ...


class SinkHarness(Protocol):
    entity: str

    def make_sink(self) -> Sink: ...

    def rows(self) -> Rows: ...

    def set_column(self, key: int, column: str, value: Any) -> None:
        """An edit made directly in the destination, behind tidesync's back."""

    def cleanup(self) -> None: ...


class SqliteSourceHarness:
    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "conformance-source.db"
        with sqlite3.connect(self.path) as conn:
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")

    def make_source(self) -> Source:
        return SqliteSource(
            SqliteSourceConfig(path=str(self.path), tables=["items"], snapshot="never", poll_interval_ms=2)
        )

    def _exec(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.executemany(sql, rows)

    def insert(self, ids: range) -> None:
        self._exec("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 0) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._exec("UPDATE items SET qty = ? WHERE id = ?", [(qty, i) for i in ids])

    def delete(self, ids: range) -> None:
        self._exec("DELETE FROM items WHERE id = ?", [(i,) for i in ids])

    def cleanup(self) -> None:
        pass


class MemorySinkHarness:
    """The reference implementation every sink must agree with."""

    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.sink = MemorySink()

    def make_sink(self) -> Sink:
        return self.sink

    def rows(self) -> Rows:
        return {k: dict(v) for k, v in self.sink.tables.get("items", {}).items()}

    def set_column(self, key: int, column: str, value: Any) -> None:
        self.sink.tables["items"][(key,)][column] = value

    def cleanup(self) -> None:
        pass


class PostgresSourceHarness:
    """Logical replication from a fresh database; each harness gets its own slot (pipeline name)."""

    entity = "public.items"

    def __init__(self, tmp: Path) -> None:
        import uuid

        import psycopg

        self.tmp = tmp
        self.db = f"ts_conf_{uuid.uuid4().hex[:10]}"
        self.admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.dsn = self.admin.rsplit("/", 1)[0] + "/" + self.db
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)")

    def make_source(self) -> Source:
        from tidesync.sources.postgres import PostgresSource, PostgresSourceConfig

        return PostgresSource(
            PostgresSourceConfig(
                dsn=self.dsn,
                tables=["items"],
                snapshot="never",
                progress=False,
                heartbeat_interval=0,
                slot=self.db,
                publication=self.db,
                work_dir=str(self.tmp / "spill"),
            )
        )

    def _exec(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        import psycopg

        with psycopg.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.executemany(sql, rows)

    def insert(self, ids: range) -> None:
        self._exec("INSERT INTO items VALUES (%s, %s, %s)", [(i, f"item {i}", 0) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._exec("UPDATE items SET qty = %s WHERE id = %s", [(qty, i) for i in ids])

    def delete(self, ids: range) -> None:
        self._exec("DELETE FROM items WHERE id = %s", [(i,) for i in ids])

    def cleanup(self) -> None:
        from tests.conftest import drop_pg_database

        drop_pg_database(self.db)


def _sql_sinks() -> dict[str, type]:
    from tests.integration.sql_sinks.conformance import SQL_SINKS

    return dict(SQL_SINKS)


SOURCES: dict[str, type] = {"sqlite": SqliteSourceHarness, "postgres": PostgresSourceHarness}
SINKS: dict[str, type] = {"memory": MemorySinkHarness, **_sql_sinks()}
