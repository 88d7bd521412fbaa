"""The initial snapshot: the binlog position it is consistent with, then key-ordered chunks of each table.

How it is consistent without a global read lock held through it:

- MariaDB: ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and, in the same
  transaction, the status variables ``binlog_snapshot_file`` / ``binlog_snapshot_position``:
  the binlog position of exactly that snapshot. No lock at all.
- MySQL: ``FLUSH TABLES WITH READ LOCK``, the snapshot transaction, ``SHOW MASTER STATUS``,
  ``UNLOCK TABLES``: the lock is held for those three statements only, never while rows are read.

Rows are read in chunks of ``chunk_size`` in primary-key order inside that one
transaction (``WHERE (key) > (last key) ORDER BY key LIMIT n``), with the session's
time zone at UTC so TIMESTAMPs come back exact. Row positions are
``(0, table_index, chunk, row)``.

Resuming: the plan (the binlog start, the table being read and its last committed key)
is saved in the state store when the engine commits a snapshot position. A snapshot
resumed after a crash opens a new consistent-snapshot transaction and goes on after
the saved key; streaming still starts at the first snapshot's binlog position, so
every change after it is replayed on top (idempotent at the sink). Chunks of a resumed
snapshot are numbered after the checkpoint's, so their positions come after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pymysql

from tidesync.event import SNAPSHOT, ChangeEvent, Key, Position
from tidesync.sources.mariadb import server
from tidesync.sources.mariadb.positions import snapshot_position
from tidesync.sources.mariadb.tables import TableShape

log = logging.getLogger("tidesync.sources.mariadb")


@dataclass(slots=True)
class SnapshotPlan:
    """What a snapshot needs to start again: the binlog start, and how far the committed rows reach."""

    file: str
    offset: int
    table: int = 0  # index of the table being read
    last_key: list[Any] | None = None  # last committed key of that table (None: from its start)
    complete: bool = False

    def to_state(self) -> dict[str, Any]:
        return {"file": self.file, "offset": self.offset, "table": self.table, "last_key": self.last_key,
                "complete": self.complete}  # fmt: skip

    @classmethod
    def from_state(cls, raw: Any) -> SnapshotPlan | None:
        if not isinstance(raw, dict) or "file" not in raw:
            return None
        return cls(str(raw["file"]), int(raw["offset"]), int(raw.get("table", 0)), raw.get("last_key"),
                   bool(raw.get("complete")))  # fmt: skip


@dataclass(slots=True)
class Chunk:
    events: list[ChangeEvent]
    rejected: list[tuple[ChangeEvent, str]]
    position: Position
    table: int
    last_key: Key


def _begin(conn: pymysql.connections.Connection[Any], mariadb: bool) -> tuple[str, int]:
    server.query(conn, "SET SESSION time_zone = '+00:00'")
    server.query(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    if mariadb:
        server.query(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        status = {str(k).lower(): v for k, v in server.query(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")}
        return str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"])
    server.query(conn, "FLUSH TABLES WITH READ LOCK")
    try:
        server.query(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        return server.binlog_end(conn)
    finally:
        server.query(conn, "UNLOCK TABLES")


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass
class SnapshotReader:
    """Reads the tables of one snapshot transaction, chunk by chunk (PyMySQL in a worker thread)."""

    args: dict[str, Any]
    tables: list[tuple[str, str, TableShape]]  # (database, table, shape)
    mariadb: bool
    chunk_size: int
    zero_dates: str
    start_table: int = 0
    start_key: list[Any] | None = None
    first_chunk: int = 0
    conn: pymysql.connections.Connection[Any] | None = None
    _table: int = 0
    _chunk: int = 0
    _last: list[Any] | None = None
    _zero_warned: set[tuple[str, str]] = field(default_factory=set)

    async def begin(self) -> tuple[str, int]:
        """Open the snapshot transaction; returns the binlog (file, offset) it is consistent with."""
        self.conn = await asyncio.to_thread(server.connect, self.args, autocommit=True)
        self._table, self._last, self._chunk = self.start_table, self.start_key, self.first_chunk
        try:
            return await asyncio.to_thread(_begin, self.conn, self.mariadb)
        except pymysql.err.MySQLError as exc:
            await self.close()
            raise server.translate(exc, "cannot start the snapshot transaction") from exc

    async def next_chunk(self, limit: int) -> Chunk | None:
        """The next up to ``min(limit, chunk_size)`` rows in key order, or None when every table is read."""
        while self._table < len(self.tables):
            rows = await asyncio.to_thread(
                server.guarded, "reading the snapshot", self._fetch, min(limit, self.chunk_size)
            )
            if rows:
                return self._chunk_of(rows)
            self._table += 1
            self._last = None
        return None

    def _fetch(self, n: int) -> list[tuple[Any, ...]]:
        assert self.conn is not None
        db, table, shape = self.tables[self._table]
        cols = ", ".join(_q(c) for c in shape.names)
        key = ", ".join(_q(k) for k in shape.key)
        sql = f"SELECT {cols} FROM {_q(db)}.{_q(table)}"
        args: list[Any] = []
        if self._last is not None:
            sql += f" WHERE ({key}) > ({', '.join(['%s'] * len(shape.key))})"
            args = list(self._last)
        sql += f" ORDER BY {key} LIMIT {int(n)}"
        try:
            return server.query(self.conn, sql, args)
        except pymysql.err.MySQLError as exc:
            raise server.translate(exc, f"cannot read {db}.{table} for the snapshot") from exc

    def _chunk_of(self, rows: list[tuple[Any, ...]]) -> Chunk:
        _, _, shape = self.tables[self._table]
        chunk = self._chunk
        self._chunk += 1
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        key_at = [shape.names.index(k) for k in shape.key]
        now = time.time()  # a snapshot row has no commit time: the time it was read
        for i, values in enumerate(rows):
            at = snapshot_position(self._table, chunk, i)
            row, zero = shape.from_query(values)
            key = tuple(row[k] for k in shape.key)
            if zero and self.zero_dates == "dead_letter":
                reason = f"zero date in {shape.entity} column(s) {', '.join(zero)} (zero_dates: dead_letter)"
                rejected.append((ChangeEvent(shape.entity, key, SNAPSHOT, position=at), reason))
                continue
            for c in zero:
                if (shape.entity, c) not in self._zero_warned:
                    self._zero_warned.add((shape.entity, c))
                    log.warning("zero date in %s.%s read as NULL (zero_dates: null; warned once per column)",
                                shape.entity, c)  # fmt: skip
            events.append(ChangeEvent(shape.entity, key, SNAPSHOT, None, row, None, at, now))
        raw_last = rows[-1]
        self._last = [raw_last[i] for i in key_at]  # as the server compares them: the raw driver values
        return Chunk(events, rejected, snapshot_position(self._table, chunk, len(rows) - 1), self._table,
                     tuple(self._last))  # fmt: skip

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await asyncio.to_thread(conn.close)
            except Exception:  # already gone: nothing to release
                pass
