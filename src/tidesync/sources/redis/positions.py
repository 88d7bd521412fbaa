"""Positions of the Redis Streams source: one entry id per stream, in one tuple.

A position is ``(stream_1, ms_1, seq_1, stream_2, ms_2, seq_2, ...)``: for
every configured stream, in config order, the id of the newest entry handed
out from it (``0, 0`` before the first). Each event carries the position
*after* it, so successive positions differ in one stream's id, which grows:
they increase component-wise, hence also as tuples (``<``), which is all the
engine and the sinks compare. "Resume after" a position means, per stream,
after that stream's id.

Streams not in a position (added to the config later) start at ``0, 0``;
streams in a position that are no longer configured are ignored. A stream
added anywhere but at the end changes which name sits at which place, so
comparing with positions stored before would compare names: add streams at
the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tidesync.event import Position

EntryId = tuple[int, int]
ZERO: EntryId = (0, 0)


def parse(position: Position | None, streams: Sequence[str]) -> dict[str, EntryId]:
    """Per configured stream, the entry id ``position`` holds for it (``ZERO`` when none)."""
    out = dict.fromkeys(streams, ZERO)
    if not position:
        return out
    if len(position) % 3:
        raise ValueError(f"not a Redis source position: {position!r}")
    for i in range(0, len(position), 3):
        name, ms, seq = position[i : i + 3]
        if not isinstance(name, str) or not isinstance(ms, int) or not isinstance(seq, int):
            raise ValueError(f"not a Redis source position: {position!r}")
        if name in out:
            out[name] = (ms, seq)
    return out


def make(ids: Mapping[str, EntryId], streams: Sequence[str]) -> Position:
    """The position holding ``ids``, streams in config order."""
    out: list[object] = []
    for name in streams:
        ms, seq = ids.get(name, ZERO)
        out += (name, ms, seq)
    return tuple(out)
