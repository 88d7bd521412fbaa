"""Retry schedules: pure, checked with hypothesis."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidesync.clock import SYSTEM_CLOCK
from tidesync.errors import PermanentError, TransientError
from tidesync.retry import Failure, RetryPolicy, RetryStopped
from tidesync.testing import FakeClock

policies = st.builds(
    RetryPolicy,
    initial_delay=st.floats(0.001, 10),
    max_delay=st.floats(0.01, 3600),
    multiplier=st.floats(1, 10),
    jitter=st.sampled_from(["full", "none"]),
)


@given(policies, st.integers(1, 2000), st.floats(0, 1, exclude_max=True))
def test_delay_is_within_zero_and_the_cap(policy: RetryPolicy, attempt: int, draw: float) -> None:
    d = policy.delay(attempt, draw)
    assert 0 <= d <= policy.cap(attempt) <= policy.max_delay


@given(policies, st.integers(1, 500))
def test_cap_never_shrinks_between_attempts(policy: RetryPolicy, attempt: int) -> None:
    assert policy.cap(attempt) <= policy.cap(attempt + 1)


def test_exponential_schedule_without_jitter() -> None:
    p = RetryPolicy(initial_delay=0.1, max_delay=1.0, multiplier=2, jitter="none")
    assert [round(p.delay(a), 6) for a in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_limits_by_attempts_and_by_age() -> None:
    p = RetryPolicy(max_attempts=3, max_age=60)
    assert not p.gives_up(2, first_failure=0, now=10)
    assert p.gives_up(3, first_failure=0, now=10)
    assert p.gives_up(1, first_failure=0, now=60)
    assert not RetryPolicy().gives_up(10**6, first_failure=0, now=10**9)  # unlimited by default


# --- the loop ----------------------------------------------------------------


def _transient(exc: Exception) -> bool:
    return isinstance(exc, TransientError)


async def test_loop_retries_retryable_errors_on_the_schedule_then_succeeds() -> None:
    clock = FakeClock()
    seen: list[Failure] = []
    policy = RetryPolicy(initial_delay=0.1, max_delay=1.0, jitter="none")
    retry = policy.attempts(clock, _transient, on_retry=seen.append)
    calls = 0
    async for attempt in retry:
        with attempt:
            calls += 1
            if calls < 4:
                raise TransientError(f"down {calls}")
    assert calls == 4 and retry.failures == 3
    assert clock.sleeps == [0.1, 0.2, 0.4]
    assert [(f.attempt, str(f.error), f.delay) for f in seen] == [
        (1, "down 1", 0.1),
        (2, "down 2", 0.2),
        (3, "down 3", 0.4),
    ]


async def test_loop_lets_other_errors_out_at_once() -> None:
    clock = FakeClock()
    calls = 0
    with pytest.raises(PermanentError):
        async for attempt in RetryPolicy().attempts(clock, _transient):
            with attempt:
                calls += 1
                raise PermanentError("bad")
    assert calls == 1 and clock.sleeps == []


async def test_loop_gives_up_with_the_last_error_and_awaits_async_callbacks() -> None:
    clock = FakeClock()
    shown: list[int] = []

    async def on_retry(failure: Failure) -> None:
        shown.append(failure.attempt)

    retry = RetryPolicy(max_attempts=3, jitter="none").attempts(clock, _transient, on_retry=on_retry)
    with pytest.raises(TransientError, match="down 3"):
        async for attempt in retry:
            with attempt:
                raise TransientError(f"down {attempt.number}")
    assert retry.number == 3 and shown == [1, 2]


async def test_stop_cuts_a_wait_short() -> None:
    stop = asyncio.Event()
    retry = RetryPolicy(initial_delay=3600, jitter="none").attempts(SYSTEM_CLOCK, _transient, stop=stop)
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(RetryStopped) as info:
        async for attempt in retry:
            with attempt:
                raise TransientError("down")
    assert isinstance(info.value.__cause__, TransientError) and retry.number == 1
