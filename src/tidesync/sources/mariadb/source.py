"""The ``mariadb`` / ``mysql`` source: the row-based binlog, read as a replica, behind the Source contract.

Lifecycle:

- ``open(ctx, after)`` checks the server's settings (log_bin, binlog_format=ROW,
  binlog_row_image=FULL, binlog_row_metadata=FULL) and the tables (each needs a
  primary key), publishes each table's schema, then either starts (or resumes) the
  initial snapshot, or starts the binlog stream after ``after``. A checkpoint
  whose binlog file the server no longer has resumes by its GTID when it can
  (MariaDB, one GTID domain, the server's binlog still reaching back to it:
  ``positions.resume_by_gtid``); otherwise it is a :class:`BinlogGone`: the source
  never skips ahead silently; the fix is a new snapshot.
- ``read`` returns snapshot chunks first, then streamed changes (``stream.py``);
  every batch carries a position the stream can resume after, also one that ends
  inside a transaction (``positions.py``).
- ``commit(position)`` records snapshot progress in the state store (kv namespace
  ``mariadb-source``). The binlog needs no acknowledgement: the server keeps files
  for ``binlog_expire_logs_seconds`` whatever replicas read.
- A lost connection (the server restarted, the network dropped) makes ``read`` raise
  :class:`SourceTransientError`; the engine reopens the source after the last position
  it read (retrying while the server is down), which resumes by file and offset.

Batch runs (``tidesync run --once``, :mod:`tidesync.engine.once`): :meth:`MariadbSource.end_position`
is the server's binlog end when it is called (``SHOW MASTER STATUS``) as a transaction boundary with an
empty GTID, ``(file_seq, offset, -1, "")``. Every transaction the server wrote by then ends at or before
that offset, and ``""`` sorts before any GTID, so the end sorts at or before the boundary the stream
emits at that offset. The stream hands out a position at or past it in every case, with no marker
written (``stream.py``):

- after a transaction, captured or not (another database's, filtered out): its XID or COMMIT boundary,
  whose offset is where the next transaction starts, the end itself when it was the last;
- after a DDL or another statement logged on its own (any database: query events are not filtered):
  its boundary, likewise;
- after a rotation, or when nothing at all follows where the stream started (``snapshot: never``
  with no checkpoint): the idle boundary the stream emits at the server's heartbeat, which the server
  sends only once its dump thread has sent everything, naming its file and offset, the binlog end
  (MariaDB and MySQL alike send this heartbeat, version 1, to the file-and-offset dump request the
  stream makes; ``heartbeat`` is always on);
- while the snapshot still runs at the start: snapshot positions ``(0, ...)`` sort before the end,
  and the stream that follows starts at the snapshot's binlog position, before the end.

A run with nothing new ends at once: a boundary checkpoint at the binlog end is at or past the end
(its GTID sorts at or after ``""``).

Schema changes: a new shape of a captured table (ALTER TABLE ADD/DROP/RENAME/MODIFY
COLUMN, seen in the binlog's table maps) is published into the pipeline's schema
registry with ``since`` = the position of its first row; the SQL sinks follow it
under the pipeline's ``schema_changes`` policy (evolve, block, dead_letter), as they
do for the Postgres source.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from typing import Any

from tidesync.errors import SourceError
from tidesync.event import Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.sources.mariadb import server
from tidesync.sources.mariadb.config import MariadbSourceConfig
from tidesync.sources.mariadb.positions import (
    Resume,
    boundary_position,
    describe,
    file_seq,
    is_snapshot,
    resume_after,
    resume_by_gtid,
)
from tidesync.sources.mariadb.records import Boundary, Record, Rejected, Shape
from tidesync.sources.mariadb.snapshot import SnapshotPlan, SnapshotReader
from tidesync.sources.mariadb.stream import BinlogReader
from tidesync.sources.mariadb.tables import TableShape
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.sources.mariadb")

KV_NAMESPACE = "mariadb-source"


class BinlogGone(SourceError):
    """The checkpoint's binlog file was purged from the server: changes after it are lost to this source."""


class MariadbSource:
    def __init__(self, config: MariadbSourceConfig) -> None:
        self.config = config
        self._ctx: Context | None = None
        self._kv_key = ""
        self._mariadb = True
        self._shapes: dict[str, TableShape] = {}
        self._plan: SnapshotPlan | None = None
        self._snapshot: SnapshotReader | None = None
        self._marks: dict[Position, tuple[int, list[Any]]] = {}  # snapshot batch position -> (table, last key)
        self._stream: BinlogReader | None = None
        self._pending: deque[Record] = deque()
        self._after: Position | None = None
        self._versions: dict[str, int] = {}

    # --- open -------------------------------------------------------------

    async def open(self, ctx: Context, after: Position | None) -> None:
        await self.close()
        after = tuple(after) if after is not None else None  # a checkpoint may come back from JSON as a list
        self._ctx, self._after = ctx, after
        self._kv_key = f"{ctx.pipeline}/{ctx.name}"
        try:
            await self._open(ctx, after)
        except BaseException:
            await self.close()
            raise

    async def _open(self, ctx: Context, after: Position | None) -> None:
        cfg = self.config
        args = cfg.connect_args()
        conn = await asyncio.to_thread(server.connect, args)
        try:
            facts, files, shapes, end = await asyncio.to_thread(
                server.guarded, "inspecting the server", self._inspect, conn
            )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(conn.close)
        self._mariadb = facts.mariadb
        self._shapes = {s.entity: s for s in shapes}
        for shape in shapes:
            self._publish(shape, None)
        self._plan = SnapshotPlan.from_state(await ctx.state.kv_get(KV_NAMESPACE, self._kv_key))
        if after is None:
            if cfg.snapshot == "initial":
                await self._begin_snapshot(fresh=True)
            else:
                await self._start_stream(Resume(end[0], end[1]))
            return
        if is_snapshot(after):
            plan = self._plan
            if plan is None:
                raise SourceError(
                    f"the checkpoint {describe(after)} is inside a snapshot whose plan is missing from the state "
                    "store: reset the pipeline's checkpoint to snapshot again"
                )
            if not any(f == plan.file for f in files):
                raise self._gone(after, plan.file, files)
            await self._begin_snapshot(fresh=False)
            return
        resume = resume_after(after, files)
        if resume is None and self._mariadb and files:
            resume = await self._by_gtid(args, after, files[0])
        if resume is None:
            raise self._gone(after, f"file #{after[0]}", files)
        await self._start_stream(resume)

    async def _by_gtid(self, args: dict[str, Any], after: Position, oldest: str) -> Resume | None:
        """The checkpoint's file is gone: resume by its GTID when the server still has it (``positions.py``)."""
        conn = await asyncio.to_thread(server.connect, args)
        try:
            state, reach = await asyncio.to_thread(
                server.guarded, "reading the server's GTID state", server.gtid_states, conn, oldest
            )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(conn.close)
        resume = resume_by_gtid(after, state, reach)
        if resume is not None:
            log.warning(
                "the checkpoint's binlog (%s) is no longer on the server; resuming by GTID from %s "
                "(server at %s, oldest binlog %s starts after %s)",
                describe(after),
                resume.gtid,
                state,
                oldest,
                reach or "nothing",
            )
        return resume

    def _inspect(self, conn: Any) -> tuple[server.ServerFacts, list[str], list[TableShape], tuple[str, int]]:
        facts = server.server_facts(conn)
        found = facts.problems()
        if found:
            raise SourceError("the binlog source cannot start:\n- " + "\n- ".join(found))
        files = server.binlog_files(conn)
        shapes = [server.table_shape(conn, db, t) for db, t in self.config.qualified_tables()]
        return facts, files, shapes, server.binlog_end(conn)

    def _gone(self, after: Position, file: str, files: list[str]) -> BinlogGone:
        oldest = files[0] if files else "none"
        return BinlogGone(
            f"the checkpoint ({describe(after)}) needs binlog {file}, which the server no longer has "
            f"(oldest: {oldest}; binlog_expire_logs_seconds purged it): changes after the checkpoint are lost "
            "to this source. Re-snapshot: reset the pipeline's checkpoint (the source then reads every table "
            "again and streams from there), and keep binlogs longer than the pipeline may be stopped."
        )

    async def _begin_snapshot(self, *, fresh: bool) -> None:
        assert self._ctx is not None
        cfg = self.config
        tables = [(db, t, self._shapes[f"{db}.{t}"]) for db, t in cfg.qualified_tables()]
        plan = self._plan
        after = self._after
        reader = SnapshotReader(
            cfg.connect_args(),
            tables,
            self._mariadb,
            cfg.snapshot_chunk_size,
            cfg.zero_dates,
            start_table=0 if fresh or plan is None else plan.table,
            start_key=None if fresh or plan is None else plan.last_key,
            first_chunk=0 if after is None else int(after[2]) + 1,
        )
        self._snapshot = reader
        file, offset = await reader.begin()
        if fresh or plan is None:
            self._plan = SnapshotPlan(file, offset)
            await self._save_plan()
            log.info("snapshot of %s consistent with binlog %s @ %d", ", ".join(cfg.tables), file, offset)

    async def _start_stream(self, resume: Resume) -> None:
        assert self._ctx is not None
        cfg = self.config
        reader = BinlogReader(
            cfg.connect_args(),
            server_id=cfg.replica_id(self._ctx.pipeline),
            resume=resume,
            tables=cfg.qualified_tables(),
            shapes=self._shapes,
            mariadb=self._mariadb,
            zero_dates=cfg.zero_dates,
            heartbeat=cfg.heartbeat,
            max_records=cfg.buffer_events,
        )
        self._stream = reader
        await reader.start()

    async def _save_plan(self) -> None:
        if self._ctx is not None and self._plan is not None:
            await self._ctx.state.kv_put(KV_NAMESPACE, self._kv_key, self._plan.to_state())

    def _publish(self, shape: TableShape, since: Position | None) -> None:
        assert self._ctx is not None
        version = self._versions.get(shape.entity, -1) + 1
        self._versions[shape.entity] = version
        self._ctx.schemas.put(dataclasses.replace(shape.schema, version=version, since=since))

    # --- read -------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        if self._ctx is None:
            raise SourceError("the MariaDB source is not open")
        clock = self._ctx.clock
        if self._snapshot is not None:
            chunk = await self._snapshot.next_chunk(max_events)
            if chunk is not None:
                self._marks[chunk.position] = (chunk.table, list(chunk.last_key))
                after = self._after
                if after is None:
                    return Batch(chunk.events, chunk.position, read_at=clock.time(), rejected=chunk.rejected)
                # a resumed snapshot may re-read rows the checkpoint covers
                return Batch(
                    [e for e in chunk.events if e.position > after],
                    chunk.position,
                    read_at=clock.time(),
                    rejected=[r for r in chunk.rejected if r[0].position > after],
                )
            await self._snapshot.close()
            self._snapshot = None
            assert self._plan is not None
            await self._start_stream(Resume(self._plan.file, self._plan.offset))
        stream = self._stream
        assert stream is not None
        deadline = clock.monotonic() + max_wait
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        position: Position | None = None
        pending = self._pending
        while True:
            if not pending:
                pending.extend(stream.take(max_events))
            room = max_events - len(events) - len(rejected)
            popleft, append = pending.popleft, events.append  # a record at a time: the hot loop of the asyncio side
            while pending and room > 0:
                rec = popleft()
                if isinstance(rec, ChangeEvent):
                    append(rec)
                    position = rec.position
                    room -= 1
                elif isinstance(rec, Boundary):
                    position = rec.position
                elif isinstance(rec, Rejected):
                    rejected.append((rec.event, rec.reason))
                    position = rec.position
                    room -= 1
                elif isinstance(rec, Shape):
                    self._shapes[rec.shape.entity] = rec.shape
                    self._publish(rec.shape, rec.since)
            if events or rejected or len(events) + len(rejected) >= max_events:
                break
            if pending:
                continue
            if stream.finished:
                raise stream.error()
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                break
            await stream.wait(remaining)
        return Batch(events, position, read_at=clock.time(), rejected=rejected)

    # --- batch runs -------------------------------------------------------

    async def end_position(self) -> Position:
        """Where a batch run ends: the server's binlog end now, a boundary that sorts at or before the one the
        stream emits there (the module's docstring says why the stream always reaches it)."""
        if self._ctx is None:
            raise SourceError("the MariaDB source is not open")
        conn = await asyncio.to_thread(server.connect, self.config.connect_args())
        try:
            file, offset = await asyncio.to_thread(server.guarded, "reading the binlog end", server.binlog_end, conn)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(conn.close)
        return boundary_position(file_seq(file), offset, "")

    # --- commit -----------------------------------------------------------

    async def commit(self, position: Position) -> None:
        if not position or self._plan is None:
            return
        plan = self._plan
        if is_snapshot(position):
            mark = self._marks.get(tuple(position))
            for p in [p for p in self._marks if p <= tuple(position)]:
                del self._marks[p]
            if mark is not None:
                plan.table, plan.last_key = mark
                await self._save_plan()
            return
        if not plan.complete:
            plan.complete = True
            await self._save_plan()

    @property
    def fast_decoded(self) -> int:
        """Rows events of the current stream decoded by ``rows.py`` (the others went through mysql-replication)."""
        return self._stream.maker.fast_rows if self._stream is not None else 0

    # --- close ------------------------------------------------------------

    async def close(self) -> None:
        snapshot, self._snapshot = self._snapshot, None
        stream, self._stream = self._stream, None
        if snapshot is not None:
            with contextlib.suppress(Exception):
                await snapshot.close()
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.stop()
        self._pending.clear()
        self._marks.clear()
        self._ctx = None
