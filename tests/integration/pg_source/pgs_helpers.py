"""Helpers for the Postgres source tests: SQL in one call, and a harness that drives the source like the engine."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tidesync.event import Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.schema import SchemaRegistry
from tidesync.sources.postgres import PostgresSource, PostgresSourceConfig
from tidesync.state.store import StateStore


def sql(dsn: str, *statements: str, params: Any = None) -> list[Any]:
    """Run statements in one autocommit session; return the rows of the last one that has any."""
    rows: list[Any] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            cur = conn.execute(s, params)
            if cur.description is not None:
                rows = cur.fetchall()
    return rows


@dataclass
class Harness:
    """Drives a PostgresSource like the engine: read batches, commit their positions."""

    dsn: str
    state: StateStore
    work_dir: Path
    pipeline: str = field(default_factory=lambda: f"p{uuid.uuid4().hex[:10]}")  # slot names are cluster-wide
    schemas: SchemaRegistry = field(default_factory=SchemaRegistry)
    source: PostgresSource | None = None
    checkpoint: Position | None = None
    batches: list[Batch] = field(default_factory=list)

    def config(self, tables: list[str], **options: Any) -> PostgresSourceConfig:
        options.setdefault("work_dir", str(self.work_dir))
        options.setdefault("progress", False)
        options.setdefault("heartbeat_interval", 0)
        return PostgresSourceConfig(dsn=self.dsn, tables=tables, **options)

    async def open(self, tables: list[str], after: Position | None = None, **options: Any) -> PostgresSource:
        src = PostgresSource(self.config(tables, **options))
        ctx = Context(pipeline=self.pipeline, name="source", state=self.state, schemas=self.schemas)
        await src.open(ctx, after if after is not None else self.checkpoint)
        self.source = src
        return src

    @property
    def slot(self) -> str:
        return f"tidesync_{self.pipeline}"

    @property
    def kv_key(self) -> str:
        return f"{self.pipeline}/source"

    async def close(self) -> None:
        if self.source is not None:
            await self.source.close()
            self.source = None

    async def read_until(
        self,
        predicate: Callable[[list[ChangeEvent]], bool],
        *,
        timeout: float = 30.0,
        max_events: int = 1000,
        commit: bool = True,
    ) -> list[ChangeEvent]:
        """Read (and commit, like the engine) until ``predicate(all events so far)`` holds."""
        assert self.source is not None
        events: list[ChangeEvent] = []
        deadline = time.monotonic() + timeout
        while not predicate(events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s with {len(events)} events: {events[-5:]}")
            batch = await self.source.read(max_events, 0.2)
            self.batches.append(batch)
            events.extend(batch.events)
            if batch.position is not None and commit:
                await self.source.commit(batch.position)
                self.checkpoint = batch.position
        return events

    async def read_n(self, n: int, **kw: Any) -> list[ChangeEvent]:
        return await self.read_until(lambda ev: len(ev) >= n, **kw)

    async def settle(self, seconds: float = 0.5) -> list[ChangeEvent]:
        """Everything that arrives within ``seconds`` (to prove nothing more comes)."""
        assert self.source is not None
        events: list[ChangeEvent] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = await self.source.read(1000, 0.1)
            events.extend(batch.events)
            if batch.position is not None:
                await self.source.commit(batch.position)
                self.checkpoint = batch.position
        return events


def slot_row(dsn: str, slot: str) -> tuple[Any, ...] | None:
    rows = sql(
        dsn,
        "SELECT active_pid, confirmed_flush_lsn::text, restart_lsn::text, wal_status "
        "FROM pg_replication_slots WHERE slot_name = %s",
        params=(slot,),
    )
    return tuple(rows[0]) if rows else None


async def wait_slot_inactive(dsn: str, slot: str, timeout: float = 15.0) -> None:
    """A closed replication connection's server process exits a moment later."""
    from tidesync.testing import eventually

    await eventually(lambda: (slot_row(dsn, slot) or (None,))[0] is None, timeout=timeout, message=f"slot {slot} idle")


def apply(model: dict[tuple[str, Any], dict[str, Any]], events: list[ChangeEvent]) -> None:
    """A field-level destination: what a sink holds after applying ``events`` in order."""
    for e in events:
        ident = (e.entity, e.key)
        if e.op in ("insert", "snapshot"):
            model[ident] = dict(e.after or {})
        elif e.op == "update":
            row = model.setdefault(ident, {})
            fields = e.changed if e.changed is not None else tuple(e.after or {})
            for f in fields:
                row[f] = (e.after or {})[f]
            for f, v in (e.after or {}).items():
                row.setdefault(f, v)
        elif e.op == "delete":
            model.pop(ident, None)
        elif e.op == "truncate":
            for k in [k for k in model if k[0] == e.entity]:
                del model[k]


def table_state(dsn: str, keys: dict[str, tuple[str, ...]]) -> dict[tuple[str, Any], dict[str, Any]]:
    """The tables' current rows, keyed like ``apply``'s model (values through psycopg 3)."""
    from tidesync.sources.postgres.catalog import session_dsn

    out: dict[tuple[str, Any], dict[str, Any]] = {}
    with psycopg.connect(session_dsn(dsn)) as conn:
        for entity, key in keys.items():
            cur = conn.execute(f"SELECT * FROM {entity}")
            names = [d.name for d in cur.description or []]
            for r in cur.fetchall():
                row = dict(zip(names, r, strict=True))
                out[(entity, tuple(row[k] for k in key))] = row
    return out


class Writer(threading.Thread):
    """Inserts rows ``start..start+count-1`` in transactions of ``per_tx``, retrying through outages."""

    def __init__(self, dsn: str, start: int, count: int, per_tx: int = 5) -> None:
        super().__init__(daemon=True)
        self.dsn, self.start_key, self.count, self.per_tx = dsn, start, count, per_tx
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        self._write(None)

    def _write(self, conn: psycopg.Connection | None) -> None:  # type: ignore[type-arg]
        i = self.start_key
        end = self.start_key + self.count
        while i < end:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                n = min(self.per_tx, end - i)
                with conn.transaction():
                    conn.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(%s::int, %s::int) g", (i, i + n - 1))
                i += n
                self.done = i - self.start_key
            except psycopg.OperationalError:
                if conn is not None:
                    conn.close()
                conn = None  # the server is restarting: try again (the insert either committed or not)
                committed = self._committed_up_to(i)
                if committed is not None:
                    i = committed
            except BaseException as exc:
                self.error = exc
                break
        if conn is not None:
            conn.close()

    def _committed_up_to(self, i: int) -> int | None:
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as c:
                row = c.execute("SELECT coalesce(max(id), %s - 1) + 1 FROM t", (i,)).fetchone()
                return int(row[0]) if row else None
        except psycopg.OperationalError:
            return None
