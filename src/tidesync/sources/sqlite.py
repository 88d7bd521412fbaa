"""SQLite change capture: triggers write every change into a change log that the source reads.

On open, tidesync installs, per captured table, AFTER INSERT/UPDATE/DELETE
triggers that append the change (entity, op, key, before and after row as
JSON) to ``_tidesync_log_<capture>``. The source reads that log in sequence
order and deletes what has been checkpointed. Each pipeline has its own
capture name, so its own log and triggers.

Decisions
- With ``snapshot: initial`` the rows already in a table are written to the
  log as ``snapshot`` events in the same transaction that creates the
  triggers: every row is captured exactly once, either by the snapshot or by a
  trigger, with nothing in between.
- Update triggers fire only when a column really changed (``IS NOT``), and an
  update that changes the primary key is logged as a delete of the old key and
  an insert of the new one.
- JSON cannot hold BLOBs and SQLite's JSON prints REALs with 15 digits, so
  those two are tagged in the log (``["b", hex]``, ``["r", "%.17g"]``) and come
  back as exact ``bytes`` and ``float``.
- ``committed_at`` is the time the statement ran (SQLite has no commit
  timestamp), in seconds since the epoch.
- Tables without a primary key are keyed by ``rowid``.
- Schema changes: when ``PRAGMA schema_version`` changes the triggers are
  re-created with the new columns. Rows written between the ALTER TABLE and
  that moment are captured without the new column (SQLite has no DDL hooks).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from tidesync.errors import ConfigError, SourceError, SourceTransientError
from tidesync.event import DELETE, INSERT, SNAPSHOT, UPDATE, Batch, ChangeEvent, Position, diff_fields
from tidesync.protocols import Context
from tidesync.schema import Column, EntitySchema
from tidesync.state.store import StateChanges

T = TypeVar("T")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


class _Busy(Exception):
    """The file's write lock is held by someone else right now."""


class SqliteSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["sqlite"] = "sqlite"
    path: str = Field(description="the SQLite database file to capture")
    tables: list[str] = Field(min_length=1, description="tables to capture")
    capture: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$", description="change log name (default: pipeline)")
    snapshot: Literal["initial", "never"] = Field(
        "initial", description="initial: copy the existing rows at the first start; never: only new changes"
    )
    poll_interval_ms: float = Field(10.0, gt=0, description="how often an idle source looks for new changes")
    busy_timeout_ms: int = Field(5000, ge=0, description="how long to wait for another writer's lock")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _portable(declared: str) -> str:
    d = declared.upper()
    if "INT" in d:
        return "int64"
    if any(x in d for x in ("CHAR", "CLOB", "TEXT")):
        return "string"
    if "BLOB" in d or not d:
        return "bytes" if "BLOB" in d else "unknown"
    if any(x in d for x in ("REAL", "FLOA", "DOUB")):
        return "float64"
    if "BOOL" in d:
        return "bool"
    if "DATETIME" in d or "TIMESTAMP" in d:
        return "timestamp"
    if "DATE" in d:
        return "date"
    if "JSON" in d:
        return "json"
    if "DEC" in d or "NUM" in d:
        return "decimal"
    return "unknown"


def _untag(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    for k, v in row.items():
        if type(v) is list and len(v) == 2:
            tag, payload = v
            if tag == "r":
                row[k] = float(payload)
            elif tag == "b":
                row[k] = bytes.fromhex(payload)
    return row


class SqliteSource:
    """Reads the trigger change log of one SQLite file. Positions are ``(seq,)``."""

    def __init__(self, config: SqliteSourceConfig) -> None:
        self.config = config
        for t in config.tables:
            if not _IDENT.match(t):
                raise ConfigError(f"table name {t!r} is not a plain SQLite identifier")
        self._exec: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._after = 0
        self._log = ""
        self._schema_version = -1
        self._ctx: Context | None = None
        self.trimmed_through = 0
        self._trim_conn: sqlite3.Connection | None = None

    # Everything touching the connection runs on one worker thread (sqlite3 connections are thread-bound).
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._exec is not None
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        capture = self.config.capture or re.sub(r"[^A-Za-z0-9_]", "_", ctx.pipeline)
        self._log = f"_tidesync_log_{capture}"
        self._after = int(after[0]) if after else 0
        if self._exec is None:
            self._exec = ThreadPoolExecutor(1, thread_name_prefix="tidesync-sqlite-source")
        schemas = await self._run(self._open_sync)
        for schema in schemas:
            ctx.schemas.put(schema)

    def _connect(self) -> sqlite3.Connection:
        path = Path(self.config.path)
        if not path.exists():
            raise SourceError(f"SQLite source {path} does not exist")
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=self.config.busy_timeout_ms / 1000)
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        return conn

    def _open_sync(self) -> list[EntitySchema]:
        if self._conn is None:
            self._conn = self._connect()
        try:
            return self._install()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> SourceError:
        msg = str(exc)
        if "locked" in msg or "busy" in msg:
            return SourceTransientError(f"SQLite source {self.config.path} is locked by another process ({msg})")
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            return SourceError(f"SQLite source {self.config.path} is not a valid database or is corrupt ({msg})")
        return SourceError(f"SQLite source {self.config.path}: {msg}")

    def _table_info(self, conn: sqlite3.Connection, table: str) -> tuple[list[tuple[str, str, bool]], list[str]]:
        rows = conn.execute(f"PRAGMA table_info({_q(table)})").fetchall()
        if not rows:
            raise SourceError(
                f"table {table!r} does not exist in SQLite source {self.config.path}; "
                "create it or remove it from tables"
            )
        cols = [(r[1], r[2] or "", not r[3]) for r in rows]
        pk = [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
        return cols, pk

    def _install(self) -> list[EntitySchema]:
        conn = self._conn
        assert conn is not None
        log = _q(self._log)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {log} (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity TEXT NOT NULL,"
                " op TEXT NOT NULL, pk TEXT NOT NULL, before TEXT, after TEXT, ts REAL NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _tidesync_capture (log TEXT, tbl TEXT, columns TEXT,"
                " PRIMARY KEY (log, tbl))"
            )
            schemas = []
            for table in self.config.tables:
                cols, pk = self._table_info(conn, table)
                names = [c[0] for c in cols]
                row = conn.execute(
                    "SELECT columns FROM _tidesync_capture WHERE log = ? AND tbl = ?", (self._log, table)
                ).fetchone()
                fresh = row is None
                if fresh or msgspec.json.decode(row[0]) != names:
                    self._create_triggers(conn, table, names, pk)
                    conn.execute(
                        "INSERT OR REPLACE INTO _tidesync_capture VALUES (?, ?, ?)",
                        (self._log, table, msgspec.json.encode(names).decode()),
                    )
                    if fresh and self.config.snapshot == "initial":
                        key = self._key_expr("", pk)
                        conn.execute(
                            f"INSERT INTO {log} (entity, op, pk, before, after, ts) SELECT ?, 'snapshot', "
                            f"{key}, NULL, {self._row_expr('', names)}, {_NOW} FROM {_q(table)}"
                            + (f" ORDER BY {', '.join(_q(c) for c in pk)}" if pk else " ORDER BY rowid"),
                            (table,),
                        )
                schemas.append(
                    EntitySchema(
                        entity=table,
                        columns=tuple(Column(n, _portable(t), nullable=nn, native=t) for n, t, nn in cols),
                        primary_key=tuple(pk) if pk else ("rowid",),
                    )
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._schema_version = conn.execute("PRAGMA schema_version").fetchone()[0]
        return schemas

    @staticmethod
    def _value_expr(ref: str) -> str:
        return (
            f"CASE typeof({ref}) WHEN 'real' THEN json_array('r', printf('%!.17g', {ref}))"
            f" WHEN 'blob' THEN json_array('b', hex({ref})) ELSE {ref} END"
        )

    def _row_expr(self, prefix: str, names: list[str]) -> str:
        parts = ", ".join(f"'{n}', {self._value_expr(prefix + _q(n))}" for n in names)
        return f"json_object({parts})"

    def _key_expr(self, prefix: str, pk: list[str]) -> str:
        cols = pk or ["rowid"]
        return "json_array(" + ", ".join(self._value_expr(prefix + (_q(c) if c != "rowid" else c)) for c in cols) + ")"

    def _create_triggers(self, conn: sqlite3.Connection, table: str, names: list[str], pk: list[str]) -> None:
        log = _q(self._log)
        base = f"_tidesync_{self._log}_{table}"
        for suffix in ("ins", "upd", "upd_key", "del"):
            conn.execute(f"DROP TRIGGER IF EXISTS {_q(base + '_' + suffix)}")
        t = _q(table)
        new_row, old_row = self._row_expr("NEW.", names), self._row_expr("OLD.", names)
        new_key, old_key = self._key_expr("NEW.", pk), self._key_expr("OLD.", pk)
        ent = "'" + table.replace("'", "''") + "'"
        key_cols = pk or ["rowid"]
        same_key = " AND ".join(
            f"OLD.{_q(c) if c != 'rowid' else c} IS NEW.{_q(c) if c != 'rowid' else c}" for c in key_cols
        )
        any_change = " OR ".join(f"OLD.{_q(n)} IS NOT NEW.{_q(n)}" for n in names)
        conn.execute(
            f"CREATE TRIGGER {_q(base + '_ins')} AFTER INSERT ON {t} BEGIN INSERT INTO {log}"
            f" (entity, op, pk, before, after, ts) VALUES ({ent}, 'insert', {new_key}, NULL, {new_row}, {_NOW}); END"
        )
        conn.execute(
            f"CREATE TRIGGER {_q(base + '_upd')} AFTER UPDATE ON {t} WHEN ({same_key}) AND ({any_change}) BEGIN"
            f" INSERT INTO {log} (entity, op, pk, before, after, ts) VALUES"
            f" ({ent}, 'update', {new_key}, {old_row}, {new_row}, {_NOW}); END"
        )
        conn.execute(
            f"CREATE TRIGGER {_q(base + '_upd_key')} AFTER UPDATE ON {t} WHEN NOT ({same_key}) BEGIN"
            f" INSERT INTO {log} (entity, op, pk, before, after, ts) VALUES"
            f" ({ent}, 'delete', {old_key}, {old_row}, NULL, {_NOW});"
            f" INSERT INTO {log} (entity, op, pk, before, after, ts) VALUES"
            f" ({ent}, 'insert', {new_key}, NULL, {new_row}, {_NOW}); END"
        )
        conn.execute(
            f"CREATE TRIGGER {_q(base + '_del')} AFTER DELETE ON {t} BEGIN INSERT INTO {log}"
            f" (entity, op, pk, before, after, ts) VALUES ({ent}, 'delete', {old_key}, {old_row}, NULL, {_NOW}); END"
        )

    # --- reading -----------------------------------------------------------

    def _fetch(self, limit: int) -> tuple[list[tuple[Any, ...]], list[EntitySchema] | None]:
        conn = self._conn
        assert conn is not None
        try:
            schemas = None
            version = conn.execute("PRAGMA schema_version").fetchone()[0]
            if version != self._schema_version:
                schemas = self._install()
            rows = conn.execute(
                f"SELECT seq, entity, op, pk, before, after, ts FROM {_q(self._log)} "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._after, limit),
            ).fetchall()
            return rows, schemas
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        deadline = time.monotonic() + max_wait
        while True:
            rows, schemas = await self._run(self._fetch, max_events)
            if schemas and self._ctx is not None:
                for schema in schemas:
                    self._ctx.schemas.put(schema)
            if rows or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(self.config.poll_interval_ms / 1000, max(0.0, deadline - time.monotonic())))
        if not rows:
            return Batch([])
        events = [self._event(r) for r in rows]
        self._after = rows[-1][0]
        return Batch(events, (self._after,))

    @staticmethod
    def _event(r: tuple[Any, ...]) -> ChangeEvent:
        seq, entity, op, pk, before_s, after_s, ts = r
        before = _untag(msgspec.json.decode(before_s)) if before_s is not None else None
        after = _untag(msgspec.json.decode(after_s)) if after_s is not None else None
        key = tuple(_untag({"k": v})["k"] for v in msgspec.json.decode(pk))  # type: ignore[index]
        changed = diff_fields(before, after) if op == UPDATE and after is not None else None
        assert op in (INSERT, UPDATE, DELETE, SNAPSHOT)
        return ChangeEvent(entity, key, op, before, after, changed, (seq,), ts)

    async def end_position(self) -> Position | None:
        """Where a batch run (``tidesync run --once``) ends: the newest change in the log now (None: it is empty)."""
        newest = await self._run(self._newest)
        return (newest,) if newest is not None else None

    def _newest(self) -> int | None:
        assert self._conn is not None
        try:
            row = self._conn.execute(f"SELECT max(seq) FROM {_q(self._log)}").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        return int(row[0]) if row and row[0] is not None else None

    async def commit(self, position: Position) -> None:
        seq = int(position[0])
        if seq <= self.trimmed_through:
            return
        try:
            await self._run(self._trim, seq)
        except _Busy:
            return
        self.trimmed_through = seq

    def _trim(self, seq: int) -> None:
        # Trimming is housekeeping: it must never wait for the application's write
        # lock (that would stall the pipeline), so it uses its own connection with
        # no busy timeout and simply tries again at the next commit.
        if self._trim_conn is None:
            self._trim_conn = sqlite3.connect(self.config.path, isolation_level=None, timeout=0)
        try:
            self._trim_conn.execute(f"DELETE FROM {_q(self._log)} WHERE seq <= ?", (seq,))
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise self._translate(exc) from exc
            raise _Busy from exc

    async def close(self) -> None:
        if self._exec is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)
        trim, self._trim_conn = self._trim_conn, None
        if trim is not None:
            await self._run(trim.close)
        self._exec.shutdown(wait=False)
        self._exec = None

    async def uninstall(self) -> None:
        """Drop this capture's triggers and change log (when a pipeline is removed)."""
        if self._exec is None:
            self._exec = ThreadPoolExecutor(1, thread_name_prefix="tidesync-sqlite-source")
        await self._run(self._uninstall_sync)

    def _uninstall_sync(self) -> None:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        for table in self.config.tables:
            base = f"_tidesync_{self._log}_{table}"
            for suffix in ("ins", "upd", "upd_key", "del"):
                conn.execute(f"DROP TRIGGER IF EXISTS {_q(base + '_' + suffix)}")
        conn.execute(f"DROP TABLE IF EXISTS {_q(self._log)}")
        conn.execute("DELETE FROM _tidesync_capture WHERE log = ?", (self._log,))
