"""Connectors under the conformance suite: how to make each one and how to see its effects.

A source harness makes changes upstream and builds a source over them; a sink
harness builds a sink over a fresh destination holding the table ``items``
(``id`` integer primary key, ``name`` text, ``qty`` integer) and reads it back.
Adding a connector to the suite means adding a harness here and its name to
SOURCES or SINKS.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

from tidesync.protocols import Sink, Source
from tidesync.sources.sqlite import SqliteSource, SqliteSourceConfig
from tidesync.testing import MemorySink

Rows = dict[tuple[Any, ...], dict[str, Any]]


class SourceHarness(Protocol):
    entity: str

    def make_source(self) -> Source: ...

    def insert(self, ids: range) -> None: ...

    def update(self, ids: range, qty: int) -> None: ...

    def delete(self, ids: range) -> None: ...

    def cleanup(self) -> None: ...


class SinkHarness(Protocol):
    entity: str

    def make_sink(self) -> Sink: ...

    def rows(self) -> Rows: ...

    def set_column(self, key: int, column: str, value: Any) -> None:
        """An edit made directly in the destination, behind tidesync's back."""

    def cleanup(self) -> None: ...


class SqliteSourceHarness:
    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "conformance-source.db"
        with sqlite3.connect(self.path) as conn:
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")

    def make_source(self) -> Source:
        return SqliteSource(SqliteSourceConfig(path=str(self.path), tables=["items"], snapshot="never", poll_interval_ms=2))

    def _exec(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.executemany(sql, rows)

    def insert(self, ids: range) -> None:
        self._exec("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 0) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._exec("UPDATE items SET qty = ? WHERE id = ?", [(qty, i) for i in ids])

    def delete(self, ids: range) -> None:
        self._exec("DELETE FROM items WHERE id = ?", [(i,) for i in ids])

    def cleanup(self) -> None:
        pass


class MemorySinkHarness:
    """The reference implementation every sink must agree with."""

    entity = "items"

    def __init__(self, tmp: Path) -> None:
        self.sink = MemorySink()

    def make_sink(self) -> Sink:
        return self.sink

    def rows(self) -> Rows:
        return {k: dict(v) for k, v in self.sink.tables.get("items", {}).items()}

    def set_column(self, key: int, column: str, value: Any) -> None:
        self.sink.tables["items"][(key,)][column] = value

    def cleanup(self) -> None:
        pass


SOURCES: dict[str, type] = {"sqlite": SqliteSourceHarness}
SINKS: dict[str, type] = {"memory": MemorySinkHarness}
