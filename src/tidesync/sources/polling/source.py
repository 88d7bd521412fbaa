"""The SQL polling source: incremental reads by (cursor, key), look-back, soft and hard deletes.

Each table is read in passes. A pass reads, page by page in (cursor, key)
order, every row from ``high-water cursor - lookback`` on (the first pass:
every row), and diffs each row against its shadow (see :mod:`.tracker`). The
key breaks ties between rows sharing a cursor value, so a bulk update that
stamps thousands of rows with one timestamp is paged through without a row
skipped or read twice, and paging always moves forward. When a pass reaches
the end of the table, its last row becomes the new high-water mark and the
next pass starts ``poll_interval`` later.

Late commits: a transaction that commits after a later one may carry a cursor
value below the high-water mark (``updated_at`` is taken when the row is
written, not at commit; a writer stalled between its UPDATE and its COMMIT,
by load, a lock wait or a slow fsync, commits it seconds later). The look-back
alone catches it only if it commits within ``lookback`` of its cursor time,
and no window is long enough under every load. So where the database stamps
the cursor with its own clock (Postgres ``timestamptz``, MariaDB/MySQL
``TIMESTAMP``), each pass first reads the commit horizon (:mod:`.horizon`):
the start of the oldest transaction still open, or now. A change this pass
cannot see yet carries a cursor at or above it, so the pass's high-water mark
is held at or below the horizon, and the next pass's floor (mark minus
look-back) is at or below every such change: a late commit is read by the
first pass that starts after it, however late it is. The mark is held from the
moment the pass starts, so a checkpoint taken mid-pass holds it too, and a pass
resumed after a restart ends no higher than that. Rows already emitted equal
their shadow and are not emitted again; what a long-open transaction costs is
a wider re-read while it stays open (logged once a minute past
``max(60s, 10 x lookback)``).

Why this and not the alternatives: a longer look-back only moves the edge;
polling by a commit-ordered column needs a trigger or a schema change on the
user's table (and MariaDB has no commit sequence to read); a scheduled
reconcile is a safety net that repairs after the fact, with its own delay.
Reading the open transactions is one cheap query per pass, needs no change to
the table, and makes a late commit impossible to miss as long as the horizon
is visible. Limits: other roles' sessions are visible only with PROCESS
(MariaDB/MySQL) or ``pg_read_all_stats`` (Postgres; without it the horizon
covers the polling role's own sessions only); a failed horizon query for lack
of a privilege is logged once and the source falls back to the look-back alone;
prepared (two-phase) transactions and cursors stamped by the application's
clock, ``DATETIME``, ``timestamp without time zone``, numbers or text are
covered by the look-back only. ``watch_transactions: false`` turns it off.

Reopening: :meth:`SqlPollSource.open` at a position forgets the pending shadows
of batches handed out after it (they were never committed and are read again);
kept, they would hide those very changes from the re-read.

NULL cursors: a row whose cursor column is NULL has no place in the order
and is never read; each pass starts by listing such rows, and reports each
once (while it stays NULL) as a rejected record of a batch, with a WARNING
(:mod:`.nulls`).

Hard deletes: every ``key_scan.every`` seconds the table's keys are read in
chunks of ``key_scan.chunk_size`` (a key-only scan) and compared with the keys
that have a shadow; each missing key becomes a delete.

Atomicity: every batch carries its shadow changes in ``batch.state``
(a :class:`~tidesync.state.store.StateChanges`); the engine commits them in
the same state-store transaction as the batch's checkpoint, so after a crash
the shadows match the checkpoint exactly. Until then they are kept in memory
(:class:`.tracker.PendingShadows`).

Clock assumptions: ``committed_at`` is the cursor value when it is a timestamp
(naive ones are read in ``naive_timezone``), capped at the poll time; for any
other cursor it is the poll time. The look-back window is measured in the
database's own cursor values, so clock skew between tidesync and the database
does not matter; only the gap between a row's cursor value and its commit
does.

For a hybrid wrapper: every emitted insert/update carries the whole row, and
:meth:`SqlPollSource.version` gives the record version (its cursor value).

A batch run (``tidesync run --once``) ends once each table is read up to its
newest row at the start, by a pass that started after it
(:meth:`SqlPollSource.end_position`; open transactions do not hold it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from tidesync.errors import ConfigError, SourceError, SourceTransientError
from tidesync.event import DELETE, Batch, ChangeEvent, Key, Position, Row
from tidesync.progress import Progress
from tidesync.protocols import Context
from tidesync.sources.polling import nulls, query
from tidesync.sources.polling.config import SqlPollConfig
from tidesync.sources.polling.dialect import close_engine, create_engine, redact, reflect, translate
from tidesync.sources.polling.end import TableEnd, reserve_end
from tidesync.sources.polling.estimate import row_estimate
from tidesync.sources.polling.horizon import as_cursor, held, read_horizon, watchable
from tidesync.sources.polling.marks import Mark, commit_time, decode_marks, encode_marks, floor_of
from tidesync.sources.polling.tracker import BatchBuilder, PendingShadows, TableSpec, change_for
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.sources.sql_poll")
T = TypeVar("T")
EPOCH_NS = "sql_poll_epoch"


@dataclass
class _Table:
    spec: TableSpec
    hw: Mark | None = None
    scan: Mark | None = None
    passing: bool = False
    floor: Any = None
    watch: bool = False  # the cursor can be compared with the commit horizon (see .horizon)
    cap: Any = None  # the current pass's high-water mark is held at or below this cursor value
    next_poll: float = 0.0
    next_key_scan: float = 0.0
    deletes: list[tuple[Key, Row]] = field(default_factory=list)
    nulls: list[tuple[Key, Row, Row | None]] = field(default_factory=list)  # NULL-cursor rows to report (+ shadow)
    loading: bool = False  # the pass under way is the initial load (no high-water mark yet): its progress shows
    end: TableEnd | None = None  # a batch run's end still to be reached (see end_position)


class SqlPollSource:
    """Polls tables of one database; see the module docstring for the rules."""

    def __init__(self, config: SqlPollConfig) -> None:
        self.config = config
        try:
            self._naive_tz = ZoneInfo(config.naive_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {config.naive_timezone!r} in naive_timezone") from None
        self._exec: ThreadPoolExecutor | None = None
        self._engine: sa.Engine | None = None
        self._ctx: Context | None = None
        self._tables: list[_Table] = []
        self._pending = PendingShadows()
        self._nulls = nulls.NullMemo()
        self._epoch = 0
        self._seq = 0
        self._marks: tuple[Any, ...] = ()
        self._scope = ""
        self.rows_read = 0  # rows fetched by passes (look-back re-reads included), for metrics and tests
        self.keys_scanned = 0
        self.held_back = 0.0  # seconds the last pass's high-water mark was held below its last row, for metrics
        self._watch = config.watch_transactions
        self._dialect = ""
        self._warned = float("-inf")
        self._progress: Progress | None = None
        self._end: int | None = None  # the seq of a batch run's end, while it is still to be reached

    # --- lifecycle -------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._exec is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)
        except sa.exc.SQLAlchemyError as exc:
            raise translate(exc, f"SQL poll source {redact(self.config.dsn)}") from exc

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        self._scope = self.config.shadow_scope or ctx.pipeline
        if self._exec is None:
            self._exec = ThreadPoolExecutor(1, thread_name_prefix="tidesync-sql-poll")
        if self._engine is None:
            self._engine = create_engine(self.config.dsn, connect_timeout=self.config.connect_timeout)
        specs = await self._run(self._resolve)
        for spec in specs:
            ctx.schemas.put(spec.meta.entity_schema(spec.entity, spec.key))
        epoch, _, marks = decode_marks(after)
        # Batches handed out after ``after`` are not committed and will be read again: forget their shadows.
        self._pending.forget_after(after)
        await self._nulls.load(ctx.state, self._scope, after)
        ends = {t.spec.entity: t.end for t in self._tables}
        if self._end is None:
            stored = await ctx.state.kv_get(EPOCH_NS, self._scope) or 0
            self._epoch = max(int(stored), epoch) + 1
            await ctx.state.kv_put(EPOCH_NS, self._scope, self._epoch)
            self._seq = 0
        # else: reopened during a batch run, before its end: the epoch stays and seq goes on (see .end)
        now = ctx.clock.monotonic()
        self._tables = []
        self._dialect = self._engine.dialect.name
        for spec in specs:
            hw, scan = marks.get(spec.entity, (None, None))
            t = _Table(spec, hw, scan, passing=scan is not None, next_poll=now, next_key_scan=now, loading=hw is None)
            t.watch = self._watch and watchable(spec.meta, spec.cursor, self._dialect)
            if t.watch and scan is not None and hw is not None:
                t.cap = hw[0]  # a pass cut short: its mark was held at its horizon when it started
            if self._end is not None and (end := ends.get(spec.entity)) is not None:
                end.reopened()
                t.end = end
            self._tables.append(t)
        self._marks = self._current_marks()
        if self._progress is not None:
            self._progress.close()
        self._progress = Progress("initial load", enabled=self.config.progress, logger=log)

    def _resolve(self) -> list[TableSpec]:
        assert self._engine is not None
        specs = []
        for t in self.config.tables:
            try:
                meta = reflect(self._engine, t.table)
            except sa.exc.NoSuchTableError:
                raise SourceError(f"table {t.table!r} does not exist in {redact(self.config.dsn)}") from None
            cursor = t.cursor or self.config.cursor
            assert cursor is not None  # the config model checks this
            key = tuple(t.key or meta.primary_key)
            if not key:
                raise SourceError(f"table {t.table!r} has no primary key: name its key columns with key: [...]")
            wanted = [("cursor", cursor), *(("key", k) for k in key)]
            if t.soft_delete is not None:
                wanted.append(("soft_delete column", t.soft_delete.column))
            for what, col in wanted:
                if col not in meta.columns:
                    raise SourceError(
                        f"table {t.table!r} has no column {col!r} (the {what}); columns: {', '.join(meta.columns)}"
                    )
            lookback = self.config.lookback if t.lookback is None else t.lookback
            specs.append(TableSpec(t.entity or t.table, meta, cursor, key, t.soft_delete, lookback))
        return specs

    async def commit(self, position: Position) -> None:
        self._pending.release(position)
        self._nulls.commit(position)

    async def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
        engine, self._engine = self._engine, None
        executor, self._exec = self._exec, None
        await close_engine(engine, executor)

    def request_poll(self, *, key_scan: bool = False) -> None:
        """Start the next pass over every table now (and a key scan, if asked) instead of at its time."""
        for t in self._tables:
            t.next_poll = float("-inf")
            if key_scan:
                t.next_key_scan = float("-inf")

    @property
    def idle(self) -> bool:
        """No pass in progress and no delete or NULL-cursor row waiting to be emitted."""
        return not any(t.passing or t.deletes or t.nulls for t in self._tables)

    # --- a batch run's end -------------------------------------------------------------

    async def end_position(self) -> Position:
        """Where a batch run (``tidesync run --once``) ends: once every table is read up to its newest row now.

        One query per table reads its newest ``(cursor, *key)``. The position
        returned is one this source reserves (:mod:`.end`): it hands out a
        batch there once, for every table, a pass that started after this
        call has read that row or gone past it (or read the whole table, when
        the row changed or went away meanwhile). Hard deletes found by the key
        scan that runs before each table's first pass are in the run too.

        Open transactions (``watch_transactions``): the end is tested against
        the rows a pass reads, never against the high-water mark. The mark is
        held below the oldest open transaction, so with one left open it would
        never reach the newest row, and the run would wait for ever. The run
        does not end early either: only a pass that started after this call
        counts (a pass resumed from the checkpoint may have gone past rows
        committed late, behind it; the next pass re-reads from the held-back
        floor), so every row committed before the start is read, in the
        version it has when the pass reads it. A row a transaction still open
        at the start commits later was not there at the start: this run may
        miss it, the next one reads it; and a row changed again during the run
        before the pass reached it has moved past the end: the next run reads it.
        """
        newest = await self._run(self._newest_marks)
        for t, mark in zip(self._tables, newest, strict=True):
            t.end = TableEnd(mark, text_ordered=self._dialect == "sqlite")
        self._end = reserve_end(self._seq, self._end)
        return (self._epoch, self._end)

    def _newest_marks(self) -> list[Mark | None]:
        assert self._engine is not None
        out: list[Mark | None] = []
        with self._engine.connect() as conn:
            for t in self._tables:
                spec = t.spec
                row = conn.execute(query.newest(spec.meta.table(), spec.cursor, spec.key)).first()
                out.append(tuple(row) if row is not None else None)
        return out

    def _end_reached(self) -> bool:
        return self._end is not None and all(t.end is not None and t.end.reached for t in self._tables)

    # --- for a hybrid wrapper ----------------------------------------------------------

    def cursor_column(self, entity: str) -> str:
        for t in self._tables:
            if t.spec.entity == entity:
                return t.spec.cursor
        raise KeyError(entity)

    def version(self, event: ChangeEvent) -> Any:
        """The record version of an emitted insert or update: its cursor value. None for deletes.

        A delete's time is its ``committed_at`` (the soft-delete row's cursor, or the key scan's time).
        """
        if event.op == DELETE or event.after is None:
            return None
        return event.after.get(self.cursor_column(event.entity))

    # --- reading -----------------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        assert self._ctx is not None
        clock = self._ctx.clock
        deadline = clock.monotonic() + max_wait
        b = BatchBuilder(self._scope, self._epoch, self._seq, self._pending)
        while b.count < max_events:
            worked = await self._step(b, max_events)
            if self._end_reached():
                break
            now = clock.monotonic()
            if worked:
                if now >= deadline and b.count:
                    break
                continue
            if b.count or now >= deadline:
                break
            await clock.sleep(max(0.0, min(self._next_due() - now, deadline - now)))
        marks = self._current_marks()
        end = None
        if self._end_reached():
            end, self._end = self._end, None
            for t in self._tables:
                t.end = None
        batch = b.build(marks, self._marks, clock.time(), end=end)
        self._marks, self._seq = marks, b.seq
        return batch

    def _current_marks(self) -> tuple[Any, ...]:
        return encode_marks({t.spec.entity: (t.hw, t.scan) for t in self._tables})

    def _next_due(self) -> float:
        due = [t.next_poll for t in self._tables]
        if self.config.key_scan is not None:
            due += [t.next_key_scan for t in self._tables]
        return min(due) if due else float("inf")

    async def _step(self, b: BatchBuilder, max_events: int) -> bool:
        """Do one unit of work (a page, a key scan, or emitting key-scan deletes); False when nothing is due."""
        assert self._ctx is not None
        for t in self._tables:
            if t.deletes:
                self._emit_deletes(t, b, max_events)
                return True
            if t.nulls:
                self._emit_nulls(t, b, max_events)
                return True
        for t in self._tables:
            if t.passing:
                await self._page(t, b, max_events)
                return True
        now = self._ctx.clock.monotonic()
        for t in self._tables:
            if self.config.key_scan is not None and now >= t.next_key_scan:
                await self._key_scan(t)
                t.next_key_scan = self._ctx.clock.monotonic() + self.config.key_scan.every
                return True
            if now >= t.next_poll:
                t.passing, t.scan, t.loading = True, None, t.hw is None
                t.floor = floor_of(t.hw[0], t.spec.lookback) if t.hw is not None else None
                if t.end is not None:
                    t.end.pass_started()
                await self._hold(t)
                await self._check_nulls(t, b)
                if t.nulls:
                    self._emit_nulls(t, b, max_events)  # before the pass's rows; the pass goes on next step
                    return True
                await self._page(t, b, max_events)
                return True
        return False

    async def _page(self, t: _Table, b: BatchBuilder, max_events: int) -> None:
        assert self._ctx is not None and self._engine is not None
        spec = t.spec
        q = query.page(
            spec.meta.table(), spec.cursor, spec.key, floor=t.floor, after=t.scan, limit=self.config.page_size
        )
        if t.loading and self._progress is not None and spec.entity not in self._progress.tasks:
            total = await self._run(self._estimate, spec) if self._progress.mode != "off" else None
            self._progress.add(spec.entity, total)
        rows = await self._run(self._fetch, q)
        self.rows_read += len(rows)
        shadows = await self._shadows(spec, rows)
        now = self._ctx.clock.time()
        done = 0
        for row in rows:
            if b.count >= max_events:
                break
            key = spec.key_of(row)
            shadow = shadows.get(key)
            change = change_for(spec, row, shadow)
            if change is not None:
                op, changed = change
                b.emit(
                    spec.entity,
                    key,
                    op,
                    before=shadow,
                    after=None if op == DELETE else row,
                    changed=changed,
                    committed_at=commit_time(row[spec.cursor], self._naive_tz, now),
                )
            t.scan = (row[spec.cursor], *key)
            if t.end is not None:
                t.end.read(t.scan)
            done += 1
        end = done == len(rows) and len(rows) < self.config.page_size
        if t.loading and self._progress is not None:
            self._progress.advance(spec.entity, done, done=end)
        if end:
            # The end of the table: the last row read is the highest (cursor, key) there is; held at the
            # horizon, so that the next pass re-reads every change that was not visible to this one.
            if t.scan is not None:
                t.hw = held(t.scan, t.cap)
                self.held_back = _seconds(t.scan[0], t.hw[0] if t.hw is not None else None)
            t.passing, t.scan, t.cap, t.loading = False, None, None, False
            t.next_poll = self._ctx.clock.monotonic() + self.config.poll_interval
            if t.end is not None and not t.end.pass_ended():
                t.next_poll = self._ctx.clock.monotonic()  # a batch run waits for a pass that starts after its start

    async def _hold(self, t: _Table) -> None:
        """Before a pass reads anything: read the horizon, and hold the high-water mark at it from now on.

        The mark is lowered at once (not only when the pass ends), so a checkpoint taken mid-pass
        already holds it: a pass resumed after a restart ends no higher (see ``open``).
        """
        if not t.watch:
            return
        try:
            epoch = await self._run(self._read_horizon)
        except SourceError as exc:
            if isinstance(exc, SourceTransientError):
                raise
            # No privilege to see other sessions' transactions: the look-back alone, and say so once.
            log.warning(
                "%s: cannot read open transactions (%s); late commits are caught only within the look-back "
                "of %gs (grant PROCESS on MariaDB/MySQL, pg_read_all_stats on Postgres, or set "
                "watch_transactions: false)",
                redact(self.config.dsn),
                exc,
                t.spec.lookback,
            )
            self._watch = False
            for each in self._tables:
                each.watch = False
            return
        if epoch is None:
            return
        t.cap = as_cursor(epoch, self._dialect)
        t.hw = held(t.hw, t.cap) if t.hw is not None else (t.cap,)
        self._warn_if_held(t)

    def _read_horizon(self) -> float | None:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return read_horizon(conn)

    def _warn_if_held(self, t: _Table) -> None:
        """A transaction open for long widens every pass's re-read: worth a line in the log, once a minute."""
        assert self._ctx is not None
        if not isinstance(t.cap, dt.datetime):
            return
        now = self._ctx.clock.time()
        behind = now - (t.cap if t.cap.tzinfo is not None else t.cap.replace(tzinfo=dt.UTC)).timestamp()
        if behind > max(60.0, 10 * t.spec.lookback) and now - self._warned > 60.0:
            self._warned = now
            log.warning(
                "%s: a transaction open for %.0fs holds the re-read window open (each pass re-reads rows since)",
                t.spec.entity,
                behind,
            )

    def _estimate(self, spec: TableSpec) -> int | None:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return row_estimate(conn, spec.meta)

    def _fetch(self, q: sa.Select[Any]) -> list[Row]:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    async def _shadows(self, spec: TableSpec, rows: list[Row]) -> dict[Key, Row | None]:
        """The shadow of each row's key: pending ones first, the state store's for the rest.

        The pending ones are taken before the store is asked, in one step: while the store answers, the
        sync or engine may commit a batch and release its pending shadows, and a key looked up in neither
        place would look new (re-emitted as an insert of a row it has already emitted, older values
        included).
        """
        assert self._ctx is not None
        out: dict[Key, Row | None] = {}
        keys = []
        for row in rows:
            key = spec.key_of(row)
            known, shadow = self._pending.lookup(spec.entity, key)
            if known:
                out[key] = shadow
            else:
                keys.append(key)
        if keys:
            found = await self._ctx.state.shadow_get(self._scope, spec.entity, keys)
            out.update((k, s.row) for k, s in found.items())
        return out

    # --- hard deletes ------------------------------------------------------------------

    async def _key_scan(self, t: _Table) -> None:
        assert self._ctx is not None and self.config.key_scan is not None
        spec = t.spec
        # Pending shadows before the store scan, as in _shadows: a release during the scan must not hide them.
        present, gone = self._pending.keys(spec.entity)
        pending = {key: self._pending.lookup(spec.entity, key)[1] or {} for key in present}
        known = {s.key: s.row for s in await self._ctx.state.shadow_scan(self._scope, spec.entity)}
        for key in gone:
            known.pop(key, None)
        known.update(pending)
        if not known:
            return
        missing = await self._run(self._missing_keys, spec, set(known), self.config.key_scan.chunk_size)
        t.deletes = [(key, known[key]) for key in missing]
        if missing:
            log.info("%s: %d row(s) deleted since they were read", spec.entity, len(missing))

    def _missing_keys(self, spec: TableSpec, known: set[Key], chunk: int) -> set[Key]:
        assert self._engine is not None
        table = spec.meta.table(spec.key)
        after: Key | None = None
        while True:
            with self._engine.connect() as conn:
                rows = [tuple(r) for r in conn.execute(query.keys_after(table, spec.key, after, chunk))]
            self.keys_scanned += len(rows)
            known.difference_update(rows)
            if len(rows) < chunk:
                return known
            after = rows[-1]

    async def _check_nulls(self, t: _Table, b: BatchBuilder) -> None:
        """At a pass's start: the table's NULL-cursor rows not reported yet go to ``t.nulls``; the memo of
        rows no longer NULL is deleted with this batch (see :mod:`.nulls`)."""
        assert self._engine is not None
        spec = t.spec
        keys = await self._run(nulls.read_null_keys, self._engine, spec, self.config.page_size)
        by_memo = {nulls.memo_key(self._scope, spec.entity, k): k for k in keys}
        gone = self._nulls.cleared(nulls.memo_key(self._scope, spec.entity, ()).removesuffix("]"), set(by_memo))
        b.kv_delete.extend((nulls.REJECT_NS, k) for k in gone)
        new = self._nulls.new(by_memo)
        if not new:
            return
        rows = await self._run(nulls.read_rows, self._engine, spec, [by_memo[k] for k in new])
        rows = [r for r in rows if r.get(spec.cursor) is None]  # one may have got its cursor meanwhile
        shadows = await self._shadows(spec, rows)
        t.nulls = [(spec.key_of(r), r, shadows.get(spec.key_of(r))) for r in rows]
        if t.nulls:
            shown = ", ".join(str(k[0] if len(k) == 1 else k) for k, _, _ in t.nulls[:5])
            log.warning(
                "%s: %d row(s) whose cursor column %s is NULL are never read by polling (key %s%s); each is "
                "reported once as a rejected record (the dead-letter queue)",
                spec.entity, len(t.nulls), spec.cursor, shown, ", ..." if len(t.nulls) > 5 else "",
            )  # fmt: skip

    def _emit_nulls(self, t: _Table, b: BatchBuilder, max_events: int) -> None:
        assert self._ctx is not None
        spec, now = t.spec, self._ctx.clock.time()
        while t.nulls and b.count < max_events:
            key, row, shadow = t.nulls.pop(0)
            why = nulls.reason(spec.entity, spec.key, key, spec.cursor)
            position = b.reject(spec.entity, key, row, shadow, why, now)
            memo = nulls.memo_key(self._scope, spec.entity, key)
            b.kv_put[(nulls.REJECT_NS, memo)] = True
            self._nulls.reported(memo, position)

    def _emit_deletes(self, t: _Table, b: BatchBuilder, max_events: int) -> None:
        assert self._ctx is not None
        now = self._ctx.clock.time()
        while t.deletes and b.count < max_events:
            key, before = t.deletes.pop()
            b.emit(t.spec.entity, key, DELETE, before=before, after=None, changed=None, committed_at=now)


def _seconds(high: Any, held_at: Any) -> float:
    """How far ``held_at`` is below ``high`` in seconds (0 for anything but two datetimes)."""
    if isinstance(high, dt.datetime) and isinstance(held_at, dt.datetime):
        try:
            return max(0.0, (high - held_at).total_seconds())
        except TypeError:
            return 0.0
    return 0.0
