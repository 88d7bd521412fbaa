"""In-memory endpoints and change feeds: two-way sync without servers (tests, examples).

A :class:`MemoryTable` holds rows by key and appends every change, whoever
made it, to its :class:`ChangeFeed`, like a database's change log:

- ``table.insert/update/delete`` are a person's edits (origin None);
- a :class:`MemoryEndpoint` writes on the sync's behalf; its feed entries carry
  the endpoint's ``origin`` when one is given (like a Postgres replication
  origin), else None (then only the echo ledger recognises the echo);
- a :class:`FeedSource` reads the feed through the ordinary Source contract,
  with positions ``(seq,)``.

``clock`` gives each change its commit time; tests pass a function that moves
as they like (ties and clock skew included). With ``generate_keys`` the table
makes keys itself on insert (``(n,)``), so the ID map is exercised.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidesync.event import DELETE, INSERT, UPDATE, Batch, ChangeEvent, Key, Position, Row
from tidesync.protocols import Context
from tidesync.state.store import StateChanges
from tidesync.sync.endpoint import InsertOp, Op, OpResult, UpdateOp
from tidesync.sync.record import same


@dataclass
class ChangeFeed:
    events: list[ChangeEvent] = field(default_factory=list)

    def append(self, ev: ChangeEvent) -> None:
        self.events.append(ev.replace(position=(len(self.events) + 1,)))


class MemoryTable:
    def __init__(
        self,
        entity: str,
        key: Sequence[str],
        *,
        clock: Callable[[], float],
        generate_keys: bool = False,
    ) -> None:
        self.entity = entity
        self.key = tuple(key)
        self.rows: dict[Key, Row] = {}
        self.feed = ChangeFeed()
        self.clock = clock
        self.generate_keys = generate_keys
        self._ids = itertools.count(1)

    def key_of(self, row: Row) -> Key:
        return tuple(row[c] for c in self.key)

    # --- edits (a person's, unless origin is given) ---------------------------------------

    def insert(self, row: Row, origin: str | None = None) -> Key:
        row = dict(row)
        if self.generate_keys:
            for c in self.key:
                row[c] = next(self._ids)
        key = self.key_of(row)
        if key in self.rows:
            raise KeyError(f"duplicate key {key}")
        self.rows[key] = row
        self.feed.append(ChangeEvent(self.entity, key, INSERT, None, dict(row), None, (), self.clock(), origin))
        return key

    def update(self, key: Key, changes: Row, origin: str | None = None) -> bool:
        row = self.rows.get(key)
        if row is None:
            return False
        changed = tuple(c for c, v in changes.items() if not (type(row.get(c)) is type(v) and row.get(c) == v))
        if not changed:
            return True
        before = dict(row)
        row.update({c: changes[c] for c in changed})
        self.feed.append(ChangeEvent(self.entity, key, UPDATE, before, dict(row), changed, (), self.clock(), origin))
        return True

    def delete(self, key: Key, origin: str | None = None) -> bool:
        row = self.rows.pop(key, None)
        if row is None:
            return False
        self.feed.append(ChangeEvent(self.entity, key, DELETE, row, None, None, (), self.clock(), origin))
        return True


class MemoryEndpoint:
    """Writes to a MemoryTable on the sync's behalf. ``fail`` (a callable) may raise to simulate faults."""

    def __init__(self, table: MemoryTable, *, origin: str | None = None, fail: Callable[[], None] | None = None):
        self.table = table
        self.key = table.key
        self.origin = origin
        self.fail = fail
        self.writes = 0  # row writes made (for the "no ping-pong" checks)

    async def open(self, *, writes: bool = True) -> None:
        return None

    async def close(self) -> None:
        return None

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        if self.fail is not None:
            self.fail()
        return [self._one(op) for op in ops]

    def _one(self, op: Op) -> OpResult:
        t = self.table
        if isinstance(op, UpdateOp):
            row = t.rows.get(op.key)
            if row is None:
                return OpResult("missing", {f.column: "missing" for f in op.fields})
            status: dict[str, str] = {}
            changes: Row = {}
            for f in op.fields:
                current = row.get(f.column)
                if not f.conditional or same(current, f.expected):
                    status[f.column] = "ok"
                    changes[f.column] = f.value
                else:
                    status[f.column] = "already" if same(current, f.value) else "conflict"
            if changes:
                self.writes += 1
                t.update(op.key, changes, self.origin)
            return OpResult("ok", status)
        if isinstance(op, InsertOp):
            if op.key is not None and op.key in t.rows:
                return OpResult("exists", key=op.key, row=dict(t.rows[op.key]))
            self.writes += 1
            key = t.insert(dict(op.row), self.origin)
            return OpResult("ok", key=key)
        row = t.rows.get(op.key)
        if row is None:
            return OpResult("missing")
        if op.expected is not None and not all(same(row.get(c), v) for c, v in op.expected.items()):
            return OpResult("conflict")
        self.writes += 1
        t.delete(op.key, self.origin)
        return OpResult("ok")

    async def fetch(self, keys: Sequence[Key]) -> dict[Key, Row]:
        return {k: dict(self.table.rows[k]) for k in keys if k in self.table.rows}

    async def find(self, values: Mapping[str, Any], limit: int = 20) -> list[tuple[Key, Row]]:
        hits = [(k, dict(r)) for k, r in self.table.rows.items() if all(same(r.get(c), v) for c, v in values.items())]
        return sorted(hits, key=lambda h: repr(h[0]), reverse=True)[:limit]

    async def scan(self, page_size: int = 5000) -> list[Row]:
        return [dict(self.table.rows[k]) for k in sorted(self.table.rows, key=repr)]


class FeedSource:
    """A Source over a ChangeFeed: positions ``(seq,)``; ``commit`` records what was committed."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed
        self._next = 0
        self.committed: Position | None = None

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._next = int(after[0]) if after else 0

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        events = self.feed.events[self._next : self._next + max_events]
        if not events:
            if max_wait > 0:
                await asyncio.sleep(min(max_wait, 0.01))
            return Batch[StateChanges]([], None)
        self._next += len(events)
        return Batch[StateChanges](list(events), events[-1].position)

    @property
    def pending(self) -> int:
        return len(self.feed.events) - self._next

    async def commit(self, position: Position) -> None:
        self.committed = position

    async def close(self) -> None:
        return None
