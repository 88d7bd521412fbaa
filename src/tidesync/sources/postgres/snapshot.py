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
exact whatever the type. A table without a real key (no primary key and no
replica identity index; its events are keyed by the whole row, which may hold
NULLs) is paged by ``ctid`` instead: ``WHERE ctid > (last) ORDER BY ctid``.

Positions. A row of a keyed table is ``(0, table_index, run, chunk, row)``;
the batch of its chunk carries ``(0, table_index, run, chunk, rows_in_chunk)``.
A row of a keyless table is ``(0, table_index, 0, ordinal, 0)`` (``ordinal``
counts the table's rows from 1 in ``ctid`` order) and its chunk's batch
``(0, table_index, 0, rows_so_far, 1)`` (``2`` for the last chunk). The
leading 0 sorts every snapshot position before every stream position of the
slot (whose LSNs are after its consistent point); tables are read one after
the other in index order, so positions grow.

Resuming after a crash. Progress (per table: done, last key, rows) is stored
in the state store when the engine commits a chunk's position, so it never
claims more than was delivered. The exported snapshot died with the crashed
process, so the remaining chunks are read in a *fresh* snapshot, taken now.

For a keyed table that is still correct, because the slot has kept every
change committed after its consistent point and streaming starts there once
the snapshot ends:

- a row the fresh snapshot reads may already contain changes that the stream
  will deliver again afterwards; replaying them in commit order ends with the
  newest state (at-least-once, and per key the last event is the newest);
- a row deleted before the fresh snapshot is not read, and its delete (or its
  insert-then-delete) comes from the stream;
- a row inserted after the consistent point comes from the stream whether or
  not the fresh snapshot reads it.

Chunks read before the crash but not yet committed are read again (duplicates,
which upserts absorb). Each (re)start of a snapshot takes a new ``run``
number, stored before its first row is produced, so the positions of a
resumed keyed table sort after everything produced for it before the crash
(a destination that stored a newer position skips nothing it has not had).

A keyless table is different: a destination appends its rows (SQL sinks:
"append-only, exactly once thanks to the stored position"), so a row read
twice is a row doubled. Its resume therefore reproduces exactly the rows the
crashed snapshot would have produced, with the same positions:

- the same rows: when the exported snapshot is taken, its visibility
  (``txid_current_snapshot()``, the plan's ``view``) is stored before any row
  is produced. A fresh snapshot reads a keyless table only through the rows
  whose inserting transaction is visible in that view, so a row inserted
  after the consistent point is left to the stream, as it would have been;
- in the same order: ``ctid`` orders them. A tuple keeps its ``ctid`` as long
  as it is neither updated nor deleted and the table is not rewritten, which
  holds for the append-only tables a keyless table is meant to be;
- at the same positions: ordinals count rows, not chunks, and carry no run
  number, so they do not depend on chunk sizes or on how often the snapshot
  restarted. The table resumes after its committed ``ctid`` and ordinal; rows
  the destination applied after that (its stored position is ahead of the
  committed one when the process died in between) come again with the
  positions they had, and the destination skips them.

So a keyless, insert-only table is neither lost nor doubled across any number
of kill -9s during its snapshot. Limits: a row of a keyless table updated or
deleted (REPLICA IDENTITY FULL) between the consistent point and the resume is
not read again (its update or delete comes from the stream, and SQL sinks
dead-letter those for tables without a key); a rewrite of the table (VACUUM
FULL, CLUSTER, a rewriting ALTER TABLE) between the crash and the resume
moves tuples, so the resumed ordinals no longer match; rows older than 2^32
transactions (wrapped-around transaction ids of frozen rows) may be misjudged
against the stored view; and a plan stored without a view (written before the
view existed) reads keyless tables unfiltered, doubling rows inserted after
the consistent point (a warning says so).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from tidesync.clock import Clock
from tidesync.errors import SourceError
from tidesync.event import SNAPSHOT, ChangeEvent, Position
from tidesync.sources.postgres.catalog import TableShape
from tidesync.sources.postgres.errors import translate
from tidesync.sources.postgres.relation import RelationInfo

log = logging.getLogger("tidesync.sources.postgres")

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
    last_key: list[str] | None = None  # a keyless table's: its last ctid
    rows: int = 0  # rows committed (a keyless table's ordinals continue from here)


@dataclass(slots=True)
class SnapshotPlan:
    """What the state store keeps about a slot's snapshot (a plain dict there)."""

    slot: str
    run: int = 0
    tables: dict[str, TableProgress] = field(default_factory=dict)
    complete: bool = False
    view: str | None = None  # the exported snapshot's txid_current_snapshot(), for keyless resumes
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
            progress.rows = chunk.rows
            changed = True
        if changed:
            self.complete = not self.pending and all(p.done for p in self.tables.values())
        return changed

    def to_state(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "run": self.run,
            "complete": self.complete,
            "view": self.view,
            "tables": {e: {"done": p.done, "last_key": p.last_key, "rows": p.rows} for e, p in self.tables.items()},
        }

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> SnapshotPlan:
        tables = {
            e: TableProgress(bool(p.get("done")), p.get("last_key"), int(p.get("rows", 0)))
            for e, p in raw.get("tables", {}).items()
        }
        return cls(raw["slot"], int(raw.get("run", 0)), tables, bool(raw.get("complete")), view=raw.get("view"))


@dataclass(slots=True)
class Chunk:
    events: list[ChangeEvent]
    position: Position
    entity: str
    last_key: list[str] | None
    table_done: bool
    rows: int = 0  # the table's rows read up to the end of this chunk (keyless: its last ordinal)


@dataclass(slots=True)
class _Table:
    index: int
    shape: TableShape
    info: RelationInfo
    order: tuple[int, ...]  # column indexes of the paging key; () = ctid
    chunk: int = 0
    last_key: list[str] | None = None
    done: bool = False
    rows: int = 0


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
            t.last_key = state.last_key
            t.rows = state.rows
            self._tables.append(t)
        self._current = 0
        self._visible: sql.Composable | None = None
        self._visible_known = False

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
        visible = None if t.order else await self._keyless_filter()
        rows, last_key = await select_chunk(self.conn, t.shape, info, t.order, t.last_key, limit, visible=visible)
        now = self.clock.time()
        key_of = info.key_of
        entity = info.entity
        done = len(rows) < limit
        if t.order:
            run, chunk = self.plan.run, t.chunk
            positions = [(0, t.index, run, chunk, i) for i in range(len(rows))]
            position: Position = (0, t.index, run, chunk, len(rows))
        else:
            first = t.rows + 1
            positions = [(0, t.index, 0, first + i, 0) for i in range(len(rows))]
            position = (0, t.index, 0, t.rows + len(rows), 2 if done else 1)
        events = [
            ChangeEvent(entity, key_of(row), SNAPSHOT, None, row, None, pos, now)
            for row, pos in zip(rows, positions, strict=True)
        ]
        if last_key is not None:
            t.last_key = last_key
        t.rows += len(rows)
        t.chunk += 1
        if done:
            t.done = True
            self._current += 1
        if self.progress is not None:
            self.progress(entity, len(rows), done)
        return Chunk(events, position, entity, t.last_key, done, t.rows)

    async def _keyless_filter(self) -> sql.Composable | None:
        """The condition that keeps a keyless table's rows to those the exported snapshot saw (None: all)."""
        if not self._visible_known:
            self._visible = await visibility_filter(self.conn, self.plan.view)
            self._visible_known = True
        return self._visible

    async def close(self) -> None:
        try:
            if not self.conn.closed:
                await self.conn.execute("COMMIT")
        except psycopg.Error:
            pass


async def snapshot_view(conn: psycopg.AsyncConnection[Any]) -> str:
    """The visibility of the snapshot transaction ``conn`` is in (``txid_current_snapshot()`` as text)."""
    try:
        cur = await conn.execute("SELECT txid_current_snapshot()::text")
        row = await cur.fetchone()
    except psycopg.Error as exc:
        raise translate(exc, "cannot read the snapshot's visibility") from exc
    assert row is not None
    return str(row[0])


async def visibility_filter(conn: psycopg.AsyncConnection[Any], view: str | None) -> sql.Composable | None:
    """A condition on ``xmin``: the row's inserting transaction is visible in ``view``.

    None when the current snapshot *is* ``view`` (the exported snapshot itself:
    every row it reads qualifies). ``xmin`` holds 32 bits of a 64-bit
    transaction id: the full id is the latest one with those low bits that is
    not after the current snapshot's ``xmax`` (no row the current snapshot can
    see was inserted later). Ids below 3 are the bootstrap and frozen ids.
    """
    current = await snapshot_view(conn)
    if view is None:
        log.warning(
            "resuming the snapshot without the exported snapshot's visibility: rows of tables without a key "
            "inserted since the slot was created may be delivered twice"
        )
        return None
    if current == view:
        return None
    xmax = int(current.split(":", 2)[1])
    full = sql.SQL("{x} - (({x} - xmin::text::bigint) % 4294967296 + 4294967296) % 4294967296").format(
        x=sql.Literal(xmax)
    )
    return sql.SQL("(xmin::text::bigint < 3 OR txid_visible_in_snapshot({}, {}::txid_snapshot))").format(
        full, sql.Literal(view)
    )


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
    *,
    visible: sql.Composable | None = None,
) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Up to ``limit`` rows after ``last_key`` in paging order, and the new last key (text).

    ``visible``: a further condition for ``ctid`` paging (see :func:`visibility_filter`).
    """
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
        conds: list[sql.Composable] = []
        if last_key is not None:
            conds.append(sql.SQL("ctid > {}::tid").format(sql.Literal(last_key[0])))
        if visible is not None:
            conds.append(visible)
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL("")
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
    """Columns to page by: the event key when it is a real key (primary key or identity index), else () (ctid).

    A table without one keys its events by the whole row (its schema has no
    primary key), whose columns may be NULL and need not be unique: no keyset.
    """
    if not info.schema.primary_key:
        return ()
    return tuple(info.names.index(k) for k in info.key)
