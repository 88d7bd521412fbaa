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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from tidesync.clock import Clock
from tidesync.engine.retry import RetryPolicy
from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, TransientError
from tidesync.event import ChangeEvent, Key
from tidesync.protocols import Context, Sink
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
                        await self.sink.write(batch, replay=replay)
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


class DeadLetterWriter:
    """Delivers events, parking what cannot be written; returns the new dead letters.

    Per-key order: ``parked`` holds the (entity, key) of every event waiting in
    the dead-letter queue for this sink; a later event of such a key is parked
    behind it ("blocked") instead of overtaking it. Truncate events are never
    parked by key.
    """

    def __init__(self, writer: RetryingWriter, pipeline: str, sink_name: str, clock: Clock) -> None:
        self.writer = writer
        self.pipeline = pipeline
        self.sink_name = sink_name
        self.clock = clock
        self.parked: set[tuple[str, Key]] = set()
        self.writes = 0

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
        self.parked.add((event.entity, event.key))
        return self._letter(event, error_class, error, attempts)

    async def deliver(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> list[NewDeadLetter]:
        letters: list[NewDeadLetter] = []
        await self._deliver(self._unblocked(events, letters), letters, replay)
        return letters

    def _unblocked(self, events: Sequence[ChangeEvent], letters: list[NewDeadLetter]) -> list[ChangeEvent]:
        if not self.parked:
            return list(events)
        out = []
        parked = self.parked
        for ev in events:
            if ev.op != "truncate" and (ev.entity, ev.key) in parked:
                letters.append(self._letter(ev, "blocked", "waits behind an earlier dead-lettered event of this key"))
            else:
                out.append(ev)
        return out

    async def _deliver(self, events: list[ChangeEvent], letters: list[NewDeadLetter], replay: bool) -> None:
        if not events:
            return
        self.writes += 1
        try:
            await self.writer.write(events, replay=replay)
        except RetriesExhausted as exc:
            # The destination itself kept failing: park the whole batch, in order.
            log.warning("%s/%s: %s; %d event(s) dead-lettered", self.pipeline, self.sink_name, exc, len(events))
            for ev in events:
                letters.append(self.park(ev, "transient", str(exc.last), exc.attempts))
        except PartialBatchError as exc:
            for i, ev in enumerate(events):
                err = exc.failures.get(i)
                if err is not None:
                    letters.append(self.park(ev, err.error_class, str(err)))
        except PermanentError as exc:
            if len(events) == 1:
                letters.append(self.park(events[0], exc.error_class, str(exc)))
                return
            mid = len(events) // 2
            await self._deliver(events[:mid], letters, replay)
            await self._deliver(self._unblocked(events[mid:], letters), letters, replay)
