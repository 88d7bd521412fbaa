"""Helpers for the SQL polling tests: a source table on each backend, and a driver that reads like the engine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sources.polling.config import SqlPollConfig
from tidesync.sources.polling.dialect import create_engine
from tidesync.sources.polling.source import SqlPollSource
from tidesync.state.store import StateChanges, StateStore

BASE = dt.datetime(2024, 3, 1, 12, 0, 0, tzinfo=dt.UTC)

DDL = {
    "postgresql": (
        "CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer, price numeric(10,2),"
        " is_deleted boolean NOT NULL DEFAULT false, deleted_at timestamptz, updated_at timestamptz NOT NULL)"
    ),
    "mysql": (
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), qty INT, price DECIMAL(10,2),"
        " is_deleted BOOLEAN NOT NULL DEFAULT 0, deleted_at DATETIME(6), updated_at DATETIME(6) NOT NULL,"
        " KEY items_cursor (updated_at, id))"
    ),
    "sqlite": (
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price TEXT,"
        " is_deleted INTEGER NOT NULL DEFAULT 0, deleted_at TEXT, updated_at TEXT NOT NULL)"
    ),
}


class SourceDb:
    """The source table ``items`` on one backend; timestamps given as seconds after BASE."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.engine = create_engine(dsn, pool_size=2)
        self.dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            conn.execute(sa.text(DDL[self.dialect]))
            if self.dialect == "postgresql" or self.dialect == "sqlite":
                conn.execute(sa.text("CREATE INDEX items_cursor ON items (updated_at, id)"))

    def close(self) -> None:
        self.engine.dispose()

    def ts(self, seconds: float) -> Any:
        moment = BASE + dt.timedelta(seconds=seconds)
        if self.dialect == "postgresql":
            return moment
        if self.dialect == "mysql":
            return moment.replace(tzinfo=None)
        return moment.replace(tzinfo=None).isoformat(" ", "microseconds")

    def insert(self, rows: Iterable[dict[str, Any]], conn: sa.Connection | None = None) -> None:
        params = [{"name": None, "qty": 0, "price": None, "is_deleted": False, "deleted_at": None, **r} for r in rows]
        for p in params:
            p["updated_at"] = self.ts(p["updated_at"])
            if p["deleted_at"] is not None:
                p["deleted_at"] = self.ts(p["deleted_at"])
        stmt = sa.text(
            "INSERT INTO items (id, name, qty, price, is_deleted, deleted_at, updated_at)"
            " VALUES (:id, :name, :qty, :price, :is_deleted, :deleted_at, :updated_at)"
        )
        if conn is not None:
            conn.execute(stmt, params)
            return
        with self.engine.begin() as c:
            c.execute(stmt, params)

    def update(self, ids: Sequence[int], at: float, **values: Any) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        params = {k: (self.ts(v) if k == "deleted_at" and v is not None else v) for k, v in values.items()}
        with self.engine.begin() as c:
            for i in ids:
                c.execute(
                    sa.text(f"UPDATE items SET {sets}, updated_at = :ts WHERE id = :id"),
                    {**params, "ts": self.ts(at), "id": i},
                )

    def delete(self, ids: Sequence[int]) -> None:
        with self.engine.begin() as c:
            c.execute(sa.text("DELETE FROM items WHERE id = :id"), [{"id": i} for i in ids])


def poll_config(dsn: str, **overrides: Any) -> SqlPollConfig:
    table = {"table": "items", "cursor": "updated_at", **overrides.pop("table", {})}
    raw = {
        "type": "sql_poll",
        "dsn": dsn,
        "tables": [table],
        "page_size": 100,
        "lookback": 60,
        "poll_interval": 3600,
        "key_scan": {"every": 3600, "chunk_size": 250},
        **overrides,
    }
    return SqlPollConfig.model_validate(raw)


class Driver:
    """Reads a SqlPollSource the way the engine does: checkpoint and shadow rows in one commit, then commit()."""

    def __init__(self, config: SqlPollConfig, store: StateStore, pipeline: str = "p") -> None:
        self.config = config
        self.store = store
        self.pipeline = pipeline
        self.source = SqlPollSource(config)

    async def open(self) -> None:
        after = await self.store.load_checkpoint(self.pipeline)
        await self.source.open(Context(pipeline=self.pipeline, name="source", state=self.store), after)

    async def poll(self, *, key_scan: bool = False, max_events: int = 100) -> list[ChangeEvent]:
        """One full pass over every table (and a key scan if asked); the events it produced."""
        self.source.request_poll(key_scan=key_scan)
        events: list[ChangeEvent] = []
        first = True
        while first or not self.source.idle:
            first = False
            batch = await self.source.read(max_events, 0.0)
            events.extend(batch.events)
            if batch.position is not None:
                state = batch.state or StateChanges()
                state.checkpoint = batch.position
                await self.store.commit(self.pipeline, state)
                await self.source.commit(batch.position)
        return events

    async def close(self) -> None:
        await self.source.close()
