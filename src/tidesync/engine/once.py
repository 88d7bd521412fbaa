"""One batch run of a pipeline (``tidesync run --once``, a ``schedule:``): read up to the source's end, then stop.

Where the run ends is decided once, right after the source opened:

- a source with ``end_position()`` (:class:`EndAware`) names the position of
  its newest change *now* (Postgres: the WAL insert position; SQLite capture:
  the newest change-log row; the SQL poll, Stripe and HubSpot sources: a
  position they reserve and hand out once they have read their newest row,
  event or record of now, see :mod:`tidesync.sources.polling.end`). None
  means it holds nothing to read.
- any other source: the run ends at the last position read when two reads in
  a row came back empty (the first empty read may only mean "not polled yet";
  the second is a whole read cycle that found nothing). A source with an
  ``idle`` property (no pass or backfill in progress) counts an empty read
  only while idle, so a long pass over unchanged rows does not end the run
  half-way.

The run is over once a checkpoint at or past that end is committed (so
everything up to the end is written or dead-lettered), or as soon as the
pipeline blocks: a blocked sink would hold the run forever. The reader stops
reading once it has read up to the end, so a busy source does not keep a run
going. :class:`OnceRun` also keeps what the summary shows: events applied,
dead letters, the block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tidesync.engine.delivery import BlockNotice
from tidesync.event import Batch, Position
from tidesync.secrets import REDACTOR
from tidesync.state.store import NewDeadLetter


@runtime_checkable
class EndAware(Protocol):
    """The optional source method a batch run uses to know where to stop."""

    async def end_position(self) -> Position | None:
        """The position of the source's newest change now (None: nothing to read).

        Called after ``open``. Contract: every change the source holds at the
        time of the call is at or before the returned position, and the source
        eventually hands out a batch whose position is at or past it (a source
        that only produces positions for later changes writes a marker to make
        one, as the Postgres source does).
        """
        ...


@dataclass(slots=True)
class OnceRun:
    """The progress and outcome of one batch run.

    ``stop`` is the run's own stop: set when the end is applied (``reached``),
    when the pipeline blocks, or when the process stops.
    """

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reached: bool = False
    end: Position | None = None
    end_known: bool = False
    end_from_source: bool = False  # the source named its end (EndAware), not two empty reads
    committed: Position | None = None  # the last checkpoint committed (or loaded at the start)
    applied: int = 0
    dead_lettered: int = 0
    blocked: str | None = None
    first_letter: str | None = None  # why the first event was dead-lettered
    _empty_reads: int = 0

    async def start(self, source: object, checkpoint: Position | None) -> None:
        """Decide the end (when the source can say), after the source opened at ``checkpoint``."""
        self.committed = checkpoint
        if isinstance(source, EndAware):
            self.end_from_source = True
            self._decide(await source.end_position())

    def read(self, batch: Batch[Any], last_read: Position | None, *, idle: bool = True) -> bool:
        """A batch was read (and queued); True when the reader has read up to the end and should stop."""
        if not self.end_known:
            if batch.events or batch.rejected or not idle:
                self._empty_reads = 0
            else:
                self._empty_reads += 1
                if self._empty_reads >= 2:
                    self._decide(last_read)
        if not self.end_known:
            return False
        return self.end is None or (last_read is not None and last_read >= self.end) or self.stop.is_set()

    def wrote(self, position: Position | None, applied: int, letters: Sequence[NewDeadLetter]) -> None:
        """A batch was committed (its checkpoint ``position``, None inside a transaction)."""
        self.applied += applied
        self.dead_lettered += len(letters)
        if letters and self.first_letter is None:
            first = letters[0]
            self.first_letter = REDACTOR.redact(f"{first.event.entity} {list(first.event.key)}: {first.error}")
        if position is not None:
            self.committed = position
        self._check()

    def block(self, notice: BlockNotice) -> None:
        self.blocked = REDACTOR.redact(f"blocked on {notice.entity}: {notice.error}")
        self.stop.set()

    @property
    def ok(self) -> bool:
        """Read to the end with nothing dead-lettered or blocked."""
        return self.reached and self.blocked is None and self.dead_lettered == 0

    def summary(self, name: str) -> str:
        """One line for a person: what the run did, and why it did not succeed when it did not."""
        if self.reached and self.end is not None and self.end_from_source:
            # The end's position can be one the source reserved (a polling source's far seq, see
            # tidesync.sources.polling.end): it means nothing to a person, the end as of the start does.
            where = " up to the source's end as of the start"
        else:
            where = f" up to {list(self.committed)}" if self.committed is not None else ""
        line = f"pipeline {name}: {self.applied} event(s) applied{where}"
        if self.dead_lettered:
            line += f"; {self.dead_lettered} event(s) dead-lettered (see `tidesync dlq list`)"
            line += f", the first {self.first_letter}"
        if self.blocked is not None:
            line += f"; stopped before the end: {self.blocked}"
        elif not self.reached:
            line += "; stopped before the end"
        return line

    def _decide(self, end: Position | None) -> None:
        self.end, self.end_known = end, True
        self._check()

    def _check(self) -> None:
        if not self.end_known:
            return
        if self.end is None or (self.committed is not None and self.committed >= self.end):
            self.reached = True
            self.stop.set()
