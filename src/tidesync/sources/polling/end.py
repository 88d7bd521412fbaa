"""Where a batch run (``tidesync run --once``) of a polling source ends (pure; see :mod:`tidesync.engine.once`).

A batch run asks the source for its end once, right after it opened
(``end_position``), and is over once a checkpoint at or past that position is
committed. The polling sources (SQL, Stripe, HubSpot) number their positions
``(epoch, seq)`` in the order they read, not in the source's own order, so no
position they have handed out names "the newest row now". Instead they
*reserve* one: ``(epoch, seq now +`` :data:`END_GAP` ``)``, far above any seq
the run will reach by counting, and hand out a batch at exactly that
position (its seq jumps there) once they have read up to what was newest at
the start. Until then every position stays below it, also when the source is
reopened after a transient error during the run: the source keeps its epoch
and goes on counting instead of starting a new epoch (a new epoch would
compare above the end and end the run early). Positions still never repeat.

:class:`TableEnd` is the SQL polling source's test for one table; the Stripe
and HubSpot sources compare their own cursors (event id, modification time).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tidesync.sources.polling.marks import Mark

END_GAP = 1 << 40  # far more events than one batch run reads


def reserve_end(seq: int, reserved: int | None) -> int:
    """The seq of a batch run's end: ``reserved`` while one is still to be reached, else a new one above ``seq``."""
    return reserved if reserved is not None else seq + END_GAP


_ORDERED = (int, float, Decimal, dt.datetime, dt.date)


def at_or_past(mark: Mark, end: Mark, *, text_ordered: bool) -> bool:
    """Whether a pass that has read the row at ``mark`` has read the row at ``end`` (both ``(cursor, *key)``).

    Certain only where Python orders values as the database does: equal marks,
    or a higher cursor of a number or time type (or text where the database
    compares text bytewise: ``text_ordered``, SQLite). A tie on the cursor is
    ordered by the key in the database's collation, which may not be
    Python's, so it counts only at the very row; a pass that never meets it
    (the row changed or went away meanwhile) still ends at the end of the
    table or at the first higher cursor.
    """
    if mark == end:
        return True
    a, b = mark[0], end[0]
    if a == b or not (isinstance(a, _ORDERED) or (text_ordered and isinstance(a, str))):
        return False
    try:
        return bool(a > b)
    except TypeError:
        return False


@dataclass(slots=True)
class TableEnd:
    """One table's part of a batch run's end: its newest ``(cursor, *key)`` at the start (None: empty).

    Reached once a pass that *started after* the end was taken has read that
    row (or gone past it), or has read the whole table. A pass already under
    way at the start does not count (resumed from a checkpoint, it may have
    gone past rows that were committed late, behind it); the first pass after
    it re-reads from the held-back floor and does.
    """

    mark: Mark | None
    text_ordered: bool = False
    fresh: bool = False  # a pass that started after the end was taken is under way (or was)
    reached: bool = False

    def pass_started(self) -> None:
        self.fresh = True

    def read(self, mark: Mark) -> None:
        """The pass under way has read the row at ``mark``."""
        if self.fresh and self.mark is not None and at_or_past(mark, self.mark, text_ordered=self.text_ordered):
            self.reached = True

    def pass_ended(self) -> bool:
        """The pass under way read to the end of the table; False when another pass is needed (start it now)."""
        if self.fresh:
            self.reached = True
        return self.reached

    def reopened(self) -> None:
        """The source reopened at its last position read: what was read after it is read again, by a new pass."""
        self.fresh = self.reached = False
