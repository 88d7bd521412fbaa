"""A local stand-in for the Stripe API, served over real HTTP on loopback.

It follows the documented request and response shapes (what tidesync relies on):

- Stripe: list objects ``{"object": "list", "url", "has_more", "data"}``, newest first;
  ``limit`` 1..100; ``starting_after`` (older) / ``ending_before`` (the page just
  newer), not both; ``created[gt|gte|lt|lte]``; ``types[n]``; an unknown cursor id
  is a 400 ``resource_missing``; events older than 30 days are not listed;
  ``Authorization: Bearer <key>`` else 401.

It can answer 429 with Retry-After, or 5xx, for the next requests on demand (``faults``).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidesync.testing.http_fakes import Faults, Seen, _record

WINDOW = 30 * 86400


def stripe_error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    err: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code:
        err["code"] = code
    if param:
        err["param"] = param
    return JSONResponse({"error": err}, status)


class FakeStripe:
    def __init__(self, keys: set[str] | None = None) -> None:
        self.keys = keys if keys is not None else {"sk_test_fake"}
        self.events: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self._order: dict[str, int] = {}  # object or event id -> creation sequence (list order within a second)
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self.seen: list[Seen] = []
        self.faults = Faults()
        self.time: int | None = None  # a fixed clock for created; None: the real time
        self.hidden: set[str] = set()  # event ids not listed yet (indexed late)
        self.app = Starlette(routes=[Route("/v1/events", self._events), Route("/v1/{plural}", self._objects)])

    def now(self) -> int:
        return self.time if self.time is not None else int(time.time())

    # changes, each with its event
    def _event(self, type_: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": dict(obj)}
        if prev is not None:
            data["previous_attributes"] = prev
        ev = {"id": f"evt_{next(self._ids):06d}", "object": "event", "api_version": "2024-06-20",
              "created": self.now(), "type": type_, "data": data, "livemode": False, "pending_webhooks": 1,
              "request": {"id": None, "idempotency_key": None}}  # fmt: skip
        self._order[ev["id"]] = next(self._seq)
        self.events.append(ev)
        return ev

    def create(self, object_type: str, obj_id: str, **fields: Any) -> dict[str, Any]:
        obj = {"id": obj_id, "object": object_type, "created": self.now(), **fields}
        self.objects.setdefault(object_type, {})[obj_id] = obj
        self._order[obj_id] = next(self._seq)
        return self._event(f"{object_type}.created", obj, None)

    def update(self, object_type: str, obj_id: str, **fields: Any) -> dict[str, Any]:
        obj = self.objects[object_type][obj_id]
        prev = {k: obj.get(k) for k in fields if obj.get(k) != fields[k]}
        obj.update(fields)
        return self._event(f"{object_type}.updated", obj, prev)

    def delete(self, object_type: str, obj_id: str) -> dict[str, Any]:
        obj = self.objects[object_type].pop(obj_id)
        return self._event(f"{object_type}.deleted", {**obj, "deleted": True}, None)

    def state(self, object_type: str) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.objects.get(object_type, {}).items()}

    # the API
    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.keys

    def _list(self, request: Request, items: list[dict[str, Any]], url: str) -> JSONResponse:
        q = request.query_params
        try:
            limit = int(q.get("limit", "10"))
        except ValueError:
            return stripe_error(400, "Invalid integer: limit", param="limit")
        if not 1 <= limit <= 100:
            return stripe_error(400, "This value must be between 1 and 100", param="limit")
        if "starting_after" in q and "ending_before" in q:
            return stripe_error(400, "Received both starting_after and ending_before parameters.")
        for op in ("gt", "gte", "lt", "lte"):
            raw = q.get(f"created[{op}]")
            if raw is not None:
                bound = int(raw)
                test = {"gt": bound.__lt__, "gte": bound.__le__, "lt": bound.__gt__, "lte": bound.__ge__}[op]
                items = [i for i in items if test(i["created"])]

        def rank(i: dict[str, Any]) -> tuple[int, int]:
            return (i["created"], self._order[i["id"]])

        items = sorted(items, key=rank, reverse=True)
        cursor_id = q.get("starting_after") or q.get("ending_before")
        if cursor_id is not None:
            if cursor_id not in self._order or cursor_id in self._expired():
                return stripe_error(400, f"No such object: '{cursor_id}'", "resource_missing",
                                    "starting_after" if "starting_after" in q else "ending_before")  # fmt: skip
            created = next((e["created"] for e in self.events if e["id"] == cursor_id), None)
            if created is None:
                created = next(o["created"] for objs in self.objects.values() for o in objs.values()
                               if o["id"] == cursor_id)  # fmt: skip
            mark = (created, self._order[cursor_id])
            if "starting_after" in q:
                rest = [i for i in items if rank(i) < mark]
                data, more = rest[:limit], len(rest) > limit
            else:
                before = [i for i in items if rank(i) > mark]
                data, more = before[-limit:], len(before) > limit
        else:
            data, more = items[:limit], len(items) > limit
        return JSONResponse({"object": "list", "url": url, "has_more": more, "data": data})

    def _expired(self) -> set[str]:
        floor = self.now() - WINDOW
        return {e["id"] for e in self.events if e["created"] < floor}

    async def _events(self, request: Request) -> JSONResponse:
        await _record(request, self.seen)
        fault = self.faults.take()
        if fault is not None:
            return fault
        if not self._authorized(request):
            return stripe_error(401, "Invalid API Key provided")
        expired = self._expired()
        items = [e for e in self.events if e["id"] not in expired and e["id"] not in self.hidden]
        types = [v for k, v in request.query_params.multi_items() if k.startswith("types[")]
        if types:
            items = [e for e in items if e["type"] in types]
        return self._list(request, items, "/v1/events")

    async def _objects(self, request: Request) -> JSONResponse:
        await _record(request, self.seen)
        fault = self.faults.take()
        if fault is not None:
            return fault
        if not self._authorized(request):
            return stripe_error(401, "Invalid API Key provided")
        plural = request.path_params["plural"]
        objects = self.objects.get(plural.removesuffix("s"), {})
        return self._list(request, list(objects.values()), f"/v1/{plural}")
