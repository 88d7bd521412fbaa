"""Per-record ordering for senders that do not keep order (Stripe): older versions never overwrite newer ones.

For every record the guard knows the newest version admitted so far (its
``(timestamp, event id)`` and, where the payload carries it, the whole record).
An event older than that is *stale*: it is dropped, counted (``stale``; the
source adds it to ``tidesync_webhook_stale_events_total``) and logged at debug. Because
changes are field-level, dropping alone could lose a field: if the newer
event was applied first and named only the fields *it* changed, the fields
the older event changed were never written. So a stale event that changed
fields becomes a *repair*: an update of those same fields with the values of
the newest known version, which never moves a field backwards.

Versions admitted are held in memory and handed to the engine as shadow rows
with the batch that admitted them; the engine stores them in the checkpoint's
transaction, so after a restart the replayed events meet the same decisions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tidesync.event import ChangeEvent, Key
from tidesync.state.store import ShadowRow, Shadows

log = logging.getLogger("tidesync.webhook")
Version = tuple[float, str]


@dataclass(slots=True)
class _Known:
    version: Version
    row: dict[str, Any]
    committed_at: float


class OrderingGuard:
    def __init__(self, state: Shadows, scope: str, *, max_cached: int = 50_000) -> None:
        self.state = state
        self.scope = scope
        self.max_cached = max_cached
        self._known: dict[tuple[str, Key], _Known] = {}
        self._pending: list[tuple[int, ShadowRow]] = []
        self.stale = 0

    async def load(self, events: list[ChangeEvent]) -> None:
        """Fetch the stored versions of the records in ``events`` that are not in memory."""
        missing: dict[str, list[Key]] = {}
        for ev in events:
            if (ev.entity, ev.key) not in self._known:
                missing.setdefault(ev.entity, []).append(ev.key)
        for entity, keys in missing.items():
            for key, shadow in (await self.state.shadow_get(self.scope, entity, keys)).items():
                if shadow.position:
                    version = (float(shadow.position[0]), str(shadow.position[1]))
                    self._known[(entity, key)] = _Known(version, dict(shadow.row), shadow.committed_at)

    def admit(
        self, seq: int, event: ChangeEvent, version: Version, record: dict[str, Any] | None
    ) -> ChangeEvent | None:
        """The event to emit for ``event`` (itself, a repair, or None when stale with nothing to repair)."""
        k = (event.entity, event.key)
        known = self._known.get(k)
        if known is not None and version < known.version:
            self.stale += 1
            log.debug(
                "%s: %s %s version %s is older than %s, already admitted: dropped",
                self.scope, event.entity, event.key, version, known.version,
            )  # fmt: skip
            fields = event.changed if event.changed is not None else tuple(event.after or ())
            repair = {f: known.row[f] for f in fields if f in known.row} if event.op != "delete" else {}
            if not repair:
                return None
            # ``before``: the record as the stale event knew it, so a destination finds its key columns there
            return ChangeEvent(
                event.entity, event.key, "update", before=event.before or event.after, after=repair,
                changed=tuple(repair), position=event.position, committed_at=known.committed_at,
            )  # fmt: skip
        row = dict(record) if record is not None else {}
        self._known[k] = _Known(version, row, event.committed_at)
        self._pending.append((seq, ShadowRow(self.scope, event.entity, event.key, row, version, event.committed_at)))
        return event

    def take(self, through: int) -> list[ShadowRow]:
        """Shadow rows of the versions admitted at or before ``through``, the newest per record."""
        done = [s for q, s in self._pending if q <= through]
        self._pending = [(q, s) for q, s in self._pending if q > through]
        newest: dict[tuple[str, Key], ShadowRow] = {}
        for s in done:
            newest[(s.entity, s.key)] = s
        if len(self._known) > self.max_cached:
            keep = {(s.entity, s.key) for _, s in self._pending}
            self._known = {k: v for k, v in self._known.items() if k in keep}
        return list(newest.values())
