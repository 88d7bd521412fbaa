"""The ID map: which HubSpot record each source record became, kept in the state store.

An entry per source record, in the kv namespace ``hubspot_ids:<pipeline>:<sink>``
under ``<entity>/<key as JSON>``: ``{"id": "<HubSpot record id>", "links":
{column: "<associated record id>"}}``. ``links`` remembers the association
each foreign-key column made, so a changed or cleared column removes the old
association.

A record archived by a delete leaves a tombstone, ``{"gone": <position of
the delete>}``: after a crash the events of that key before the delete are
read again, and without it they would upsert the record anew (a second
contact, archived again by the replayed delete). They are skipped instead.
An insert after the delete replaces the tombstone.

Before a delete's archive request is sent, its entry is marked ``archiving``
at the delete's position and stored: a crash after HubSpot archived the
record but before the tombstone was stored would otherwise read the key's
earlier events again with the old entry, find the record gone (an update's
``OBJECT_NOT_FOUND``) and create it anew. With the mark, those earlier
events are skipped and the delete itself is sent again (archiving an
archived record is a no-op), which leaves the tombstone.

The same namespace holds, under ``~applied``, the position of the newest
event written with every event before it written or dead-lettered: a
re-delivered event at or before it is skipped (not for dead-letter replays),
so a batch delivered twice does not overwrite an edit made in HubSpot since.

The whole namespace is read at ``open`` (one scan) and held in memory; changes
are staged and committed by :meth:`IdMap.flush` in one state-store
transaction. The sink flushes after every wave of requests that learned or
dropped ids, before the next wave, and always before ``write`` returns, so the
engine's checkpoint never passes an event whose record id is not stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tidesync.event import Key, Position
from tidesync.state.store import KeyValues, StateChanges

NAMESPACE = "hubspot_ids"
APPLIED = "~applied"


def entry_key(entity: str, key: Key) -> str:
    return f"{entity}/{json.dumps(list(key), default=str, separators=(',', ':'))}"


@dataclass(slots=True)
class Entry:
    id: str
    links: dict[str, str] = field(default_factory=dict)
    archiving: Position | None = None  # the delete whose archive request may have been sent

    def value(self) -> dict[str, Any]:
        value: dict[str, Any] = {"id": self.id, "links": dict(self.links)}
        if self.archiving is not None:
            value["archiving"] = list(self.archiving)
        return value


class IdMap:
    def __init__(self, store: KeyValues, pipeline: str, sink: str) -> None:
        self.store = store
        self.pipeline = pipeline
        self.namespace = f"{NAMESPACE}:{pipeline}:{sink}"
        self._entries: dict[str, Entry] = {}
        self._gone: dict[str, Position] = {}  # tombstones: key -> position of the delete that archived it
        self._dirty: set[str] = set()
        self.applied: Position | None = None
        self._applied_dirty = False

    async def load(self) -> None:
        self._entries = {}
        self._gone = {}
        self.applied = None
        for k, v in (await self.store.kv_scan(self.namespace)).items():
            if k == APPLIED and isinstance(v, list):
                self.applied = tuple(v)
            elif isinstance(v, dict) and isinstance(v.get("gone"), list):
                self._gone[k] = tuple(v["gone"])
            elif isinstance(v, dict) and v.get("id") is not None:
                links = {str(c): str(t) for c, t in (v.get("links") or {}).items()}
                archiving = tuple(v["archiving"]) if isinstance(v.get("archiving"), list) else None
                self._entries[k] = Entry(str(v["id"]), links, archiving)
        self._dirty.clear()

    def get(self, entity: str, key: Key) -> Entry | None:
        return self._entries.get(entry_key(entity, key))

    def put(self, entity: str, key: Key, entry: Entry) -> None:
        k = entry_key(entity, key)
        self._entries[k] = entry
        self._gone.pop(k, None)
        self._dirty.add(k)

    def touch(self, entity: str, key: Key) -> None:
        """The entry's links changed in place: store it at the next flush."""
        self._dirty.add(entry_key(entity, key))

    def drop(self, entity: str, key: Key, gone_at: Position | None = None) -> None:
        """Forget the record's id; ``gone_at``: it was archived by the delete at that position (a tombstone)."""
        k = entry_key(entity, key)
        self._entries.pop(k, None)
        if gone_at:
            self._gone[k] = gone_at
        self._dirty.add(k)

    def archiving(self, entity: str, key: Key, record_id: str, position: Position) -> None:
        """The delete at ``position`` is about to archive ``record_id``: mark the entry (flush before sending)."""
        k = entry_key(entity, key)
        entry = self._entries.get(k)
        self._entries[k] = Entry(record_id, dict(entry.links) if entry else {}, position)
        self._gone.pop(k, None)
        self._dirty.add(k)

    def archived(self, entity: str, key: Key, position: Position) -> bool:
        """The event at ``position`` is older than the delete that archived (or may have archived) its record:
        a re-delivery, skipped. The delete of an ``archiving`` mark is not: it is sent again."""
        if not position:
            return False
        k = entry_key(entity, key)
        gone = self._gone.get(k)
        if gone is not None:
            return position <= gone
        entry = self._entries.get(k)
        return entry is not None and entry.archiving is not None and position < entry.archiving

    def advance(self, position: Position) -> None:
        """Every event up to ``position`` is written or dead-lettered: store it at the next flush."""
        if position and (self.applied is None or position > self.applied):
            self.applied = position
            self._applied_dirty = True

    def done(self, position: Position) -> bool:
        """Was the event at ``position`` written already (a re-delivery)?"""
        return bool(position) and self.applied is not None and position <= self.applied

    async def flush(self) -> None:
        """Commit the staged changes in one transaction; on failure they stay staged (StateStoreError)."""
        if not self._dirty and not self._applied_dirty:
            return
        changes = StateChanges()
        if self._applied_dirty and self.applied is not None:
            changes.kv_put[(self.namespace, APPLIED)] = list(self.applied)
        for k in self._dirty:
            entry = self._entries.get(k)
            if entry is not None:
                changes.kv_put[(self.namespace, k)] = entry.value()
            elif k in self._gone:
                changes.kv_put[(self.namespace, k)] = {"gone": list(self._gone[k])}
            else:
                changes.kv_delete.append((self.namespace, k))
        await self.store.commit(self.pipeline, changes)
        self._dirty.clear()
        self._applied_dirty = False

    def __len__(self) -> int:
        return len(self._entries)
