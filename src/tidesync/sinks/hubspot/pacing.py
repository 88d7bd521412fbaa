"""HubSpot's ``X-HubSpot-RateLimit-*`` answer headers turned into holds on the client's token bucket.

HubSpot counts requests per app in a rolling interval and says so on every
answer: ``-Max`` requests per ``-Interval-Milliseconds``, ``-Remaining`` of
them left, and a per-second budget in ``-Secondly`` / ``-Secondly-Remaining``.
Waiting for the 429 would cost a refused request and a ``Retry-After`` hold;
instead, when ``-Remaining`` reaches 0 the bucket is held until the oldest of
the last ``Max`` answers this client saw leaves the interval (when fewer were
seen, other clients share the budget: one interval's share of a request),
and when ``-Secondly-Remaining`` reaches 0, for a second. A 429 still holds
the bucket for its ``Retry-After`` (the shared client does that).

This is an httpx transport wrapper, so the one HTTP client
(:class:`~tidesync.sources.http.client.ApiClient`) stays as it is.
"""

from __future__ import annotations

from collections import deque

import httpx

from tidesync.clock import Clock
from tidesync.sources.http.ratelimit import TokenBucket


def _int(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class RateLimitHeaders(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` and holds ``bucket`` as the answers' rate-limit headers say."""

    def __init__(self, bucket: TokenBucket, clock: Clock, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.bucket = bucket
        self.clock = clock
        self.inner = inner or httpx.AsyncHTTPTransport()
        self._answered: deque[float] = deque(maxlen=1000)  # monotonic times of answers (the server counted them)
        self.holds = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        now = self.clock.monotonic()
        self._answered.append(now)
        self.observe(response.headers, now)
        return response

    def observe(self, headers: httpx.Headers, now: float) -> None:
        remaining = _int(headers, "x-hubspot-ratelimit-remaining")
        most = _int(headers, "x-hubspot-ratelimit-max")
        interval_ms = _int(headers, "x-hubspot-ratelimit-interval-milliseconds")
        if remaining is not None and remaining <= 0 and most and interval_ms:
            interval = interval_ms / 1000
            # with fewer answers seen, other clients share the budget: wait one request's share of it
            wait = self._answered[-most] + interval - now if len(self._answered) >= most else interval / most
            if wait > 0:
                self.holds += 1
                self.bucket.hold(wait)
        if _int(headers, "x-hubspot-ratelimit-secondly-remaining") == 0:
            self.holds += 1
            self.bucket.hold(1.0)

    async def aclose(self) -> None:
        await self.inner.aclose()
