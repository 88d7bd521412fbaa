"""The SQLite sink (stdlib sqlite3, in one thread per sink).

Each write is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken
first, so a busy database makes the write wait up to ``lock_timeout`` and then
fail transiently, instead of failing half-way); each step is one prepared
statement run by ``executemany``: ``INSERT ... ON CONFLICT (key) DO UPDATE``
for upserts, ``UPDATE ... WHERE key = ?`` (one per set of changed columns) and
``DELETE ... WHERE key = ?`` for the rest, except deletes on a one-column
key, which run as ``DELETE ... WHERE key IN (?, ...)`` per chunk of keys.
The file runs in WAL mode with ``synchronous = NORMAL``: a power cut may lose
the last transactions, but data and stored position are lost together, so the
source replays them.

Updates and deletes touch rows in key order: a step holds each key once, so
its rows commute, and sorted they walk the key index and the table pages in
order instead of at random (each page read and dirtied once per batch). A
delete chunk (``DELETE_CHUNK`` keys) needs no sorting: SQLite sorts an IN
list itself, and runs it in one call instead of one per row (a fifth to a quarter
less statement CPU). The last chunk is padded to a power of two by repeating
a key, so that a few statement texts serve every batch size from the
statement cache (preparing a 1,000-key statement costs about half of what it
saves). What bounds updates and deletes is the commit, not the statements: a
1,000-row batch of random keys writes ~830 (deletes ~1,100) WAL frames against
~35 for appended inserts; see bench/sql_sinks.py. The
session's page cache is ``CACHE_KIB`` (SQLite's default, 2 MiB, makes random
updates of a table larger than it re-read pages), and the WAL is checkpointed
every ``CHECKPOINT_PAGES`` pages instead of 1,000: a batch of random updates
dirties about a page per row, so with the default nearly every commit ran a
checkpoint (and its fsync); a longer WAL also writes back a page updated by
several transactions once.

Values are stored as typemap describes: timestamps as ISO 8601 text (aware
ones in UTC with ``+00:00``), decimals, uuids and dates as text, JSON as text,
intervals as integer microseconds, booleans as 0/1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidesync.errors import DeliveryError, SystemicError
from tidesync.event import DELETE, UPDATE, Key
from tidesync.schema import Column, EntitySchema
from tidesync.sinks.sql import sqlite_errors
from tidesync.sinks.sql.common import SqlSink, ThreadedBackend, Worker
from tidesync.sinks.sql.config import SqliteSinkConfig
from tidesync.sinks.sql.names import SQLITE
from tidesync.sinks.sql.plan import REKEY, UPSERT, Step
from tidesync.sinks.sql.tables import ColumnInfo, TableInfo, TableName
from tidesync.sinks.sql.typemap import kind_of_sqlite, sqlite_type
from tidesync.sinks.sql.values import SQLITE_PLAIN, encode_rows, sqlite_value

__all__ = ["SqliteSink", "SqliteSinkConfig"]

CACHE_KIB = 65_536  # page cache per session (PRAGMA cache_size, negative: KiB)
CHECKPOINT_PAGES = 10_000  # PRAGMA wal_autocheckpoint: about 40 MB of WAL at 4 KiB pages
DELETE_CHUNK = 1024  # keys per DELETE ... IN (...) statement (fewer where SQLite takes fewer parameters)


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qt(table: TableName) -> str:
    return f"{q(table.schema)}.{q(table.name)}" if table.schema else q(table.name)


def _pragma(table: TableName, pragma: str, arg: str) -> str:
    prefix = f"{q(table.schema)}." if table.schema else ""
    return f"PRAGMA {prefix}{pragma}({q(arg)})"


def _encode(rows: Sequence[tuple[Any, ...]]) -> Sequence[tuple[Any, ...]]:
    return encode_rows(rows, [sqlite_value] * len(rows[0]) if rows else [], SQLITE_PLAIN)


def _by_key(rows: Sequence[tuple[Any, ...]], nk: int) -> Sequence[tuple[Any, ...]]:
    """``rows`` (of one update or delete step: each key once, so they commute) in key order.

    Keys that do not compare (mixed types in a column) stay in planned order. Two keys the
    database takes as one but Python does not (a case-insensitive key column) were never ordered
    by source position within a step either; see tidesync.sinks.sql.names.
    """
    try:
        return sorted(rows, key=lambda r: r[:nk])
    except TypeError:
        return rows


def _padded(n: int) -> int:
    """The size of the statement for ``n`` keys: the next power of two, at least 16."""
    return max(16, 1 << (n - 1).bit_length())


def _default(c: Column) -> str:
    """`` DEFAULT <literal>`` for a column added with the source's constant default (SQLite takes no
    parameter in DDL, so the value is written as a literal), else nothing."""
    if not c.has_default or c.default is None:
        return ""
    v = sqlite_value(c.default)
    if isinstance(v, bool | int | float):
        return f" DEFAULT {int(v) if isinstance(v, bool) else repr(v)}"
    if isinstance(v, bytes):
        return f" DEFAULT X'{v.hex()}'"
    text = str(v).replace("'", "''")
    return f" DEFAULT '{text}'"


class _Connection:
    """The blocking half: everything here runs in the worker thread."""

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.config = config
        self.conn: sqlite3.Connection | None = None
        self.position = q("_tidesync_applied")
        self.chunk = DELETE_CHUNK

    def c(self) -> sqlite3.Connection:
        if self.conn is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return self.conn

    def connect(self, position_table: TableName) -> None:
        path = Path(self.config.path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=self.config.lock_timeout or 0.0)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
            # A power of two, so that a padded chunk (see _padded) never holds more.
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self.chunk = min(DELETE_CHUNK, 1 << (limit.bit_length() - 1))
            self.position = qt(position_table)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.position} (pipeline TEXT NOT NULL, sink TEXT NOT NULL, "
                "position BLOB NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (pipeline, sink))"
            )
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def read_position(self, pipeline: str, sink: str) -> bytes | None:
        conn = self.c()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            f"SELECT position FROM {self.position} WHERE pipeline = ? AND sink = ?", (pipeline, sink)
        ).fetchone()
        return bytes(row[0]) if row else None

    def write_position(self, pipeline: str, sink: str, position: bytes) -> None:
        self.c().execute(
            f"INSERT INTO {self.position} (pipeline, sink, position, applied_at) "
            "VALUES (?, ?, ?, strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')) "
            "ON CONFLICT (pipeline, sink) DO UPDATE SET position = excluded.position, applied_at = excluded.applied_at",
            (pipeline, sink, position),
        )

    def commit(self) -> None:
        conn = self.c()
        if conn.in_transaction:
            conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # --- tables ------------------------------------------------------------------------------

    def describe(self, table: TableName, key: tuple[str, ...] | None) -> TableInfo | None:
        conn = self.c()
        rows = conn.execute(_pragma(table, "table_info", table.name)).fetchall()
        if not rows:
            return None
        columns = {
            name: ColumnInfo(name, decl, kind_of_sqlite(decl), not notnull) for _, name, decl, notnull, _, _ in rows
        }
        primary = tuple(r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5]))
        indexes: list[tuple[bool, list[str]]] = [(True, list(primary))] if primary else []
        for _, index, unique, _, partial in conn.execute(_pragma(table, "index_list", table.name)).fetchall():
            cols = [r[2] for r in conn.execute(_pragma(table, "index_info", index)).fetchall()]
            indexes.append((bool(unique) and not partial and None not in cols, cols))
        key = key or primary
        return TableInfo(
            name=table,
            columns=columns,
            key=key,
            key_unique=bool(key) and any(u and set(c) == set(key) for u, c in indexes),
            key_indexed=bool(key) and any(c and c[0] in key for _, c in indexes),
        )

    def create_table(self, table: TableName, schema: EntitySchema, key: tuple[str, ...], inferred: bool) -> None:
        defs = [
            f"{q(c.name)} {sqlite_type(c)}{' NOT NULL' if not c.nullable or c.name in key else ''}"
            for c in schema.columns
        ]
        if key:
            defs.append(f"PRIMARY KEY ({', '.join(q(k) for k in key)})")
        # Types guessed from values are enforced (STRICT): a later value of another type is an
        # error of its event, not a text stored in an INTEGER column. typemap's types are all
        # STRICT-compatible (INTEGER, REAL, TEXT, BLOB).
        strict = " STRICT" if inferred else ""
        self.c().execute(f"CREATE TABLE IF NOT EXISTS {qt(table)} ({', '.join(defs)}){strict}")

    def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        conn = self.c()
        fold = SQLITE.fold  # SQLite takes names differing in the case of A-Z as one
        existing = {fold(r[1]) for r in conn.execute(_pragma(table.name, "table_info", table.name.name))}
        conn.execute("BEGIN IMMEDIATE")
        try:
            for c in columns:
                if fold(c.name) not in existing:
                    conn.execute(f"ALTER TABLE {qt(table.name)} ADD COLUMN {q(c.name)} {sqlite_type(c)}{_default(c)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def rename_column(self, table: TableInfo, old: str, new: str) -> None:
        self.c().execute(f"ALTER TABLE {qt(table.name)} RENAME COLUMN {q(old)} TO {q(new)}")

    def widen_column(self, table: TableInfo, column: Column, current: ColumnInfo) -> None:
        """Nothing to do: SQLite enforces no lengths or precisions, and every integer is 64-bit."""

    def relax_column(self, table: TableInfo, current: ColumnInfo) -> None:
        raise SystemicError(
            f"the source dropped column {current.name}, which is NOT NULL in table {table.name} "
            f"(SQLite database {self.config.path}); "
            "SQLite cannot remove NOT NULL in place: rebuild the table without it (CREATE TABLE new ..., "
            "INSERT INTO new SELECT * FROM old, DROP TABLE old, ALTER TABLE new RENAME TO old); the pipeline "
            "resumes by itself once the column is nullable",
            entity=str(table.name),
        )

    def truncate(self, table: TableInfo) -> None:
        self.c().execute(f"DELETE FROM {qt(table.name)}")

    # --- steps -------------------------------------------------------------------------------

    def run(self, step: Step) -> int:
        conn = self.c()
        table = step.table
        t = qt(table.name)
        key = table.key
        where = " AND ".join(f"{q(k)} = ?" for k in key)
        rows = _encode(step.rows)
        nk = len(key)
        if step.kind == DELETE:
            if nk == 1:
                return self._delete_in(t, q(key[0]), [r[0] for r in rows])
            return conn.executemany(f"DELETE FROM {t} WHERE {where}", _by_key(rows, nk)).rowcount
        sets = step.set_columns
        if step.kind == UPDATE:
            if not sets:
                return 0
            # Numbered parameters: the rows stay as they are (key first).
            assign = ", ".join(f"{q(c)} = ?{nk + i}" for i, c in enumerate(sets, 1))
            keyed = " AND ".join(f"{q(k)} = ?{i}" for i, k in enumerate(key, 1))
            return conn.executemany(f"UPDATE {t} SET {assign} WHERE {keyed}", _by_key(rows, nk)).rowcount
        if step.kind == REKEY:
            assign = ", ".join(f"{q(c)} = ?" for c in step.columns)
            args = [row + tuple(map(sqlite_value, old)) for row, old in zip(rows, step.old_keys, strict=True)]
            return conn.executemany(f"UPDATE {t} SET {assign} WHERE {where}", args).rowcount
        marks = ", ".join(["?"] * len(step.columns))
        query = f"INSERT INTO {t} ({', '.join(q(c) for c in step.columns)}) VALUES ({marks})"
        if step.kind == UPSERT:
            conflict = ", ".join(q(k) for k in key)
            if sets:
                query += f" ON CONFLICT ({conflict}) DO UPDATE SET " + ", ".join(
                    f"{q(c)} = excluded.{q(c)}" for c in sets
                )
            else:
                query += f" ON CONFLICT ({conflict}) DO NOTHING"
        return conn.executemany(query, rows).rowcount

    def _delete_in(self, t: str, k: str, keys: list[Any]) -> int:
        """Delete the rows of ``keys`` (one key column ``k``): one statement per chunk, the last padded.

        ``k IN (...)`` compares as ``k = ?`` does (the column's affinity and collation); a
        repeated key deletes its row once.
        """
        conn = self.c()
        done = 0
        for at in range(0, len(keys), self.chunk):
            chunk = keys[at : at + self.chunk]
            size = min(self.chunk, _padded(len(chunk)))
            chunk += [chunk[-1]] * (size - len(chunk))
            done += conn.execute(f"DELETE FROM {t} WHERE {k} IN ({', '.join(['?'] * size)})", chunk).rowcount
        return done

    def missing(self, table: TableInfo, keys: Sequence[Key]) -> list[int]:
        conn = self.c()
        where = " AND ".join(f"{q(k)} = ?" for k in table.key)
        query = f"SELECT 1 FROM {qt(table.name)} WHERE {where} LIMIT 1"
        return [i for i, k in enumerate(keys) if conn.execute(query, tuple(map(sqlite_value, k))).fetchone() is None]


class SqliteBackend(ThreadedBackend):
    """The async face of :class:`_Connection`: each call runs in the sink's worker thread."""

    loose_types = True
    names = SQLITE

    def __init__(self, config: SqliteSinkConfig) -> None:
        self._c = _Connection(config)
        self._w = Worker("tidesync-sqlite")
        self.where = f"SQLite database {config.path}"

    @property
    def connected(self) -> bool:
        return self._c.conn is not None

    def classify(self, exc: BaseException) -> tuple[DeliveryError, bool]:
        return sqlite_errors.classify(exc, self.where)


class SqliteSink(SqlSink):
    """Applies events to SQLite tables; see the module docstring and tidesync.sinks.sql.common."""

    def __init__(self, config: SqliteSinkConfig) -> None:
        super().__init__(config)

    def _make_backend(self) -> SqliteBackend:
        assert isinstance(self.config, SqliteSinkConfig)
        return SqliteBackend(self.config)
