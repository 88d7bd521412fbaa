"""Retry schedules: pure, checked with hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidesync.engine.retry import RetryPolicy

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
