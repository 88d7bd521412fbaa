"""Request pacing: a token bucket on an injected clock, and ``Retry-After`` as the server says it.

A :class:`TokenBucket` lets ``rate`` requests through per second on average
and up to ``burst`` at once after a quiet spell. A 429 answer *holds* the
bucket: nobody gets a token until the server's ``Retry-After`` has passed, so
every request of the connector backs off together (not only the one that was
refused). Time comes from a :class:`~tidesync.clock.Clock`, so schedules are
tested on a fake clock without real waiting.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import re

from tidesync.clock import SYSTEM_CLOCK, Clock

_EPSILON = 1e-6
# RFC 9110 delta-seconds (1*DIGIT), and a fraction some servers send; ASCII only, few enough digits for a float.
_SECONDS = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")
MAX_RETRY_AFTER = 86400.0  # a day: a longer wait asked by a server is taken as a day, not as for ever


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; one request takes one token.

    Callers are served in arrival order (an asyncio lock), so a burst of
    concurrent requests is spread out instead of racing for the next token.
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = max(1.0, float(burst) if burst is not None else self.rate)
        self.clock = clock
        self._tokens = self.burst
        self._at: float | None = None
        self._held_until = -math.inf
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting for tokens or holds (metrics, tests)

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_time(self, now: float) -> float:
        """Seconds from ``now`` (monotonic) until a token may be taken; 0 when one is there."""
        if now + _EPSILON < self._held_until:
            return self._held_until - now
        self._refill(now)
        # (a margin, so float rounding never leaves a wait too small to move a clock)
        return 0.0 if self._tokens >= 1 - _EPSILON else (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        async with self._lock:
            while True:
                delay = self.wait_time(self.clock.monotonic())
                if delay <= 0:
                    self._tokens -= 1
                    return
                self.waited += delay
                await self.clock.sleep(delay)

    def hold(self, seconds: float) -> None:
        """Give no token for ``seconds`` from now (a 429's Retry-After); then one, and the rate from there."""
        now = self.clock.monotonic()
        self._held_until = max(self._held_until, now + max(0.0, seconds))
        self._tokens = 1.0
        self._at = self._held_until


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (``now`` is wall time).

    The one reader of ``Retry-After`` (the API client here, the webhook sink's
    :func:`~tidesync.sinks.webhook.attempts.parse_retry_after`). Delta-seconds
    are ASCII digits, with a fraction allowed (``120``, ``1.5``): ``float()``
    alone would also take ``١٢``, ``1_0``, ``1e3``, ``inf`` or ``-5``, and
    ``str.isdigit`` takes ``²``, which ``float()`` refuses. None when the
    header is missing or unreadable (a destination's value is never an
    error); a date in the past is 0; at most :data:`MAX_RETRY_AFTER`.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text) is not None:
        return min(float(text), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(text)
        if moment.tzinfo is None:  # "-0000": RFC 9110 dates are GMT all the same
            moment = moment.replace(tzinfo=dt.UTC)
        return min(max(0.0, moment.timestamp() - now), MAX_RETRY_AFTER)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
