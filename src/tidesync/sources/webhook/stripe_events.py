"""Stripe's Events API as a backfill: the events a webhook endpoint missed while it was down.

``GET /v1/events?created[gt]=<unix s>&limit=100`` answers a list object
(``{"object": "list", "data": [...], "has_more": bool}``), newest first; the
next page is asked with ``starting_after=<id of the last event on this page>``.
Stripe keeps events for 30 days, so the window is capped there. Events come
back in the shape webhooks deliver, and are journaled like deliveries (the
journal drops the ones that did arrive).
"""

from __future__ import annotations

from typing import Any

import httpx

from tidesync.errors import SourceTransientError

MAX_WINDOW = 30 * 86400 - 600  # Stripe lists events of the last 30 days; keep a margin


class StripeEvents:
    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.transport = transport

    async def since(self, created_gt: int, *, max_pages: int = 1000) -> list[dict[str, Any]]:
        """Every event created after ``created_gt``, oldest first. Raises SourceTransientError."""
        params: dict[str, str] = {"created[gt]": str(int(created_gt)), "limit": "100"}
        out: list[dict[str, Any]] = []
        headers = {"Authorization": f"Bearer {self._api_key}"}
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, headers=headers, timeout=self.timeout, transport=self.transport
            ) as client:
                for _ in range(max_pages):
                    response = await client.get("/v1/events", params=params)
                    if response.status_code != 200:
                        raise SourceTransientError(
                            f"Stripe Events API answered {response.status_code}: {response.text[:200]}"
                        )
                    page = response.json()
                    data = page.get("data") if isinstance(page, dict) else None
                    if not isinstance(data, list):
                        raise SourceTransientError("Stripe Events API answered something that is not a list object")
                    out.extend(e for e in data if isinstance(e, dict) and isinstance(e.get("id"), str))
                    if not page.get("has_more") or not data:
                        break
                    params["starting_after"] = str(data[-1].get("id"))
        except httpx.HTTPError as exc:
            raise SourceTransientError(f"Stripe Events API: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise SourceTransientError("Stripe Events API answered invalid JSON") from exc
        out.sort(key=lambda e: (e["created"] if isinstance(e.get("created"), (int, float)) else 0, e["id"]))
        return out
