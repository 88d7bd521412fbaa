"""The Postgres sink (psycopg 3, async): session, position, tables; statements in postgres_steps.

Session: TimeZone UTC (a naive timestamp into timestamptz is taken as UTC),
``lock_timeout`` from the config, ``enable_hashjoin``/``enable_mergejoin``
off (see postgres_steps). Transactions are READ COMMITTED. The applied
position lives in ``_tidesync_applied`` (first schema of the search path,
unless ``position_table`` names one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tidesync.errors import DeliveryError
from tidesync.event import Key
from tidesync.schema import Column, EntitySchema
from tidesync.sinks.sql import postgres_errors
from tidesync.sinks.sql.common import SqlSink
from tidesync.sinks.sql.config import PostgresSinkConfig
from tidesync.sinks.sql.exact import exact_check_postgres
from tidesync.sinks.sql.names import POSTGRES
from tidesync.sinks.sql.plan import Step
from tidesync.sinks.sql.postgres_steps import PostgresSteps, ident, idents
from tidesync.sinks.sql.tables import ColumnInfo, TableInfo, TableName
from tidesync.sinks.sql.typemap import kind_of_postgres, postgres_type
from tidesync.sinks.sql.values import postgres_encoder

__all__ = ["PostgresSink", "PostgresSinkConfig"]

_Q = sql.SQL


class PostgresBackend:
    keep_schema = True
    loose_types = False
    names = POSTGRES

    def __init__(self, config: PostgresSinkConfig) -> None:
        self.config = config
        self.conn: psycopg.AsyncConnection[Any] | None = None
        info = conninfo_to_dict(config.dsn)
        self.where = f"database {info.get('dbname', '?')} on {info.get('host', 'localhost')}:{info.get('port', 5432)}"
        self._position: sql.Composable = sql.Identifier("_tidesync_applied")
        self.steps = PostgresSteps(self._c)

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def classify(self, exc: BaseException) -> tuple[DeliveryError, bool]:
        return postgres_errors.classify(exc, self.where)

    def _c(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None:
            raise psycopg.OperationalError("not connected")
        return self.conn

    async def connect(self, position_table: TableName) -> None:
        timeout = max(2, math.ceil(self.config.connect_timeout))
        conn = await psycopg.AsyncConnection.connect(self.config.dsn, connect_timeout=timeout, autocommit=False)
        self.conn = conn
        self.steps.reset()
        self.where = f"database {conn.info.dbname} on {conn.info.host}:{conn.info.port}"
        settings = ["SET TIME ZONE 'UTC'", "SET enable_hashjoin = off", "SET enable_mergejoin = off"]
        if self.config.lock_timeout:
            settings.append(f"SET lock_timeout = {int(self.config.lock_timeout * 1000)}")
        await conn.execute("; ".join(settings))
        self._position = ident(position_table)
        cur = await conn.execute("SELECT to_regclass(%s)", [self._position.as_string(conn)])
        row = await cur.fetchone()
        if row is None or row[0] is None:
            await _serialize_ddl(conn, self._position)
            await conn.execute(
                _Q(
                    "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink text NOT NULL, "
                    "position bytea NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (pipeline, sink))"
                ).format(self._position)
            )
        await conn.commit()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()

    async def read_position(self, pipeline: str, sink: str) -> bytes | None:
        cur = await self._c().execute(
            _Q("SELECT position FROM {} WHERE pipeline = %s AND sink = %s FOR UPDATE").format(self._position),
            [pipeline, sink],
        )
        row = await cur.fetchone()
        return bytes(row[0]) if row else None

    async def write_position(self, pipeline: str, sink: str, position: bytes) -> None:
        await self._c().execute(
            _Q(
                "INSERT INTO {} (pipeline, sink, position) VALUES (%s, %s, %s) ON CONFLICT (pipeline, sink) "
                "DO UPDATE SET position = EXCLUDED.position, applied_at = now()"
            ).format(self._position),
            [pipeline, sink, position],
        )

    async def commit(self) -> None:
        await self._c().commit()
        self.steps.committed()

    async def rollback(self) -> None:
        self.steps.rolled_back()
        if self.conn is not None and not self.conn.closed:
            await self.conn.rollback()

    # --- tables ------------------------------------------------------------------------------

    async def describe(self, table: TableName, key: tuple[str, ...] | None) -> TableInfo | None:
        conn = self._c()
        cur = await conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s)",
            [ident(table).as_string(conn)],
        )
        row = await cur.fetchone()
        if row is None:
            return None
        oid, schema, name = row
        cur = await conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typcategory, a.attnotnull, "
            "CASE t.typname WHEN 'bpchar' THEN 'bpchar' WHEN 'bit' THEN 'varbit' "
            "ELSE format_type(a.atttypid, NULL) END "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [oid],
        )
        described = await cur.fetchall()
        columns = {
            n: ColumnInfo(n, native, kind_of_postgres(typname, cat), not notnull, cast)
            for n, native, typname, cat, notnull, cast in described
        }
        # Values Postgres would round without a word (digits past a numeric's scale, a fraction into an
        # integer column by an assignment cast, seconds past a timestamp's precision): checked before writing.
        checks = {n: exact_check_postgres(typname, native) for n, native, typname, *_ in described}
        cur = await conn.execute(
            "SELECT i.indisprimary, i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL, i.indnkeyatts, "
            "ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num ORDER BY k.ord) "
            "FROM pg_index i WHERE i.indrelid = %s",
            [oid],
        )
        indexes = [(primary, unique, list(cols)[:nkey]) for primary, unique, nkey, cols in await cur.fetchall()]
        primary_key = next((tuple(cols) for primary, _, cols in indexes if primary), ())
        key = key or primary_key
        return TableInfo(
            name=TableName(name, schema),
            columns=columns,
            key=key,
            key_unique=bool(key) and any(unique and set(cols) == set(key) for _, unique, cols in indexes),
            key_indexed=bool(key) and any(cols and cols[0] in key for _, _, cols in indexes),
            extra={"checks": {n: c for n, c in checks.items() if c is not None}},
        )

    async def create_table(
        self, table: TableName, schema: EntitySchema, key: tuple[str, ...], *, inferred: bool = False
    ) -> None:
        conn = self._c()  # Postgres checks types itself: ``inferred`` changes nothing here
        defs = [
            _Q("{} {}{}").format(
                sql.Identifier(c.name),
                sql.SQL(postgres_type(c)),
                sql.SQL(" NOT NULL" if (not c.nullable or c.name in key) else ""),
            )
            for c in schema.columns
        ]
        if key:
            defs.append(_Q("PRIMARY KEY ({})").format(idents(key)))
        await _serialize_ddl(conn, ident(table))
        if table.schema:
            await conn.execute(_Q("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema)))
        await conn.execute(_Q("CREATE TABLE IF NOT EXISTS {} ({})").format(ident(table), sql.SQL(", ").join(defs)))
        await conn.commit()

    async def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        conn = self._c()
        adds = sql.SQL(", ").join(
            _Q("ADD COLUMN IF NOT EXISTS {} {}{}").format(
                sql.Identifier(c.name), sql.SQL(postgres_type(c)), _default(c)
            )
            for c in columns
        )
        await conn.execute(_Q("ALTER TABLE {} {}").format(ident(table.name), adds))
        await conn.commit()

    async def rename_column(self, table: TableInfo, old: str, new: str) -> None:
        conn = self._c()
        await conn.execute(
            _Q("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                ident(table.name), sql.Identifier(old), sql.Identifier(new)
            )
        )
        await conn.commit()

    async def widen_column(self, table: TableInfo, column: Column, current: ColumnInfo) -> None:
        conn = self._c()
        await conn.execute(
            _Q("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                ident(table.name), sql.Identifier(current.name), sql.SQL(postgres_type(column))
            )
        )
        await conn.commit()

    async def relax_column(self, table: TableInfo, current: ColumnInfo) -> None:
        conn = self._c()
        await conn.execute(
            _Q("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(ident(table.name), sql.Identifier(current.name))
        )
        await conn.commit()

    async def truncate(self, table: TableInfo) -> None:
        await self._c().execute(_Q("TRUNCATE {}").format(ident(table.name)))

    async def run(self, step: Step) -> int:
        return await self.steps.run(step)

    async def missing(self, table: TableInfo, keys: Sequence[Key]) -> list[int]:
        return await self.steps.missing(table, keys)


class PostgresSink(SqlSink):
    """Applies events to Postgres tables; see the module docstring and tidesync.sinks.sql.common."""

    def __init__(self, config: PostgresSinkConfig) -> None:
        super().__init__(config)

    def _make_backend(self) -> PostgresBackend:
        assert isinstance(self.config, PostgresSinkConfig)
        return PostgresBackend(self.config)


def _default(c: Column) -> sql.Composable:
    """`` DEFAULT <literal>`` for a column added with the source's constant default, else nothing."""
    if not c.has_default or c.default is None:
        return sql.SQL("")
    encode = postgres_encoder(c.type)
    return _Q(" DEFAULT {}").format(sql.Literal(encode(c.default) if encode is not None else c.default))


async def _serialize_ddl(conn: psycopg.AsyncConnection[Any], name: sql.Composable) -> None:
    """Take a transaction-scoped advisory lock named after ``name`` before creating it.

    Two sinks opening at once (two pipelines into one database) would both run
    ``CREATE ... IF NOT EXISTS``; Postgres checks existence before it inserts the
    catalog rows, so the second fails with a unique violation on pg_type or
    pg_namespace instead of seeing the first's table. Under the lock the second
    waits for the first to commit and then finds it.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ["tidesync ddl " + name.as_string(conn)])
