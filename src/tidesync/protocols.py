"""The extension points: :class:`Source` and :class:`Sink` (and the state store, in ``state``).

Lifecycle of both: ``open`` → many ``read``/``write`` → ``close``. ``close`` is
idempotent and may be called after a failed ``open``. None of the methods is
called concurrently with another method of the same object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.event import Batch, ChangeEvent, Position
from tidesync.schema import SchemaRegistry

if TYPE_CHECKING:
    from tidesync.state.store import StateChanges, StateStore


@dataclass(slots=True)
class Context:
    """What the engine hands to a connector when it opens.

    ``pipeline`` names the pipeline (exactly-once bookkeeping in a destination
    is keyed by it); ``name`` names this connector inside the pipeline.
    ``schemas``: a source publishes the shape of each entity it reads there; a
    sink finds the same shapes after transforms (renamed, cast, dropped).
    """

    pipeline: str
    name: str
    state: StateStore
    clock: Clock = SYSTEM_CLOCK
    schemas: SchemaRegistry = field(default_factory=SchemaRegistry)
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """Yields changes in source order and is told when they are durably handled.

    Contract:
    - ``open(ctx, after)`` starts reading *after* ``after`` (exclusive): no
      event at or before that position is produced again. ``after=None`` means
      from the beginning (or the source's configured start).
    - ``read(max_events, max_wait)`` returns the next batch, at most
      ``max_events`` events, waiting at most ``max_wait`` seconds for the first
      one; an empty batch is fine. Events are in source order, and per key in
      the order the source committed them.
    - ``commit(position)`` says that every event up to and including
      ``position`` (a position a batch carried) is written to every sink or
      parked in the dead-letter queue, and that the checkpoint is durable. The
      source may now release upstream resources (flush a replication slot, trim
      a change log, ack a broker). It is called in increasing position order.
    - After a crash, events after the last committed position are produced
      again (at-least-once); sinks make that harmless.
    - Errors: ``SourceTransientError`` when reopening may help, ``SourceError``
      when it will not (the message says what to fix).
    """

    async def open(self, ctx: Context, after: Position | None) -> None: ...

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]: ...

    async def commit(self, position: Position) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Writes events to a destination, idempotently.

    Contract:
    - ``write(events)`` gets events in source order; per key, that order must
      be kept in the destination. It returns when every event is written
      (durably, as far as the destination allows), or raises:
      ``TransientError`` (nothing or only idempotent parts were written; the
      whole call may be retried), ``PermanentError`` (at least one event can
      never be written; the caller splits the batch to find it), or
      ``PartialBatchError`` (per-event outcome known: the listed events failed,
      the others were written).
    - Writing the same event twice leaves the destination as writing it once.
      A sink that stores the applied position in the destination skips events
      at or before it, unless ``replay`` is true (dead-letter replays, which
      are older than what was applied after them).
    - An empty sequence is a no-op.
    """

    async def open(self, ctx: Context) -> None: ...

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None: ...

    async def close(self) -> None: ...
