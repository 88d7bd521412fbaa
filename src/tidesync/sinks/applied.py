"""Which events of a write are new: the sinks that store the position of the newest applied event (sql, redis).

A sink that stores that position with its data, in one transaction or one
script, skips on a later write every event at or before it: a write the
engine replays after a crash is applied once.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidesync.errors import PermanentError
from tidesync.event import ChangeEvent, Position


def live_events(
    events: Sequence[ChangeEvent], stored: Position | None, replay: bool
) -> tuple[list[int], Position | None]:
    """Indexes of the events to apply, and the position to store after them (None: keep the stored one).

    An event at or before ``stored`` was applied already and is skipped,
    unless ``replay`` (dead-letter replays are older than what was applied
    after them); an event without a position is always applied. Raises
    PermanentError when a position cannot be compared with ``stored`` (it
    comes from a different source).
    """
    live: list[int] = []
    top = stored
    try:
        for i, ev in enumerate(events):
            pos = ev.position
            if pos:
                if not replay and stored is not None and pos <= stored:
                    continue
                if top is None or pos > top:
                    top = pos
            live.append(i)
    except TypeError as exc:
        raise PermanentError(
            f"position {ev.position!r} cannot be compared with the applied position {stored!r}: "
            "positions of a different source are stored for this pipeline and sink"
        ) from exc
    return live, (None if top == stored else top)
