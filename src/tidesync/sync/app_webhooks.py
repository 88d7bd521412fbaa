"""A HubSpot webhook source as the primary of a sync side's hybrid source: its records named as the poller's.

HubSpot's webhooks give a record's id as a JSON number (``objectId``), its
polling source as text (``hs_object_id`` is a property, and properties are
text). A sync side and the hybrid's values matching both know a record by
``(entity, key)``, so :class:`HubSpotWebhookKeys` turns every key (and a
``hs_object_id`` value) into text, as the poller gives it.

A ``<type>.creation`` webhook carries the record id only (HubSpot sends its
properties as property changes after it). To a sync that would be a new
record with no values: it is dropped here, and the record becomes known from
its first property change (the sync then fetches it whole, as for any update
of a record it never saw) or from the poller.

Everything else passes through; ``inner`` is the webhook source (the HTTP
server finds its intake there, see :func:`tidesync.api.wanted.webhook_sources`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tidesync.event import INSERT, Batch, ChangeEvent, Position, RecordVersion
from tidesync.protocols import Context, Source
from tidesync.state.store import StateChanges

KEY = "hs_object_id"


class HubSpotWebhookKeys:
    """See the module docstring."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner

    async def open(self, ctx: Context, after: Position | None) -> None:
        await self.inner.open(ctx, after)

    async def close(self) -> None:
        await self.inner.close()

    async def commit(self, position: Position) -> None:
        await self.inner.commit(position)

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        batch = await self.inner.read(max_events, max_wait)
        if not batch.events:
            return batch
        versions: list[RecordVersion | None] = list(batch.versions) or [None] * len(batch.events)
        events: list[ChangeEvent] = []
        kept: list[RecordVersion | None] = []
        for ev, version in zip(batch.events, versions, strict=True):
            if ev.op == INSERT and not set(ev.after or {}) - {KEY}:
                continue  # a creation without values: they follow as property changes (or the poller reads them)
            events.append(_text_keys(ev))
            kept.append(version)
        return replace(batch, events=events, versions=kept if batch.versions else [])


def _text_keys(ev: ChangeEvent) -> ChangeEvent:
    key = tuple(str(k) for k in ev.key)
    changes: dict[str, Any] = {"key": key}
    for image in ("before", "after"):
        row = getattr(ev, image)
        if row is not None and row.get(KEY) is not None:
            changes[image] = {**row, KEY: str(row[KEY])}
    return ev.replace(**changes)
