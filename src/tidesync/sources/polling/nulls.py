"""Rows whose cursor column is NULL: reported once, never silently skipped (pure, plus state-store reads).

A pass reads rows in ``(cursor, key)`` order from a mark; a NULL cursor has
no place in that order, so such a row is never read (:func:`.query.page`).
Instead, each pass starts by listing the keys of the table's NULL-cursor rows
(a key-only query, :func:`.query.null_keys`) and reports each one not reported
yet as a rejected record (``batch.rejected``: the engine dead-letters it with
the reason) and in one WARNING log line per pass.

"Reported yet" is a memo in the state store (kv namespace :data:`REJECT_NS`,
key ``<scope>:<entity>:<key as JSON>``), written with the batch that reports
the row and deleted with a later batch once the row is no longer NULL (its
cursor was set, or it was deleted): a row is reported once while it stays
NULL, and again if it becomes NULL again later. Until its batch is
committed, a memo entry lives in memory with that batch's position, and a
reopen at an earlier position forgets it (the row is reported again, as the
shadows of uncommitted batches are read again, see :mod:`.tracker`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import sqlalchemy as sa

from tidesync.event import Key, Position, Row
from tidesync.sources.polling import query
from tidesync.sources.polling.tracker import TableSpec
from tidesync.state.store import StateStore

REJECT_NS = "sql_poll_null_cursor"


def memo_key(scope: str, entity: str, key: Key) -> str:
    return f"{scope}:{entity}:{json.dumps(list(key), default=str)}"


def reason(entity: str, key_columns: tuple[str, ...], key: Key, cursor: str) -> str:
    """``orders row (id=7): cursor column updated_at is NULL; it is never read by polling``."""
    where = ", ".join(f"{c}={v}" for c, v in zip(key_columns, key, strict=True))
    return f"{entity} row ({where}): cursor column {cursor} is NULL; it is never read by polling"


class NullMemo:
    """Memo keys of the NULL-cursor rows reported, each with the position of its (uncommitted) batch or None."""

    def __init__(self) -> None:
        self._reported: dict[str, Position | None] = {}

    async def load(self, state: StateStore, scope: str, after: Position | None) -> None:
        """At open: the committed memo, plus the entries of batches at or before ``after`` not committed yet."""
        prefix = tuple(after[:2]) if after and len(after) >= 2 else None
        kept = {
            k: p for k, p in self._reported.items() if p is not None and prefix is not None and tuple(p[:2]) <= prefix
        }
        stored = await state.kv_scan(REJECT_NS, f"{scope}:")
        self._reported = {k: None for k in stored}
        self._reported.update(kept)

    def commit(self, position: Position) -> None:
        """The state store holds everything up to ``position``."""
        prefix = tuple(position[:2])
        for k, p in self._reported.items():
            if p is not None and tuple(p[:2]) <= prefix:
                self._reported[k] = None

    def new(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self._reported]

    def reported(self, key: str, position: Position) -> None:
        self._reported[key] = position

    def cleared(self, prefix: str, still_null: set[str]) -> list[str]:
        """Memo keys under ``prefix`` whose row is no longer NULL: forgotten here, to delete from the store."""
        gone = [k for k in self._reported if k.startswith(prefix) and k not in still_null]
        for k in gone:
            del self._reported[k]
        return gone


def read_null_keys(engine: sa.Engine, spec: TableSpec, page_size: int) -> list[Key]:
    """Every key of ``spec``'s table whose cursor is NULL, in key order (blocking: run it in the executor)."""
    table = spec.meta.table()
    out: list[Key] = []
    after: Key | None = None
    while True:
        with engine.connect() as conn:
            got = [tuple(r) for r in conn.execute(query.null_keys(table, spec.cursor, spec.key, after, page_size))]
        out.extend(got)
        if len(got) < page_size:
            return out
        after = got[-1]


def read_rows(engine: sa.Engine, spec: TableSpec, keys: list[Key], chunk: int = 500) -> list[Row]:
    """The rows of ``keys`` still there, whole (blocking)."""
    table = spec.meta.table()
    cols = [table.c[k] for k in spec.key]
    out: list[Row] = []
    with engine.connect() as conn:
        for i in range(0, len(keys), chunk):
            q = sa.select(table).where(query.key_in(cols, keys[i : i + chunk])).order_by(*cols)
            out.extend(dict(r) for r in conn.execute(q).mappings())
    return out
