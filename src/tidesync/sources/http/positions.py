"""Positions of the API polling sources (pure, plus one state-store counter).

An event's position is ``(epoch, seq)``; a batch's is ``(epoch, seq, marks)``
where ``marks`` is everything a restart needs (cursors, pages in progress) as
nested tuples. ``epoch`` grows on every open (a counter in the state store),
``seq`` on every event and every checkpoint, so positions never repeat even
across crashes: a destination that skips "already applied" positions never
skips a record read again after a restart (it gets a new, larger position).
Only the ``(epoch, seq)`` prefix is ever compared.
"""

from __future__ import annotations

from typing import Any

from tidesync.event import Position
from tidesync.state.store import StateStore

EPOCH_NS = "api_poll_epoch"


def split(position: Position | None) -> tuple[int, int, Any]:
    """``(epoch, seq, marks)`` of a checkpoint; zeros and None for None or a foreign position."""
    if not position or len(position) < 2:
        return 0, 0, None
    return int(position[0]), int(position[1]), position[2] if len(position) > 2 else None


async def next_epoch(state: StateStore, scope: str, seen: int) -> int:
    """A new epoch for ``scope``, above both the stored counter and ``seen`` (the checkpoint's), stored."""
    stored = await state.kv_get(EPOCH_NS, scope) or 0
    epoch = max(int(stored), seen) + 1
    await state.kv_put(EPOCH_NS, scope, epoch)
    return epoch


class Sequencer:
    """Hands out ``(epoch, seq)`` positions in order."""

    def __init__(self, epoch: int = 0, seq: int = 0) -> None:
        self.epoch = epoch
        self.seq = seq

    def next(self) -> Position:
        self.seq += 1
        return (self.epoch, self.seq)

    def checkpoint(self, marks: Any) -> Position:
        """A batch position at the last position handed out (a batch without events calls :meth:`next` first)."""
        return (self.epoch, self.seq, marks)
