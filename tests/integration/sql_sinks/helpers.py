"""The SQL sink test harness: a destination on one of the real databases, and event helpers."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg
import pymysql

from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.schema import SchemaRegistry
from tidesync.sinks.sql.common import SqlSink
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig, SqliteSinkConfig
from tidesync.sinks.sql.mariadb import MariadbSink, parse_dsn
from tidesync.sinks.sql.postgres import PostgresSink
from tidesync.sinks.sql.sqlite import SqliteSink

DATABASES = ("postgres", "mariadb", "sqlite")


class Dest:
    """One destination database and the test's own connection to it."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target  # DSN, or file path for SQLite
        self.conn: Any = self._connect()
        self.schemas = SchemaRegistry()
        self.sinks: list[SqlSink] = []

    def _connect(self) -> Any:
        if self.kind == "postgres":
            return psycopg.connect(self.target, autocommit=True)
        if self.kind == "mariadb":
            return pymysql.connect(**parse_dsn(self.target), autocommit=True, charset="utf8mb4")
        return sqlite3.connect(self.target, isolation_level=None, timeout=0.1)

    # --- sinks -------------------------------------------------------------------------------

    def config(self, target: str | None = None, **options: Any) -> Any:
        target = target or self.target
        if self.kind == "postgres":
            return PostgresSinkConfig(dsn=target, **options)
        if self.kind == "mariadb":
            return MariadbSinkConfig(dsn=target, **options)
        return SqliteSinkConfig(path=target, **options)

    def context(self, pipeline: str = "p1") -> Context:
        return Context(pipeline=pipeline, name="sink", state=None, schemas=self.schemas)  # type: ignore[arg-type]

    async def sink(self, pipeline: str = "p1", target: str | None = None, **options: Any) -> SqlSink:
        """A sink over this destination (``target``: another DSN of it, e.g. another user), opened."""
        cfg = self.config(target, **options)
        sink: SqlSink
        if self.kind == "postgres":
            sink = PostgresSink(cfg)
        elif self.kind == "mariadb":
            sink = MariadbSink(cfg)
        else:
            sink = SqliteSink(cfg)
        await sink.open(self.context(pipeline))
        self.sinks.append(sink)
        return sink

    # --- looking and meddling ---------------------------------------------------------------

    def sql(self, text: str) -> str:
        """Portable test SQL: ``?`` placeholders and ``"quoted"`` names become each driver's own."""
        if self.kind == "sqlite":
            return text
        text = text.replace("?", "%s")
        return text.replace('"', "`") if self.kind == "mariadb" else text

    def exec(self, text: str, params: Sequence[Any] = ()) -> None:
        if self.kind == "postgres":
            self.conn.execute(self.sql(text), params)
        elif self.kind == "mariadb":
            with self.conn.cursor() as cur:
                cur.execute(self.sql(text), params or None)
        else:
            self.conn.execute(text, params)

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "postgres":
            return [tuple(r) for r in self.conn.execute(self.sql(text), params).fetchall()]
        if self.kind == "mariadb":
            with self.conn.cursor() as cur:
                cur.execute(self.sql(text), params or None)
                return [tuple(r) for r in cur.fetchall()]
        return [tuple(r) for r in self.conn.execute(text, params).fetchall()]

    def rows(self, table: str = "items", order: str = "id") -> list[tuple[Any, ...]]:
        return self.query(f'SELECT * FROM "{table}" ORDER BY {order}')

    def applied(self, pipeline: str = "p1") -> bytes | None:
        rows = self.query('SELECT "position" FROM "_tidesync_applied" WHERE pipeline = ?', [pipeline])
        return bytes(rows[0][0]) if rows else None

    def other(self) -> Any:
        """A second connection of the test's own (locks, kills), not autocommit."""
        if self.kind == "postgres":
            return psycopg.connect(self.target)
        if self.kind == "mariadb":
            return pymysql.connect(**parse_dsn(self.target), autocommit=False)
        return sqlite3.connect(self.target, isolation_level=None, timeout=0.1)

    def close(self) -> None:
        self.conn.close()


def ev(
    op: str,
    key: int,
    pos: int,
    entity: str = "public.items",
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    changed: tuple[str, ...] | None = None,
) -> ChangeEvent:
    """A test event on ``items``-like tables: key column ``id``, position ``(pos,)``."""
    if op == "delete" and before is None:
        before = {"id": key}
    return ChangeEvent(entity, (key,), op, before=before, after=after, changed=changed, position=(pos,))


ITEMS = 'CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "name" VARCHAR(50), "qty" INTEGER)'
