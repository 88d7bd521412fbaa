"""The ID map: source key -> Stripe id, the position last applied to it, and a create in flight.

Namespace ``stripe_ids``, key ``<pipeline>:<sink>:<entity>:<key as JSON>``
(so ``tidesync drop`` of the pipeline removes it), value
``{"id": "cus_...", "at": [position], "fixed": "<fingerprint>", "pending": {...}}``;
``id`` is None for a deleted record (a tombstone, so a replayed event older
than the delete is recognised as applied). ``fixed`` is a price's fingerprint
of its immutable parameters (:mod:`.prices`).

``pending`` is a create about to be sent (path, form body, ``Idempotency-Key``,
the event it came from): it is committed *before* the request goes out. A crash
between the request and the commit of the new id leaves it there; whichever event
of that key comes next (the same one read again, or one at another position:
a resumed snapshot numbers its rows anew) first sends that very request again,
and Stripe, within its 24 hours, answers with the object it created the first
time instead of creating a second one. Only then is the new event applied.

Other entries are staged in memory and committed in one state-store
transaction at the end of each ``write``, before the sink returns and so before
the engine's checkpoint.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

from tidesync.event import Key, Position, json_dumps
from tidesync.state.store import KeyValues, StateChanges

NAMESPACE = "stripe_ids"


@dataclass(frozen=True, slots=True)
class Mapped:
    id: str | None  # None: the record was deleted
    at: list[Any] | None = None  # the applied position, as JSON-normal lists
    fixed: str | None = None  # prices: fingerprint of the immutable parameters
    pending: dict[str, Any] | None = None  # a create sent (or about to be) whose answer is not stored yet


def normal_position(position: Position) -> list[Any]:
    """A position as JSON-normal lists, so a stored one and a live one compare."""
    normal: list[Any] = msgspec.json.decode(json_dumps(list(position)))
    return normal


def at_or_before(position: Position, at: list[Any] | None) -> bool:
    """True when ``position`` is at or before the applied ``at`` (False when either is unknown or incomparable)."""
    if at is None or not position:
        return False
    try:
        return bool(normal_position(position) <= at)
    except TypeError:
        return False


class IdMap:
    def __init__(self, state: KeyValues, pipeline: str, sink: str) -> None:
        self.state = state
        self.pipeline = pipeline
        self.prefix = f"{pipeline}:{sink}:"
        self._cache: dict[tuple[str, Key], Mapped | None] = {}
        self._pending: dict[tuple[str, Key], Mapped] = {}
        self._lock = asyncio.Lock()  # lanes flush concurrently; one commit at a time

    def _kv_key(self, entity: str, key: Key) -> str:
        return f"{self.prefix}{entity}:{json_dumps(list(key)).decode()}"

    async def get(self, entity: str, key: Key) -> Mapped | None:
        k = (entity, key)
        if k not in self._cache:
            raw = await self.state.kv_get(NAMESPACE, self._kv_key(entity, key))
            self._cache[k] = (
                Mapped(raw.get("id"), raw.get("at"), raw.get("fixed"), raw.get("pending"))
                if isinstance(raw, dict)
                else None
            )
        return self._cache[k]

    def put(self, entity: str, key: Key, mapped: Mapped) -> None:
        self._cache[(entity, key)] = self._pending[(entity, key)] = mapped

    async def flush(self) -> None:
        """Commit the staged entries in one transaction (a StateStoreError leaves them staged)."""
        async with self._lock:
            if not self._pending:
                return
            taken, self._pending = self._pending, {}
            changes = StateChanges()
            for (entity, key), mapped in taken.items():
                changes.kv_put[(NAMESPACE, self._kv_key(entity, key))] = asdict(mapped)
            try:
                await self.state.commit(self.pipeline, changes)
            except BaseException:
                self._pending = {**taken, **self._pending}
                raise

    def forget_cache(self) -> None:
        """Drop what was read (not what is staged): the next get reads the store again."""
        self._cache = {k: v for k, v in self._cache.items() if k in self._pending}
