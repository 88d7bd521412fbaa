"""The embedded state store: one SQLite file, zero setup.

The file runs in WAL mode with ``synchronous=NORMAL``: a commit appends to the
write-ahead log without an fsync, so it costs microseconds, and a power loss
can lose only the last commits, never corrupt the file (a process crash loses
nothing). Several processes may share the file; a writer waits up to
``busy_timeout`` seconds for another process's write lock, then fails with a
:class:`StateStoreError` that says the file is locked.

sqlite3 connections belong to the thread that made them, so each store owns one
worker thread that makes the connection and runs every statement. Calls from
the event loop are queued to it in order, which also serialises concurrent
coroutines; the loop never waits on the disk. A call whose caller is cancelled
either never starts or runs to its end in the worker (a commit is all or
nothing either way).

Leases (:class:`~tidesync.state.store.Leases`) use the same table as the
Postgres store; every write here takes the file's write lock first (``BEGIN
IMMEDIATE``), so a take, a renewal and a fenced commit never interleave, and
``now`` is the one machine's clock. This serves processes on one machine only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tidesync.errors import StateStoreError
from tidesync.event import Key, Position, unpack_value
from tidesync.state import rows as codec
from tidesync.state.store import (
    DeadLetter,
    DeadLetterFilter,
    Fence,
    JournalAppend,
    JournalEntry,
    Lease,
    PipelineStatus,
    ShadowRow,
    StateChanges,
)

T = TypeVar("T")

SCHEMA_VERSION = 3
_META = "tidesync_meta"
_SCHEMA_V1 = (
    f"CREATE TABLE IF NOT EXISTS {_META} (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS checkpoints (pipeline TEXT PRIMARY KEY, position BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS shadow (scope TEXT NOT NULL, entity TEXT NOT NULL, key BLOB NOT NULL,"
    " row BLOB NOT NULL, position BLOB, committed_at REAL NOT NULL, origin TEXT,"
    " PRIMARY KEY (scope, entity, key)) WITHOUT ROWID",
    # AUTOINCREMENT: ids are never reused, even after the newest entry is removed.
    "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL,"
    " sink TEXT NOT NULL, entity TEXT NOT NULL, key BLOB NOT NULL, event BLOB NOT NULL,"
    " error_class TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,"
    " first_failed_at REAL NOT NULL, last_failed_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dead_letters_pipeline_sink ON dead_letters (pipeline, sink)",
    "CREATE TABLE IF NOT EXISTS kv (namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (namespace, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS status (pipeline TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'stopped',"
    " position BLOB, events_applied INTEGER NOT NULL DEFAULT 0, lag_seconds REAL NOT NULL DEFAULT 0,"
    " last_committed_at REAL NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at REAL,"
    " updated_at REAL NOT NULL DEFAULT 0, extra BLOB)",
)

# Version 2: the intake journal. A trimmed entry keeps its row (without payload)
# until the retention passes, so its event id still de-duplicates.
_SCHEMA_V2 = (
    "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,"
    " event_id TEXT NOT NULL, received_at REAL NOT NULL, meta BLOB, body BLOB, UNIQUE (source, event_id))",
    "CREATE INDEX IF NOT EXISTS journal_source_seq ON journal (source, seq)",
)
# Version 3: leases (tidesync.engine.lease); expires_at in epoch seconds.
_SCHEMA_V3 = (
    "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, epoch INTEGER NOT NULL,"
    " expires_at REAL NOT NULL, acquired_at REAL NOT NULL) WITHOUT ROWID",
)
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_LEASE_TAKE = (
    "INSERT INTO leases (name, owner, epoch, expires_at, acquired_at)"
    f" VALUES (?1, ?2, 1, {_NOW} + ?3, {_NOW}) ON CONFLICT (name) DO UPDATE SET"
    " epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch ELSE leases.epoch + 1 END,"
    " acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at ELSE excluded.acquired_at END,"
    " owner = excluded.owner, expires_at = excluded.expires_at"
    f" WHERE leases.owner = excluded.owner OR leases.expires_at <= {_NOW}"
)
_LEASE_ROWS = f"SELECT name, owner, epoch, expires_at - {_NOW} FROM leases"
_JOURNAL_APPEND = (
    "INSERT INTO journal (source, event_id, received_at, meta, body) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (source, event_id) DO NOTHING"
)

_PUT_CHECKPOINT = (
    "INSERT INTO checkpoints (pipeline, position) VALUES (?, ?)"
    " ON CONFLICT (pipeline) DO UPDATE SET position = excluded.position"
)
_PUT_SHADOW = (
    "INSERT INTO shadow (scope, entity, key, row, position, committed_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (scope, entity, key) DO UPDATE SET row = excluded.row, position = excluded.position,"
    " committed_at = excluded.committed_at, origin = excluded.origin"
)
_ADD_DEAD_LETTER = (
    "INSERT INTO dead_letters (pipeline, sink, entity, key, event, error_class, error, attempts,"
    " first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PUT_KV = "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value"
_PUT_STATUS = (
    f"INSERT INTO status ({codec.STATUS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (pipeline) DO UPDATE SET state = excluded.state, position = excluded.position,"
    " events_applied = status.events_applied + excluded.events_applied, lag_seconds = excluded.lag_seconds,"
    " last_committed_at = excluded.last_committed_at, last_error = excluded.last_error,"
    " next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, extra = excluded.extra"
)
_ADD_APPLIED = (
    "INSERT INTO status (pipeline, events_applied) VALUES (?, ?)"
    " ON CONFLICT (pipeline) DO UPDATE SET events_applied = status.events_applied + excluded.events_applied"
)
_IN_IDS = "id IN (SELECT value FROM json_each(?))"  # any number of ids in one parameter
_MAX_KEYS_PER_QUERY = 5000  # or fewer, when the SQLite build allows fewer parameters

# Primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _READONLY, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 11, 13, 14, 26


class SqliteStateStore:
    """State in one SQLite file (or ``:memory:``), shared safely by several processes."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0, url: str | None = None) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.url = url or f"sqlite:///{self.path}"
        self._worker: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._chunk = 900  # keys per shadow query; raised to what the library allows on open
        self._fences: dict[str, Fence] = {}

    # --- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        if self._worker is not None:
            return
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidesync-state-sqlite")
        self._worker = worker
        try:
            await self._call(self._open_sync, "opening")
        except BaseException:
            self._worker = None
            worker.shutdown(wait=False)
            raise

    async def close(self) -> None:
        worker = self._worker
        if worker is None:
            return
        self._worker = None
        try:
            # Queued behind calls already submitted, so they finish first.
            await asyncio.get_running_loop().run_in_executor(worker, self._close_sync)
        finally:
            worker.shutdown(wait=False)

    def _open_sync(self) -> None:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateStoreError(f"cannot create the folder of state database {self.path}: {exc}") from exc
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            self._use_wal(conn)  # the first read of the file: a non-database fails here
            conn.execute("PRAGMA synchronous = NORMAL")
            self._ensure_schema(conn)
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._chunk = max(1, min(_MAX_KEYS_PER_QUERY, limit - 2))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite reports
        # BUSY at once (no busy handler) when another connection is switching it
        # too: retry within the busy timeout. A file already in WAL takes no lock.
        # A plain loop, not RetryPolicy.attempts (async): this runs on the store's worker thread, off the event loop.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
                if code not in (_BUSY, _LOCKED) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)  # on the worker thread, never the event loop

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if self._schema_version(conn) == SCHEMA_VERSION:
            return  # the common case takes no write lock
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables and _META not in tables:
            raise StateStoreError(
                f"{self.path} is an SQLite database but not a tidesync state database "
                f"(it holds tables {', '.join(sorted(tables)[:5])}); point the state URL at another file"
            )

        def create(c: sqlite3.Connection) -> None:
            version = self._schema_version(c)  # again: another process may have done it while we waited
            if version is None:
                for statement in _SCHEMA_V1:
                    c.execute(statement)
                c.execute(f"INSERT INTO {_META} (name, value) VALUES ('schema_version', '1')")
                version = 1
            if version < 2:
                for statement in _SCHEMA_V2:
                    c.execute(statement)
            if version < 3:
                for statement in _SCHEMA_V3:
                    c.execute(statement)
            c.execute(f"UPDATE {_META} SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))

        _transaction(conn, create)

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_META,)).fetchone()
        if not exists:
            return None
        row = conn.execute(f"SELECT value FROM {_META} WHERE name = 'schema_version'").fetchone()
        version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise StateStoreError(
                f"state database {self.path} was written by a newer tidesync (schema version {version}; "
                f"this version knows up to {SCHEMA_VERSION}): upgrade tidesync"
            )
        return version  # older versions are migrated by _ensure_schema

    # --- running on the worker thread -----------------------------------------

    async def _call(self, fn: Callable[..., T], doing: str, *args: Any) -> T:
        worker = self._worker
        if worker is None:
            raise StateStoreError(f"state store {self.url} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from exc
        except OverflowError as exc:  # an int beyond SQLite's 64 bits
            raise StateStoreError(f"state database {self.path}: {doing} failed: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateStoreError(f"state store {self.url} is closed")
        return self._conn

    async def _read(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(lambda: fn(self._connection()), doing)

    async def _write(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(lambda: _transaction(self._connection(), fn), doing)

    def _translate(self, exc: sqlite3.Error, doing: str) -> StateStoreError:
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code in (_BUSY, _LOCKED):
            msg = (
                f"state database {self.path} is locked by another process (gave up {doing} after waiting "
                f"{self.busy_timeout:g}s); stop the other process or raise ?timeout= in the state URL"
            )
        elif code in (_NOTADB, _CORRUPT):
            msg = f"{self.path} is not a tidesync state database: the file is corrupt or not SQLite ({exc})"
        elif code == _CANTOPEN:
            msg = f"cannot open state database {self.path}: {exc}"
        elif code == _READONLY:
            msg = f"state database {self.path} is read-only: {exc}"
        elif code == _FULL:
            msg = f"state database {self.path}: the disk is full ({doing})"
        else:
            msg = f"state database {self.path}: {doing} failed: {exc}"
        return StateStoreError(msg)

    # --- commit ---------------------------------------------------------------

    async def commit(self, pipeline: str, changes: StateChanges) -> list[int]:
        if changes.is_empty() and not changes.events_applied:
            return []
        fence = self._fences.get(pipeline)

        def body(c: sqlite3.Connection) -> list[int]:
            if fence is not None:
                _check_fence(c, pipeline, fence)
            return _apply(c, pipeline, changes)

        return await self._write("committing", body)

    # --- leases ---------------------------------------------------------------

    async def lease_acquire(self, name: str, owner: str, ttl: float) -> Lease:
        def q(c: sqlite3.Connection) -> Lease:
            c.execute(_LEASE_TAKE, (name, owner, ttl))
            row = c.execute(f"{_LEASE_ROWS} WHERE name = ?", (name,)).fetchone()
            return Lease(row[0], row[1], int(row[2]), float(row[3]))

        return await self._write("taking a lease", q)

    async def lease_release(self, name: str, owner: str, epoch: int) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            sql = f"UPDATE leases SET expires_at = {_NOW} WHERE name = ? AND owner = ? AND epoch = ?"
            return c.execute(sql, (name, owner, epoch)).rowcount > 0

        return await self._write("releasing a lease", q)

    async def lease_list(self) -> list[Lease]:
        def q(c: sqlite3.Connection) -> list[Lease]:
            rows = c.execute(f"{_LEASE_ROWS} ORDER BY name").fetchall()
            return [Lease(r[0], r[1], int(r[2]), float(r[3])) for r in rows]

        return await self._read("reading leases", q)

    def fence_commits(self, pipeline: str, fence: Fence | None) -> None:
        if fence is None:
            self._fences.pop(pipeline, None)
        else:
            self._fences[pipeline] = fence

    async def load_checkpoint(self, pipeline: str) -> Position | None:
        def q(c: sqlite3.Connection) -> Position | None:
            row = c.execute("SELECT position FROM checkpoints WHERE pipeline = ?", (pipeline,)).fetchone()
            return None if row is None else unpack_value(row[0])

        return await self._read("loading a checkpoint", q)

    async def reset_checkpoint(self, pipeline: str) -> None:
        await self._write(
            "resetting a checkpoint", lambda c: c.execute("DELETE FROM checkpoints WHERE pipeline = ?", (pipeline,))
        )

    # --- shadow rows -------------------------------------------------------------

    async def shadow_get(self, scope: str, entity: str, keys: Sequence[Key]) -> dict[Key, ShadowRow]:
        by_packed = {codec.pack(k, "shadow key"): k for k in keys}
        packed = list(by_packed)

        def q(c: sqlite3.Connection) -> dict[Key, ShadowRow]:
            out: dict[Key, ShadowRow] = {}
            for i in range(0, len(packed), self._chunk):
                chunk = packed[i : i + self._chunk]
                marks = ", ".join("?" * len(chunk))
                rows = c.execute(
                    "SELECT key, row, position, committed_at, origin FROM shadow"
                    f" WHERE scope = ? AND entity = ? AND key IN ({marks})",
                    (scope, entity, *chunk),
                )
                for r in rows:
                    key = by_packed[r[0]]
                    out[key] = codec.shadow_from_row(scope, entity, key, r)
            return out

        if not packed:
            return {}
        if len(packed) <= self._chunk:
            return await self._read("reading shadow rows", q)
        # Several queries: read them in one transaction, so they see one snapshot.
        return await self._call(lambda: _transaction(self._connection(), q, "DEFERRED"), "reading shadow rows")

    async def shadow_scan(self, scope: str, entity: str | None = None) -> list[ShadowRow]:
        def q(c: sqlite3.Connection) -> list[ShadowRow]:
            sql = "SELECT key, row, position, committed_at, origin, entity FROM shadow WHERE scope = ?"
            params: tuple[Any, ...] = (scope,)
            if entity is not None:
                sql += " AND entity = ?"
                params += (entity,)
            rows = c.execute(sql + " ORDER BY entity, key", params).fetchall()
            return [codec.shadow_from_row(scope, r[5], unpack_value(r[0]), r) for r in rows]

        return await self._read("scanning shadow rows", q)

    # --- dead letters ------------------------------------------------------------

    async def dlq_list(self, flt: DeadLetterFilter | None = None) -> list[DeadLetter]:
        where, params = codec.dlq_where(flt, "?", "instr(error, ?) > 0", _IN_IDS, _json_ids)
        sql = f"SELECT {codec.DLQ_COLUMNS} FROM dead_letters{where} ORDER BY id"
        if flt is not None and flt.limit is not None:
            sql += " LIMIT ?"
            params.append(flt.limit)
        rows = await self._read("listing dead letters", lambda c: c.execute(sql, params).fetchall())
        return [codec.dead_letter_from_row(r) for r in rows]

    async def dlq_get(self, entry_id: int) -> DeadLetter | None:
        sql = f"SELECT {codec.DLQ_COLUMNS} FROM dead_letters WHERE id = ?"
        row = await self._read("reading a dead letter", lambda c: c.execute(sql, (entry_id,)).fetchone())
        return None if row is None else codec.dead_letter_from_row(row)

    async def dlq_count(self, pipeline: str | None = None) -> int:
        sql = "SELECT count(*) FROM dead_letters WHERE ? IS NULL OR pipeline = ?"
        row = await self._read("counting dead letters", lambda c: c.execute(sql, (pipeline, pipeline)).fetchone())
        return int(row[0])

    async def dlq_parked_keys(self, pipeline: str, sink: str) -> dict[tuple[str, Key], Position]:
        sql = "SELECT entity, key, event FROM dead_letters WHERE pipeline = ? AND sink = ?"
        rows = await self._read("reading parked keys", lambda c: c.execute(sql, (pipeline, sink)).fetchall())
        return codec.newest_parked(rows)

    async def dlq_touch(self, entry_id: int, error: str, error_class: str, failed_at: float) -> None:
        """Count one more failed attempt; an id that no longer exists is ignored."""
        sql = (
            "UPDATE dead_letters SET attempts = attempts + 1, error = ?, error_class = ?, last_failed_at = ?"
            " WHERE id = ?"
        )
        await self._write("updating a dead letter", lambda c: c.execute(sql, (error, error_class, failed_at, entry_id)))

    async def dlq_remove(self, ids: Iterable[int]) -> int:
        payload = _json_ids(ids)
        sql = f"DELETE FROM dead_letters WHERE {_IN_IDS}"
        return await self._write("removing dead letters", lambda c: c.execute(sql, (payload,)).rowcount)

    # --- kv -------------------------------------------------------------------------

    async def kv_get(self, namespace: str, key: str) -> Any | None:
        sql = "SELECT value FROM kv WHERE namespace = ? AND key = ?"
        row = await self._read("reading a value", lambda c: c.execute(sql, (namespace, key)).fetchone())
        return None if row is None else unpack_value(row[0])

    async def kv_put(self, namespace: str, key: str, value: Any) -> None:
        packed = codec.pack(value, f"value {namespace}/{key}")
        await self._write("storing a value", lambda c: c.execute(_PUT_KV, (namespace, key, packed)))

    async def kv_delete(self, namespace: str, key: str) -> None:
        sql = "DELETE FROM kv WHERE namespace = ? AND key = ?"
        await self._write("deleting a value", lambda c: c.execute(sql, (namespace, key)))

    async def kv_scan(self, namespace: str, prefix: str = "") -> dict[str, Any]:
        # Range start uses the primary key; substr keeps the match exact (LIKE would fold case).
        sql = "SELECT key, value FROM kv WHERE namespace = ? AND key >= ? AND substr(key, 1, ?) = ? ORDER BY key"
        params = (namespace, prefix, len(prefix), prefix)
        rows = await self._read("scanning values", lambda c: c.execute(sql, params).fetchall())
        return {r[0]: unpack_value(r[1]) for r in rows}

    # --- status ---------------------------------------------------------------------

    async def status_get(self, pipeline: str) -> PipelineStatus | None:
        sql = f"SELECT {codec.STATUS_COLUMNS} FROM status WHERE pipeline = ?"
        row = await self._read("reading status", lambda c: c.execute(sql, (pipeline,)).fetchone())
        return None if row is None else codec.status_from_row(row)

    async def status_list(self) -> list[PipelineStatus]:
        sql = f"SELECT {codec.STATUS_COLUMNS} FROM status"
        rows = await self._read("reading status", lambda c: c.execute(sql).fetchall())
        return sorted((codec.status_from_row(r) for r in rows), key=lambda s: s.pipeline)

    # --- intake journal -------------------------------------------------------------

    async def journal_append(self, entries: Sequence[JournalAppend]) -> list[int | None]:
        if not entries:
            return []
        rows = [codec.journal_params(e) for e in entries]

        def q(c: sqlite3.Connection) -> list[int | None]:
            out: list[int | None] = []
            for row in rows:
                cur = c.execute(_JOURNAL_APPEND, row)
                out.append(cur.lastrowid if cur.rowcount == 1 else None)
            return out

        return await self._write("journaling deliveries", q)

    async def journal_read(self, source: str, after: int, limit: int, through: int | None = None) -> list[JournalEntry]:
        sql = (
            "SELECT seq, event_id, received_at, meta, body FROM journal WHERE source = ? AND seq > ?"
            " AND seq <= ? AND body IS NOT NULL ORDER BY seq LIMIT ?"
        )
        upper = through if through is not None else _MAX_SEQ
        params = (source, after, upper, limit)
        rows = await self._read("reading the journal", lambda c: c.execute(sql, params).fetchall())
        return [codec.journal_entry_from_row(source, r) for r in rows]

    async def journal_trim(self, source: str, through: int, forget_before: float) -> int:
        def q(c: sqlite3.Connection) -> int:
            dropped = c.execute(
                "UPDATE journal SET body = NULL, meta = NULL WHERE source = ? AND seq <= ? AND body IS NOT NULL",
                (source, through),
            ).rowcount
            c.execute(
                "DELETE FROM journal WHERE source = ? AND seq <= ? AND body IS NULL AND received_at < ?",
                (source, through, forget_before),
            )
            return int(dropped)

        return await self._write("trimming the journal", q)

    # --- removing a pipeline ----------------------------------------------------------

    async def remove_pipeline(self, pipeline: str, scopes: Sequence[str] = ()) -> dict[str, int]:
        names = list(dict.fromkeys([pipeline, *scopes]))
        ids = json.dumps(names)
        among = "IN (SELECT value FROM json_each(?))"

        def q(c: sqlite3.Connection) -> dict[str, int]:
            kv = [(ns, k) for ns, k in c.execute("SELECT namespace, key FROM kv") if codec.kv_owned(ns, k, names)]
            c.executemany("DELETE FROM kv WHERE namespace = ? AND key = ?", kv)
            return {
                "checkpoint": c.execute(f"DELETE FROM checkpoints WHERE pipeline {among}", (ids,)).rowcount,
                "status": c.execute(f"DELETE FROM status WHERE pipeline {among}", (ids,)).rowcount,
                "dead letters": c.execute(f"DELETE FROM dead_letters WHERE pipeline {among}", (ids,)).rowcount,
                "shadow rows": c.execute(f"DELETE FROM shadow WHERE scope {among}", (ids,)).rowcount,
                "kv entries": len(kv),
                "journal rows": c.execute(f"DELETE FROM journal WHERE source {among}", (ids,)).rowcount,
            }

        return await self._write("removing a pipeline's state", q)


_MAX_SEQ = 2**63 - 1


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], mode: str = "IMMEDIATE") -> T:
    # IMMEDIATE takes the write lock up front (waiting up to the busy timeout),
    # so a transaction never fails halfway because another writer got there first.
    conn.execute(f"BEGIN {mode}")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _check_fence(c: sqlite3.Connection, pipeline: str, fence: Fence) -> None:
    row = c.execute("SELECT owner, epoch FROM leases WHERE name = ?", (fence.name,)).fetchone()
    codec.check_fence(pipeline, fence, row)


def _apply(c: sqlite3.Connection, pipeline: str, ch: StateChanges) -> list[int]:
    # Values are packed as they are written: a value that cannot be stored
    # fails the transaction at that point and everything before rolls back.
    if ch.checkpoint is not None:
        c.execute(_PUT_CHECKPOINT, (pipeline, codec.pack(ch.checkpoint, "checkpoint")))
    if ch.shadow_put:
        c.executemany(_PUT_SHADOW, (codec.shadow_params(s) for s in ch.shadow_put))
    if ch.shadow_delete:
        c.executemany(
            "DELETE FROM shadow WHERE scope = ? AND entity = ? AND key = ?",
            ((scope, entity, codec.pack(key, "shadow key")) for scope, entity, key in ch.shadow_delete),
        )
    ids = [c.execute(_ADD_DEAD_LETTER, codec.new_dead_letter_params(d)).lastrowid or 0 for d in ch.dead_letters]
    if ch.dlq_remove:
        c.execute(f"DELETE FROM dead_letters WHERE {_IN_IDS}", (_json_ids(ch.dlq_remove),))
    if ch.kv_put:
        c.executemany(_PUT_KV, ((ns, k, codec.pack(v, f"value {ns}/{k}")) for (ns, k), v in ch.kv_put.items()))
    if ch.kv_delete:
        c.executemany("DELETE FROM kv WHERE namespace = ? AND key = ?", ch.kv_delete)
    if ch.status is not None:
        c.execute(_PUT_STATUS, codec.status_params(pipeline, ch.status, ch.events_applied))
    elif ch.events_applied:
        c.execute(_ADD_APPLIED, (pipeline, ch.events_applied))
    return ids


def _json_ids(ids: Iterable[int]) -> str:
    return json.dumps([int(i) for i in ids])
