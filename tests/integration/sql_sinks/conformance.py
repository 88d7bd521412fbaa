"""Conformance-suite harnesses for the SQL sinks (see tests/conformance/harnesses.py for the protocol).

Each makes a fresh destination holding ``items`` (``id`` integer primary key,
``name`` text, ``qty`` integer) and drops it in ``cleanup``. To put the SQL
sinks under the shared suite, add these to ``SINKS`` there; until then
test_sql_sink_conformance.py runs the suite's sink tests over them.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from tidesync.protocols import Sink
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig, SqliteSinkConfig
from tidesync.sinks.sql.mariadb import MariadbSink
from tidesync.sinks.sql.postgres import PostgresSink
from tidesync.sinks.sql.sqlite import SqliteSink

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100), qty INTEGER)"
Rows = dict[tuple[Any, ...], dict[str, Any]]


def _rows(fetched: list[Any]) -> Rows:
    return {(r[0],): {"id": r[0], "name": r[1], "qty": r[2]} for r in fetched}


class PostgresSinkHarness:
    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.db = f"ts_conf_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db}"')
        self.dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(ITEMS)

    def make_sink(self) -> Sink:
        return PostgresSink(PostgresSinkConfig(dsn=self.dsn))

    def rows(self) -> Rows:
        with psycopg.connect(self.dsn) as conn:
            return _rows(conn.execute("SELECT id, name, qty FROM items").fetchall())

    def set_column(self, key: int, column: str, value: Any) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("UPDATE items SET {} = %s WHERE id = %s").format(psycopg.sql.Identifier(column)),
                [value, key],
            )

    def cleanup(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


class MariadbSinkHarness:
    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.db = f"ts_conf_{uuid.uuid4().hex[:10]}"
        self._exec(f"CREATE DATABASE `{self.db}`", database=None)
        self._exec(ITEMS)

    def _exec(self, sql: str, args: Any = None, database: str | None = "") -> list[Any]:
        conn = pymysql.connect(**MARIADB, database=self.db if database == "" else database, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def make_sink(self) -> Sink:
        return MariadbSink(MariadbSinkConfig(dsn=f"mysql://root@127.0.0.1:3306/{self.db}"))

    def rows(self) -> Rows:
        return _rows(self._exec("SELECT id, name, qty FROM items"))

    def set_column(self, key: int, column: str, value: Any) -> None:
        self._exec(f"UPDATE items SET `{column}` = %s WHERE id = %s", (value, key))

    def cleanup(self) -> None:
        self._exec(f"DROP DATABASE IF EXISTS `{self.db}`", database=None)


class SqliteSinkHarness:
    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "conformance-dest.db"
        with sqlite3.connect(self.path) as conn:
            conn.execute(ITEMS)
        conn.close()

    def make_sink(self) -> Sink:
        return SqliteSink(SqliteSinkConfig(path=str(self.path)))

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def rows(self) -> Rows:
        return _rows(self._query("SELECT id, name, qty FROM items"))

    def set_column(self, key: int, column: str, value: Any) -> None:
        self._query(f'UPDATE items SET "{column}" = ? WHERE id = ?', (value, key))

    def cleanup(self) -> None:
        pass


SQL_SINKS: dict[str, type] = {
    "postgres": PostgresSinkHarness,
    "mariadb": MariadbSinkHarness,
    "sqlite": SqliteSinkHarness,
}
