"""The write algorithm the SQL sinks share, over a small per-database :class:`Backend`.

One ``write`` is one destination transaction::

    read the applied position (row-locked)      -> skip events at or before it (unless replay)
    describe the destination tables (cached)    -> plan (tidesync.sinks.sql.plan)
    an event of a new source shape              -> write the events before it (own transaction), then
      (tidesync.sinks.sql.changes)                 bring the table to the new shape, then go on
    missing table/column and allowed to fix it  -> roll back, CREATE/ALTER, start again
      (each table or column at most once per write: still missing after its DDL,
      its events fail permanently; see tidesync.sinks.sql.names)
    a metadata column missing (tidesync.sinks.sql.metadata)
                                                -> create_tables: roll back, ADD COLUMN, start again;
                                                   else block with the ALTER TABLE to run
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
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from tidesync.errors import DeliveryError, PartialBatchError, SystemicError, TransientError
from tidesync.event import UPDATE, ChangeEvent, Key, Position, pack_value, unpack_value
from tidesync.protocols import Context
from tidesync.schema import Column, EntitySchema
from tidesync.sinks.applied import live_events
from tidesync.sinks.sql.changes import SchemaFollower
from tidesync.sinks.sql.config import SqlSinkConfig
from tidesync.sinks.sql.ddl import NewTable, Tried, column_to_add, columns_to_add, new_table, table_name_problem
from tidesync.sinks.sql.metadata import Metadata, alter_statement
from tidesync.sinks.sql.names import NameRules, shown
from tidesync.sinks.sql.plan import APPEND, REKEY, UPSERT, Plan, Step, TablePlan, build_plan
from tidesync.sinks.sql.tables import ColumnInfo, TableInfo, TableName, key_override, resolve_table

log = logging.getLogger("tidesync.sinks.sql")
T = TypeVar("T")


class Backend(Protocol):
    """The database-specific half of a SQL sink. Methods run inside the write's transaction
    unless they say otherwise; none is called concurrently with another."""

    keep_schema: bool  # does an entity's schema part name a schema in this database?
    loose_types: bool  # any integer is 64-bit, lengths are not enforced (SQLite): no widening needed
    where: str  # "database x on host:port", for messages
    names: NameRules  # which names this database takes, and which it takes as the same column

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

    async def create_table(
        self, table: TableName, schema: EntitySchema, key: tuple[str, ...], *, inferred: bool = False
    ) -> None:
        """Create the table (own transaction, committed). ``inferred``: the types were guessed from
        values (tidesync.sinks.sql.infer), so a database with loose types should enforce them."""

    async def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        """Add columns (own transaction, committed); a column with ``has_default`` gets that DEFAULT,
        so existing rows hold it."""

    async def rename_column(self, table: TableInfo, old: str, new: str) -> None:
        """Rename a column (own transaction, committed)."""

    async def widen_column(self, table: TableInfo, column: Column, current: ColumnInfo) -> None:
        """Change ``current`` to ``column``'s type, keeping its nullability (own transaction, committed)."""

    async def relax_column(self, table: TableInfo, current: ColumnInfo) -> None:
        """Remove NOT NULL from a column (own transaction, committed)."""

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
    loose_types = False
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

    async def create_table(
        self, table: TableName, schema: EntitySchema, key: tuple[str, ...], *, inferred: bool = False
    ) -> None:
        await self._w.call(self._c.create_table, table, schema, key, inferred)

    async def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        await self._w.call(self._c.add_columns, table, columns)

    async def rename_column(self, table: TableInfo, old: str, new: str) -> None:
        await self._w.call(self._c.rename_column, table, old, new)

    async def widen_column(self, table: TableInfo, column: Column, current: ColumnInfo) -> None:
        await self._w.call(self._c.widen_column, table, column, current)

    async def relax_column(self, table: TableInfo, current: ColumnInfo) -> None:
        await self._w.call(self._c.relax_column, table, current)

    async def truncate(self, table: TableInfo) -> None:
        await self._w.call(self._c.truncate, table)

    async def run(self, step: Step) -> int:
        return await self._w.call(self._c.run, step)

    async def missing(self, table: TableInfo, keys: Sequence[Key]) -> list[int]:
        return await self._w.call(self._c.missing, table, keys)


def _top(events: Sequence[ChangeEvent], indexes: list[int], stored: Position | None) -> Position | None:
    """The position to store after writing ``indexes`` (None: unchanged)."""
    top = stored
    for i in indexes:
        pos = events[i].position
        if pos and (top is None or pos > top):
            top = pos
    return None if top == stored else top


class SqlSink:
    """A Sink over a Backend. Subclasses make the backend (``_make_backend``)."""

    def __init__(self, config: SqlSinkConfig) -> None:
        self.config = config
        self._backend: Backend | None = None
        self._ctx: Context | None = None
        self._tables: dict[TableName, TableInfo | None] = {}
        # Schemas this sink guessed for entities without one (tables it created), by entity.
        self._inferred: dict[str, EntitySchema] = {}
        self._tried: Tried = set()  # DDL run during the current write (tidesync.sinks.sql.ddl)
        self._uncreatable: dict[str, str] = {}  # entity -> why its table cannot be created
        self._follower = SchemaFollower(self, self._describe_entity)
        self._metadata = Metadata(config.metadata_columns, soft_deletes=config.deletes == "soft")
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
        self._follower.open(ctx)
        await self._connect()

    # The follower's view of the backend (tidesync.sinks.sql.changes): names, where, DDL.
    @property
    def names(self) -> NameRules:
        return self.backend.names

    @property
    def loose_types(self) -> bool:
        return self.backend.loose_types

    @property
    def where(self) -> str:
        return self.backend.where

    async def add_columns(self, table: TableInfo, columns: Sequence[Column]) -> None:
        await self.backend.add_columns(table, columns)

    async def rename_column(self, table: TableInfo, old: str, new: str) -> None:
        await self.backend.rename_column(table, old, new)

    async def widen_column(self, table: TableInfo, column: Column, current: ColumnInfo) -> None:
        await self.backend.widen_column(table, column, current)

    async def relax_column(self, table: TableInfo, current: ColumnInfo) -> None:
        await self.backend.relax_column(table, current)

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
        self._tried = set()
        self._uncreatable = {}
        done: dict[int, DeliveryError] = {}
        # Each table and column is created or added at most once per write, so this ends: a re-read
        # of a stale cache, table creation, column additions, then the write itself. A part written
        # before a schema change starts the count again (each part moves the stored position on).
        tries = 0
        while tries < 6:
            tries += 1
            result = await self._attempt(events, replay)
            if result is None:
                continue  # tables were created, altered or re-read: plan again
            failures, more = result
            done.update(failures)
            if more:
                tries = 0
                self._tried = set()
                continue
            if done:
                raise PartialBatchError(done)
            return
        raise TransientError("the destination tables kept changing while this batch was prepared; retry")

    async def _attempt(
        self, events: Sequence[ChangeEvent], replay: bool
    ) -> tuple[dict[int, DeliveryError], bool] | None:
        """One transaction: (failures, whether events after a schema change remain), None: plan again."""
        b = self.backend
        ctx = self._ctx
        assert ctx is not None
        more = False
        try:
            raw = await b.read_position(ctx.pipeline, ctx.name)
            stored = unpack_value(raw) if raw is not None else None
            live, top = live_events(events, stored, replay)
            if not live:
                await b.rollback()
                return {}, False
            dead: dict[int, DeliveryError] = {}
            if not replay:  # a replay of dead letters writes into the table as it is now
                due, dead = await self._follower.scan(events, live)
                if due is not None and due.at == 0:
                    await b.rollback()
                    await self._follower.apply(due)
                    self._tables.clear()
                    return None
                if due is not None:
                    cut = live[due.at]
                    live = live[: due.at]
                    dead = {i: e for i, e in dead.items() if i < cut}
                    top = _top(events, live + list(dead), stored)
                    more = True
                live = [i for i in live if i not in dead]
            tables, fresh = await self._describe(events, live)
            if self._metadata.columns and await self._lacks_metadata(tables, fresh):
                return None
            creates = self._creatable(tables, events, live)  # before planning: failures name the reason
            plan = build_plan(
                events,
                live,
                tables,
                missing_table=self._missing_table_message,
                missing_column=self._missing_column_message,
                source_keys=self._source_keys(tables),
                name_rules=b.names,
                metadata=self._metadata or None,
                synced_at=dt.datetime.fromtimestamp(ctx.clock.time(), dt.UTC),
            )
            if not fresh and (plan.missing_columns or None in tables.values()):
                # Described before: someone may have created the table or column since.
                await b.rollback()
                self._tables.clear()
                return None
            if creates or self._new_columns(plan):
                await b.rollback()
                await self._run_ddl(plan, creates, events, live)
                return None
            systemic = self._systemic(events, live, plan, tables)
            if systemic is not None:
                raise systemic  # before anything is applied: the engine holds the whole batch
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
        return {**dead, **plan.failures}, more

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

    async def _describe_entity(self, entity: str) -> TableInfo | None:
        """The destination table of ``entity`` as cached or described now (inside the write's transaction)."""
        name = self._table_name(entity)
        if name not in self._tables:
            self._tables[name] = await self.backend.describe(name, key_override(name, entity, self.config.keys))
        return self._tables[name]

    def _source_keys(self, tables: Mapping[str, TableInfo | None]) -> dict[str, tuple[str, ...]]:
        assert self._ctx is not None
        out = {}
        for entity in tables:
            schema = self._ctx.schemas.get(entity) or self._inferred.get(entity)
            if schema is not None and schema.primary_key:
                out[entity] = schema.primary_key
        return out

    def _missing_table_message(self, entity: str) -> str:
        table = self._table_name(entity)
        where = self.backend.where
        if self.config.create_tables:
            if (table, None) in self._tried:
                return (
                    f"table {table} is still missing from {where} after CREATE TABLE ran; "
                    "create it by hand, or name another table under tables:"
                )
            why = self._uncreatable.get(entity) or self._table_name_problem(table) or "see the log"
            return f"table {table} does not exist in {where} and cannot be created: {why}"
        return f"table {table} does not exist in {where}; create it or set create_tables: true"

    def _table_name_problem(self, table: TableName) -> str | None:
        return table_name_problem(table, self.backend.names)

    def _missing_column_message(self, table: TableInfo, columns: list[str]) -> str:
        fold = self.backend.names.fold
        stuck = [c for c in columns if (table.name, fold(c)) in self._tried]
        if stuck:
            names = ", ".join(shown(c) for c in stuck)
            return (
                f"column {names} is still missing from table {table.name} ({self.backend.where}) after "
                f"ALTER TABLE ... ADD COLUMN ran: the database took the name for another one; "
                "rename the field (rename:) or add the column by hand"
            )
        names = ", ".join(columns)
        noun = "column" if len(columns) == 1 else "columns"
        return (
            f"{noun} {names} of this event do not exist in table {table.name} ({self.backend.where}); "
            "add them, or set evolve: add_columns"
        )

    def _creatable(
        self, tables: Mapping[str, TableInfo | None], events: Sequence[ChangeEvent], live: list[int]
    ) -> list[NewTable]:
        """The missing tables to create now (tidesync.sinks.sql.ddl); why not, in ``_uncreatable``."""
        assert self._ctx is not None
        out: list[NewTable] = []
        if not self.config.create_tables:
            return out
        for entity, info in tables.items():
            name = self._table_name(entity)
            if info is not None or (name, None) in self._tried or entity in self._uncreatable:
                continue
            schema = self._ctx.schemas.get(entity)
            rows = [events[i] for i in live if events[i].entity == entity] if schema is None else []
            made = new_table(
                entity, name, schema, rows, key_override(name, entity, self.config.keys), self.backend.names
            )
            if isinstance(made, str):
                self._uncreatable[entity] = made
            else:
                out.append(made)
        return out

    def _new_columns(self, plan: Plan) -> dict[TableInfo, dict[str, str]]:
        """The columns ``evolve: add_columns`` should add now (not tried in this write yet)."""
        if self.config.evolve != "add_columns":
            return {}
        return columns_to_add(plan.missing_columns, self._tried, self.backend.names)

    def _systemic(
        self,
        events: Sequence[ChangeEvent],
        live: list[int],
        plan: Plan,
        tables: Mapping[str, TableInfo | None],
    ) -> SystemicError | None:
        """A failure every event of the batch would hit (the engine then holds the batch), or None.

        A table the destination lacks without create_tables, or a column it
        lacks with evolve: block (the default), fails every event that writes
        it, so it blocks rather than dead-letters; with evolve: dead_letter
        the events that write a missing column are dead-lettered, as asked. Name problems, tables create_tables
        cannot make (no schema, no row to infer one from) and columns still
        missing after the sink's own DDL are per-event (PermanentError in
        ``plan.failures``) and stay so. The first failure in source order is
        reported.
        """
        fold = self.backend.names.fold
        for i in live if not self.config.create_tables else ():
            entity = events[i].entity
            if entity not in tables or tables[entity] is not None:
                continue
            name = self._table_name(entity)
            if (name, None) not in self._tried and self._table_name_problem(name) is None:
                return SystemicError(self._missing_table_message(entity), entity=entity)
        for table, cols in plan.missing_columns.items() if self.config.evolve == "block" else ():
            lacking = [c for c in cols if (table.name, fold(c)) not in self._tried]
            if lacking:
                return SystemicError(self._missing_column_message(table, lacking), entity=cols[lacking[0]])
        return None

    async def _run_ddl(
        self, plan: Plan, creates: list[NewTable], events: Sequence[ChangeEvent], live: list[int]
    ) -> None:
        assert self._ctx is not None
        b = self.backend
        fold = b.names.fold
        self._tables.clear()
        for t in creates:
            if (t.table, None) in self._tried:
                continue  # two entities, one table
            self._tried.add((t.table, None))
            t = self._with_metadata(t)
            if t.inferred:
                self._inferred[t.entity] = t.schema
            how = "with columns inferred from this batch" if t.inferred else "from its schema"
            log.info("creating table %s in %s for %s, %s", t.table, b.where, t.entity, how)
            await b.create_table(t.table, t.schema, t.key, inferred=t.inferred)
        for table, cols in self._new_columns(plan).items():
            new = []
            for col, entity in cols.items():
                self._tried.add((table.name, fold(col)))
                rows = (events[i] for i in live if events[i].entity == entity)
                new.append(column_to_add(col, self._ctx.schemas.get(entity), rows))
            log.info("adding %s to %s in %s", ", ".join(c.name for c in new), table.name, b.where)
            await b.add_columns(table, new)

    # --- metadata columns (tidesync.sinks.sql.metadata) ----------------------------------------

    def _with_metadata(self, t: NewTable) -> NewTable:
        """A table to create, with the metadata columns its schema lacks."""
        fold = self.backend.names.fold
        have = {fold(c.name) for c in t.schema.columns}
        extra = tuple(c for c in self._metadata.table_columns() if fold(c.name) not in have)
        for c in extra:
            self._tried.add((t.table, fold(c.name)))
        if not extra:
            return t
        return dataclasses.replace(t, schema=dataclasses.replace(t.schema, columns=t.schema.columns + extra))

    async def _lacks_metadata(self, tables: Mapping[str, TableInfo | None], fresh: bool) -> bool:
        """Whether a table lacks a metadata column and the write must plan again (after adding it).

        Raises the SystemicError that blocks the pipeline when the column is not
        the sink's to add (``create_tables`` off) or is still missing after its
        ``ALTER TABLE`` ran.
        """
        b = self.backend
        fold = b.names.fold
        lacking: dict[TableInfo, tuple[str, list[Column]]] = {}
        for entity, info in tables.items():
            if info is not None and info not in lacking:
                cols = self._metadata.lacking(info, fold)
                if cols:
                    lacking[info] = (entity, cols)
        if not lacking:
            return False
        if not fresh:  # described before: someone may have added them since
            await b.rollback()
            self._tables.clear()
            return True
        if self.config.create_tables:
            todo = {
                t: [c for c in cols if (t.name, fold(c.name)) not in self._tried] for t, (_, cols) in lacking.items()
            }
            if any(todo.values()):
                await b.rollback()
                self._tables.clear()
                for table, cols in todo.items():
                    if cols:
                        self._tried.update((table.name, fold(c.name)) for c in cols)
                        added = ", ".join(c.name for c in cols)
                        log.info("adding metadata columns %s to %s in %s", added, table.name, b.where)
                        await b.add_columns(table, cols)
                return True
        table, (entity, cols) = next(iter(lacking.items()))
        names = ", ".join(c.name for c in cols)
        statement = alter_statement(getattr(self.config, "type", "postgres"), table.name, cols)
        if self.config.create_tables:
            message = (
                f"metadata columns {names} are still missing from table {table.name} ({b.where}) after ALTER TABLE "
                f"ran; add them by hand, run: {statement} -- then the pipeline resumes"
            )
        else:
            message = (
                f"table {table.name} ({b.where}) lacks the metadata columns {names} named under metadata:; "
                f"run: {statement} -- or set create_tables: true; the pipeline resumes once they exist"
            )
        raise SystemicError(message, entity=entity)

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
            if image is None:
                continue  # a soft delete of a row the destination does not hold
            cols = table.key + tuple(c for c in image if c not in table.key)
            group = groups.get(cols)
            if group is None:
                group = groups[cols] = Step(kind, table, cols)
            group.rows.append(tuple(image[c] for c in cols))
        for group in groups.values():
            await self.backend.run(group)
