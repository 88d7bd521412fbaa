"""The de-duplication window of the RabbitMQ source: message ids applied lately, kept in chunks. Pure.

A chunk is the message ids of one batch, stored in the state store under a key
that ends with the batch's position (zero-padded, so keys sort as positions),
in the same transaction as the batch's checkpoint (``Batch.state``). The window
holds the newest chunks whose ids add up to at least ``size``; older chunks are
evicted whole (deleted with a later batch). So an id is remembered for at least
``size`` later messages, and for at most ``size`` plus one batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any


def chunk_key(prefix: str, position: int) -> str:
    return f"{prefix}{position:020d}"


def chunk_position(prefix: str, key: str) -> int:
    """The position a chunk key ends with (-1 for a key this window did not write)."""
    tail = key[len(prefix) :]
    return int(tail) if key.startswith(prefix) and tail.isdigit() else -1


class Window:
    """Message ids of committed batches, oldest chunk first, bounded to about ``size`` ids."""

    def __init__(self, size: int, prefix: str) -> None:
        self.size = size
        self.prefix = prefix
        self.chunks: OrderedDict[str, list[str]] = OrderedDict()
        self.ids: set[str] = set()

    def load(self, stored: Mapping[str, Any]) -> None:
        """Replace the window by the chunks found in the state store (``kv_scan`` of the prefix)."""
        self.chunks.clear()
        self.ids.clear()
        for key in sorted(stored):
            value = stored[key]
            if chunk_position(self.prefix, key) >= 0 and isinstance(value, list):
                self.add(key, [v for v in value if isinstance(v, str)])

    def __contains__(self, message_id: str) -> bool:
        return message_id in self.ids

    @property
    def last(self) -> int:
        """The newest chunk's position (0 for none): positions continue after it."""
        return chunk_position(self.prefix, next(reversed(self.chunks))) if self.chunks else 0

    def add(self, key: str, ids: Sequence[str]) -> None:
        self.chunks[key] = list(ids)
        self.ids.update(ids)

    def evict(self) -> list[str]:
        """Drop the oldest chunks the window can do without; their keys, to delete from the state store."""
        total = sum(len(c) for c in self.chunks.values())
        gone: list[str] = []
        while self.chunks:
            key, ids = next(iter(self.chunks.items()))
            if total - len(ids) < self.size:
                break
            self.chunks.popitem(last=False)
            self.ids.difference_update(ids)
            total -= len(ids)
            gone.append(key)
        return gone
