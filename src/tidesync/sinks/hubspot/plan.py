"""Pure planning for one write: events into waves that keep per-key order, inputs into batches.

A key's n-th event of a write goes in wave n. Waves are sent one after the
other, so a key's events reach HubSpot in source order; within a wave every
key appears once, so its requests may go in any order and each input may be
matched to its event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field
from typing import TypeVar

from tidesync.event import ChangeEvent, Key
from tidesync.sinks.hubspot.config import HubSpotObjectSpec

T = TypeVar("T")


@dataclass(slots=True)
class Item:
    """What one event becomes: an input of a batch request (the result goes back into it)."""

    index: int
    event: ChangeEvent
    spec: HubSpotObjectSpec
    action: str  # upsert | update | archive
    properties: dict[str, str] = field(default_factory=dict)
    id_value: str = ""  # the id_property value of an upsert
    record_id: str | None = None  # HubSpot's id (update, archive; an upsert's answer)

    @property
    def key(self) -> tuple[str, Key]:
        return (self.event.entity, self.event.key)


def waves(events: Sequence[ChangeEvent], skip: Set[int] = frozenset()) -> list[list[int]]:
    """Indices of ``events`` (but ``skip``) by wave: the n-th event of each (entity, key) in wave n, in order."""
    seen: dict[tuple[str, Key], int] = {}
    out: list[list[int]] = []
    for i, e in enumerate(events):
        if i in skip:
            continue
        k = (e.entity, e.key)
        n = seen.get(k, 0)
        seen[k] = n + 1
        if n == len(out):
            out.append([])
        out[n].append(i)
    return out


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def key_text(key: Key) -> str:
    """A source key as the text stored in HubSpot's ``tidesync_key`` property (and looked up by a foreign key)."""
    if len(key) == 1:
        return str(key[0])
    return json.dumps(list(key), default=str, separators=(",", ":"))
