"""From polled rows and shadow rows to change events (pure; no I/O).

The shadow of a record is the row as last emitted. A polled row becomes:

- nothing, when it equals its shadow (a look-back re-read, or a row touched
  without a change);
- ``insert`` when the key has no shadow;
- ``update`` with ``changed`` = the fields that differ from the shadow
  (``before`` is the shadow, ``after`` the whole polled row);
- ``delete`` when its soft-delete column says deleted and it has a shadow
  (a soft-deleted row without a shadow was never emitted: nothing to do).
  The shadow is removed, so an undelete later is an insert again.

A key that a key scan no longer finds in the table, but that has a shadow,
becomes a ``delete`` too.

Until the state store commits a batch, its shadow rows live in
:class:`PendingShadows`, which the next poll consults first: a look-back
re-read that overtakes its own checkpoint does not emit the change twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tidesync.event import DELETE, INSERT, UPDATE, Batch, ChangeEvent, Key, Position, Row, diff_fields
from tidesync.sources.polling.config import SoftDelete
from tidesync.sources.polling.dialect import TableMeta
from tidesync.state.store import ShadowRow, StateChanges

GONE: Any = None  # a pending shadow that was deleted


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One polled table, resolved against the database."""

    entity: str
    meta: TableMeta
    cursor: str
    key: tuple[str, ...]
    soft_delete: SoftDelete | None
    lookback: float

    def key_of(self, row: Row) -> Key:
        return tuple(row[k] for k in self.key)

    def is_deleted(self, row: Row) -> bool:
        sd = self.soft_delete
        if sd is None:
            return False
        value = row.get(sd.column)
        return value is not None if sd.value is None else bool(value == sd.value)


def change_for(spec: TableSpec, row: Row, shadow: Row | None) -> tuple[str, tuple[str, ...] | None] | None:
    """``(op, changed)`` for a polled row against its shadow, or None when there is nothing to emit."""
    if spec.is_deleted(row):
        return (DELETE, None) if shadow is not None else None
    if shadow is None:
        return INSERT, None
    changed = diff_fields(shadow, row)
    return (UPDATE, changed) if changed else None


class PendingShadows:
    """Shadow rows handed out in batches that are not committed yet, by (entity, key)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, Key], tuple[Row | None, Position]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, entity: str, key: Key) -> tuple[bool, Row | None]:
        """``(known, row)``: known is False when the state store has the latest word on this key."""
        hit = self._rows.get((entity, key))
        if hit is None:
            return False, None
        return True, hit[0]

    def put(self, entity: str, key: Key, row: Row | None, position: Position) -> None:
        self._rows[(entity, key)] = (row, position)

    def release(self, position: Position) -> None:
        """The state store now holds everything up to ``position``."""
        prefix = tuple(position[:2])
        done = [k for k, (_, pos) in self._rows.items() if pos <= prefix]
        for k in done:
            del self._rows[k]

    def forget_after(self, position: Position | None) -> None:
        """Drop the rows of batches after ``position`` (all, for None): the source reopens there and reads them again.

        Kept, they would hide those changes from the re-read (a row equal to its pending shadow is not
        emitted), though the state store never got them.
        """
        prefix = tuple(position[:2]) if position and len(position) >= 2 else None
        gone = [k for k, (_, pos) in self._rows.items() if prefix is None or pos > prefix]
        for k in gone:
            del self._rows[k]

    def keys(self, entity: str) -> tuple[set[Key], set[Key]]:
        """Pending (present, deleted) keys of an entity."""
        present: set[Key] = set()
        gone: set[Key] = set()
        for (e, key), (row, _) in self._rows.items():
            if e == entity:
                (gone if row is None else present).add(key)
        return present, gone


@dataclass
class BatchBuilder:
    """Collects one batch: events with fresh positions, and the shadow changes to commit with it."""

    scope: str
    epoch: int
    seq: int
    pending: PendingShadows
    events: list[ChangeEvent] = field(default_factory=list)
    rejected: list[tuple[ChangeEvent, str]] = field(default_factory=list)  # (placeholder, reason): dead letters
    kv_put: dict[tuple[str, str], Any] = field(default_factory=dict)  # committed with the batch (memos)
    kv_delete: list[tuple[str, str]] = field(default_factory=list)
    _shadow: dict[tuple[str, Key], ShadowRow | None] = field(default_factory=dict)

    def _next(self) -> Position:
        self.seq += 1
        return (self.epoch, self.seq)

    @property
    def count(self) -> int:
        """Events and rejected records so far: what a read's ``max_events`` bounds."""
        return len(self.events) + len(self.rejected)

    def reject(self, entity: str, key: Key, row: Row, shadow: Row | None, reason: str, committed_at: float) -> Position:
        """Report a row that cannot become an event, in its place in the stream; its position."""
        position = self._next()
        op = UPDATE if shadow is not None else INSERT
        placeholder = ChangeEvent(entity, key, op, shadow, row, None, position, committed_at)
        self.rejected.append((placeholder, reason))
        return position

    def emit(
        self,
        entity: str,
        key: Key,
        op: str,
        *,
        before: Row | None,
        after: Row | None,
        changed: tuple[str, ...] | None,
        committed_at: float,
    ) -> ChangeEvent:
        position = self._next()
        event = ChangeEvent(entity, key, op, before, after, changed, position, committed_at)
        self.events.append(event)
        shadow = None if op == DELETE else ShadowRow(self.scope, entity, key, after or {}, position, committed_at)
        self._shadow[(entity, key)] = shadow
        self.pending.put(entity, key, after if op != DELETE else GONE, position)
        return event

    def build(
        self, marks: tuple[Any, ...], previous: tuple[Any, ...], read_at: float, *, end: int | None = None
    ) -> Batch[StateChanges]:
        """The batch; its position carries ``marks``. No position when no event was read and the marks
        are still the ``previous`` ones.

        ``end``: this batch reaches a batch run's end, the position ``(epoch, end)`` the source named
        (see :mod:`.end`): its position jumps to ``(epoch, end, marks)``, whatever was read.
        """
        if end is not None:
            self.seq = max(self.seq, end)
        elif not self.events and not self.rejected and not self.kv_delete and marks == previous:
            return Batch([], None, read_at)
        elif not self.events and not self.rejected:
            self._next()  # a checkpoint of its own: positions never repeat
        puts = [s for s in self._shadow.values() if s is not None]
        deletes = [(self.scope, e, k) for (e, k), s in self._shadow.items() if s is None]
        state = None
        if puts or deletes or self.kv_put or self.kv_delete:
            state = StateChanges(shadow_put=puts, shadow_delete=deletes, kv_put=self.kv_put, kv_delete=self.kv_delete)
        return Batch(self.events, (self.epoch, self.seq, marks), read_at, state=state, rejected=self.rejected)


def shadow_rows(rows: Iterable[ShadowRow]) -> dict[Key, Row]:
    return {s.key: s.row for s in rows}
