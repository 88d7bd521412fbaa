"""The MariaDB / MySQL sink (PyMySQL, in one thread per sink).

PyMySQL is the driver the design names; it blocks, so the connection lives in
a worker thread and every call hops there (tidesync.sinks.sql.common.Worker).
No async driver was measured: none is installed, and the hop costs a few
microseconds per batch, not per row.

Statements, measured (``bench/sql_sinks.py --strategies --rows 100000 --db
mariadb``: batches of 1,000, one commit each, rows/s): upserts as multi-row
``INSERT ... ON DUPLICATE KEY UPDATE`` (94k; a plain multi-row INSERT does
98k); updates as one ``UPDATE t JOIN (SELECT .. UNION ALL SELECT ..) s ON key
SET ..`` per 1,000 rows (51k, against 7k for executemany of single UPDATEs);
deletes as ``WHERE key IN (...)`` (197k, against 13k for executemany).
``INSERT ... ON DUPLICATE KEY UPDATE`` with only the key and the changed field
does as well for updates (50k) but fails on NOT NULL columns the event does
not carry, so it is not used for them.

A table with a unique index besides its key gets updates plus inserts of the
missing rows instead of ``ON DUPLICATE KEY UPDATE``, which fires on any unique
index and would otherwise update the row that holds the other unique value.

Session: ``time_zone = '+00:00'`` (DATETIME holds UTC wall-clock time,
TIMESTAMP converts through UTC), the SQL mode :data:`SQL_MODE` (below), READ COMMITTED
(no gap locks between concurrent upserts), ``innodb_lock_wait_timeout`` from
``lock_timeout`` (whole seconds, at least 1), ``CLIENT_FOUND_ROWS`` (an update
reports the rows it found, not only those it changed). A truncate is a
``DELETE FROM``: TRUNCATE would commit the transaction half-way.

SQL mode: a fixed, explicit one rather than the server's default plus flags.
A value the destination cannot hold exactly is an error, never a cut or
rounded value: ``STRICT_ALL_TABLES`` (and ``STRICT_TRANS_TABLES``) make too-long
strings and out-of-range numbers errors (1406, 1264), ``NO_ZERO_DATE`` and
``NO_ZERO_IN_DATE`` refuse 0000-00-00 and 2024-00-10 (1292), and
``ERROR_FOR_DIVISION_BY_ZERO`` keeps a division by zero from writing NULL.
``NO_ENGINE_SUBSTITUTION`` makes a missing InnoDB an error instead of another
engine without transactions. Flags a server default could add would change
what the sink writes (``EMPTY_STRING_IS_NULL`` turns '' into NULL,
``ALLOW_INVALID_DATES`` takes 2024-02-31, ``ORACLE``/``ANSI`` change quoting)
or what its statements mean, so the mode is replaced, not extended (all these
flags exist in MariaDB 10.x; MySQL 5.7/8 take them too, not tested here). Strict mode still rounds some
values silently (extra decimal digits, fractions in an integer column, extra
fractional seconds): those the sink finds itself before writing, from the
column types it read (tidesync.sinks.sql.exact.check_rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT

from tidesync.errors import ConfigError, DeliveryError
from tidesync.event import DELETE, UPDATE, Key
from tidesync.schema import Column, EntitySchema
from tidesync.sinks.sql import exact, mariadb_errors
from tidesync.sinks.sql.common import SqlSink, ThreadedBackend, Worker
from tidesync.sinks.sql.config import MariadbSinkConfig
from tidesync.sinks.sql.names import MARIADB
from tidesync.sinks.sql.plan import REKEY, UPSERT, Step
from tidesync.sinks.sql.tables import ColumnInfo, TableInfo, TableName
from tidesync.sinks.sql.typemap import kind_of_mariadb, mariadb_type
from tidesync.sinks.sql.values import MARIADB_PLAIN, Encoder, encode_rows, mariadb_encoder

__all__ = ["MariadbSink", "MariadbSinkConfig"]

CHUNK = 1000  # rows per UPDATE/DELETE statement
SQL_MODE = (
    "STRICT_ALL_TABLES,STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)


def q(name: str) -> str:
    """A quoted identifier; ``%`` doubled because PyMySQL formats every statement with ``%``."""
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def qt(table: TableName) -> str:
    return f"{q(table.schema)}.{q(table.name)}" if table.schema else q(table.name)


def parse_dsn(dsn: str) -> dict[str, Any]:
    """``mysql://user:password@host:port/database?connect_timeout=5`` -> PyMySQL arguments."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb") or not parts.path.strip("/"):
        raise ConfigError(f"dsn must look like mysql://user:password@host:port/database, got scheme {parts.scheme!r}")
    args: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.strip("/")),
    }
    for k, v in parse_qs(parts.query).items():
        args[k] = int(v[-1]) if v[-1].isdigit() else v[-1]
    return args


def _charset(current: ColumnInfo, column: Column | None) -> str:
    """Keep a text column's character set and collation through MODIFY COLUMN (it would take the table's)."""
    if current.charset is None or current.collation is None:
        return ""
    if column is not None and column.type not in ("string", "unknown"):
        return ""
    return f" CHARACTER SET {current.charset} COLLATE {current.collation}"


class _Connection:
    """The blocking half: everything here runs in the worker thread."""

    def __init__(self, config: MariadbSinkConfig) -> None:
        self.config = config
        self.args = parse_dsn(config.dsn)
        self.conn: pymysql.connections.Connection[Any] | None = None
        self.mariadb = True
        self.position = q("_tidesync_applied")

    def cur(self) -> Any:
        if self.conn is None:
            raise pymysql.err.InterfaceError(0, "not connected")
        return self.conn.cursor()

    def connect(self, position_table: TableName) -> None:
        self.conn = pymysql.connect(
            **self.args,
            charset="utf8mb4",
            autocommit=False,
            client_flag=CLIENT.FOUND_ROWS,
            connect_timeout=max(1, math.ceil(self.config.connect_timeout)),
        )
        self.position = qt(position_table)
        with self.cur() as cur:
            cur.execute("SELECT VERSION()")
            self.mariadb = "mariadb" in str(cur.fetchone()[0]).lower()
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("SET SESSION sql_mode = %s", (SQL_MODE,))
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            if self.config.lock_timeout:
                cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (max(1, math.ceil(self.config.lock_timeout)),))
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.position} (pipeline VARCHAR(191) NOT NULL, "
                "sink VARCHAR(191) NOT NULL, position VARBINARY(4096) NOT NULL, applied_at DATETIME(6) NOT NULL, "
                "PRIMARY KEY (pipeline, sink)) ENGINE=InnoDB",
                (),
            )
        self.conn.commit()

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and conn.open:
            conn.close()

    def read_position(self, pipeline: str, sink: str) -> bytes | None:
        with self.cur() as cur:
            cur.execute(
                f"SELECT position FROM {self.position} WHERE pipeline = %s AND sink = %s FOR UPDATE", (pipeline, sink)
            )
            row = cur.fetchone()
        return bytes(row[0]) if row else None

    def write_position(self, pipeline: str, sink: str, position: bytes) -> None:
        with self.cur() as cur:
            cur.execute(
                f"INSERT INTO {self.position} (pipeline, sink, position, applied_at) "
                "VALUES (%s, %s, %s, UTC_TIMESTAMP(6)) "
                "ON DUPLICATE KEY UPDATE position = VALUES(position), applied_at = VALUES(applied_at)",
                (pipeline, sink, position),
            )

    def commit(self) -> None:
        if self.conn is not None:
            self.conn.commit()

    def rollback(self) -> None:
        if self.conn is not None and self.conn.open:
            self.conn.rollback()

    # --- tables ------------------------------------------------------------------------------

    def describe(self, table: TableName, key: tuple[str, ...] | None) -> TableInfo | None:
        where = "TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s"
        with self.cur() as cur:
            cur.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME, CHARACTER_SET_NAME "
                f"FROM information_schema.COLUMNS WHERE {where} ORDER BY ORDINAL_POSITION",
                (table.schema, table.name),
            )
            rows = cur.fetchall()
            if not rows:
                return None
            columns = {
                name: ColumnInfo(name, ctype, kind_of_mariadb(dtype, ctype), nullable == "YES", None, coll, cs)
                for name, dtype, ctype, nullable, coll, cs in rows
            }
            checks = {name: exact.exact_check(dtype, ctype) for name, dtype, ctype, *_ in rows}
            cur.execute(
                "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS "
                f"WHERE {where} ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                (table.schema, table.name),
            )
            indexes: dict[str, tuple[bool, list[str]]] = {}
            for index, non_unique, column, sub_part in cur.fetchall():
                _, cols = indexes.setdefault(index, (not non_unique, []))
                cols.append(column)
                if sub_part is not None:
                    indexes[index] = (False, cols)  # a prefix index is unique on the prefix only
        primary = tuple(indexes.get("PRIMARY", (True, []))[1])
        key = key or primary
        uniques = [set(c) for u, c in indexes.values() if u]
        info = TableInfo(
            name=table,
            columns=columns,
            key=key,
            # ON DUPLICATE KEY UPDATE fires on any unique index: with another one, an insert could
            # update a different row. Such tables get update-then-insert upserts instead.
            key_unique=bool(key) and uniques == [set(key)],
            key_indexed=bool(key) and any(c and c[0] in key for _, c in indexes.values()),
        )
        info.extra["encoders"] = {n: mariadb_encoder(c.kind) for n, c in columns.items()}
        info.extra["checks"] = {n: c for n, c in checks.items() if c is not None}
        return info

    def create_table(self, table: TableName, schema: EntitySchema, key: tuple[str, ...], inferred: bool) -> None:
        # STRICT_ALL_TABLES (set for the session) makes MariaDB check types: ``inferred`` changes nothing.
        defs = [
            f"{q(c.name)} {mariadb_type(c, is_key=c.name in key)}"
            + (" NOT NULL" if not c.nullable or c.name in key else "")
            for c in schema.columns
        ]
        if key:
            defs.append(f"PRIMARY KEY ({', '.join(q(k) for k in key)})")
        with self.cur() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {qt(table)} ({', '.join(defs)}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", ()
            )

    def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        guard = "IF NOT EXISTS " if self.mariadb else ""
        args: list[Any] = []
        adds = []
        for c in columns:
            default = ""
            if c.has_default and c.default is not None:
                # the server fills existing rows with it; the value goes as a parameter (quoted by the driver)
                default = " DEFAULT %s"
                args.append(mariadb_encoder(c.type)(c.default))
            adds.append(f"ADD COLUMN {guard}{q(c.name)} {mariadb_type(c)}{default}")
        with self.cur() as cur:
            cur.execute(f"ALTER TABLE {qt(table.name)} {', '.join(adds)}".replace("%", "%%").replace("%%s", "%s"), args)

    def rename_column(self, table: TableInfo, old: str, new: str) -> None:
        with self.cur() as cur:
            cur.execute(f"ALTER TABLE {qt(table.name)} RENAME COLUMN {q(old)} TO {q(new)}", ())

    def widen_column(self, table: TableInfo, column: Column, current: ColumnInfo) -> None:
        type_ = mariadb_type(column, is_key=current.name in table.key)
        with self.cur() as cur:
            cur.execute(
                f"ALTER TABLE {qt(table.name)} MODIFY COLUMN {q(current.name)} {type_}{_charset(current, column)}"
                + ("" if current.nullable else " NOT NULL"),
                (),
            )

    def relax_column(self, table: TableInfo, current: ColumnInfo) -> None:
        with self.cur() as cur:
            cur.execute(
                f"ALTER TABLE {qt(table.name)} MODIFY COLUMN {q(current.name)} {current.native}"
                f"{_charset(current, None)} NULL",
                (),
            )

    def truncate(self, table: TableInfo) -> None:
        with self.cur() as cur:
            cur.execute(f"DELETE FROM {qt(table.name)}", ())

    # --- steps -------------------------------------------------------------------------------

    @staticmethod
    def _encode(table: TableInfo, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> Sequence[tuple[Any, ...]]:
        encoders = cast(dict[str, Encoder], table.extra["encoders"])  # what describe stored
        out = encode_rows(rows, [encoders.get(c) for c in columns], MARIADB_PLAIN)
        # The values as sent: whatever the server would round instead of refusing fails here.
        checks = cast(dict[str, exact.Check], table.extra["checks"])
        exact.check_rows(table.name, columns, out, checks)
        return out

    @staticmethod
    def _keyed(table: TableInfo, name: str, source: str) -> str:
        """``source.name`` compared in the key column's collation (a derived table has the connection's)."""
        col = table.columns[name]
        expr = f"{source}.{q(name)}"
        if col.kind == "string" and col.collation and col.charset:
            return f"CONVERT({expr} USING {col.charset}) COLLATE {col.collation}"
        return expr

    def _derived(self, columns: Sequence[str], n: int) -> str:
        first = "SELECT " + ", ".join(f"%s AS {q(c)}" for c in columns)
        rest = " UNION ALL SELECT " + ", ".join(["%s"] * len(columns))
        return first + rest * (n - 1)

    def run(self, step: Step) -> int:
        table = step.table
        rows = self._encode(table, step.columns, step.rows)
        t = qt(table.name)
        key = table.key
        with self.cur() as cur:
            if step.kind == DELETE:
                total = 0
                for start in range(0, len(rows), CHUNK):
                    chunk = rows[start : start + CHUNK]
                    if len(key) == 1:
                        cond = f"{q(key[0])} IN ({', '.join(['%s'] * len(chunk))})"
                        args = [r[0] for r in chunk]
                    else:
                        one = "(" + ", ".join(["%s"] * len(key)) + ")"
                        cond = f"({', '.join(q(k) for k in key)}) IN ({', '.join([one] * len(chunk))})"
                        args = [v for r in chunk for v in r]
                    total += cur.execute(f"DELETE FROM {t} WHERE {cond}", args)
                return total
            if step.kind == UPDATE:
                sets = step.set_columns
                if not sets:
                    return 0
                total = 0
                on = " AND ".join(f"_d.{q(k)} = {self._keyed(table, k, '_s')}" for k in key)
                assign = ", ".join(f"_d.{q(c)} = _s.{q(c)}" for c in sets)
                for start in range(0, len(rows), CHUNK):
                    chunk = rows[start : start + CHUNK]
                    derived = self._derived(step.columns, len(chunk))
                    total += cur.execute(
                        f"UPDATE {t} AS _d JOIN ({derived}) AS _s ON {on} SET {assign}", [v for r in chunk for v in r]
                    )
                return total
            if step.kind == REKEY:
                old = self._encode(table, key, step.old_keys)[0]
                assign = ", ".join(f"{q(c)} = %s" for c in step.columns)
                cond = " AND ".join(f"{q(k)} = %s" for k in key)
                return int(cur.execute(f"UPDATE {t} SET {assign} WHERE {cond}", [*rows[0], *old]))
            values = "(" + ", ".join(["%s"] * len(step.columns)) + ")"
            query = f"INSERT INTO {t} ({', '.join(q(c) for c in step.columns)}) VALUES {values}"
            if step.kind == UPSERT:
                rest = step.set_columns or key[:1]
                query += " ON DUPLICATE KEY UPDATE " + ", ".join(f"{q(c)} = VALUES({q(c)})" for c in rest)
            return int(cur.executemany(query, rows) or 0)

    def missing(self, table: TableInfo, keys: Sequence[Key]) -> list[int]:
        key = table.key
        rows = self._encode(table, key, keys)
        out: list[int] = []
        on = " AND ".join(f"_d.{q(k)} = {self._keyed(table, k, '_s')}" for k in key)
        with self.cur() as cur:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                derived = self._derived(("_i", *key), len(chunk))
                cur.execute(
                    f"SELECT _s.`_i` FROM ({derived}) AS _s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {qt(table.name)} AS _d WHERE {on})",
                    [v for i, r in enumerate(chunk) for v in (start + i, *r)],
                )
                out.extend(int(r[0]) for r in cur.fetchall())
        return sorted(out)


class MariadbBackend(ThreadedBackend):
    """The async face of :class:`_Connection`: each call runs in the sink's worker thread."""

    names = MARIADB

    def __init__(self, config: MariadbSinkConfig) -> None:
        self._c = _Connection(config)
        self._w = Worker("tidesync-mariadb")
        a = self._c.args
        self.where = f"database {a['database']} on {a['host']}:{a['port']}"

    @property
    def connected(self) -> bool:
        return self._c.conn is not None and bool(self._c.conn.open)

    def classify(self, exc: BaseException) -> tuple[DeliveryError, bool]:
        return mariadb_errors.classify(exc, self.where)


class MariadbSink(SqlSink):
    """Applies events to MariaDB/MySQL tables; see the module docstring and tidesync.sinks.sql.common."""

    def __init__(self, config: MariadbSinkConfig) -> None:
        super().__init__(config)

    def _make_backend(self) -> MariadbBackend:
        assert isinstance(self.config, MariadbSinkConfig)
        return MariadbBackend(self.config)
