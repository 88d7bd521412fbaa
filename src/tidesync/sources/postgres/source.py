"""The ``postgres`` source: logical replication with pgoutput, behind the :class:`~tidesync.protocols.Source` contract.

Lifecycle:

- ``open(ctx, after)`` checks the server and tables (plain-words errors),
  creates or checks the publication and the slot, and either starts (or
  resumes) the initial snapshot or starts streaming after ``after``.
  A checkpoint without its slot, or an invalidated slot, is a SourceError:
  the source never silently starts again from scratch.
- ``read`` returns snapshot chunks first, then streamed changes; a batch's
  position is the end of its last whole transaction (see ``assembler.py``).
- ``commit(position)`` records snapshot/backfill progress in the state store
  and lets the replication thread send the position as the slot's flush LSN.
- A lost replication connection (walsender killed, server restart) is
  reconnected inside ``read`` on the ``reconnect`` schedule for up to
  ``reconnect_timeout`` seconds, resuming right after the last event handed
  out, so the engine sees neither a gap nor a repeat; after that it raises
  :class:`SourceTransientError`.

State: an open source holds one :class:`_Session`, built whole by ``open``
(nothing in it is missing or half made) and released by ``close``; before
``open`` and after ``close`` the source holds None instead, and every method
that needs a session says so with one check (:meth:`PostgresSource._open_session`).

Also: heartbeats, :meth:`PostgresSource.request_snapshot` (on-demand re-snapshot
of one table while streaming) and :meth:`PostgresSource.lag`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tidesync.errors import SourceError, SourceTransientError
from tidesync.event import Batch, Position
from tidesync.progress import Progress
from tidesync.protocols import Context
from tidesync.sources.postgres import ops
from tidesync.sources.postgres.assembler import FULL, HEARTBEAT_PREFIX, WATERMARK_PREFIX, Assembler, Run
from tidesync.sources.postgres.backfills import Backfills
from tidesync.sources.postgres.catalog import ENCODINGS, Catalog, TableShape, connect, table_shape
from tidesync.sources.postgres.config import PostgresSourceConfig
from tidesync.sources.postgres.errors import is_transient, translate
from tidesync.sources.postgres.fields import FieldShadow
from tidesync.sources.postgres.pgoutput import Message, Relation
from tidesync.sources.postgres.progress import SnapshotProgress
from tidesync.sources.postgres.relation import RelationInfo
from tidesync.sources.postgres.replication import ReplicationStream, SlotCreation
from tidesync.sources.postgres.setup import (
    SetupFacts,
    SlotState,
    ensure_publication,
    gather,
    problems,
    slot_problem,
    slot_state,
    warnings,
)
from tidesync.sources.postgres.snapshot import SnapshotPlan, SnapshotReader, begin_snapshot, snapshot_view
from tidesync.sources.postgres.spill import SpillDir
from tidesync.sources.postgres.startup import plan_start
from tidesync.sources.postgres.types import TypeMap
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.sources.postgres")

KV_NAMESPACE = "postgres-source"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The initial snapshot in progress: its reader, and its progress bar (None: ``progress: false``)."""

    reader: SnapshotReader
    progress: SnapshotProgress | None

    async def close(self) -> None:
        await self.reader.close()
        await self.reader.conn.close()
        if self.progress is not None:
            self.progress.close()


class _Side:
    """The connection that writes heartbeats and watermarks into the WAL, opened on first use."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def emit(self, prefix: str, content: str) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn)
        try:
            await self._conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (prefix, content))
        except psycopg.Error as exc:
            await self.close()
            raise translate(exc, "cannot write a message into the WAL") from exc

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None


@dataclass(slots=True)
class _Session:
    """Everything an open source holds, built whole by ``open``.

    ``phase`` is the initial snapshot while it runs, then the replication
    stream; a reconnect replaces the stream. ``shadow`` is None when the
    config keeps no shadow rows. ``last`` is the position of the last event or
    batch handed out (a reconnect resumes after it), ``confirmed`` the LSN the
    engine last committed.
    """

    ctx: Context
    kv_key: str
    facts: SetupFacts
    catalog: Catalog
    types: TypeMap
    spill: SpillDir
    asm: Assembler
    plan: SnapshotPlan
    side: _Side
    backfills: Backfills
    shadow: FieldShadow | None
    phase: _Snapshot | ReplicationStream
    last: Position | None
    confirmed: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        """Release everything; never raises (a failed close must not hide the error that caused it)."""
        with contextlib.suppress(Exception):
            await self.backfills.close()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        with contextlib.suppress(Exception):
            if isinstance(self.phase, ReplicationStream):
                await self.phase.stop()
            else:
                await self.phase.close()
        await self.catalog.close()
        await self.side.close()
        self.asm.close()
        if self.shadow is not None:
            with contextlib.suppress(Exception):
                await self.shadow.close()


class PostgresSource:
    def __init__(self, config: PostgresSourceConfig) -> None:
        self.config = config
        self.slot = ""
        self.publication = ""
        self.proto_version = 1
        self._session: _Session | None = None  # None before open and after close: see the module docstring

    def _open_session(self) -> _Session:
        if self._session is None:
            raise SourceError("the Postgres source is not open")
        return self._session

    # --- open -------------------------------------------------------------

    async def open(self, ctx: Context, after: Position | None) -> None:
        await self.close()
        async with contextlib.AsyncExitStack() as undo:  # releases what a failed open took
            session = await self._build(ctx, after, undo)
            undo.pop_all()
        self._session = session
        try:
            if self.config.heartbeat_interval > 0:
                session.tasks.append(asyncio.get_running_loop().create_task(self._heartbeats(session)))
            await self._resume_backfills(session)
        except BaseException:
            await self.close()
            raise

    async def _build(self, ctx: Context, after: Position | None, undo: contextlib.AsyncExitStack) -> _Session:
        cfg = self.config
        self.slot = cfg.slot_name(ctx.pipeline)
        self.publication = cfg.publication_name(ctx.pipeline)
        catalog = Catalog(cfg.dsn, ctx.clock, cfg.reconnect_policy())
        undo.push_async_callback(catalog.close)
        facts = await catalog.run(lambda conn: gather(conn, cfg.tables))
        proto = cfg.proto_version or (2 if facts.server_version >= 140000 else 1)
        found = problems(facts, proto_version=proto)
        if found:
            raise SourceError("the Postgres source cannot start:\n- " + "\n- ".join(found))
        for warning in warnings(facts):
            log.warning("pipeline %s: %s", ctx.pipeline, warning)
        self.proto_version = proto
        types = TypeMap(ENCODINGS[facts.encoding])
        spill = SpillDir(Path(cfg.work_dir) / self.slot)
        spill.open()
        undo.callback(spill.clear)
        asm = Assembler(types, spill, after=after, on_schema=ctx.schemas.put, on_watermark=self._on_watermark)
        kv_key = f"{ctx.pipeline}/{ctx.name}"
        side = _Side(cfg.dsn)
        undo.push_async_callback(side.close)
        await catalog.run(lambda conn: ensure_publication(conn, self.publication, facts.tables, ctx.pipeline))
        try:
            plan, snapshot = await self._prepare_slot(ctx, catalog, asm, kv_key, facts, after)
        except psycopg.Error as exc:
            raise translate(exc, "cannot prepare replication") from exc
        if snapshot is not None:
            undo.push_async_callback(snapshot.close)
            phase: _Snapshot | ReplicationStream = snapshot
        else:
            phase = await self._start_stream(facts, after, 0)
            undo.push_async_callback(phase.stop)
        backfills = Backfills(
            slot=self.slot,
            state=ctx.state,
            namespace=KV_NAMESPACE,
            key=f"{kv_key}/backfill",
            chunk_size=cfg.snapshot_chunk_size,
            connect=lambda: connect(cfg.dsn),
            emit=lambda content: side.emit(WATERMARK_PREFIX, content),
            progress=Progress("re-snapshot", enabled=cfg.progress, logger=log),
        )
        shadow = None
        if cfg.shadow_mode != "off":
            shadow = FieldShadow(
                Path(cfg.work_dir) / f"{self.slot}.shadow",
                self.slot,
                cfg.shadow_mode,
                self._columns_of,
                cache_rows=cfg.shadow_cache_rows,
            )
            await shadow.open(after)
            undo.push_async_callback(shadow.close)
        return _Session(
            ctx=ctx,
            kv_key=kv_key,
            facts=facts,
            catalog=catalog,
            types=types,
            spill=spill,
            asm=asm,
            plan=plan,
            side=side,
            backfills=backfills,
            shadow=shadow,
            phase=phase,
            last=after,
        )

    async def _prepare_slot(
        self,
        ctx: Context,
        catalog: Catalog,
        asm: Assembler,
        kv_key: str,
        facts: SetupFacts,
        after: Position | None,
    ) -> tuple[SnapshotPlan, _Snapshot | None]:
        """The slot checked or created; the snapshot plan, and the snapshot to read first (if any)."""
        cfg = self.config
        slot = await catalog.run(lambda conn: slot_state(conn, self.slot))
        if slot is not None:
            problem = slot_problem(slot, facts.database)
            if problem:
                raise SourceError(problem)
            slot = await self._wait_inactive(ctx, catalog, slot)
            if slot.active_pid:
                raise SourceTransientError(
                    f"replication slot {self.slot!r} is in use by server process {slot.active_pid} "
                    "(another tidesync process, or one that has not exited yet)"
                )
        raw = await ctx.state.kv_get(KV_NAMESPACE, kv_key)
        saved = SnapshotPlan.from_state(raw) if isinstance(raw, dict) and raw.get("slot") == self.slot else None
        start = plan_start(
            slot=self.slot,
            slot_exists=slot is not None,
            after=after,
            saved=saved,
            mode=cfg.snapshot,
            pipeline=ctx.pipeline,
        )
        save = _plan_saver(ctx, kv_key)
        if start.save_plan:
            await save(start.plan)
        snapshot = None
        if start.snapshot == "fresh":
            snapshot = await self._begin_snapshot(ctx, catalog, asm, facts, start.plan, None, save)
        if not start.create_slot:
            return start.plan, snapshot
        creation = await asyncio.to_thread(SlotCreation, cfg.dsn)
        try:
            created = await asyncio.to_thread(creation.create, self.slot, export=start.snapshot == "exported")
            log.info("created replication slot %s (consistent point %X)", self.slot, created.consistent_point)
            if created.snapshot_name is not None:
                snapshot = await self._begin_snapshot(ctx, catalog, asm, facts, start.plan, created.snapshot_name, save)
        finally:
            await asyncio.to_thread(creation.close)  # the exported snapshot was imported: it may go
        return start.plan, snapshot

    async def _wait_inactive(self, ctx: Context, catalog: Catalog, slot: SlotState) -> SlotState:
        """A process that just died may hold the slot a moment longer: give it a few seconds."""
        clock = ctx.clock
        deadline = clock.monotonic() + 10.0
        while slot.active_pid and clock.monotonic() < deadline:
            await clock.sleep(0.2)
            fresh: SlotState | None = await catalog.run(lambda conn: slot_state(conn, self.slot))
            slot = fresh or slot
        return slot

    async def _begin_snapshot(
        self,
        ctx: Context,
        catalog: Catalog,
        asm: Assembler,
        facts: SetupFacts,
        plan: SnapshotPlan,
        snapshot_name: str | None,
        save: Callable[[SnapshotPlan], Awaitable[None]],
    ) -> _Snapshot:
        cfg = self.config
        conn = await connect(cfg.dsn)
        try:
            await begin_snapshot(conn, snapshot_name)
            if snapshot_name is not None:  # stored before any row: a resume reads keyless tables as this one saw them
                plan.view = await snapshot_view(conn)
                await save(plan)
            reader_tables: list[tuple[TableShape, RelationInfo]] = []
            for t in facts.tables:
                if t.oid is None:
                    raise SourceError(f"table {t.configured!r} disappeared")
                shape = await table_shape(conn, t.oid)
                reader_tables.append((shape, await _register(catalog, asm, shape.relation)))
        except BaseException:
            await conn.close()
            raise
        reader = SnapshotReader(conn, reader_tables, plan, ctx.clock, chunk_size=cfg.snapshot_chunk_size)
        progress = None
        if cfg.progress:
            progress = SnapshotProgress(reader.tables)
            reader.progress = progress.advance
        return _Snapshot(reader, progress)

    async def _start_stream(self, facts: SetupFacts, last: Position | None, confirmed: int) -> ReplicationStream:
        cfg = self.config
        options = {"proto_version": str(self.proto_version), "publication_names": _quote(self.publication)}
        if facts.server_version >= 140000:
            options["messages"] = "true"  # heartbeats and watermarks (pgoutput has no such option before 14)
        if self.proto_version >= 2 and cfg.streaming is not False:
            options["streaming"] = "on"
        start = last[0] if last is not None and last[0] > 0 else 0
        stream = ReplicationStream(
            cfg.dsn,
            self.slot,
            options,
            start_lsn=start,
            max_messages=cfg.buffer_messages,
            status_interval=cfg.status_interval,
        )
        await stream.start()
        stream.confirm(confirmed)
        return stream

    # --- read -------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        s = self._open_session()
        if s.backfills.failure is not None:
            failure, s.backfills.failure = s.backfills.failure, None
            raise failure
        if isinstance(s.phase, _Snapshot):
            chunk = await s.phase.reader.next_chunk(max_events)
            if chunk is not None:
                s.plan.read(chunk)
                s.last = chunk.position
                events = chunk.events
                if s.shadow is not None:
                    events = await s.shadow.apply(events, chunk.position)
                return Batch(events, chunk.position, read_at=s.ctx.clock.time())
            await s.phase.close()
            s.phase = await self._start_stream(s.facts, s.last, s.confirmed)
        events, position = await self._read_stream(s, s.phase, max_events, max_wait)
        if events:
            s.last = _max(s.last, events[-1].position)
        if position is not None:
            s.last = _max(s.last, position)
        if s.shadow is not None:
            if events:
                events = await s.shadow.apply(events, position)
            elif position is not None:
                await s.shadow.advance(position)  # the store must reach every position the engine may commit
        return Batch(events, position, read_at=s.ctx.clock.time())

    async def _read_stream(
        self, s: _Session, stream: ReplicationStream, max_events: int, max_wait: float
    ) -> tuple[list[Any], Position | None]:
        asm = s.asm
        clock = s.ctx.clock
        deadline = clock.monotonic() + max_wait
        while True:
            if asm.wants_input(max_events):
                for chunk in stream.drain():
                    asm.feed(chunk)
            if await self._run(s, asm.run(max_events)) == FULL:
                break
            if stream.has_data:
                continue
            if stream.finished:
                err = stream.error() or SourceTransientError("the replication connection ended")
                if not isinstance(err, SourceTransientError):
                    raise err
                stream = await self._reconnect(s, stream, err)
                continue
            if asm.ready(max_events):
                break
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                break
            await stream.wait(remaining)
        return asm.take(max_events, partial=True)

    @staticmethod
    async def _run(s: _Session, run: Run) -> int:
        """Drive one assembler run, answering its relation requests from the catalog."""
        try:
            need = next(run)
            while True:
                need = run.send(await s.catalog.resolve(need.relation, s.types))
        except StopIteration as done:
            return int(done.value)
        finally:
            run.close()

    async def _reconnect(self, s: _Session, lost: ReplicationStream, err: SourceTransientError) -> ReplicationStream:
        log.warning("replication connection lost (%s); reconnecting", err)
        await lost.stop()
        s.asm.reset(s.last)
        s.backfills.abandon()
        retry = self.config.reconnect_policy().attempts(s.ctx.clock, is_transient)
        try:
            async for attempt in retry:
                with attempt:
                    stream = s.phase = await self._start_stream(s.facts, s.last, s.confirmed)
                    log.info("replication resumed after %s", list(s.last) if s.last else "the start")
                    return stream
        except SourceTransientError as exc:
            raise SourceTransientError(
                f"lost the replication connection and could not reconnect within "
                f"{self.config.reconnect_timeout:.0f}s: {exc}"
            ) from exc
        raise AssertionError("the retry loop ends with a stream or an error")

    # --- commit -----------------------------------------------------------

    async def commit(self, position: Position) -> None:
        if not position:
            return
        s = self._open_session()
        if s.shadow is not None:
            await s.shadow.confirmed(position)
        if position[0] == 0:
            if s.plan.committed(position):
                await _plan_saver(s.ctx, s.kv_key)(s.plan)
            return
        if not s.plan.complete:
            s.plan.complete = True
            await _plan_saver(s.ctx, s.kv_key)(s.plan)
        lsn = int(position[0])
        if lsn > s.confirmed:
            s.confirmed = lsn
            if isinstance(s.phase, ReplicationStream):
                s.phase.confirm(lsn)
        await s.backfills.committed(position)

    # --- a batch run's end ---------------------------------------------------

    async def end_position(self) -> Position:
        """Where a batch run (``tidesync run --once``) ends: the end of every transaction committed by now.

        The WAL *insert* position (not the written one: a commit acknowledged
        with ``synchronous_commit = off`` may not be written yet) as a
        transaction end ``(lsn, -1)``. A heartbeat written right after is a
        transaction that ends past it, so the stream reaches the end even when
        nothing else is written.
        """
        s = self._open_session()
        lsn = await s.catalog.run(_insert_lsn)
        await s.side.emit(HEARTBEAT_PREFIX, self.slot)
        return (lsn, -1)

    # --- close ------------------------------------------------------------

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- heartbeats, watermarks, backfills -------------------------------

    async def _heartbeats(self, s: _Session) -> None:
        while True:
            await s.ctx.clock.sleep(self.config.heartbeat_interval)
            try:
                await s.side.emit(HEARTBEAT_PREFIX, self.slot)
            except SourceError as exc:
                log.warning("heartbeat failed: %s", exc)

    def _on_watermark(self, msg: Message, asm: Assembler) -> None:
        if self._session is not None:
            self._session.backfills.on_watermark(msg, asm)

    async def request_snapshot(self, table: str) -> None:
        """Re-read one captured table while streaming goes on (DBLog watermarks; see ``backfill.py``).

        Returns once the backfill is scheduled; its rows arrive through ``read``
        as ``snapshot`` events. Raises SourceError for a table this source does
        not capture.
        """
        s = self._open_session()
        if s.facts.server_version < 140000:
            raise SourceError("on-demand snapshots need PostgreSQL 14 or newer (logical decoding messages in pgoutput)")
        wanted = await s.catalog.run(lambda conn: _oid_of(conn, table))
        match = [t.oid for t in s.facts.tables if wanted is not None and t.oid == wanted]
        if not match or match[0] is None:
            raise SourceError(f"{table!r} is not one of this source's tables ({', '.join(self.config.tables)})")
        shape, info = await _table(s, match[0])
        await s.backfills.add(shape, info)

    async def _resume_backfills(self, s: _Session) -> None:
        saved = await s.backfills.saved()
        for t in s.facts.tables:
            if t.oid is not None and t.entity in saved:
                shape, info = await _table(s, t.oid)
                await s.backfills.add(shape, info, saved[t.entity].get("last_key"), resumed=True)

    # --- operations -------------------------------------------------------

    def _columns_of(self, entity: str) -> tuple[str, ...] | None:
        info = self._session.asm.relation_by_entity(entity) if self._session is not None else None
        return info.names if info is not None else None

    async def lag(self) -> ops.SlotLag:
        """How far the slot is behind: retained WAL, unconfirmed WAL and seconds since the newest commit read."""
        s = self._open_session()
        lag = await ops.slot_lag(self.config.dsn, self.slot)
        behind = 0.0
        if s.asm.last_commit_ts:
            busy = isinstance(s.phase, ReplicationStream) and (s.phase.has_data or s.asm.has_input)
            behind = s.ctx.clock.time() - s.asm.last_commit_ts if busy else 0.0
        return lag.with_lag_seconds(max(0.0, behind))

    @property
    def backfilling(self) -> bool:
        """An on-demand snapshot is running or waiting."""
        return self._session is not None and self._session.backfills.running

    @property
    def spilled_transactions(self) -> int:
        """How many in-progress transactions the server streamed to this source (each spilled to disk)."""
        return self._session.spill.started if self._session is not None else 0

    @property
    def replication_pid(self) -> int | None:
        """The server process (walsender) serving this source's replication connection."""
        phase = self._session.phase if self._session is not None else None
        return phase.backend_pid if isinstance(phase, ReplicationStream) else None


async def _register(catalog: Catalog, asm: Assembler, rel: Relation) -> RelationInfo:
    """Make the assembler know ``rel`` (as the stream's Relation message would) and return its table."""
    return asm.register(rel, await catalog.resolve(rel, asm.types))


async def _table(s: _Session, oid: int) -> tuple[TableShape, RelationInfo]:
    shape = await s.catalog.run(lambda conn: table_shape(conn, oid))
    return shape, await _register(s.catalog, s.asm, shape.relation)


def _plan_saver(ctx: Context, kv_key: str) -> Callable[[SnapshotPlan], Awaitable[None]]:
    async def save(plan: SnapshotPlan) -> None:
        await ctx.state.kv_put(KV_NAMESPACE, kv_key, plan.to_state())

    return save


async def _insert_lsn(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _oid_of(conn: psycopg.AsyncConnection[Any], table: str) -> int | None:
    name = table if "." in table else f"public.{table}"
    try:
        cur = await conn.execute("SELECT to_regclass(%s)::oid::int8", (name,))
    except psycopg.Error:
        return None
    row = await cur.fetchone()
    return row[0] if row else None


def _quote(name: str) -> str:
    import re

    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _max(a: Position | None, b: Position) -> Position:
    return b if a is None or b > a else a
