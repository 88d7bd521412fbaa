"""Delivery policy as composition: retrying and dead-lettering wrap a sink.

:class:`RetryingWriter` retries transient errors by a :class:`RetryPolicy`
(tenacity drives the loop; the clock's ``sleep`` does the waiting, so a fake
clock makes schedules testable). :class:`DeadLetterWriter` sits on top: it
keeps per-key order by parking every later event of a key that has an entry in
the dead-letter queue, and isolates poison by splitting a rejected batch in
halves until the rejected events are found, so one bad record never blocks the
other 999.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from tidesync.clock import Clock
from tidesync.engine.breaker import CircuitBreaker
from tidesync.errors import (
    DeliveryError,
    PartialBatchError,
    PermanentError,
    SystemicError,
    TidesyncError,
    TransientError,
)
from tidesync.event import ChangeEvent, Key, Position
from tidesync.protocols import Context, Sink
from tidesync.retry import RetryPolicy
from tidesync.state.store import NewDeadLetter

log = logging.getLogger("tidesync.delivery")


class SerialSink:
    """A sink shared by its pipeline's writer and in-process dead-letter replays: one ``write`` at a time.

    A sink's methods are never called concurrently (the Sink contract); the
    runner wraps its sink in this so a replay from the admin API can use the
    pipeline's own open sink while the pipeline keeps writing.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.lock = asyncio.Lock()
        self.replay_writes = 0

    async def open(self, ctx: Context) -> None:
        await self.sink.open(ctx)

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        async with self.lock:
            self.replay_writes += replay
            await self.sink.write(events, replay=replay)

    async def close(self) -> None:
        await self.sink.close()


async def _guarded(sink: Sink, events: Sequence[ChangeEvent], replay: bool) -> None:
    """``sink.write``, with a foreign exception (a sink's bug, a value it cannot encode) made permanent.

    Such an exception concerns the events of this write, not the pipeline: the
    dead-letter policy splits the batch to find the event and parks it with
    the exception as its reason. A tidesync error other than a delivery error
    (a state store failure) still stops the pipeline.
    """
    try:
        await sink.write(events, replay=replay)
    except TidesyncError:
        raise
    except Exception as exc:  # RecursionError, TypeError, UnicodeEncodeError, ...
        raise PermanentError(f"the sink failed on this event: {type(exc).__name__}: {exc}") from exc


def _systemic_of(exc: PartialBatchError) -> SystemicError | None:
    for err in exc.failures.values():
        if isinstance(err, SystemicError):
            return err
    return None


class RetriesExhausted(DeliveryError):
    """A transient error outlived the retry policy; the events go to the dead-letter queue."""

    error_class = "transient"

    def __init__(self, last: BaseException, attempts: int) -> None:
        self.last = last
        self.attempts = attempts
        super().__init__(f"gave up after {attempts} attempts: {last}")


@dataclass(frozen=True, slots=True)
class RetryNotice:
    attempt: int
    error: str
    next_attempt_at: float


class RetryingWriter:
    """Writes through ``sink``, retrying TransientError (whole batch or per event) by ``policy``.

    ``on_retry`` is called before each wait (the pipeline shows "retrying" with
    the error and next attempt time); ``on_recover`` once a write succeeds after
    failures. Permanent per-event failures are collected and raised together as
    one PartialBatchError indexed into the original sequence, after every
    transient one was written or gave up.
    """

    def __init__(
        self,
        sink: Sink,
        policy: RetryPolicy,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        on_recover: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_retry = on_retry
        self.on_recover = on_recover
        self.retries = 0  # total retried attempts, for metrics

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        pending: list[int] = list(range(len(events)))
        permanent: dict[int, DeliveryError] = {}
        first_failure: list[float] = []
        failed_before = False

        def stop(rs: RetryCallState) -> bool:
            first = first_failure[0] if first_failure else 0.0
            return self.policy.gives_up(rs.attempt_number, first, self.clock.time())

        def wait(rs: RetryCallState) -> float:
            return self.policy.delay(rs.attempt_number, self.rng.random())

        def before_sleep(rs: RetryCallState) -> None:
            self.retries += 1
            exc = rs.outcome.exception() if rs.outcome else None
            delay = rs.next_action.sleep if rs.next_action else 0.0
            if self.on_retry is not None:
                self.on_retry(RetryNotice(rs.attempt_number, str(exc), self.clock.time() + delay))

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop,
            wait=wait,
            sleep=self.clock.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    batch = [events[i] for i in pending]
                    try:
                        await _guarded(self.sink, batch, replay)
                    except TransientError:
                        failed_before = True
                        if not first_failure:
                            first_failure.append(self.clock.time())
                        raise
                    except PartialBatchError as exc:
                        failed_before = True
                        still: list[int] = []
                        for local, err in sorted(exc.failures.items()):
                            original = pending[local]
                            if err.transient:
                                still.append(original)
                            else:
                                permanent[original] = err
                        pending = still
                        if pending:
                            if not first_failure:
                                first_failure.append(self.clock.time())
                            raise TransientError(f"{len(pending)} event(s) failed transiently") from exc
        except TransientError as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            exhausted = RetriesExhausted(exc, attempts)
            if not permanent:
                raise exhausted from exc
            for i in pending:
                permanent[i] = exhausted
        if failed_before and self.on_recover is not None:
            self.on_recover()
        if permanent:
            raise PartialBatchError(permanent)


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
    """Delivers events, parking what cannot be written and holding what no event could be; returns the new dead letters.

    Per-key order: ``parked`` maps the (entity, key) of every event waiting in
    the dead-letter queue for this sink to the newest position parked for it; a
    later event of such a key is parked behind it ("blocked") instead of
    overtaking it. Truncate events are never parked by key. An event of such a
    key at or before that position was handled (written, or parked) before a
    restart read it again, so it is dropped rather than parked twice.

    Durable before the sink moves past: a sink stores the position it applied
    with each write, so once a write after an isolated dead letter succeeds, a
    restart would skip that event. ``persist`` makes the letters of a delivery
    durable before its next write; ``saved`` names them (``id`` of each
    letter), and the caller commits only the others with its checkpoint.

    Holding: a :class:`SystemicError` (every event would fail: missing table,
    permission) parks nothing. The events of that write are held: the writer
    calls ``on_block`` once, then probes by writing the same events again,
    waiting ``probe`` backoff between attempts on the clock, until the write
    answers something else; then ``on_unblock`` and delivery goes on. The
    :class:`~tidesync.engine.breaker.CircuitBreaker` holds the same way once
    too many consecutive events failed with one error class. Events a sink
    reported failed one by one (a PartialBatchError) are probed with
    ``replay=True``: the sink may have stored a position past them. When
    ``stopping()`` turns true, a hold ends with :class:`HoldAborted`.
    """

    def __init__(
        self,
        writer: RetryingWriter,
        pipeline: str,
        sink_name: str,
        clock: Clock,
        *,
        breaker: CircuitBreaker | None = None,
        probe: RetryPolicy | None = None,
        rng: random.Random | None = None,
        on_block: Callable[[BlockNotice], None] | None = None,
        on_probe: Callable[[BlockNotice], None] | None = None,
        on_unblock: Callable[[BlockNotice], None] | None = None,
        stopping: Callable[[], bool] | None = None,
        persist: Callable[[Sequence[NewDeadLetter]], Awaitable[None]] | None = None,
    ) -> None:
        self.writer = writer
        self.pipeline = pipeline
        self.sink_name = sink_name
        self.clock = clock
        self.breaker = breaker or CircuitBreaker()
        self.probe = probe or RetryPolicy(initial_delay=1.0, max_delay=30.0)
        self.rng = rng or random.Random()
        self.on_block = on_block
        self.on_probe = on_probe
        self.on_unblock = on_unblock
        self.stopping = stopping
        self.parked: dict[tuple[str, Key], Position] = {}
        self.persist = persist
        self.saved: set[int] = set()  # id() of the letters of the last delivery made durable during it
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
        k = (event.entity, event.key)
        newest = self.parked.get(k)
        if newest is None or event.position > newest:
            self.parked[k] = event.position
        return self._letter(event, error_class, error, attempts)

    def behind(self, event: ChangeEvent) -> str | None:
        """Whether ``event`` must wait behind a dead letter of its key: "blocked", "handled" (read again
        after a restart, at or before the newest parked position of its key: drop it), or None."""
        if event.op == "truncate":
            return None
        newest = self.parked.get((event.entity, event.key))
        if newest is None:
            return None
        return "handled" if event.position and event.position <= newest else "blocked"

    async def deliver(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> list[NewDeadLetter]:
        letters: list[NewDeadLetter] = []
        self._letters, self._unsaved_from, self.saved = letters, 0, set()
        try:
            await self._deliver(self._unblocked(events, letters), letters, replay)
        finally:
            self._letters = []
        return letters

    def _unblocked(self, events: Sequence[ChangeEvent], letters: list[NewDeadLetter]) -> list[ChangeEvent]:
        if not self.parked:
            return list(events)
        out = []
        for ev in events:
            wait = self.behind(ev)
            if wait == "blocked":
                letters.append(self._letter(ev, "blocked", "waits behind an earlier dead-lettered event of this key"))
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
        self.saved.update(id(letter) for letter in new)

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
            await self._deliver(self._unblocked(events[mid:], letters), letters, replay)
        else:
            letters.append(self.park(events[0], _class_of(exc), str(exc)))
            for ev in events[1:]:  # a multi-event failure that is neither permanent nor per event
                letters.append(self.park(ev, _class_of(exc), str(exc)))
            self.breaker.failed(_class_of(exc), now)

    async def _hold(
        self, events: list[ChangeEvent], replay: bool, exc: DeliveryError
    ) -> tuple[list[ChangeEvent], bool, DeliveryError | None]:
        """Probe until the write answers something not to hold; the events, replay flag and answer then."""
        if self.stopping is not None and self.stopping():
            raise HoldAborted()
        events, replay, narrowed = _narrow(events, replay, exc)
        exc = narrowed or exc
        since = self.clock.time()
        breaker = None if _is_systemic(exc) else self.breaker.describe(since)
        entity = _entity_of(exc, events)
        notice = BlockNotice(_reason(exc), _class_of(exc), entity, len(events), since, breaker=breaker)
        self.held = notice
        if self.on_block is not None:
            self.on_block(notice)
        attempt = 0
        answer: DeliveryError | None = exc
        try:
            while True:
                attempt += 1
                delay = self.probe.delay(attempt, self.rng.random())
                notice = replace(notice, probes=attempt - 1, next_probe_at=self.clock.time() + delay)
                self.held = notice
                if self.on_probe is not None and attempt > 1:
                    self.on_probe(notice)
                await self.clock.sleep(delay)
                if self.stopping is not None and self.stopping():
                    raise HoldAborted()
                self.probes += 1
                answer = await self._try(events, replay)
                if answer is not None:
                    events, replay, answer = _narrow(events, replay, answer)
                if answer is None or not self._holds(answer, len(events)):
                    break
                notice = replace(notice, error=_reason(answer), error_class=_class_of(answer))
                log.debug("%s/%s: probe %d still fails: %s", self.pipeline, self.sink_name, attempt, answer)
        finally:
            self.held = None
        if self.on_unblock is not None:
            self.on_unblock(replace(notice, probes=attempt, next_probe_at=None))
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
