"""Positions, high-water marks, look-back floors and commit times of the polling source (pure).

Positions
    An event's position is ``(epoch, seq)``. ``epoch`` grows on every open
    (a counter in the state store), ``seq`` on every event and every
    checkpoint. A batch's position is ``(epoch, seq, marks)``: ``marks`` holds
    per table its high-water mark and, mid-pass, where the pass stopped;
    that is all a restart needs. Positions never reuse a value, even across
    crashes, so a destination that skips "already applied" positions never
    skips a re-read change (a row re-read after a restart gets a new, larger
    position). Only the ``(epoch, seq)`` prefix is ever compared.

Marks
    ``(cursor value, *key values)`` of a row, in the table's (cursor, key)
    order. Cursor values keep the driver's type (datetime, int, Decimal, or
    SQLite text) so they bind back exactly.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

Mark = tuple[Any, ...]


def floor_of(cursor: Any, lookback: float) -> Any:
    """The lowest cursor value a pass re-reads: ``cursor - lookback``.

    Timestamps (and ISO 8601 text, as SQLite stores them) go back ``lookback``
    seconds; numbers go back ``lookback`` units (epoch seconds, or a version
    counter); other types are not moved.
    """
    if lookback <= 0 or cursor is None:
        return cursor
    if isinstance(cursor, dt.datetime):
        return cursor - dt.timedelta(seconds=lookback)
    if isinstance(cursor, dt.date):
        return cursor - dt.timedelta(days=math.ceil(lookback / 86400))
    if isinstance(cursor, bool):
        return cursor
    if isinstance(cursor, int):
        return cursor - math.ceil(lookback)
    if isinstance(cursor, float):
        return cursor - lookback
    if isinstance(cursor, Decimal):
        return cursor - Decimal(repr(lookback))
    if isinstance(cursor, str):
        return _text_floor(cursor, lookback)
    return cursor


def _text_floor(text: str, lookback: float) -> str:
    moment = parse_iso(text)
    if moment is None:
        return text
    earlier = moment - dt.timedelta(seconds=lookback)
    sep = "T" if len(text) > 10 and text[10] == "T" else " "
    out = earlier.isoformat(sep=sep, timespec="microseconds" if "." in text[10:] else "seconds")
    if text.endswith("Z") and out.endswith("+00:00"):
        out = out[:-6] + "Z"
    return out


def parse_iso(text: str) -> dt.datetime | None:
    if len(text) < 10 or text[4:5] != "-":
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def commit_time(cursor: Any, naive_tz: ZoneInfo, now: float) -> float:
    """``committed_at`` of a polled row: its cursor when that is a timestamp, else ``now``.

    A timestamp without a zone is read in ``naive_tz``. The result is capped at
    ``now``, so a source clock ahead of ours never yields negative latency.
    """
    moment: dt.datetime | None = None
    if isinstance(cursor, dt.datetime):
        moment = cursor
    elif isinstance(cursor, str):
        moment = parse_iso(cursor)
    if moment is None:
        return now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=naive_tz)
    return min(moment.timestamp(), now)


def encode_marks(tables: dict[str, tuple[Mark | None, Mark | None]]) -> tuple[Any, ...]:
    """Per entity ``(entity, high-water mark, pass mark)``, in a stable order."""
    return tuple((entity, hw, scan) for entity, (hw, scan) in sorted(tables.items()))


def decode_marks(position: tuple[Any, ...] | None) -> tuple[int, int, dict[str, tuple[Mark | None, Mark | None]]]:
    """``(epoch, seq, marks by entity)`` of a checkpoint; zeros and no marks for None or a foreign position."""
    if not position or len(position) < 2:
        return 0, 0, {}
    epoch, seq = int(position[0]), int(position[1])
    marks: dict[str, tuple[Mark | None, Mark | None]] = {}
    if len(position) > 2 and position[2]:
        for entity, hw, scan in position[2]:
            marks[entity] = (tuple(hw) if hw is not None else None, tuple(scan) if scan is not None else None)
    return epoch, seq, marks
