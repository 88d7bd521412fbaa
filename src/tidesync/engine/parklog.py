"""Every dead letter is seen: one WARNING at once, then a summary per entity at most once a window.

A poison row must never be parked silently, but ten thousand of them must not
write ten thousand log lines either. :class:`ParkLog` turns the dead letters
of each batch into log lines:

- the first dead letter of an entity (and error class) after a quiet window
  is logged at once, with its key and reason;
- the ones that follow within ``window`` seconds are counted and logged as one
  summary when the window has passed: "312 events of public.orders
  dead-lettered in the last 60s (permanent): <first reason>".

Pure: callers pass ``now`` and log the lines it returns (``flush`` on a
timer, so a summary is written even when no further dead letter comes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tidesync.secrets import REDACTOR
from tidesync.state.store import NewDeadLetter


@dataclass(slots=True)
class _Window:
    opened: float
    count: int = 0  # dead letters after the first, not yet summarised
    reason: str = ""


class ParkLog:
    def __init__(self, pipeline: str, window: float = 60.0) -> None:
        self.pipeline = pipeline
        self.window = window
        self._open: dict[tuple[str, str], _Window] = {}  # (entity, error class) -> window

    def add(self, letters: Iterable[NewDeadLetter], now: float) -> list[str]:
        """The lines to log for these new dead letters (and for windows that have passed)."""
        lines = self.flush(now)
        for letter in letters:
            k = (letter.event.entity, letter.error_class)
            w = self._open.get(k)
            if w is None:
                self._open[k] = _Window(now)
                lines.append(
                    f"pipeline {self.pipeline}: an event of {k[0]} (key {list(letter.event.key)}) was dead-lettered "
                    f"[{k[1]}]: {REDACTOR.redact(letter.error)}"
                )
            else:
                if not w.count:
                    w.reason = letter.error
                w.count += 1
        return lines

    def flush(self, now: float) -> list[str]:
        """Summaries of the windows that have passed; a window with nothing more to say just closes."""
        lines = []
        for k, w in list(self._open.items()):
            if now - w.opened < self.window:
                continue
            del self._open[k]
            if w.count:
                noun = "event" if w.count == 1 else "events"
                lines.append(
                    f"pipeline {self.pipeline}: {w.count} more {noun} of {k[0]} dead-lettered in the last "
                    f"{now - w.opened:.0f}s [{k[1]}]: {REDACTOR.redact(w.reason)}"
                )
                self._open[k] = _Window(now)  # keep summarising while they keep coming
        return lines
