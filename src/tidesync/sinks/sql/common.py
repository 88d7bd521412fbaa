"""The write algorithm the SQL sinks share, over a small per-database :class:`Backend`.

One ``write`` is one destination transaction::

    read the applied position (row-locked)      -> skip events at or before it (unless replay)
    describe the destination tables (cached)    -> plan (tidesync.sinks.sql.plan)
    missing table/column and allowed to fix it  -> roll back, CREATE/ALTER, start again
    run the plan's steps; insert rows an update did not find
    store the new position; commit              -> PartialBatchError for events that can never be written

Exactly once: the position is stored in the destination in the same
transaction as the data, so after a crash a replayed event is either fully
applied and skipped, or not applied at all. Positions are compared as tuples.

Errors: each backend translates its driver's errors in one place
(``classify``); a failed write rolls back, so it leaves no partial data and
the stored position unchanged. A lost connection is dropped and made again on
the next write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, TransientError
from tidesync.event import ChangeEvent, Key, Position, pack_value, unpack_value
from tidesync.protocols import Context
from tidesync.schema import Column, EntitySchema
from tidesync.sinks.sql.config import SqlSinkConfig
from tidesync.sinks.sql.plan import APPEND, REKEY, UPDATE, UPSERT, Plan, Step, TablePlan, build_plan
from tidesync.sinks.sql.tables import TableInfo, TableName, key_override, resolve_table

log = logging.getLogger("tidesync.sinks.sql")
T = TypeVar("T")


class Backend(Protocol):
    """The database-specific half of a SQL sink. Methods run inside the write's transaction
    unless they say otherwise; none is called concurrently with another."""

    keep_schema: bool  # does an entity's schema part name a schema in this database?
    where: str  # "database x on host:port", for messages

    @property
    def connected(self) -> bool: ...

    async def connect(self, position_table: TableName) -> None:
        """Connect, set the session up, create the position table if missing."""

    async def close(self) -> None: ...

    async def read_position(self, pipeline: str, sink: str) -> bytes | None:
        """Start the transaction with the stored position, locking its row."""

    async def write_position(self, pipeline: str, sink: str, position: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def describe(self, table: TableName, key: tuple[str, ...] | None) -> TableInfo | None:
        """The table as it is now, None if it does not exist; ``key`` overrides the primary key."""

    async def create_table(self, table: TableName, schema: EntitySchema, key: tuple[str, ...]) -> None:
        """Create the table (own transaction, committed)."""

    async def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        """Add columns (own transaction, committed)."""

    async def truncate(self, table: TableInfo) -> None: ...

    async def run(self, step: Step) -> int:
        """Run one step; return the rows it touched (update, rekey: rows found)."""

    async def missing(self, table: TableInfo, keys: Sequence[Key]) -> list[int]:
        """The indexes of ``keys`` that have no row."""

    def classify(self, exc: BaseException) -> tuple[DeliveryError, bool]:
        """The tidesync error for a driver error, and whether the connection is lost."""


class Worker:
    """One thread that owns a blocking driver's connection: calls run there, one at a time.

    The sink is never called concurrently, so at most one call waits; a call
    whose caller was cancelled still finishes before the next one starts.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        """Let the thread end once its last call returns; a later call starts a new one."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


class ThreadedBackend:
    """The async face of a blocking driver's connection object: each call runs in one worker thread.

    Subclasses set ``_c`` (an object with the blocking methods of the same
    names), ``_w`` (its :class:`Worker`) and ``where``, and define
    ``connected`` and ``classify``.
    """

    keep_schema = False
    _c: Any
    _w: Worker
    where: str

    async def connect(self, position_table: TableName) -> None:
        await self._w.call(self._c.connect, position_table)

    async def close(self) -> None:
        await self._w.call(self._c.close)
        self._w.shutdown()

    async def read_position(self, pipeline: str, sink: str) -> bytes | None:
        return await self._w.call(self._c.read_position, pipeline, sink)

    async def write_position(self, pipeline: str, sink: str, position: bytes) -> None:
        await self._w.call(self._c.write_position, pipeline, sink, position)

    async def commit(self) -> None:
        await self._w.call(self._c.commit)

    async def rollback(self) -> None:
        await self._w.call(self._c.rollback)

    async def describe(self, table: TableName, key: tuple[str, ...] | None) -> TableInfo | None:
        return await self._w.call(self._c.describe, table, key)

    async def create_table(self, table: TableName, schema: EntitySchema, key: tuple[str, ...]) -> None:
        await self._w.call(self._c.create_table, table, schema, key)

    async def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        await self._w.call(self._c.add_columns, table, columns)

    async def truncate(self, table: TableInfo) -> None:
        await self._w.call(self._c.truncate, table)

    async def run(self, step: Step) -> int:
        return await self._w.call(self._c.run, step)

    async def missing(self, table: TableInfo, keys: Sequence[Key]) -> list[int]:
        return await self._w.call(self._c.missing, table, keys)


def live_events(
    events: Sequence[ChangeEvent], stored: Position | None, replay: bool
) -> tuple[list[int], Position | None]:
    """Indexes of the events to apply, and the position to store after them (None: unchanged).

    An event at or before ``stored`` was applied already and is skipped,
    unless ``replay``; an event without a position is always applied.
    """
    live: list[int] = []
    top = stored
    try:
        for i, ev in enumerate(events):
            pos = ev.position
            if pos:
                if not replay and stored is not None and pos <= stored:
                    continue
                if top is None or pos > top:
                    top = pos
            live.append(i)
    except TypeError as exc:
        raise PermanentError(
            f"position {ev.position!r} cannot be compared with the applied position {stored!r}: "
            "positions of a different source are stored for this pipeline and sink"
        ) from exc
    return live, (None if top == stored else top)


class SqlSink:
    """A Sink over a Backend. Subclasses make the backend (``_make_backend``)."""

    def __init__(self, config: SqlSinkConfig) -> None:
        self.config = config
        self._backend: Backend | None = None
        self._ctx: Context | None = None
        self._tables: dict[TableName, TableInfo | None] = {}
        self.rows_written = 0

    def _make_backend(self) -> Backend:
        raise NotImplementedError

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    async def open(self, ctx: Context) -> None:
        self._ctx = ctx
        await self._connect()

    async def close(self) -> None:
        if self._backend is not None:
            await self._backend.close()
        self._tables.clear()

    async def _connect(self) -> None:
        b = self.backend
        if b.connected:
            return
        self._tables.clear()
        try:
            await b.connect(resolve_table(self.config.position_table, {}, keep_schema=True))
        except Exception as exc:
            err, _ = b.classify(exc)
            await self._drop()
            raise err from exc

    async def _drop(self) -> None:
        try:
            await self.backend.close()
        except Exception:  # the connection is gone already; nothing else to release
            log.debug("closing a broken connection failed", exc_info=True)

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        if self._ctx is None:
            raise RuntimeError("write() before open()")
        await self._connect()
        for _ in range(4):
            failures = await self._attempt(events, replay)
            if failures is None:
                continue  # tables were created, altered or re-read: plan again
            if failures:
                raise PartialBatchError(failures)
            return
        raise TransientError("the destination tables kept changing while this batch was prepared; retry")

    async def _attempt(self, events: Sequence[ChangeEvent], replay: bool) -> dict[int, DeliveryError] | None:
        b = self.backend
        ctx = self._ctx
        assert ctx is not None
        try:
            raw = await b.read_position(ctx.pipeline, ctx.name)
            stored = unpack_value(raw) if raw is not None else None
            live, top = live_events(events, stored, replay)
            if not live:
                await b.rollback()
                return {}
            tables, fresh = await self._describe(events, live)
            plan = build_plan(
                events,
                live,
                tables,
                missing_table=self._missing_table_message,
                missing_column=self._missing_column_message,
                source_keys=self._source_keys(tables),
            )
            if not fresh and (plan.missing_columns or None in tables.values()):
                # Described before: someone may have created the table or column since.
                await b.rollback()
                self._tables.clear()
                return None
            if self._needs_ddl(plan, tables):
                await b.rollback()
                await self._run_ddl(plan, tables)
                return None
            for tp in plan.tables:
                await self._apply(tp)
            if top is not None:
                await b.write_position(ctx.pipeline, ctx.name, pack_value(top))
            await b.commit()
        except BaseException as exc:
            err = await self._fail(exc)
            if err is None or err is exc:
                raise
            raise err from exc
        self.rows_written += len(live) - len(plan.failures)
        return dict(plan.failures)

    async def _fail(self, exc: BaseException) -> DeliveryError | None:
        """Undo the transaction; the error to raise (None: re-raise ``exc`` itself)."""
        self._tables.clear()  # re-read the tables: someone may have changed them
        b = self.backend
        if isinstance(exc, DeliveryError):
            err: DeliveryError | None = exc
            lost = False
        elif isinstance(exc, Exception):
            err, lost = b.classify(exc)
        else:  # cancelled mid-statement: the connection's state is unknown
            err, lost = None, True
        if not lost:
            try:
                await b.rollback()
            except Exception:
                lost = True
        if lost:
            await self._drop()
        return err

    # --- tables ------------------------------------------------------------------------------

    def _table_name(self, entity: str) -> TableName:
        return resolve_table(entity, self.config.tables, keep_schema=self.backend.keep_schema)

    async def _describe(
        self, events: Sequence[ChangeEvent], live: list[int]
    ) -> tuple[dict[str, TableInfo | None], bool]:
        """The destination table of each entity (None: missing), and whether all were described just now."""
        out: dict[str, TableInfo | None] = {}
        fresh = True
        for i in live:
            entity = events[i].entity
            if entity in out:
                continue
            name = self._table_name(entity)
            if name in self._tables:
                fresh = False
            else:
                key = key_override(name, entity, self.config.keys)
                self._tables[name] = await self.backend.describe(name, key)
            out[entity] = self._tables[name]
        return out, fresh

    def _source_keys(self, tables: Mapping[str, TableInfo | None]) -> dict[str, tuple[str, ...]]:
        assert self._ctx is not None
        out = {}
        for entity in tables:
            schema = self._ctx.schemas.get(entity)
            if schema is not None and schema.primary_key:
                out[entity] = schema.primary_key
        return out

    def _missing_table_message(self, entity: str) -> str:
        table = self._table_name(entity)
        where = self.backend.where
        if self.config.create_tables:
            return (
                f"table {table} does not exist in {where} and cannot be created: the source published "
                f"no schema for {entity}; create the table"
            )
        return f"table {table} does not exist in {where}; create it or set create_tables: true"

    def _missing_column_message(self, table: TableInfo, columns: list[str]) -> str:
        names = ", ".join(columns)
        noun = "column" if len(columns) == 1 else "columns"
        return (
            f"{noun} {names} of this event do not exist in table {table.name} ({self.backend.where}); "
            "add them, or set evolve: add_columns"
        )

    def _needs_ddl(self, plan: Plan, tables: Mapping[str, TableInfo | None]) -> bool:
        assert self._ctx is not None
        if self.config.create_tables:
            for entity, info in tables.items():
                if info is None and self._ctx.schemas.get(entity) is not None:
                    return True
        return self.config.evolve == "add_columns" and bool(plan.missing_columns)

    async def _run_ddl(self, plan: Plan, tables: Mapping[str, TableInfo | None]) -> None:
        assert self._ctx is not None
        b = self.backend
        if self.config.create_tables:
            for entity, info in tables.items():
                schema = self._ctx.schemas.get(entity)
                if info is None and schema is not None:
                    name = self._table_name(entity)
                    key = key_override(name, entity, self.config.keys) or schema.primary_key
                    log.info("creating table %s in %s for %s", name, b.where, entity)
                    await b.create_table(name, schema, key)
        if self.config.evolve == "add_columns":
            for table, cols in plan.missing_columns.items():
                new = []
                for col, entity in cols.items():
                    schema = self._ctx.schemas.get(entity)
                    known = schema.column(col) if schema is not None else None
                    new.append(known or Column(col, "unknown"))
                log.info("adding %s to %s in %s", ", ".join(c.name for c in new), table.name, b.where)
                await b.add_columns(table, new)
        self._tables.clear()

    # --- running a plan ----------------------------------------------------------------------

    async def _apply(self, tp: TablePlan) -> None:
        b = self.backend
        if tp.truncate:
            await b.truncate(tp.table)
        for step in tp.steps:
            found = await b.run(step)
            if (step.kind == UPDATE or step.kind == REKEY) and found < len(step.rows):
                await self._insert_missing(step)

    async def _insert_missing(self, step: Step) -> None:
        """An update found no row for some keys: insert what the events know of those rows."""
        table = step.table
        nk = len(table.key)
        keys = [row[:nk] for row in step.rows]
        kind = UPSERT if table.key_unique else APPEND
        groups: dict[tuple[str, ...], Step] = {}
        for i in await self.backend.missing(table, keys):
            image = step.fallback(i)
            cols = table.key + tuple(c for c in image if c not in table.key)
            group = groups.get(cols)
            if group is None:
                group = groups[cols] = Step(kind, table, cols)
            group.rows.append(tuple(image[c] for c in cols))
        for group in groups.values():
            await self.backend.run(group)
