"""Errors, grouped by what the caller must do next.

::

    TidesyncError
    ├── ConfigError            fix the configuration and restart (exit code 2)
    ├── StateStoreError        the state store cannot be used (locked, corrupt, unreachable)
    ├── LeaseLostError         another process holds this work's lease now: stop it, do not retry
    ├── SourceError            a source cannot go on (slot dropped, table missing, ...)
    │   └── SourceTransientError   lost connection etc.: reconnect with backoff
    └── DeliveryError          writing an event failed
        ├── TransientError     retry later, the same write may succeed
        ├── PermanentError     dead-letter this event; retrying will not help
        ├── SystemicError      every event would fail (missing table or column, permission,
        │                      authentication): hold the batch, block the pipeline, probe until fixed
        └── PartialBatchError  some events of a batch failed; carries per-event errors

Each connector translates the errors of its driver into these at one boundary
(``raise ... from exc``), so the engine never sees a foreign exception type.
"""

from __future__ import annotations

from collections.abc import Mapping


class TidesyncError(Exception):
    """Base of every error tidesync raises on purpose."""


class ConfigError(TidesyncError):
    """The configuration is wrong. The message names the key and, from a file, its line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path:
            where = f"{path}: " if line is None else f"{path}:{line}: "
        super().__init__(f"{where}{message}")


class StateStoreError(TidesyncError):
    """The state store cannot be opened or written."""


class LeaseLostError(TidesyncError):
    """This process no longer holds the lease of the work it was doing (tidesync.engine.lease).

    Raised by a state store commit whose fence no longer matches the lease
    (another process took it over), and before a write when the lease ran out
    here. Not a :class:`StateStoreError`: retrying cannot help; the work must stop.
    """


class SourceError(TidesyncError):
    """A source cannot continue and will not recover by retrying."""


class SourceTransientError(SourceError):
    """A source lost its connection or hit a passing fault; reopening may succeed."""


class DeliveryError(TidesyncError):
    """Base for sink write failures."""

    transient: bool = False
    error_class: str = "delivery"


class TransientError(DeliveryError):
    """Retrying the same write later may succeed (connection lost, deadlock, timeout, 503)."""

    transient = True
    error_class = "transient"


class PermanentError(DeliveryError):
    """Retrying will not help (constraint violation, bad value, missing table, 4xx)."""

    error_class = "permanent"


class SystemicError(DeliveryError):
    """Every event would hit this failure, not only the one being written.

    A missing destination table or column, a permission not granted, failed
    authentication, a key without a unique index. Dead-lettering would fill
    the queue with good events, so the engine keeps its position instead: the
    batch is held, the pipeline shows ``blocked`` and probes with backoff until
    a person fixes the cause, then resumes by itself. ``entity`` names the
    entity whose write failed, when the sink knows it.
    """

    error_class = "systemic"

    def __init__(self, message: str, *, entity: str | None = None) -> None:
        self.entity = entity
        super().__init__(message)


class TransformError(PermanentError):
    """A record could not be transformed (cast failed, expression error)."""

    error_class = "transform"


class PartialBatchError(DeliveryError):
    """Some events of a batch failed; the rest were written.

    ``failures`` maps the index of each failed event in the written sequence to
    its error. Events not listed were written.
    """

    def __init__(self, failures: Mapping[int, DeliveryError]) -> None:
        self.failures = dict(failures)
        super().__init__(f"{len(self.failures)} event(s) of the batch failed")
