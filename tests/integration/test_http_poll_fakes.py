"""Local stand-ins for the Stripe and HubSpot APIs, served over real HTTP on loopback by the tests.

They follow the documented request and response shapes (what tidesync relies on):

- Stripe: list objects ``{"object": "list", "url", "has_more", "data"}``, newest first;
  ``limit`` 1..100; ``starting_after`` (older) / ``ending_before`` (the page just
  newer), not both; ``created[gt|gte|lt|lte]``; ``types[n]``; an unknown cursor id
  is a 400 ``resource_missing``; events older than 30 days are not listed;
  ``Authorization: Bearer <key>`` else 401.
- HubSpot: ``POST /crm/v3/objects/{type}/search`` with ``filterGroups`` (AND within a
  group, OR across), one sort rule, ``limit``, ``after``; answers ``{total, results:
  [{id, properties, createdAt, updatedAt, archived}], paging: {next: {after}}}``;
  400 once ``after`` reaches the result ceiling (10,000). Records sharing a sort
  value come back in an arbitrary (hash) order, as real ties do.
  ``POST /oauth/v1/token`` (form) refreshes OAuth2 access tokens.

Both can answer 429 with Retry-After, or 5xx, for the next requests on demand.
(No tests here: this module holds fixtures for ``test_http_poll_*`` and ``test_hybrid_*``.)
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

WINDOW = 30 * 86400


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Faults:
    """Answers to give instead of the real one, for the next requests: (status, headers)."""

    queue: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)

    def take(self) -> JSONResponse | None:
        if not self.queue:
            return None
        status, headers = self.queue.popleft()
        return JSONResponse({"error": {"type": "api_error", "message": "injected"}}, status, headers=headers)


async def _record(request: Request, seen: list[Seen]) -> None:
    seen.append(Seen(request.method, request.url.path, list(request.query_params.multi_items()),
                     {k.lower(): v for k, v in request.headers.items()}, await request.body()))  # fmt: skip


# --- Stripe ------------------------------------------------------------------------------------


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


# --- HubSpot -----------------------------------------------------------------------------------

DATETIME_PROPS = {"hs_lastmodifieddate", "lastmodifieddate", "createdate"}
DEFAULT_PROPS = ("createdate", "hs_object_id", "hs_lastmodifieddate", "lastmodifieddate")  # returned unasked


def iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=100_000)
def _as_ms(value: str) -> int:
    return (
        int(value)
        if value.isdigit()
        else round(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    )


@functools.lru_cache(maxsize=100_000)
def _tie_order(record_id: str) -> bytes:
    return hashlib.md5(record_id.encode()).digest()


def _sortable(prop: str, value: Any) -> Any:
    if value is None:
        return (1, 0)
    if prop in DATETIME_PROPS:
        return (0, _as_ms(value))
    if prop == "hs_object_id":
        return (0, int(value))
    return (0, str(value))


def _matches(record: dict[str, Any], f: dict[str, Any]) -> bool:
    prop, op, value = f["propertyName"], f["operator"], f.get("value")
    have = record["properties"].get(prop)
    if op == "HAS_PROPERTY":
        return have is not None
    if have is None:
        return False
    cache = record.setdefault("_sortable", {})  # a record is replaced whole on every change
    a = cache.get(prop)
    if a is None:
        a = cache[prop] = _sortable(prop, have)
    b = _sortable(prop, str(value))
    return {"EQ": a == b, "NEQ": a != b, "GT": a > b, "GTE": a >= b, "LT": a < b, "LTE": a <= b}[op]


def search(records: dict[str, dict[str, Any]], body: dict[str, Any], ceiling: int = 10_000,
           max_limit: int = 200) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """HubSpot's search over ``records`` (id -> record): ``(status, answer)``. Pure, for unit tests too."""
    groups = body.get("filterGroups") or []
    sorts = body.get("sorts") or []
    limit = int(body.get("limit", 10))
    after = int(body.get("after") or 0)
    if len(groups) > 5 or len(sorts) > 1 or not 1 <= limit <= max_limit:
        return 400, {"status": "error", "category": "VALIDATION_ERROR", "message": "invalid search"}
    if after >= ceiling:
        return 400, {"status": "error", "category": "VALIDATION_ERROR",
                     "message": f"Cannot page past {ceiling} results"}  # fmt: skip
    hits = [r for r in records.values()
            if not groups or any(all(_matches(r, f) for f in g["filters"]) for g in groups)]  # fmt: skip
    if sorts:
        s = sorts[0]
        prop = s["propertyName"] if isinstance(s, dict) else s
        desc = isinstance(s, dict) and s.get("direction") == "DESCENDING"
        # ties in an arbitrary but stable order, as the real index gives them
        hits.sort(key=lambda r: _tie_order(r["id"]))
        hits.sort(key=lambda r: _sortable(prop, r["properties"].get(prop)), reverse=desc)
    wanted = body.get("properties")
    page = hits[after : after + limit]
    results = []
    for r in page:
        props = r["properties"]
        shown = {k: props.get(k) for k in wanted} if wanted else {k: props.get(k) for k in DEFAULT_PROPS if k in props}
        results.append({"id": r["id"], "properties": shown, "createdAt": r["createdAt"], "updatedAt": r["updatedAt"],
                        "archived": False})  # fmt: skip
    answer: dict[str, Any] = {"total": len(hits), "results": results}
    if after + limit < len(hits):
        answer["paging"] = {"next": {"after": str(after + limit), "link": "?after=" + str(after + limit)}}
    return 200, answer


class FakeHubSpot:
    def __init__(self, tokens: set[str] | None = None, ceiling: int = 10_000) -> None:
        self.tokens = tokens if tokens is not None else {"pat-na1-fake"}
        self.ceiling = ceiling
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.seen: list[Seen] = []
        self.faults = Faults()
        self.client_id, self.client_secret = "client-1", "client-secret-1"
        self.refresh_tokens = {"refresh-1"}
        self.access: dict[str, float] = {}  # access token -> expires at (wall time)
        self.expires_in = 1800
        self.issued = 0
        self.app = Starlette(routes=[
            Route("/crm/v3/objects/{type}/search", self._search, methods=["POST"]),
            Route("/oauth/v1/token", self._token, methods=["POST"]),
        ])  # fmt: skip

    def upsert(self, object_type: str, record_id: int, modified_ms: int, **props: Any) -> None:
        table = self.records.setdefault(object_type, {})
        rid = str(record_id)
        cursor = "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"
        old = table.get(rid)
        created = old["createdAt"] if old else iso_ms(modified_ms)
        merged = {**(old["properties"] if old else {"createdate": created}), **{k: str(v) for k, v in props.items()}}
        merged.update({"hs_object_id": rid, cursor: iso_ms(modified_ms)})
        table[rid] = {"id": rid, "properties": merged, "createdAt": created, "updatedAt": iso_ms(modified_ms)}

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if token in self.tokens:
            return True
        return token in self.access and self.access[token] > time.time()

    async def _search(self, request: Request) -> JSONResponse:
        await _record(request, self.seen)
        fault = self.faults.take()
        if fault is not None:
            return fault
        if not self._authorized(request):
            return JSONResponse({"status": "error", "category": "INVALID_AUTHENTICATION",
                                 "message": "Authentication credentials not found."}, 401)  # fmt: skip
        status, answer = search(self.records.get(request.path_params["type"], {}), await request.json(), self.ceiling)
        return JSONResponse(answer, status)

    async def _token(self, request: Request) -> JSONResponse:
        await _record(request, self.seen)
        form = dict(parse_qsl((await request.body()).decode()))  # application/x-www-form-urlencoded
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"status": "BAD_GRANT_TYPE", "message": "unsupported grant"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return JSONResponse({"status": "BAD_CLIENT_ID", "message": "missing or unknown client id"}, 400)
        if form.get("refresh_token") not in self.refresh_tokens:
            return JSONResponse({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}, 400)
        self.issued += 1
        token = f"access-{self.issued}"
        self.access[token] = time.time() + self.expires_in
        return JSONResponse({"token_type": "bearer", "refresh_token": form.get("refresh_token"),
                             "access_token": token, "expires_in": self.expires_in})  # fmt: skip
