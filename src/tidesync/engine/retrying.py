"""The inner delivery wrapper: one write at a time, transient failures retried on a policy.

:class:`RetryingWriter` retries transient errors (the whole write, or the
events a :class:`~tidesync.errors.PartialBatchError` reports as transient)
with :meth:`tidesync.retry.RetryPolicy.attempts`, the one retry loop; the
clock's ``sleep`` waits, so a fake clock makes schedules testable. What it
cannot write it raises for :class:`~tidesync.engine.delivery.DeadLetterWriter`
to park or hold.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tidesync.clock import Clock
from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, TidesyncError, TransientError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context, Sink
from tidesync.retry import Failure, RetryPolicy


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


def _transient(exc: Exception) -> bool:
    return isinstance(exc, TransientError)


class RetryingWriter:
    """Writes through ``sink``, retrying TransientError (whole batch or per event) by ``policy``.

    ``on_retry`` is called before each wait (the pipeline shows "retrying" with
    the error and next attempt time); ``on_recover`` once a write goes through
    after failures (of this write, or of earlier writes that gave up).
    Permanent per-event failures are collected and raised together as one
    PartialBatchError indexed into the original sequence, after every
    transient one was written or gave up (then as :class:`RetriesExhausted`).
    A write whose every event gave up raises RetriesExhausted itself.
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
        self.failing = False  # a write failed transiently and none went through since

    def _retrying(self, failure: Failure) -> None:
        self.retries += 1
        self.failing = True
        if self.on_retry is not None:
            self.on_retry(RetryNotice(failure.attempt, str(failure.error), failure.next_attempt_at))

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        pending: Sequence[int] = range(len(events))
        permanent: dict[int, DeliveryError] = {}
        retry = self.policy.attempts(self.clock, _transient, on_retry=self._retrying, rng=self.rng)
        try:
            async for attempt in retry:
                with attempt:
                    batch = events if attempt.number == 1 else [events[i] for i in pending]
                    try:
                        await _guarded(self.sink, batch, replay)
                    except PartialBatchError as exc:
                        still: list[int] = []
                        for local, err in sorted(exc.failures.items()):
                            if err.transient:
                                still.append(pending[local])
                            else:
                                permanent[pending[local]] = err
                        pending = still
                        if pending:
                            raise TransientError(f"{len(pending)} event(s) failed transiently") from exc
        except TransientError as exc:
            exhausted = RetriesExhausted(exc, retry.number)
            if not permanent:
                raise exhausted from exc
            for i in pending:
                permanent[i] = exhausted
        else:
            if self.failing:  # the destination answers again
                self.failing = False
                if self.on_recover is not None:
                    self.on_recover()
        if permanent:
            raise PartialBatchError(permanent)
