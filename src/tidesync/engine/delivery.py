"""Delivery policy as composition: dead-lettering wraps retrying, which wraps the sink.

:class:`~tidesync.engine.retrying.RetryingWriter` retries transient errors on
a :class:`~tidesync.retry.RetryPolicy`. :class:`DeadLetterWriter` sits on top
and owns everything the dead-letter queue decides for a batch: it parks the
records the batch could not turn into events (transform failures, a source's
``Batch.rejected``), keeps per-key order with :class:`~.parked.ParkedKeys`
(parking every later event of a key that waits in the queue), isolates poison
by splitting a rejected batch in halves until the rejected events are found
(so one bad record never blocks the other 999), and holds what no event could
be written (blocked), probing on the probe policy. The runner hands it a batch
and commits what :class:`Delivered` says.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from tidesync.clock import Clock
from tidesync.engine.breaker import CircuitBreaker
from tidesync.engine.parked import ParkedKeys
from tidesync.engine.retrying import RetriesExhausted, RetryingWriter, RetryNotice, SerialSink
from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.retry import Failure, RetryPolicy, RetryStopped
from tidesync.state.store import NewDeadLetter

__all__ = [
    "BlockNotice",
    "DeadLetterWriter",
    "Delivered",
    "HoldAborted",
    "ParkedKeys",
    "RetriesExhausted",
    "RetryNotice",
    "RetryingWriter",
    "SerialSink",
]

log = logging.getLogger("tidesync.delivery")
BEHIND = "waits behind an earlier dead-lettered event of this key"


def _systemic_of(exc: PartialBatchError) -> SystemicError | None:
    for err in exc.failures.values():
        if isinstance(err, SystemicError):
            return err
    return None


@dataclass(frozen=True, slots=True)
class Delivered:
    """What became of one batch: the caller commits ``unsaved`` with its checkpoint."""

    letters: list[NewDeadLetter]  # every new dead letter of the batch
    unsaved: list[NewDeadLetter]  # those ``persist`` has not made durable yet
    written: list[ChangeEvent]  # the events the sink took, in order


class _StillHeld(Exception):
    """A probe's answer that keeps the hold (the loop's retryable error)."""

    def __init__(self, answer: DeliveryError) -> None:
        self.answer = answer
        super().__init__(str(answer))


@dataclass(frozen=True, slots=True)
class BlockNotice:
    """A held batch: why, which entity failed first, and when the next probe is due."""

    error: str
    error_class: str
    entity: str
    events: int  # how many events are held
    since: float
    probes: int = 0  # probes made so far
    next_probe_at: float | None = None
    breaker: str | None = None  # set when the circuit breaker (not a systemic error) blocked


class HoldAborted(Exception):
    """The pipeline stops while a batch is held: nothing of it is written or checkpointed."""


class DeadLetterWriter:
    """Delivers a batch, parking what cannot be written and holding what no event could be.

    :meth:`deliver_batch` takes a batch's events and the records it rejected
    before delivery (``rejected``: transform failures, a source's
    ``Batch.rejected``, as ``(event, reason)``) and says in a
    :class:`Delivered` what was written and which dead letters are new.

    Per-key order: ``keys`` (:class:`ParkedKeys`) knows every key waiting in
    this sink's dead-letter queue; a later event of such a key is parked behind
    it (class ``blocked``) instead of overtaking it, one read again after a
    restart is dropped. A rejected record is parked (class ``transform``) in
    source order among the batch's events, so later events of its key wait too.
    ``keys`` is refreshed before every batch (a replay may have emptied a key).

    Durable before the sink moves past: a sink stores the position it applied
    with each write, so once a write after an isolated dead letter succeeds, a
    restart would skip that event. ``persist`` makes the letters a write found
    durable before the next write; the letters known before the first write
    (rejected records, events blocked by key) are found again by a restart, so
    they wait for the caller's checkpoint commit (``Delivered.unsaved``).

    Holding: a :class:`SystemicError` (every event would fail: missing table,
    permission) parks nothing. The events of that write are held: the writer
    calls ``on_block`` once, then probes by writing the same events again on
    the ``probe`` schedule (never giving up; ``on_probe`` before each wait),
    until the write answers something else; then ``on_unblock`` and delivery
    goes on. The :class:`~tidesync.engine.breaker.CircuitBreaker` holds the
    same way once too many consecutive events failed with one error class.
    Events a sink reported failed one by one (a PartialBatchError) are probed
    with ``replay=True``: the sink may have stored a position past them. When
    ``stop`` is set, a hold ends at once with :class:`HoldAborted`.
    """

    def __init__(
        self,
        writer: RetryingWriter,
        pipeline: str,
        sink_name: str,
        clock: Clock,
        *,
        keys: ParkedKeys | None = None,
        breaker: CircuitBreaker | None = None,
        probe: RetryPolicy | None = None,
        rng: random.Random | None = None,
        on_block: Callable[[BlockNotice], None] | None = None,
        on_probe: Callable[[BlockNotice], None] | None = None,
        on_unblock: Callable[[BlockNotice], None] | None = None,
        stop: asyncio.Event | None = None,
        persist: Callable[[Sequence[NewDeadLetter]], Awaitable[None]] | None = None,
    ) -> None:
        self.writer = writer
        self.pipeline = pipeline
        self.sink_name = sink_name
        self.clock = clock
        self.keys = keys if keys is not None else ParkedKeys(pipeline, sink_name)
        self.breaker = breaker or CircuitBreaker()
        self.probe = probe or RetryPolicy(initial_delay=1.0, max_delay=30.0)
        self._probing = replace(self.probe, max_attempts=None, max_age=None)  # a hold waits for a person
        self.rng = rng or random.Random()
        self.on_block = on_block
        self.on_probe = on_probe
        self.on_unblock = on_unblock
        self.stop = stop
        self.persist = persist
        self._saved: set[int] = set()  # id() of the letters of this delivery made durable during it
        self._letters: list[NewDeadLetter] = []  # the letters of the delivery in progress
        self._unsaved_from = 0
        self.writes = 0
        self.probes = 0  # probes made, all holds
        self.held: BlockNotice | None = None  # the hold in progress

    def _letter(self, event: ChangeEvent, error_class: str, error: str, attempts: int = 1) -> NewDeadLetter:
        now = self.clock.time()
        return NewDeadLetter(
            pipeline=self.pipeline,
            sink=self.sink_name,
            event=event,
            error_class=error_class,
            error=error,
            attempts=attempts,
            first_failed_at=now,
            last_failed_at=now,
        )

    def park(self, event: ChangeEvent, error_class: str, error: str, attempts: int = 1) -> NewDeadLetter:
        """A dead letter for ``event``; later events of its key now wait behind it."""
        self.keys.mark(event)
        return self._letter(event, error_class, error, attempts)

    async def deliver(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> list[NewDeadLetter]:
        """Deliver ``events``; the new dead letters (all of them: the caller commits them)."""
        return (await self.deliver_batch(events, replay=replay)).letters

    async def deliver_batch(
        self,
        events: Sequence[ChangeEvent],
        *,
        rejected: Sequence[tuple[ChangeEvent, str]] = (),
        replay: bool = False,
    ) -> Delivered:
        """Deliver one batch and park its ``rejected`` records; see the class docstring."""
        await self.keys.refresh()
        letters: list[NewDeadLetter] = []
        todo = self._sift(events, rejected, letters)
        self._letters, self._unsaved_from, self._saved = letters, len(letters), set()
        try:
            if todo:
                await self._settle(todo, replay, await self._try(todo, replay), letters)
        finally:
            self._letters = []
        if not letters:
            return Delivered(letters, letters, todo)
        parked = {id(letter.event) for letter in letters}
        saved = self._saved
        return Delivered(
            letters,
            [letter for letter in letters if id(letter) not in saved] if saved else letters,
            [e for e in todo if id(e) not in parked],
        )

    def _sift(
        self,
        events: Sequence[ChangeEvent],
        rejected: Sequence[tuple[ChangeEvent, str]],
        letters: list[NewDeadLetter],
    ) -> list[ChangeEvent]:
        """The events to write: rejected records are parked, and events of parked keys behind them, in source order.

        An event of a key waiting in the queue is parked (``blocked``); one a
        restart read again after it was handled (written or parked) is dropped.
        """
        if not rejected and not self.keys:
            return list(events)
        tagged: list[tuple[ChangeEvent, str | None]] = [(ev, None) for ev in events]
        if rejected:
            # At one position, the rejected record first (the sort is stable: source order otherwise).
            tagged += [(ev, reason) for ev, reason in rejected]
            tagged.sort(key=lambda t: (t[0].position, 0 if t[1] is not None else 1))
        out: list[ChangeEvent] = []
        for ev, why in tagged:
            if why is not None:
                letters.append(self.park(ev, "transform", why))
            elif (wait := self.keys.behind(ev)) == "blocked":
                letters.append(self.park(ev, "blocked", BEHIND))
            elif wait is None:
                out.append(ev)
        return out

    async def _persist_letters(self) -> None:
        """Make the delivery's new letters durable before a write that may move the sink past them."""
        new = self._letters[self._unsaved_from :]
        if self.persist is None or not new:
            return
        await self.persist(new)
        self._unsaved_from = len(self._letters)
        self._saved.update(id(letter) for letter in new)

    async def _try(self, events: Sequence[ChangeEvent], replay: bool) -> DeliveryError | None:
        await self._persist_letters()
        self.writes += 1
        try:
            await self.writer.write(events, replay=replay)
        except DeliveryError as exc:
            return exc
        return None

    async def _deliver(self, events: list[ChangeEvent], letters: list[NewDeadLetter], replay: bool) -> None:
        if events:
            await self._settle(events, replay, await self._try(events, replay), letters)

    def _holds(self, exc: DeliveryError, n: int) -> bool:
        """Is this outcome of writing ``n`` events one to hold rather than dead-letter?"""
        if isinstance(exc, SystemicError):
            return True
        now = self.clock.time()
        if isinstance(exc, PartialBatchError):
            if _systemic_of(exc) is not None:
                return True
            first = exc.failures[min(exc.failures)] if exc.failures else None
            return first is not None and self.breaker.tripped(_class_of(first), now)
        if isinstance(exc, RetriesExhausted) or n == 1:
            return self.breaker.tripped(_class_of(exc), now)
        return False

    async def _settle(
        self, events: list[ChangeEvent], replay: bool, exc: DeliveryError | None, letters: list[NewDeadLetter]
    ) -> None:
        if exc is not None and self._holds(exc, len(events)):
            events, replay, exc = await self._hold(events, replay, exc)
        if exc is None:
            self.breaker.written()
            return
        now = self.clock.time()
        if isinstance(exc, RetriesExhausted):
            # The destination itself kept failing: park the whole batch, in order.
            for k, ev in enumerate(events):
                if self.breaker.tripped("transient", now):
                    await self._settle(events[k:], replay, exc, letters)
                    return
                letters.append(self.park(ev, "transient", str(exc.last), exc.attempts))
                self.breaker.failed("transient", now)
            log.warning("%s/%s: %s; %d event(s) dead-lettered", self.pipeline, self.sink_name, exc, len(events))
        elif isinstance(exc, PartialBatchError):
            failed = sorted(exc.failures.items())
            expected = 0
            for n, (i, err) in enumerate(failed):
                if i > expected:
                    self.breaker.written()  # events before this one were written
                expected = i + 1
                cls = err.error_class
                if self.breaker.tripped(cls, now):
                    rest = failed[n:]
                    held = PartialBatchError({j: e for j, (_, e) in enumerate(rest)})
                    await self._settle([events[j] for j, _ in rest], True, held, letters)
                    return
                letters.append(self.park(events[i], cls, str(err)))
                self.breaker.failed(cls, now)
            if expected < len(events):
                self.breaker.written()
        elif isinstance(exc, PermanentError) and len(events) > 1:
            mid = len(events) // 2
            await self._deliver(events[:mid], letters, replay)
            await self._deliver(self._sift(events[mid:], (), letters), letters, replay)
        else:
            for ev in events:  # one event, or a multi-event failure that is neither permanent nor per event
                letters.append(self.park(ev, _class_of(exc), str(exc)))
            self.breaker.failed(_class_of(exc), now)

    async def _hold(
        self, events: list[ChangeEvent], replay: bool, exc: DeliveryError
    ) -> tuple[list[ChangeEvent], bool, DeliveryError | None]:
        """Probe until the write answers something not to hold; the events, replay flag and answer then."""
        if self.stop is not None and self.stop.is_set():
            raise HoldAborted()
        events, replay, narrowed = _narrow(events, replay, exc)
        exc = narrowed or exc
        since = self.clock.time()
        breaker = None if _is_systemic(exc) else self.breaker.describe(since)
        notice = BlockNotice(_reason(exc), _class_of(exc), _entity_of(exc, events), len(events), since, breaker=breaker)
        self.held = notice
        if self.on_block is not None:
            self.on_block(notice)

        def probing(failure: Failure) -> None:
            nonlocal notice
            answer = failure.error.answer if isinstance(failure.error, _StillHeld) else exc
            if failure.attempt > 1:
                log.debug("%s/%s: probe %d still fails: %s", self.pipeline, self.sink_name, failure.attempt - 1, answer)
            notice = replace(
                notice,
                error=_reason(answer),
                error_class=_class_of(answer),
                probes=failure.attempt - 1,
                next_probe_at=failure.next_attempt_at,
            )
            self.held = notice
            if self.on_probe is not None:
                self.on_probe(notice)

        answer: DeliveryError | None = exc
        retry = self._probing.attempts(
            self.clock, lambda e: isinstance(e, _StillHeld), on_retry=probing, stop=self.stop, rng=self.rng
        )
        try:
            async for attempt in retry:
                with attempt:
                    if attempt.number > 1:  # the first attempt is the write that failed
                        self.probes += 1
                        answer = await self._try(events, replay)
                        if answer is not None:
                            events, replay, answer = _narrow(events, replay, answer)
                    if answer is not None and (attempt.number == 1 or self._holds(answer, len(events))):
                        raise _StillHeld(answer)
        except RetryStopped:
            raise HoldAborted() from None
        finally:
            self.held = None
        if self.on_unblock is not None:
            self.on_unblock(replace(notice, probes=retry.number - 1, next_probe_at=None))
        return events, replay, answer


def _narrow(
    events: list[ChangeEvent], replay: bool, exc: DeliveryError | None
) -> tuple[list[ChangeEvent], bool, DeliveryError | None]:
    """Only the events a per-event failure names stay held (the others were written), probed as a replay."""
    if not isinstance(exc, PartialBatchError) or len(exc.failures) == len(events):
        return events, replay if not isinstance(exc, PartialBatchError) else True, exc
    order = sorted(exc.failures)
    return [events[i] for i in order], True, PartialBatchError({n: exc.failures[i] for n, i in enumerate(order)})


def _first(exc: DeliveryError) -> DeliveryError:
    if isinstance(exc, PartialBatchError) and exc.failures:
        return _systemic_of(exc) or exc.failures[min(exc.failures)]
    return exc


def _is_systemic(exc: DeliveryError) -> bool:
    return isinstance(_first(exc), SystemicError)


def _class_of(exc: DeliveryError) -> str:
    first = _first(exc)
    return "transient" if isinstance(first, RetriesExhausted) else first.error_class


def _reason(exc: DeliveryError) -> str:
    first = _first(exc)
    return str(first.last) if isinstance(first, RetriesExhausted) else str(first)


def _entity_of(exc: DeliveryError, events: Sequence[ChangeEvent]) -> str:
    first = _first(exc)
    if isinstance(first, SystemicError) and first.entity:
        return first.entity
    if isinstance(exc, PartialBatchError) and exc.failures:
        return events[min(exc.failures)].entity
    return events[0].entity if events else ""
