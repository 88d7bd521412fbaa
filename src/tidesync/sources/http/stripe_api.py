"""Stripe's REST API as tidesync reads it: list objects, the Events API, and a client factory.

Every list endpoint answers a list object ``{"object": "list", "data": [...],
"has_more": bool, "url": ...}``, newest first (reverse creation order).
``starting_after=<id>`` asks for the page after that object (older ones),
``ending_before=<id>`` for the page just before it (newer ones, still newest
first within the page); ``limit`` is 1 to 100; ``created[gt|gte|lt|lte]``
filter by creation time (unix seconds).

The Events API (``GET /v1/events``) lists the events of the last 30 days
(:data:`EVENTS_WINDOW`), in the shape webhooks deliver them. It is the change
feed of :mod:`tidesync.sources.http.stripe` and the backfill of the webhook
source after downtime (:meth:`StripeApi.events_since`).

Request shapes are checked against the official ``stripe`` package in the tests.
"""

from __future__ import annotations

from typing import Any, Protocol

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import SourceTransientError
from tidesync.secrets import Secret
from tidesync.sources.http.auth import BearerKey
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.config import HttpOptions, RateLimit
from tidesync.sources.http.ratelimit import TokenBucket

EVENTS_WINDOW = 30 * 86400  # Stripe lists events of the last 30 days
MAX_WINDOW = EVENTS_WINDOW - 600  # what a backfill asks for: a margin below the edge

Page = tuple[list[dict[str, Any]], bool]


def default_rate(api_key: str) -> float:
    """Stripe's documented read limits: 25 requests/s in test mode (``*_test_*`` keys), 100 live."""
    return 25.0 if "_test_" in api_key else 100.0


def stripe_client(
    name: str,
    base_url: str,
    api_key: Secret,
    *,
    rate_limit: RateLimit | None = None,
    http: HttpOptions | None = None,
    clock: Clock = SYSTEM_CLOCK,
    stripe_version: str | None = None,
) -> ApiClient:
    """An :class:`ApiClient` for Stripe: bearer key, paced at ``rate_limit`` (default by the key's mode)."""
    if rate_limit is not None:
        bucket = TokenBucket(rate_limit.per_second, rate_limit.burst, clock=clock)
    else:
        bucket = TokenBucket(default_rate(api_key.get()), clock=clock)
    opts = http or HttpOptions.model_validate({})
    return ApiClient(
        name,
        base_url,
        BearerKey(api_key, "Stripe API key"),
        bucket,
        max_attempts=opts.max_attempts,
        max_throttled=opts.max_throttled,
        timeout=opts.timeout,
        clock=clock,
        headers={"Stripe-Version": stripe_version} if stripe_version else None,
    )


class StripeAccess(Protocol):
    """How a Stripe source or sink configures its connection (their config models have these fields)."""

    base_url: str
    api_key: Secret
    rate_limit: RateLimit | None
    http: HttpOptions
    stripe_version: str | None


def configured_client(name: str, config: StripeAccess, clock: Clock) -> ApiClient:
    """:func:`stripe_client` as ``config`` sets it up."""
    return stripe_client(
        name, config.base_url, config.api_key, rate_limit=config.rate_limit, http=config.http, clock=clock,
        stripe_version=config.stripe_version,
    )  # fmt: skip


class StripeApi:
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    async def close(self) -> None:
        await self.client.close()

    async def page(self, path: str, params: dict[str, str]) -> Page:
        """One page of a list endpoint: ``(objects, has_more)``. Objects without a string id are dropped."""
        body = await self.client.get(path, params=params)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or body.get("object") != "list":
            raise SourceTransientError(f"{self.client.name}: GET {path} answered something that is not a list object")
        return [o for o in data if isinstance(o, dict) and isinstance(o.get("id"), str)], bool(body.get("has_more"))

    async def newest_event(self) -> dict[str, Any] | None:
        events, _ = await self.page("/v1/events", {"limit": "1"})
        return events[0] if events else None

    async def events_after(self, event_id: str, limit: int, types: list[str] | None = None) -> Page:
        """The ``limit`` events listed just after (newer than) ``event_id``, OLDEST first, and whether more follow."""
        events, more = await self.page(
            "/v1/events", _with_types({"ending_before": event_id, "limit": str(limit)}, types)
        )
        events.reverse()
        return events, more

    async def events_created_since(
        self, created: float, *, inclusive: bool = True, limit: int = 100, types: list[str] | None = None,
        max_pages: int = 1000,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Every event created at or after (``inclusive``) / after ``created``, OLDEST first, by list order."""
        params = _with_types(
            {f"created[{'gte' if inclusive else 'gt'}]": str(int(created)), "limit": str(limit)}, types
        )
        out: list[dict[str, Any]] = []
        for _ in range(max_pages):
            events, more = await self.page("/v1/events", params)
            out.extend(events)
            if not more or not events:
                break
            params["starting_after"] = events[-1]["id"]
        out.reverse()
        return out

    async def events_since(self, created_gt: int, *, max_pages: int = 1000) -> list[dict[str, Any]]:
        """The webhook backfill: every event created after ``created_gt``, oldest first (by created, then id)."""
        out = await self.events_created_since(created_gt, inclusive=False, max_pages=max_pages)
        out.sort(key=lambda e: (e["created"] if isinstance(e.get("created"), (int, float)) else 0, e["id"]))
        return out


def _with_types(params: dict[str, str], types: list[str] | None) -> dict[str, str]:
    # Stripe's own clients send arrays as types[0]=...&types[1]=...
    for i, t in enumerate(types or ()):
        params[f"types[{i}]"] = t
    return params
