"""The ``sql_poll`` and ``hybrid`` sources under the conformance suite, over a SQLite table.

``sql_poll`` polls it by an integer cursor; ``hybrid`` merges trigger capture of
it (primary) with that poller (fallback).

A polling source keeps shadow rows that the engine commits with each batch's
checkpoint (``batch.state``); :class:`EngineCommits` does that part of
the engine's job, so ``commit(position)`` here means what it means in a
pipeline: the checkpoint and the shadows of every batch up to it are durable.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tidesync.event import Batch, Position
from tidesync.protocols import Context
from tidesync.sources.hybrid import HybridConfig, HybridSource
from tidesync.sources.polling.config import SqlPollConfig
from tidesync.sources.polling.source import SqlPollSource
from tidesync.state.store import StateChanges


class EngineCommits:
    """A source wrapper that commits each batch's state changes with its checkpoint, as the engine does."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self._ctx: Context | None = None
        self._uncommitted: list[tuple[Position, StateChanges]] = []

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        self._uncommitted = []
        await self.source.open(ctx, after)

    async def read(self, max_events: int, max_wait: float) -> Batch:
        batch = await self.source.read(max_events, max_wait)
        if batch.position is not None:
            self._uncommitted.append((batch.position, batch.state or StateChanges()))
        return batch

    async def commit(self, position: Position) -> None:
        assert self._ctx is not None
        while self._uncommitted and self._uncommitted[0][0] <= position:
            at, changes = self._uncommitted.pop(0)
            changes.checkpoint = at
            await self._ctx.state.commit(self._ctx.pipeline, changes)
        await self.source.commit(position)

    async def close(self) -> None:
        await self.source.close()


class _ItemsTable:
    """A SQLite ``items`` table whose ``version`` (an integer the harness bumps on every write) is the cursor."""

    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "conformance-poll.db"
        self.version = 0
        with sqlite3.connect(self.path) as conn:
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, version INTEGER)")
            conn.execute("CREATE INDEX items_cursor ON items (version, id)")
        conn.close()

    def make_source(self) -> Any:
        config = SqlPollConfig.model_validate(
            {
                "type": "sql_poll",
                "dsn": f"sqlite:///{self.path}",
                "tables": [{"table": "items", "cursor": "version"}],
                "poll_interval": 0.005,
                "page_size": 100,
                "lookback": 0,
                "key_scan": None,
            }
        )
        return EngineCommits(SqlPollSource(config))

    def _exec(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                conn.executemany(sql, rows)
        finally:
            conn.close()

    def _next(self) -> int:
        self.version += 1
        return self.version

    def insert(self, ids: range) -> None:
        self._exec("INSERT INTO items VALUES (?, ?, ?, ?)", [(i, f"item {i}", 0, self._next()) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._exec("UPDATE items SET qty = ?, version = ? WHERE id = ?", [(qty, self._next(), i) for i in ids])

    def delete(self, ids: range) -> None:
        self._exec("DELETE FROM items WHERE id = ?", [(i,) for i in ids])

    def cleanup(self) -> None:
        pass


class SqlPollSourceHarness(_ItemsTable):
    """``sql_poll`` over SQLite: ``version`` is the cursor.

    Capabilities: it sees each row as it is when a pass reads it, so changes
    made between two passes coalesce (``every_change = False``), and with the
    key scan off a hard delete is not seen at all. Bad input: a row whose
    cursor is NULL (no pass can place it); the source reports it in
    ``batch.rejected`` at the start of the next pass and goes on.
    """

    every_change = False
    exclusions: dict[str, str] = {}

    def feed_bad_input(self, key: int) -> None:
        self._exec("INSERT INTO items VALUES (?, ?, ?, NULL)", [(key, f"item {key} without a version", 0)])


class HybridSourceHarness(_ItemsTable):
    """``hybrid``: SQLite trigger capture as the primary, ``sql_poll`` of the same table as the fallback.

    They meet on the row version (``match: version``, the poller's cursor
    ``version``). The primary delivers every change, so the merged stream
    has every change once (``every_change = True``); the poller's copies
    are held for ``grace`` and dropped as the primary saw them. Bad input:
    neither part can receive a malformed row (see the two sources' harnesses).
    """

    every_change = True
    exclusions = {
        "bad_input": "both parts read a typed SQLite table: the trigger capture delivers every row the database "
        "took, a NULL-cursor row too (only the poller rejects that one), so the merged stream has no bad row",
    }

    def make_source(self) -> Any:
        config = {
            "type": "hybrid",
            "primary": {"type": "sqlite", "path": str(self.path), "tables": ["items"], "snapshot": "never",
                        "poll_interval_ms": 2},
            "fallback": {"type": "sql_poll", "dsn": f"sqlite:///{self.path}",
                         "tables": [{"table": "items", "cursor": "version"}], "poll_interval": 0.005,
                         "lookback": 0, "key_scan": None},
            "match": "version",
            "grace": 2.0,
        }  # fmt: skip
        return EngineCommits(HybridSource(HybridConfig.model_validate(config)))
