"""The initial snapshot: existing rows read in key order, in chunks, before streaming starts.

Consistency. The slot is created with ``EXPORT_SNAPSHOT``: that snapshot sees
exactly the transactions that committed before the slot's consistent point,
and the slot streams exactly those that commit after it. Reading every table
inside it (``SET TRANSACTION SNAPSHOT``) therefore misses no row and doubles
none.

Chunks. Each table is read with keyset pagination on its primary key (or
replica identity index): ``WHERE (k1, k2) > (last) ORDER BY k1, k2 LIMIT n``,
through ``COPY ... TO STDOUT`` so values arrive in the same text forms as in
the stream and go through the same converters. The last key of a chunk is
kept as text and cast back to the column's type for the next query, so it is
exact whatever the type. Tables without any key (REPLICA IDENTITY FULL) are
paged by ``ctid`` within one snapshot.

Positions: a row is ``(0, run, table_index, chunk, row_in_chunk)`` and the
batch of a chunk carries ``(0, run, table_index, chunk, rows_in_chunk)``.
The leading 0 sorts every snapshot position before every stream position of
the slot (whose LSNs are after its consistent point).

Resuming after a crash. Progress (per table: done, last key) is stored in the
state store when the engine commits a chunk's position, so it never claims
more than was delivered. The exported snapshot died with the crashed process,
so the remaining chunks are read in a *fresh* snapshot, taken now. That is
still correct, because the slot has kept every change committed after its
consistent point and streaming starts there once the snapshot ends:

- a row the fresh snapshot reads may already contain changes that the stream
  will deliver again afterwards; replaying them in commit order ends with the
  newest state (at-least-once, and per key the last event is the newest);
- a row deleted before the fresh snapshot is not read, and its delete (or its
  insert-then-delete) comes from the stream;
- a row inserted after the consistent point comes from the stream whether or
  not the fresh snapshot reads it.

Chunks read before the crash but not yet committed are read again (duplicates,
which idempotent sinks absorb). Each (re)start of a snapshot takes a new
``run`` number, stored before its first row is produced, so the positions of
a resumed snapshot sort after everything produced before the crash. Tables
without a key restart from their beginning (``ctid`` is not stable across
snapshots).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from tidesync.clock import Clock
from tidesync.errors import SourceError
from tidesync.event import SNAPSHOT, ChangeEvent, Position
from tidesync.sources.postgres.catalog import TableShape, translate
from tidesync.sources.postgres.relation import RelationInfo

_COPY_ESCAPE = re.compile(rb"\\(.)", re.S)
_COPY_CHARS = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _copy_unescape(m: re.Match[bytes]) -> bytes:
    c = m.group(1)
    return _COPY_CHARS.get(c, c)


def copy_fields(line: bytes) -> list[bytes | None]:
    """One row of COPY text format: tab-separated, ``\\N`` for NULL, backslash escapes."""
    out: list[bytes | None] = []
    for f in line.split(b"\t"):
        if f == b"\\N":
            out.append(None)
        elif b"\\" in f:
            out.append(_COPY_ESCAPE.sub(_copy_unescape, f))
        else:
            out.append(f)
    return out


@dataclass(slots=True)
class TableProgress:
    done: bool = False
    last_key: list[str] | None = None


@dataclass(slots=True)
class SnapshotPlan:
    """What the state store keeps about a slot's snapshot (a plain dict there)."""

    slot: str
    run: int = 0
    tables: dict[str, TableProgress] = field(default_factory=dict)
    complete: bool = False
    pending: list[Chunk] = field(default_factory=list)  # read, not yet committed (not stored)

    def read(self, chunk: Chunk) -> None:
        self.pending.append(chunk)

    def committed(self, position: Position) -> bool:
        """Record the chunks ``position`` covers; True when the plan changed (and should be stored)."""
        changed = False
        while self.pending and self.pending[0].position <= position:
            chunk = self.pending.pop(0)
            progress = self.tables.setdefault(chunk.entity, TableProgress())
            progress.last_key = chunk.last_key
            progress.done = chunk.table_done
            changed = True
        if changed:
            self.complete = not self.pending and all(p.done for p in self.tables.values())
        return changed

    def to_state(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "run": self.run,
            "complete": self.complete,
            "tables": {e: {"done": p.done, "last_key": p.last_key} for e, p in self.tables.items()},
        }

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> SnapshotPlan:
        tables = {e: TableProgress(bool(p.get("done")), p.get("last_key")) for e, p in raw.get("tables", {}).items()}
        return cls(raw["slot"], int(raw.get("run", 0)), tables, bool(raw.get("complete")))


@dataclass(slots=True)
class Chunk:
    events: list[ChangeEvent]
    position: Position
    entity: str
    last_key: list[str] | None
    table_done: bool


@dataclass(slots=True)
class _Table:
    index: int
    shape: TableShape
    info: RelationInfo
    order: tuple[int, ...]  # column indexes of the paging key; () = ctid
    chunk: int = 0
    last_key: list[str] | None = None
    done: bool = False


class SnapshotReader:
    """Reads the tables of a plan chunk by chunk inside one REPEATABLE READ transaction."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        tables: list[tuple[TableShape, RelationInfo]],
        plan: SnapshotPlan,
        clock: Clock,
        *,
        chunk_size: int,
        progress: Any = None,
    ) -> None:
        self.conn = conn
        self.plan = plan
        self.clock = clock
        self.chunk_size = chunk_size
        self.progress = progress
        self._tables: list[_Table] = []
        for i, (shape, info) in enumerate(tables):
            state = plan.tables.setdefault(info.entity, TableProgress())
            t = _Table(i, shape, info, paging_key(info, shape))
            t.done = state.done
            t.last_key = state.last_key if t.order else None
            self._tables.append(t)
        self._current = 0

    @property
    def tables(self) -> list[tuple[str, int]]:
        """(entity, estimated rows) of every table, for a progress display."""
        return [(t.info.entity, t.shape.estimated_rows) for t in self._tables]

    async def next_chunk(self, max_rows: int) -> Chunk | None:
        """The next chunk of at most ``max_rows`` rows, or None when every table is read."""
        while self._current < len(self._tables):
            t = self._tables[self._current]
            if t.done:
                self._current += 1
                continue
            return await self._read(t, min(max_rows, self.chunk_size))
        return None

    async def _read(self, t: _Table, limit: int) -> Chunk:
        info = t.info
        rows, last_key = await select_chunk(self.conn, t.shape, info, t.order, t.last_key, limit)
        run = self.plan.run
        now = self.clock.time()
        key_of = info.key_of
        entity = info.entity
        events = [
            ChangeEvent(entity, key_of(row), SNAPSHOT, None, row, None, (0, run, t.index, t.chunk, i), now)
            for i, row in enumerate(rows)
        ]
        if last_key is not None:
            t.last_key = last_key
        done = len(rows) < limit
        position: Position = (0, run, t.index, t.chunk, len(rows))
        t.chunk += 1
        if done:
            t.done = True
            self._current += 1
        if self.progress is not None:
            self.progress(entity, len(rows), done)
        return Chunk(events, position, entity, t.last_key if t.order else None, done)

    async def close(self) -> None:
        try:
            if not self.conn.closed:
                await self.conn.execute("COMMIT")
        except psycopg.Error:
            pass


async def begin_snapshot(conn: psycopg.AsyncConnection[Any], snapshot_name: str | None) -> None:
    """Start the snapshot transaction: the slot's exported snapshot when named, else a fresh one."""
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot_name is not None:
            await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
    except psycopg.Error as exc:
        raise translate(exc, "cannot start the snapshot transaction") from exc


async def select_chunk(
    conn: psycopg.AsyncConnection[Any],
    shape: TableShape,
    info: RelationInfo,
    order: tuple[int, ...],
    last_key: list[str] | None,
    limit: int,
) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Up to ``limit`` rows after ``last_key`` in paging order, and the new last key (text)."""
    names = info.names
    select = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    table = sql.SQL(shape.qualified)
    if order:
        order_sql = sql.SQL(", ").join(sql.Identifier(names[i]) for i in order)
        where: sql.Composable = sql.SQL("")
        if last_key is not None:
            lits = sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(shape.cast_types[i]))
                for v, i in zip(last_key, order, strict=True)
            )
            where = sql.SQL(" WHERE ({}) > ({})").format(order_sql, lits)
        query = sql.SQL("COPY (SELECT {} FROM {}{} ORDER BY {} LIMIT {}) TO STDOUT").format(
            select, table, where, order_sql, sql.Literal(limit)
        )
    else:
        if last_key is not None:
            where = sql.SQL(" WHERE ctid > {}::tid").format(sql.Literal(last_key[0]))
        else:
            where = sql.SQL("")
        query = sql.SQL("COPY (SELECT ctid, {} FROM {}{} ORDER BY ctid LIMIT {}) TO STDOUT").format(
            select, table, where, sql.Literal(limit)
        )
    lines: list[list[bytes | None]] = []
    try:
        async with conn.cursor().copy(query) as copy:
            async for block in copy:
                data = bytes(block)
                if data.endswith(b"\n"):
                    data = data[:-1]
                lines.extend(copy_fields(line) for line in data.split(b"\n"))
    except psycopg.Error as exc:
        raise translate(exc, f"snapshot of {info.entity} failed") from exc
    convs = info.converters
    offset = 0 if order else 1
    rows: list[dict[str, Any]] = []
    for fields in lines:
        row: dict[str, Any] = {}
        for name, conv, raw in zip(names, convs, fields[offset:], strict=True):
            row[name] = None if raw is None else _convert(conv, raw)
        rows.append(row)
    new_key = None
    if lines:
        last = lines[-1]
        new_key = [_text(last[i]) for i in order] if order else [_text(last[0])]
    return rows, new_key


def _convert(conv: Any, raw: bytes) -> Any:
    try:
        return conv(raw)
    except (ValueError, TypeError, ArithmeticError):
        return raw.decode("utf-8", "replace")


def _text(raw: bytes | None) -> str:
    if raw is None:
        raise SourceError("a snapshot paging key column is NULL")
    return raw.decode("utf-8")


def paging_key(info: RelationInfo, shape: TableShape) -> tuple[int, ...]:
    """Columns to page by: the event key when it is a real key (primary key or identity index)."""
    if info.key == info.names and shape.relation.replica_identity == "f":
        return ()
    return tuple(info.names.index(k) for k in info.key)
