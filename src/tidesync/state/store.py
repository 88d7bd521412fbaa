"""The state store: checkpoints, shadow rows, the dead-letter queue, status, and small keyed state.

One interface, two backends (``sqlite.py``, the embedded default; ``postgres.py``,
shared by several workers). Both pass the same test suite.

The interface is split by concern, so a part that needs one concern says so in
its signature and a test double for it stays small:

====================  =========================================================
protocol              methods
====================  =========================================================
``SupportsCommit``    ``commit(pipeline, StateChanges)``: the one transactional
                      write path; every concern protocol below extends it
``Checkpoints``       ``load_checkpoint``, ``reset_checkpoint``
``DeadLetterQueue``   ``dlq_list``, ``dlq_get``, ``dlq_count``,
                      ``dlq_parked_keys``, ``dlq_touch``, ``dlq_remove``
``Shadows``           ``shadow_get``, ``shadow_scan``
``IntakeJournal``     ``journal_append``, ``journal_read``, ``journal_trim``
``KeyValues``         ``kv_get``, ``kv_put``, ``kv_delete``, ``kv_scan``
``PipelineStatuses``  ``status_get``, ``status_list``
``StoreLifecycle``    ``url``, ``open``, ``close``, ``remove_pipeline`` (the store
                      as a whole; it does not extend ``SupportsCommit``)
``Leases``            ``lease_acquire``, ``lease_release``, ``lease_list``,
                      ``fence_commits`` (one owner per piece of work; fenced
                      commits)
``StateStore``        all of them: what a backend implements and the engine holds
====================  =========================================================

Why ``commit`` sits in a base protocol that each concern extends, not in
``StateStore`` alone: a part that reads one concern usually stages changes
that must commit with the rest of a batch (a repair reads the parked keys and
commits dead letters; a resolution reads kv entries and commits kv entries).
Python has no intersection types, so were ``commit`` only on ``StateStore``,
each such part would need the whole store again. The price: a holder of a
narrow protocol can commit any :class:`StateChanges`; the narrow type says
what a part reads, not what one batch may change.

Writes outside ``commit`` exist where a write is not part of a batch:
``reset_checkpoint``, ``dlq_touch``/``dlq_remove`` (an operator's replay or
discard), ``kv_put``/``kv_delete`` (an epoch counter, a re-enabled endpoint),
the journal (an append must be durable before intake answers), and
``remove_pipeline``. Anything that must move with a checkpoint goes through
``commit``.

The intake journal holds what webhook intake accepted, before it answered 2xx:
``journal_append`` de-duplicates by (source, event id) in the same transaction
that stores the entry, ``journal_read`` reads by sequence after a position, and
``journal_trim`` drops what a pipeline checkpointed while still remembering the
event ids for a retention window, so a late retry of a trimmed delivery is
still recognised as a duplicate.

Atomicity: everything in one :class:`StateChanges` commits in one transaction,
so a checkpoint never moves past an event whose dead letter or shadow row was
not stored with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tidesync.event import ChangeEvent, Key, Position, Row


@dataclass(frozen=True, slots=True)
class ShadowRow:
    """The last value of each field of a record that tidesync saw or applied.

    ``scope`` is a pipeline or sync name, so two pipelines never share shadows.
    """

    scope: str
    entity: str
    key: Key
    row: Row
    position: Position | None = None
    committed_at: float = 0.0
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class NewDeadLetter:
    """An event parked because it could not be transformed or written.

    ``error_class``: ``transient`` (retries exhausted), ``permanent``,
    ``transform`` or ``blocked`` (waits behind an earlier entry of the same key).
    """

    pipeline: str
    sink: str
    event: ChangeEvent
    error_class: str
    error: str
    attempts: int = 1
    first_failed_at: float = 0.0
    last_failed_at: float = 0.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    pipeline: str
    sink: str
    event: ChangeEvent
    error_class: str
    error: str
    attempts: int
    first_failed_at: float
    last_failed_at: float

    @property
    def entity(self) -> str:
        return self.event.entity

    @property
    def key(self) -> Key:
        return self.event.key

    def summary(self) -> dict[str, Any]:
        """The entry without its event, as JSON-ready values: what a listing (CLI, API) shows."""
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "sink": self.sink,
            "entity": self.entity,
            "key": list(self.key),
            "op": self.event.op,
            "error_class": self.error_class,
            "error": self.error,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
        }


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which entries a list/replay/discard applies to; None fields match everything."""

    pipeline: str | None = None
    sink: str | None = None
    entity: str | None = None
    error_class: str | None = None
    error_contains: str | None = None
    older_than: float | None = None  # last_failed_at < this (epoch seconds)
    newer_than: float | None = None  # last_failed_at >= this
    ids: tuple[int, ...] | None = None
    limit: int | None = None


@dataclass(slots=True)
class PipelineStatus:
    """What ``tidesync status`` shows for a pipeline, as last written by the engine."""

    pipeline: str
    state: str = "stopped"
    position: Position | None = None
    events_applied: int = 0
    lag_seconds: float = 0.0
    last_committed_at: float = 0.0
    last_error: str | None = None
    next_attempt_at: float | None = None
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StateChanges:
    """Everything one batch changes in the state store, committed together."""

    checkpoint: Position | None = None
    shadow_put: list[ShadowRow] = field(default_factory=list)
    shadow_delete: list[tuple[str, str, Key]] = field(default_factory=list)  # (scope, entity, key)
    dead_letters: list[NewDeadLetter] = field(default_factory=list)
    dlq_remove: list[int] = field(default_factory=list)
    kv_put: dict[tuple[str, str], Any] = field(default_factory=dict)  # (namespace, key) -> value
    kv_delete: list[tuple[str, str]] = field(default_factory=list)
    status: PipelineStatus | None = None
    events_applied: int = 0  # added to the status counter in the same transaction

    def is_empty(self) -> bool:
        return (
            self.checkpoint is None
            and not self.shadow_put
            and not self.shadow_delete
            and not self.dead_letters
            and not self.dlq_remove
            and not self.kv_put
            and not self.kv_delete
            and self.status is None
        )

    def merge(self, other: StateChanges) -> StateChanges:
        """These changes followed by ``other``, as one new change set (neither is modified).

        Per shadow key, and per kv key, the later change wins: a put in ``other``
        drops an earlier delete of its key and a delete in ``other`` drops an
        earlier put, because a store applies every put before every delete.
        ``checkpoint`` and ``status`` are the later ones when set; dead letters
        and queue removals accumulate; ``events_applied`` adds up.
        """
        later = {(s.scope, s.entity, s.key) for s in other.shadow_put} | set(other.shadow_delete)
        return StateChanges(
            checkpoint=other.checkpoint if other.checkpoint is not None else self.checkpoint,
            shadow_put=[s for s in self.shadow_put if (s.scope, s.entity, s.key) not in later] + other.shadow_put,
            shadow_delete=[d for d in self.shadow_delete if d not in later] + other.shadow_delete,
            dead_letters=self.dead_letters + other.dead_letters,
            dlq_remove=self.dlq_remove + other.dlq_remove,
            kv_put={**{k: v for k, v in self.kv_put.items() if k not in other.kv_delete}, **other.kv_put},
            kv_delete=[k for k in self.kv_delete if k not in other.kv_put] + other.kv_delete,
            status=other.status if other.status is not None else self.status,
            events_applied=self.events_applied + other.events_applied,
        )


@dataclass(frozen=True, slots=True)
class JournalAppend:
    """One accepted delivery (or one element of a batch delivery) to journal.

    ``body`` is the raw payload; ``meta`` holds what mapping needs besides it
    (a few request headers), as plain JSON-like values.
    """

    source: str
    event_id: str
    body: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    source: str
    event_id: str
    body: bytes
    meta: dict[str, Any]
    received_at: float


@runtime_checkable
class SupportsCommit(Protocol):
    """The one transactional write path, shared by every concern below."""

    async def commit(self, pipeline: str, changes: StateChanges) -> list[int]:
        """Apply ``changes`` atomically for ``pipeline``; return the ids of new dead letters, in order.

        ``checkpoint`` replaces the pipeline's checkpoint when not None.
        ``events_applied`` is added to the pipeline's counter; ``status``,
        when given, replaces the rest of the status row.
        """


@runtime_checkable
class Checkpoints(SupportsCommit, Protocol):
    """The position each pipeline resumes after; it moves only through :meth:`commit`."""

    async def load_checkpoint(self, pipeline: str) -> Position | None: ...

    async def reset_checkpoint(self, pipeline: str) -> None:
        """Forget the checkpoint, so the next run starts from the source's beginning."""


@runtime_checkable
class DeadLetterQueue(SupportsCommit, Protocol):
    """Parked events: read, counted and touched here; added (and removed with a batch) by :meth:`commit`."""

    async def dlq_list(self, flt: DeadLetterFilter | None = None) -> list[DeadLetter]:
        """Entries matching ``flt``, oldest (lowest id) first."""

    async def dlq_get(self, entry_id: int) -> DeadLetter | None: ...

    async def dlq_count(self, pipeline: str | None = None) -> int: ...

    async def dlq_parked_keys(self, pipeline: str, sink: str) -> dict[tuple[str, Key], Position]:
        """(entity, key) of every entry of this pipeline and sink, with the newest parked position of each.

        Later events of these keys must wait behind them; an event of such a key at or before that
        position was handled (written or parked) before a restart and is not parked again.
        """

    async def dlq_touch(self, entry_id: int, error: str, error_class: str, failed_at: float) -> None:
        """Record one more failed attempt of an entry (a failed replay)."""

    async def dlq_remove(self, ids: Iterable[int]) -> int:
        """Delete entries outside a batch (an operator's discard); return how many existed."""


@runtime_checkable
class Shadows(SupportsCommit, Protocol):
    """Shadow rows by (scope, entity, key): read here, written only by :meth:`commit`."""

    async def shadow_get(self, scope: str, entity: str, keys: Sequence[Key]) -> dict[Key, ShadowRow]:
        """The stored rows of ``keys`` (missing keys are absent from the result)."""

    async def shadow_scan(self, scope: str, entity: str | None = None) -> list[ShadowRow]: ...


@runtime_checkable
class IntakeJournal(SupportsCommit, Protocol):
    """What webhook intake accepted before answering 2xx (see the module docstring).

    Appends and trims are their own transactions: an append must be durable
    before the answer, and a trim follows a checkpoint that already committed.
    """

    async def journal_append(self, entries: Sequence[JournalAppend]) -> list[int | None]:
        """Append ``entries`` in one transaction; per entry its sequence number, or None for a duplicate.

        A duplicate is an entry whose (source, event_id) is journaled already,
        earlier in the same call included, or was trimmed less than the
        retention ago. Sequence numbers grow with commit order per source, so
        a reader that saw sequence ``n`` never later finds a new entry below it.
        """

    async def journal_read(self, source: str, after: int, limit: int, through: int | None = None) -> list[JournalEntry]:
        """Untrimmed entries of ``source`` with ``after < seq`` (and ``seq <= through``), in sequence order."""

    async def journal_trim(self, source: str, through: int, forget_before: float) -> int:
        """Drop the payloads of entries with ``seq <= through``; return how many were dropped.

        The event ids of trimmed entries received before ``forget_before``
        (epoch seconds) are forgotten: only then may the same id be journaled again.
        """


@runtime_checkable
class KeyValues(SupportsCommit, Protocol):
    """Small JSON-like values by (namespace, key).

    What belongs to a batch goes through :meth:`commit` (``kv_put``/``kv_delete``
    of :class:`StateChanges`); :meth:`kv_put` and :meth:`kv_delete` are for
    state that is not part of one (an epoch counter, an operator's re-enable).
    """

    async def kv_get(self, namespace: str, key: str) -> Any | None: ...

    async def kv_put(self, namespace: str, key: str, value: Any) -> None: ...

    async def kv_delete(self, namespace: str, key: str) -> None: ...

    async def kv_scan(self, namespace: str, prefix: str = "") -> dict[str, Any]:
        """Entries of ``namespace`` whose key starts with ``prefix``, by key."""


@runtime_checkable
class PipelineStatuses(SupportsCommit, Protocol):
    """The status rows ``tidesync status`` and the admin API show; written by :meth:`commit`."""

    async def status_get(self, pipeline: str) -> PipelineStatus | None: ...

    async def status_list(self) -> list[PipelineStatus]: ...


@runtime_checkable
class StoreLifecycle(Protocol):
    """The store as a whole: its URL (redacted), opening, closing, and forgetting a pipeline."""

    url: str

    async def open(self) -> None:
        """Create the schema if missing. Idempotent."""

    async def close(self) -> None:
        """Idempotent."""

    async def remove_pipeline(self, pipeline: str, scopes: Sequence[str] = ()) -> dict[str, int]:
        """Delete everything stored for ``pipeline``, in one transaction; return how many rows of each kind went.

        The owner names are ``pipeline`` and ``scopes`` (what its parts key state
        by besides its name: a configured shadow scope, a webhook route,
        ``sync:<name>``). Deleted: the checkpoint, status and dead letters of an
        owner name; shadow rows whose scope is one; journal rows whose source is
        one; kv entries whose key is one or starts with one and ``:`` or ``/``,
        or whose namespace does after its first ``:`` (``dlq_applied:<pipeline>:<sink>``).
        Names hold neither ``:`` nor ``/``, so no other pipeline's entry matches.
        Keys of the result: checkpoint, status, dead letters, shadow rows, kv
        entries, journal rows. Idempotent.
        """


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease row: who holds ``name``, under which epoch, for how much longer (by the store's clock).

    ``epoch`` grows by one each time the lease changes owner; a renewal by the
    holder keeps it. ``remaining`` is negative once the lease has expired.
    """

    name: str
    owner: str
    epoch: int
    remaining: float


@dataclass(frozen=True, slots=True)
class Fence:
    """A commit's proof of ownership: it applies only while lease ``name`` is still at ``epoch``."""

    name: str
    epoch: int


@runtime_checkable
class Leases(SupportsCommit, Protocol):
    """Leases in the state store's own table, on the store's own clock (see :mod:`tidesync.engine.lease`).

    Every coroutine is one transaction. The database's clock decides expiry, so
    processes whose clocks disagree still agree on who holds a lease.
    """

    async def lease_acquire(self, name: str, owner: str, ttl: float) -> Lease:
        """Take lease ``name`` for ``owner`` for ``ttl`` seconds when it is free, expired or already
        ``owner``'s (a renewal); return the row as it is afterwards: held when its owner is ``owner``."""

    async def lease_release(self, name: str, owner: str, epoch: int) -> bool:
        """Expire the lease now if ``owner`` still holds it at ``epoch`` (a clean stop: a standby
        takes over at once); False when it had moved on."""

    async def lease_list(self) -> list[Lease]:
        """Every lease row, expired ones included, by name."""

    def fence_commits(self, pipeline: str, fence: Fence | None) -> None:
        """From now on every :meth:`SupportsCommit.commit` for ``pipeline`` checks ``fence`` inside its
        transaction and raises :class:`tidesync.errors.LeaseLostError` (applying nothing) when the lease
        is no longer at that epoch. None removes the fence."""


@runtime_checkable
class StateStore(
    Checkpoints, DeadLetterQueue, Shadows, IntakeJournal, KeyValues, PipelineStatuses, Leases, StoreLifecycle, Protocol
):
    """Durable engine state: every concern above, one backend. All methods are coroutines.

    None blocks the event loop for long. Errors: :class:`tidesync.errors.StateStoreError`
    with a message that says what is wrong (file locked, not a database, server unreachable).
    """
