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
  reconnected inside ``read`` with exponential backoff for up to
  ``reconnect_timeout`` seconds, resuming right after the last event handed
  out, so the engine sees neither a gap nor a repeat; after that it raises
  :class:`SourceTransientError`.

Also: heartbeats, :meth:`PostgresSource.request_snapshot` (on-demand re-snapshot
of one table while streaming) and :meth:`PostgresSource.lag`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import psycopg

from tidesync.errors import SourceError, SourceTransientError
from tidesync.event import Batch, Position
from tidesync.protocols import Context
from tidesync.sources.postgres import ops
from tidesync.sources.postgres.assembler import FULL, HEARTBEAT_PREFIX, LOOKUP, WATERMARK_PREFIX, Assembler
from tidesync.sources.postgres.backfills import Backfills
from tidesync.sources.postgres.catalog import (
    ENCODINGS,
    Catalog,
    TableShape,
    connect,
    table_shape,
    translate,
)
from tidesync.sources.postgres.config import PostgresSourceConfig
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
from tidesync.sources.postgres.shadow import ShadowKeeper
from tidesync.sources.postgres.snapshot import SnapshotPlan, SnapshotReader, begin_snapshot, snapshot_view
from tidesync.sources.postgres.spill import SpillDir
from tidesync.sources.postgres.startup import plan_start
from tidesync.sources.postgres.types import TypeMap

log = logging.getLogger("tidesync.sources.postgres")

KV_NAMESPACE = "postgres-source"


class PostgresSource:
    def __init__(self, config: PostgresSourceConfig) -> None:
        self.config = config
        self.slot = ""
        self.publication = ""
        self.proto_version = 1
        self._ctx: Context | None = None
        self._catalog: Catalog | None = None
        self._side: psycopg.AsyncConnection[Any] | None = None
        self._stream: ReplicationStream | None = None
        self._asm: Assembler | None = None
        self._reader: SnapshotReader | None = None
        self._progress: SnapshotProgress | None = None
        self._plan: SnapshotPlan | None = None
        self._shadow: ShadowKeeper | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._backfills: Backfills | None = None
        self._last: Position | None = None
        self._confirmed = 0
        self._facts: SetupFacts | None = None

    # --- open -------------------------------------------------------------

    async def open(self, ctx: Context, after: Position | None) -> None:
        try:
            await self._open(ctx, after)
        except BaseException:
            await self.close()  # release what the failed open took; close stays idempotent
            raise

    async def _open(self, ctx: Context, after: Position | None) -> None:
        cfg = self.config
        self._ctx = ctx
        self._last = after
        self.slot = cfg.slot_name(ctx.pipeline)
        self.publication = cfg.publication_name(ctx.pipeline)
        self._kv_key = f"{ctx.pipeline}/{ctx.name}"
        catalog = self._catalog = Catalog(cfg.dsn, ctx.clock, cfg.reconnect_timeout)
        facts = self._facts = await catalog.run(lambda conn: gather(conn, cfg.tables))
        proto = cfg.proto_version or (2 if facts.server_version >= 140000 else 1)
        found = problems(facts, proto_version=proto)
        if found:
            raise SourceError("the Postgres source cannot start:\n- " + "\n- ".join(found))
        for warning in warnings(facts):
            log.warning("pipeline %s: %s", ctx.pipeline, warning)
        self.proto_version = proto
        self._types_encoding = ENCODINGS[facts.encoding]
        types = TypeMap(self._types_encoding)
        spill = SpillDir(Path(cfg.work_dir) / self.slot)
        spill.open()
        self._asm = Assembler(types, spill, after=after, on_schema=ctx.schemas.put, on_watermark=self._on_watermark)
        if cfg.shadow:
            self._shadow = ShadowKeeper(ctx.state, ctx.pipeline, self._columns_of)
        await catalog.run(lambda conn: ensure_publication(conn, self.publication, facts.tables, ctx.pipeline))
        try:
            await self._prepare_slot(facts, after)
        except psycopg.Error as exc:
            raise translate(exc, "cannot prepare replication") from exc
        if self._reader is None:
            await self._start_stream()
        if cfg.heartbeat_interval > 0:
            self._spawn(self._heartbeats())
        self._backfills = Backfills(
            slot=self.slot,
            state=ctx.state,
            namespace=KV_NAMESPACE,
            key=f"{self._kv_key}/backfill",
            chunk_size=cfg.snapshot_chunk_size,
            connect=lambda: connect(cfg.dsn),
            emit=lambda content: self._emit_message(WATERMARK_PREFIX, content),
        )
        await self._resume_backfills()

    async def _prepare_slot(self, facts: SetupFacts, after: Position | None) -> None:
        assert self._catalog is not None and self._ctx is not None
        cfg = self.config
        slot = await self._catalog.run(lambda conn: slot_state(conn, self.slot))
        if slot is not None:
            problem = slot_problem(slot, facts.database)
            if problem:
                raise SourceError(problem)
            slot = await self._wait_inactive(slot)
            if slot.active_pid:
                raise SourceTransientError(
                    f"replication slot {self.slot!r} is in use by server process {slot.active_pid} "
                    "(another tidesync process, or one that has not exited yet)"
                )
        raw = await self._ctx.state.kv_get(KV_NAMESPACE, self._kv_key)
        saved = SnapshotPlan.from_state(raw) if isinstance(raw, dict) and raw.get("slot") == self.slot else None
        start = plan_start(
            slot=self.slot,
            slot_exists=slot is not None,
            after=after,
            saved=saved,
            mode=cfg.snapshot,
            pipeline=self._ctx.pipeline,
        )
        self._plan = start.plan
        if start.save_plan:
            await self._save_plan(start.plan)
        if start.snapshot == "fresh":
            await self._begin_snapshot(facts, start.plan, None)
        if not start.create_slot:
            return
        creation = await asyncio.to_thread(SlotCreation, cfg.dsn)
        try:
            created = await asyncio.to_thread(creation.create, self.slot, export=start.snapshot == "exported")
            log.info("created replication slot %s (consistent point %X)", self.slot, created.consistent_point)
            if created.snapshot_name is not None:
                await self._begin_snapshot(facts, start.plan, created.snapshot_name)
        finally:
            await asyncio.to_thread(creation.close)  # the exported snapshot was imported: it may go

    async def _wait_inactive(self, slot: SlotState) -> SlotState:
        """A process that just died may hold the slot a moment longer: give it a few seconds."""
        assert self._catalog is not None and self._ctx is not None
        clock = self._ctx.clock
        deadline = clock.monotonic() + 10.0
        while slot.active_pid and clock.monotonic() < deadline:
            await clock.sleep(0.2)
            fresh: SlotState | None = await self._catalog.run(lambda conn: slot_state(conn, self.slot))
            slot = fresh or slot
        return slot

    async def _begin_snapshot(self, facts: SetupFacts, plan: SnapshotPlan, snapshot_name: str | None) -> None:
        assert self._asm is not None and self._ctx is not None
        cfg = self.config
        conn = await connect(cfg.dsn)
        await begin_snapshot(conn, snapshot_name)
        if snapshot_name is not None:  # stored before any row: a resume reads keyless tables as this one saw them
            plan.view = await snapshot_view(conn)
            await self._save_plan(plan)
        reader_tables: list[tuple[TableShape, RelationInfo]] = []
        for t in facts.tables:
            assert t.oid is not None
            shape = await table_shape(conn, t.oid)
            info = await self._register(shape.relation)
            reader_tables.append((shape, info))
        self._reader = SnapshotReader(conn, reader_tables, plan, self._ctx.clock, chunk_size=cfg.snapshot_chunk_size)
        self._plan = plan
        if cfg.progress:
            self._progress = SnapshotProgress(self._reader.tables)
            self._reader.progress = self._progress.advance

    async def _register(self, rel: Relation) -> RelationInfo:
        """Make the assembler know ``rel`` (as the stream's Relation message would) and return its table."""
        assert self._asm is not None
        await self._resolve(rel)
        self._asm.add_relation(rel)
        return self._asm.relations[rel.oid]

    async def _resolve(self, rel: Relation) -> None:
        assert self._asm is not None and self._catalog is not None
        self._asm.resolved(rel, await self._catalog.resolve(rel, self._asm.types))

    async def _save_plan(self, plan: SnapshotPlan) -> None:
        assert self._ctx is not None
        self._plan = plan
        await self._ctx.state.kv_put(KV_NAMESPACE, self._kv_key, plan.to_state())

    async def _start_stream(self) -> None:
        cfg = self.config
        options = {"proto_version": str(self.proto_version), "publication_names": _quote(self.publication)}
        assert self._facts is not None
        if self._facts.server_version >= 140000:
            options["messages"] = "true"  # heartbeats and watermarks (pgoutput has no such option before 14)
        if self.proto_version >= 2 and cfg.streaming is not False:
            options["streaming"] = "on"
        start = self._last[0] if self._last is not None and self._last[0] > 0 else 0
        stream = ReplicationStream(
            cfg.dsn,
            self.slot,
            options,
            start_lsn=start,
            max_messages=cfg.buffer_messages,
            status_interval=cfg.status_interval,
        )
        await stream.start()
        stream.confirm(self._confirmed)
        self._stream = stream

    # --- read -------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch:
        assert self._ctx is not None
        if self._backfills is not None and self._backfills.failure is not None:
            failure, self._backfills.failure = self._backfills.failure, None
            raise failure
        if self._reader is not None:
            chunk = await self._reader.next_chunk(max_events)
            if chunk is not None:
                assert self._plan is not None
                self._plan.read(chunk)
                self._last = chunk.position
                events = chunk.events
                if self._shadow is not None:
                    events = await self._shadow.apply(events)
                return Batch(events, chunk.position, read_at=self._ctx.clock.time())
            await self._end_snapshot()
            await self._start_stream()
        events, position = await self._read_stream(max_events, max_wait)
        if events:
            self._last = _max(self._last, events[-1].position)
        if position is not None:
            self._last = _max(self._last, position)
        if self._shadow is not None and events:
            events = await self._shadow.apply(events)
        return Batch(events, position, read_at=self._ctx.clock.time())

    async def _read_stream(self, max_events: int, max_wait: float) -> tuple[list[Any], Position | None]:
        assert self._asm is not None and self._ctx is not None
        asm = self._asm
        clock = self._ctx.clock
        deadline = clock.monotonic() + max_wait
        while True:
            stream = self._stream
            assert stream is not None
            if len(asm.live) < max_events:
                for chunk in stream.drain():
                    asm.feed(chunk)
            status = asm.run(max_events)
            if status == LOOKUP:
                assert asm.lookup is not None
                await self._resolve(asm.lookup)
                continue
            if status == FULL:
                break
            if stream.has_data:
                continue
            if stream.finished:
                err = stream.error() or SourceTransientError("the replication connection ended")
                if not isinstance(err, SourceTransientError):
                    raise err
                await self._reconnect(err)
                continue
            if asm.ready(max_events):
                break
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                break
            await stream.wait(remaining)
        return asm.take(max_events, partial=True)

    async def _reconnect(self, err: SourceTransientError) -> None:
        assert self._ctx is not None and self._asm is not None and self._stream is not None
        clock = self._ctx.clock
        log.warning("replication connection lost (%s); reconnecting", err)
        await self._stream.stop()
        self._asm.reset(self._last)
        if self._backfills is not None:
            self._backfills.abandon()
        started = clock.monotonic()
        delay = 0.1
        while True:
            try:
                await self._start_stream()
                log.info("replication resumed after %s", list(self._last) if self._last else "the start")
                return
            except SourceTransientError as exc:
                if clock.monotonic() - started + delay > self.config.reconnect_timeout:
                    raise SourceTransientError(
                        f"lost the replication connection and could not reconnect within "
                        f"{self.config.reconnect_timeout:.0f}s: {exc}"
                    ) from exc
                await clock.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _end_snapshot(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            await self._reader.conn.close()
            self._reader = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    # --- commit -----------------------------------------------------------

    async def commit(self, position: Position) -> None:
        if not position:
            return
        if position[0] == 0:
            await self._commit_snapshot(position)
            return
        if self._plan is not None and not self._plan.complete:
            self._plan.complete = True
            await self._save_plan(self._plan)
        lsn = int(position[0])
        if lsn > self._confirmed:
            self._confirmed = lsn
            if self._stream is not None:
                self._stream.confirm(lsn)
        if self._backfills is not None:
            await self._backfills.committed(position)

    async def _commit_snapshot(self, position: Position) -> None:
        if self._plan is not None and self._plan.committed(position):
            await self._save_plan(self._plan)

    # --- close ------------------------------------------------------------

    async def close(self) -> None:
        if self._backfills is not None:
            await self._backfills.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        with contextlib.suppress(Exception):
            await self._end_snapshot()
        if self._catalog is not None:
            await self._catalog.close()
        if self._side is not None:
            with contextlib.suppress(Exception):
                await self._side.close()
        self._side = None
        if self._asm is not None:
            self._asm.spill.clear()

    # --- heartbeats, watermarks, backfills -------------------------------

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _emit_message(self, prefix: str, content: str) -> None:
        if self._side is None or self._side.closed:
            self._side = await connect(self.config.dsn)
        try:
            await self._side.execute("SELECT pg_logical_emit_message(true, %s, %s)", (prefix, content))
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                await self._side.close()
            self._side = None
            raise translate(exc, "cannot write a message into the WAL") from exc

    async def _heartbeats(self) -> None:
        assert self._ctx is not None
        while True:
            await self._ctx.clock.sleep(self.config.heartbeat_interval)
            try:
                await self._emit_message(HEARTBEAT_PREFIX, self.slot)
            except SourceError as exc:
                log.warning("heartbeat failed: %s", exc)

    def _on_watermark(self, msg: Message, asm: Assembler) -> None:
        if self._backfills is not None:
            self._backfills.on_watermark(msg, asm)

    async def request_snapshot(self, table: str) -> None:
        """Re-read one captured table while streaming goes on (DBLog watermarks; see ``backfill.py``).

        Returns once the backfill is scheduled; its rows arrive through ``read``
        as ``snapshot`` events. Raises SourceError for a table this source does
        not capture.
        """
        assert self._facts is not None and self._backfills is not None
        assert self._catalog is not None
        if self._facts.server_version < 140000:
            raise SourceError("on-demand snapshots need PostgreSQL 14 or newer (logical decoding messages in pgoutput)")
        wanted = await self._catalog.run(lambda conn: _oid_of(conn, table))
        match = [t for t in self._facts.tables if wanted is not None and t.oid == wanted]
        if not match:
            raise SourceError(f"{table!r} is not one of this source's tables ({', '.join(self.config.tables)})")
        shape, info = await self._table(match[0].oid)  # type: ignore[arg-type]
        await self._backfills.add(shape, info)

    async def _table(self, oid: int) -> tuple[TableShape, RelationInfo]:
        assert self._catalog is not None
        shape = await self._catalog.run(lambda conn: table_shape(conn, oid))
        return shape, await self._register(shape.relation)

    async def _resume_backfills(self) -> None:
        assert self._facts is not None and self._backfills is not None
        saved = await self._backfills.saved()
        for t in self._facts.tables:
            if t.oid is not None and t.entity in saved:
                shape, info = await self._table(t.oid)
                await self._backfills.add(shape, info, saved[t.entity].get("last_key"), resumed=True)

    # --- operations -------------------------------------------------------

    def _columns_of(self, entity: str) -> tuple[str, ...] | None:
        info = self._asm.relation_by_entity(entity) if self._asm is not None else None
        return info.names if info is not None else None

    async def lag(self) -> ops.SlotLag:
        """How far the slot is behind: retained WAL, unconfirmed WAL and seconds since the newest commit read."""
        assert self._ctx is not None
        lag = await ops.slot_lag(self.config.dsn, self.slot)
        behind = 0.0
        if self._asm is not None and self._asm.last_commit_ts:
            busy = self._stream is not None and (self._stream.has_data or bool(self._asm.live))
            behind = self._ctx.clock.time() - self._asm.last_commit_ts if busy else 0.0
        return lag.with_lag_seconds(max(0.0, behind))

    @property
    def backfilling(self) -> bool:
        """An on-demand snapshot is running or waiting."""
        return self._backfills is not None and self._backfills.running

    @property
    def spilled_transactions(self) -> int:
        """How many in-progress transactions the server streamed to this source (each spilled to disk)."""
        return self._asm.spill.started if self._asm is not None else 0

    @property
    def replication_pid(self) -> int | None:
        """The server process (walsender) serving this source's replication connection."""
        return self._stream.backend_pid if self._stream is not None else None


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
