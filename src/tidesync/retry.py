"""Retry schedules and the one retry loop every part of tidesync uses.

:class:`RetryPolicy` is the schedule: exponential backoff with full jitter, limited by attempts and
by age. It is pure: the delay for an attempt takes the random draw and the age check takes ``now``,
so schedules are tested on a fake clock.

:meth:`RetryPolicy.attempts` is the loop::

    retry = policy.attempts(clock, classify=lambda exc: isinstance(exc, TransientError))
    async for attempt in retry:
        with attempt:
            await do_the_work()

An attempt whose body raises an error ``classify`` accepts is retried after the policy's delay; any
other error leaves the loop at once; a body that finishes ends the loop. When the policy gives up,
the last error leaves the loop as it was raised. ``on_retry`` (plain or async) sees each failure
before its wait, with the delay chosen, so a caller can show "retrying" and persist a status;
``stop`` cuts a wait short and ends the loop with :class:`RetryStopped`. After the loop,
``retry.failures`` says how many attempts failed (a caller logs a recovery when it is non-zero).

Written by hand rather than on tenacity: the loop needs the clock's sleep, a stop event that cuts a
wait short, async callbacks and the failure count after success; wrapping tenacity for that took
more code than the loop itself.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tidesync.clock import Clock


class RetrySettings(Protocol):
    """What :meth:`RetryPolicy.from_config` reads: ``tidesync.config.RetryConfig`` has these fields.

    Named structurally, not imported: the config module builds on much of tidesync.
    """

    @property
    def initial_delay(self) -> float: ...
    @property
    def max_delay(self) -> float: ...
    @property
    def multiplier(self) -> float: ...
    @property
    def jitter(self) -> str: ...
    @property
    def max_attempts(self) -> int | None: ...
    @property
    def max_age(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: str = "full"  # "full": uniform in [0, cap]; "none": the cap itself
    max_attempts: int | None = None  # None: no limit
    max_age: float | None = None  # seconds since the first failure; None: no limit

    def cap(self, attempt: int) -> float:
        """The upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        exp = min(attempt - 1, 1000)
        try:
            value = self.initial_delay * (self.multiplier**exp)
        except OverflowError:
            value = self.max_delay
        return min(self.max_delay, value)

    def delay(self, attempt: int, draw: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``; ``draw`` in [0, 1) is the jitter sample."""
        cap = self.cap(attempt)
        if self.jitter == "none":
            return cap
        if draw is None:
            draw = random.random()
        return cap * draw

    def gives_up(self, attempts: int, first_failure: float, now: float) -> bool:
        """True when no further attempt is allowed after ``attempts`` failed attempts."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return True
        return self.max_age is not None and now - first_failure >= self.max_age

    def attempts(
        self,
        clock: Clock,
        classify: Callable[[Exception], bool],
        *,
        on_retry: Callable[[Failure], Awaitable[None] | None] | None = None,
        stop: asyncio.Event | None = None,
        rng: random.Random | None = None,
    ) -> Retrying:
        """The retry loop on this schedule: ``async for attempt in policy.attempts(...)``."""
        return Retrying(self, clock, classify, on_retry=on_retry, stop=stop, rng=rng)

    @classmethod
    def from_config(cls, cfg: RetrySettings) -> RetryPolicy:
        return cls(
            initial_delay=cfg.initial_delay,
            max_delay=cfg.max_delay,
            multiplier=cfg.multiplier,
            jitter=cfg.jitter,
            max_attempts=cfg.max_attempts,
            max_age=cfg.max_age,
        )


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as ``on_retry`` sees it before the wait."""

    attempt: int  # 1-based number of the attempt that failed
    error: Exception
    delay: float  # seconds until the next attempt
    next_attempt_at: float  # clock.time() of the next attempt


class RetryStopped(Exception):
    """``stop`` was set while the loop waited; ``__cause__`` is the last failure."""


class Attempt:
    """One try: a context manager that swallows a retryable error for the loop to handle."""

    __slots__ = ("_loop", "number")

    def __init__(self, loop: Retrying, number: int) -> None:
        self._loop = loop
        self.number = number

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception) or not self._loop.classify(exc):
            return False
        self._loop._failed(exc)
        return True


class Retrying:
    """The loop state behind :meth:`RetryPolicy.attempts`; iterate it once."""

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Clock,
        classify: Callable[[Exception], bool],
        *,
        on_retry: Callable[[Failure], Awaitable[None] | None] | None = None,
        stop: asyncio.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.classify = classify
        self.on_retry = on_retry
        self.stop = stop
        self.rng = rng or random.Random()
        self.number = 0  # attempts started
        self.failures = 0  # attempts that failed with a retryable error
        self.first_failure: float | None = None
        self.last_error: Exception | None = None
        self._pending: Exception | None = None  # the failure of the attempt just finished

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = self.clock.time()
        self.last_error = exc
        self._pending = exc

    def __aiter__(self) -> Retrying:
        return self

    async def __anext__(self) -> Attempt:
        if self.number:
            error, self._pending = self._pending, None
            if error is None:
                raise StopAsyncIteration
            assert self.first_failure is not None
            if self.policy.gives_up(self.failures, self.first_failure, self.clock.time()):
                raise error
            delay = self.policy.delay(self.failures, self.rng.random())
            if self.on_retry is not None:
                shown = self.on_retry(Failure(self.number, error, delay, self.clock.time() + delay))
                if inspect.isawaitable(shown):
                    await shown
            if await self._wait(delay):
                raise RetryStopped(str(error)) from error
        self.number += 1
        return Attempt(self, self.number)

    async def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` on the clock; True when ``stop`` was set before or during the wait."""
        if self.stop is None:
            await self.clock.sleep(delay)
            return False
        if self.stop.is_set():
            return True
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({sleeper, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopped):
                task.cancel()
        return self.stop.is_set()
