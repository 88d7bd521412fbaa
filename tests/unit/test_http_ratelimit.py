"""Request pacing on a fake clock: the token bucket, holds for 429s, and Retry-After in both forms."""

from __future__ import annotations

import asyncio
import email.utils
import itertools

import pytest

from tidesync.sinks.webhook.attempts import parse_retry_after as sink_retry_after
from tidesync.sources.http.ratelimit import MAX_RETRY_AFTER, TokenBucket, parse_retry_after
from tidesync.testing import FakeClock


async def test_the_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, burst=5, clock=clock)  # HubSpot's search limit: 5 per second
    stamps = []
    for _ in range(25):
        await bucket.acquire()
        stamps.append(clock.monotonic())
    assert stamps[:5] == [0.0] * 5  # the saved-up burst
    gaps = [b - a for a, b in itertools.pairwise(stamps[5:])]
    assert gaps == pytest.approx([0.2] * 19)
    assert stamps[-1] == pytest.approx(4.0)  # 25 requests: 5 at once, then 20 at 5/s
    # in any window of one second, no more than rate + burst requests
    assert max(sum(1 for t in stamps if s <= t < s + 1) for s in stamps) <= 10


async def test_a_quiet_spell_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(25, burst=3, clock=clock)
    for _ in range(3):
        await bucket.acquire()
    clock.advance(60)
    start = clock.monotonic()
    for _ in range(5):
        await bucket.acquire()
    assert clock.monotonic() - start == pytest.approx(2 / 25)  # 3 from the burst, then 2 at 25/s


async def test_a_hold_stops_every_caller_until_retry_after_has_passed() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, clock=clock)
    bucket.hold(30)
    times: list[float] = []

    async def request() -> None:
        await bucket.acquire()
        times.append(clock.monotonic())

    await asyncio.gather(*(request() for _ in range(3)))
    assert times[0] == pytest.approx(30.0)  # nobody went before the server said so
    assert times[1:] == pytest.approx([30.01, 30.02])  # then one at once, the rest at the rate


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 45, usegmt=True), now) == pytest.approx(45.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:20 -0000", now) == pytest.approx(0.0)  # that is now
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now) == 0.0  # past: go
    for bad in (None, "", "soon", "-5x", "nan"):
        assert parse_retry_after(bad, now) is None


# Not delta-seconds (ASCII digits, a fraction allowed) and not a date: "²" passes str.isdigit and fails
# float(); "١٢", "1_0", "1e3", "inf" and "-5" pass float() and are no delta-seconds either.
ODD_RETRY_AFTER = ["²", "¹²", "١٢", "1_0", "1e3", "inf", "-5", "+5", "0x10", "9" * 16, "1." + "5" * 10]


@pytest.mark.parametrize("value", ODD_RETRY_AFTER)
def test_a_retry_after_that_is_not_ascii_delta_seconds_is_unreadable_not_an_error(value: str) -> None:
    assert parse_retry_after(value, 1_700_000_000.0) is None


@pytest.mark.parametrize("value", ODD_RETRY_AFTER)
def test_the_webhook_sink_reads_retry_after_with_the_same_parser(value: str) -> None:
    # A destination's odd value is "no advice" (the sink's own backoff), never a ValueError out of a write.
    assert sink_retry_after(value, 1_700_000_000.0) == 0.0


def test_the_webhook_sink_caps_retry_after_at_a_day() -> None:
    now = 1_700_000_000.0
    assert sink_retry_after(" 120 ", now) == 120.0 and sink_retry_after("1.5", now) == 1.5
    assert sink_retry_after("999999999", now) == MAX_RETRY_AFTER
    assert sink_retry_after(email.utils.formatdate(now + 45, usegmt=True), now) == pytest.approx(45.0)
    assert sink_retry_after(None, now) == 0.0


def test_the_api_client_caps_retry_after_at_a_day() -> None:
    # An absurd delta (or a date years ahead) would otherwise hold every request of the client for ever.
    now = 1_700_000_000.0
    assert parse_retry_after("999999999999999", now) == MAX_RETRY_AFTER
    assert parse_retry_after(email.utils.formatdate(now + 10 * 86400, usegmt=True), now) == MAX_RETRY_AFTER
