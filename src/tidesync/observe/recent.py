"""The recent errors: a bounded ring of warning and error log records, redacted, for the API and dashboard.

:data:`RECENT_ERRORS` is a logging handler on the ``tidesync`` logger (installed
by :func:`install`, idempotent). Each record is kept as its formatted message
with every known secret masked; an exception attached to the record adds its
type and message, never a traceback. The ring keeps the newest ``capacity``
records; each carries a sequence number so a reader can ask for what is new.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from tidesync.secrets import REDACTOR

LOGGER = "tidesync"


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    seq: int
    at: float  # epoch seconds
    level: str  # WARNING, ERROR, CRITICAL
    logger: str
    message: str


class ErrorRing(logging.Handler):
    def __init__(self, capacity: int = 200, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._ring: deque[ErrorRecord] = deque(maxlen=capacity)
        self._seq = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text = f"{text} ({type(exc).__name__}: {exc})"
            text = REDACTOR.redact(text)
        except Exception:  # a record that cannot be formatted must not break logging
            text = REDACTOR.redact(str(record.msg))
        with self._guard:
            self._seq += 1
            self._ring.append(ErrorRecord(self._seq, record.created, record.levelname, record.name, text))

    def recent(self, limit: int = 100, after: int = 0) -> list[ErrorRecord]:
        """The newest records first, at most ``limit``, only those with ``seq > after``."""
        with self._guard:
            items = [r for r in self._ring if r.seq > after]
        return items[::-1][:limit]

    def clear(self) -> None:
        with self._guard:
            self._ring.clear()


RECENT_ERRORS = ErrorRing()


def install(ring: ErrorRing = RECENT_ERRORS, logger: str = LOGGER) -> ErrorRing:
    """Attach ``ring`` to the ``tidesync`` logger once; return it."""
    target = logging.getLogger(logger)
    if ring not in target.handlers:
        target.addHandler(ring)
    return ring
