"""What a hybrid source remembers per record: which versions each side saw, and (values mode) its fields.

Tokens
    A *token* names one version of one record, the same whichever side saw it:

    - ``event_id``: the sender's version, ``(created, event id)`` for Stripe;
      a webhook delivery and the Events API listing of one event share it.
    - ``version``: the poller's cursor value (``updated_at``) as a number, read
      from the primary's row image through the poller's cursor column; a
      delete is ``("delete",)``.
    - ``values``: no token; the record's fields as last applied are compared instead.

    :func:`order_key` makes a token sortable ``(number, text)`` for the
    ordering guard; None when it has no order (deletes, snapshot rows).

Storage
    One shadow row per record (scope ``hybrid:<pipeline>``): ``{"seen": [[token,
    sides, first seen at], ...], "row": {...}}``. Entries older than the
    window are dropped when the record is touched again. Changes made while a
    batch is built live in a *delta* until the batch is handed out, so a read
    that fails half-way leaves nothing behind; the rows go to the state store
    with the batch (``batch.state``), in its checkpoint's transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tidesync.event import Key
from tidesync.sources.polling.marks import parse_iso
from tidesync.state.store import ShadowRow, Shadows

PRIMARY = "p"
FALLBACK = "f"
DELETED = ("delete",)


def order_key(token: Any) -> tuple[float, str] | None:
    """A token as ``(number, text)`` for ordering; None when it has no order."""
    if token is None or token == DELETED:
        return None
    if isinstance(token, tuple) and len(token) == 2 and isinstance(token[0], (int, float)):
        return float(token[0]), str(token[1])
    if isinstance(token, bool):
        return None
    if isinstance(token, (int, float, Decimal)):
        return float(token), ""
    if isinstance(token, dt.datetime):
        moment = token if token.tzinfo is not None else token.replace(tzinfo=dt.UTC)
        return moment.timestamp(), ""
    if isinstance(token, dt.date):
        return float(token.toordinal() * 86400), ""
    if isinstance(token, str):
        parsed = parse_iso(token)
        return order_key(parsed) if parsed is not None else None
    return None


def cursor_token(value: Any) -> Any:
    """The token of a cursor value: comparable across drivers (a number), else the value itself."""
    key = order_key(value)
    return key[0] if key is not None else value


@dataclass
class Entry:
    seen: dict[Any, list[Any]] = field(default_factory=dict)  # token -> [sides, first seen at]
    row: dict[str, Any] | None = None  # values mode: the record's fields as applied

    def sides(self, token: Any) -> str:
        hit = self.seen.get(token)
        return hit[0] if hit is not None else ""

    def mark(self, token: Any, side: str, now: float) -> None:
        hit = self.seen.get(token)
        if hit is None:
            self.seen[token] = [side, now]
        elif side not in hit[0]:
            hit[0] += side

    def prune(self, before: float) -> None:
        self.seen = {t: v for t, v in self.seen.items() if v[1] >= before}

    def copy(self) -> Entry:
        return Entry({t: list(v) for t, v in self.seen.items()}, dict(self.row) if self.row is not None else None)

    def to_row(self) -> dict[str, Any]:
        return {"seen": [[t, v[0], v[1]] for t, v in self.seen.items()], "row": self.row}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Entry:
        seen = {}
        for token, sides, at in row.get("seen") or ():
            seen[tuple(token) if isinstance(token, list) else token] = [sides, at]
        return cls(seen, row.get("row"))


class SeenVersions:
    def __init__(self, state: Shadows, scope: str, window: float, *, max_cached: int = 100_000) -> None:
        self.state = state
        self.scope = scope
        self.window = window
        self.max_cached = max_cached
        self._cache: dict[tuple[str, Key], Entry] = {}
        self._delta: dict[tuple[str, Key], Entry] = {}
        self._handed: dict[tuple[str, Key], tuple[int, int]] = {}  # (epoch, seq) of the batch that last carried it

    async def load(self, keys: list[tuple[str, Key]]) -> None:
        """Fetch the stored entries of records not in memory."""
        missing: dict[str, list[Key]] = {}
        for entity, key in keys:
            if (entity, key) not in self._cache and (entity, key) not in self._delta:
                missing.setdefault(entity, []).append(key)
        for entity, ks in missing.items():
            found = await self.state.shadow_get(self.scope, entity, ks)
            for key in ks:
                hit = found.get(key)
                self._cache[(entity, key)] = Entry.from_row(hit.row) if hit is not None else Entry()

    def get(self, entity: str, key: Key, now: float) -> Entry:
        """The record's entry, writable for this batch (load() it first)."""
        k = (entity, key)
        entry = self._delta.get(k)
        if entry is None:
            base = self._cache.get(k)
            entry = base.copy() if base is not None else Entry()
            entry.prune(now - self.window)
            self._delta[k] = entry
        return entry

    def finish(self, seq: tuple[int, int]) -> list[ShadowRow]:
        """The batch is handed out: keep its changes and return them as shadow rows."""
        rows = []
        for (entity, key), entry in self._delta.items():
            self._cache[(entity, key)] = entry
            self._handed[(entity, key)] = seq
            rows.append(ShadowRow(self.scope, entity, key, entry.to_row()))
        self._delta.clear()
        return rows

    def discard(self) -> None:
        self._delta.clear()

    def committed(self, seq: tuple[int, ...]) -> None:
        """Batches through ``seq`` are in the state store: their records may leave memory."""
        if len(self._cache) <= self.max_cached:
            return
        keep = {k for k, s in self._handed.items() if s > seq}
        self._cache = {k: v for k, v in self._cache.items() if k in keep}
        self._handed = {k: s for k, s in self._handed.items() if k in keep}
