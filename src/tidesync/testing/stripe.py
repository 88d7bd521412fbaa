"""A local stand-in for the Stripe API, served over real HTTP on loopback.

It follows the documented request and response shapes (what tidesync relies on):

- Stripe: list objects ``{"object": "list", "url", "has_more", "data"}``, newest first;
  ``limit`` 1..100; ``starting_after`` (older) / ``ending_before`` (the page just
  newer), not both; ``created[gt|gte|lt|lte]``; ``types[n]``; an unknown cursor id
  is a 400 ``resource_missing``; events older than 30 days are not listed;
  ``Authorization: Bearer <key>`` else 401.

It can answer 429 with Retry-After, or 5xx, for the next requests on demand (``faults``).

Writes (:mod:`.stripe_writes` says what they follow): ``POST /v1/customers``,
``/v1/products``, ``/v1/prices`` create (``GET /v1/customers?email=`` lists by email);
``POST /v1/<plural>/<id>`` updates;
``DELETE /v1/customers/<id>`` and ``/v1/products/<id>`` delete; ``GET
/v1/<plural>/<id>`` retrieves. Each write emits its event (``customer.created``,
``price.updated``, ``product.deleted`` ...) with ``previous_attributes`` and the
request's idempotency key, so the Events API lists what a sink wrote.

Test controls: ``rate_limit = (requests, seconds)`` answers 429 (with
``Retry-After``) to requests beyond that many in any window of that length;
``hold_after = n`` (or :meth:`hold`: from now) executes every write after the
first ``n`` but holds its answer until :meth:`release` (a client that dies
meanwhile made a call it never heard back from); ``outage = 503`` answers every
request so until set back to None; ``writes`` records each write answered (time, method, path,
idempotency key, status, replayed).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidesync.testing.http_fakes import Faults, Seen, _record
from tidesync.testing.stripe_writes import (
    IDEMPOTENCY_WINDOW,
    PREFIX,
    ApiError,
    check,
    merge_metadata,
    new_object,
    parse_form,
)

WINDOW = 30 * 86400


def stripe_error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    err: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code:
        err["code"] = code
    if param:
        err["param"] = param
    return JSONResponse({"error": err}, status)


@dataclass
class Write:
    """One write the fake answered."""

    at: float  # monotonic
    method: str
    path: str
    idempotency_key: str | None
    status: int
    replayed: bool


@dataclass
class _Saved:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]
    at: float


class FakeStripe:
    def __init__(self, keys: set[str] | None = None) -> None:
        self.keys = keys if keys is not None else {"sk_test_fake"}
        self.events: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self._order: dict[str, int] = {}  # object or event id -> creation sequence (list order within a second)
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._obj_ids = itertools.count(100001)
        self.seen: list[Seen] = []
        self.faults = Faults()
        self.time: int | None = None  # a fixed clock for created; None: the real time
        self.hidden: set[str] = set()  # event ids not listed yet (indexed late)
        self.seen_at: list[float] = []  # monotonic time of each request in ``seen`` (API requests only)
        self.rate_limit: tuple[int, float] | None = None
        self.throttled = 0  # 429s answered by the rate limit
        self._window: deque[float] = deque()
        self.hold_after: int | None = None
        self.held = 0  # answers held back so far
        self._gate: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.outage: int | None = None  # a status every request gets (503: Stripe down) until set back to None
        self._released = False
        self.executed = 0  # writes executed (not replayed, not refused before executing)
        self.writes: list[Write] = []
        self._saved: dict[tuple[str, str], _Saved] = {}
        self._created: list[dict[str, Any]] = []  # every object as created (deleted ones too)
        self.app = Starlette(
            routes=[
                Route("/v1/events", self._events),
                Route("/v1/{plural}", self._objects, methods=["GET", "POST"]),
                Route("/v1/{plural}/{obj_id}", self._object, methods=["GET", "POST", "DELETE"]),
            ]
        )

    def now(self) -> int:
        return self.time if self.time is not None else int(time.time())

    # changes, each with its event
    def _event(self, type_: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": dict(obj)}
        if prev is not None:
            data["previous_attributes"] = prev
        ev: dict[str, Any] = {"id": f"evt_{next(self._ids):06d}", "object": "event", "api_version": "2024-06-20",
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

    def created(self, object_type: str) -> list[dict[str, Any]]:
        """Every object of this type ever created through the API, as created (deleted ones too)."""
        return [dict(o) for o in self._created if o["object"] == object_type]

    def created_per(self, object_type: str, metadata_key: str = "tidesync_key") -> Counter[str]:
        """How many objects were created per value of a metadata key (a second creation shows as 2)."""
        return Counter(str(o["metadata"].get(metadata_key)) for o in self.created(object_type))

    def hold(self) -> None:
        """From now on, execute writes but hold their answers until :meth:`release` (any thread)."""
        self._released = False
        self.hold_after = self.executed

    def release(self) -> None:
        """Answer every held write, and hold no more (any thread)."""
        self._released = True
        self.hold_after = None
        gate, self._gate = self._gate, None
        if gate is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(gate.set)

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
        refused = await self._gatekeep(request)
        if refused is not None:
            return refused
        expired = self._expired()
        items = [e for e in self.events if e["id"] not in expired and e["id"] not in self.hidden]
        types = [v for k, v in request.query_params.multi_items() if k.startswith("types[")]
        if types:
            items = [e for e in items if e["type"] in types]
        return self._list(request, items, "/v1/events")

    def _throttle(self) -> JSONResponse | None:
        if self.rate_limit is None:
            return None
        limit, window = self.rate_limit
        now = time.monotonic()
        while self._window and self._window[0] <= now - window:
            self._window.popleft()
        if len(self._window) >= limit:
            self.throttled += 1
            wait = max(1, math.ceil(self._window[0] + window - now))
            return JSONResponse({"error": {"type": "invalid_request_error", "code": "rate_limit",
                                           "message": "Too many requests hit the API too quickly."}},
                                429, headers={"Retry-After": str(wait)})  # fmt: skip
        self._window.append(now)
        return None

    async def _gatekeep(self, request: Request) -> JSONResponse | None:
        """What every request meets first: the record, the rate limit, injected faults, the key."""
        await _record(request, self.seen)
        self.seen_at.append(time.monotonic())
        if self.outage is not None:
            return JSONResponse({"error": {"type": "api_error", "message": "outage"}}, self.outage)
        refused = self._throttle() or self.faults.take()
        if refused is not None:
            return refused
        if not self._authorized(request):
            return stripe_error(401, "Invalid API Key provided")
        return None

    async def _objects(self, request: Request) -> Response:
        refused = await self._gatekeep(request)
        if refused is not None:
            return refused
        plural = request.path_params["plural"]
        if request.method == "POST":
            return await self._write(request, plural, None)
        items = list(self.objects.get(plural.removesuffix("s"), {}).values())
        email = request.query_params.get("email")
        if plural == "customers" and email is not None:  # the documented filter: exact, case-sensitive
            items = [o for o in items if o.get("email") == email]
        return self._list(request, items, f"/v1/{plural}")

    async def _object(self, request: Request) -> Response:
        refused = await self._gatekeep(request)
        if refused is not None:
            return refused
        plural, obj_id = request.path_params["plural"], request.path_params["obj_id"]
        object_type = plural.removesuffix("s")
        if request.method == "GET":
            obj = self.objects.get(object_type, {}).get(obj_id)
            if obj is None:
                return ApiError(404, f"No such {object_type}: '{obj_id}'", "resource_missing", "id").response()
            return JSONResponse(obj)
        return await self._write(request, plural, obj_id)

    async def _write(self, request: Request, plural: str, obj_id: str | None) -> Response:
        object_type = plural.removesuffix("s")
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        body = await request.body()
        params = parse_form(body)
        saved_key = (request.headers.get("authorization", ""), key) if key else None
        if saved_key is not None:
            saved = self._saved.get(saved_key)
            if saved is not None and time.time() - saved.at < IDEMPOTENCY_WINDOW:
                if (saved.method, saved.path, saved.params) != (request.method, request.url.path, params):
                    err = ApiError(400, "Keys for idempotent requests can only be used with the same parameters "
                                   f"they were first used with. Try using a key other than '{key}' if you meant "
                                   "to execute a different request.", type_="idempotency_error")  # fmt: skip
                    return self._answer(request, key, err.status, err.body(), replayed=False)
                return self._answer(request, key, saved.status, saved.body, replayed=True)
        if object_type not in PREFIX or (request.method == "DELETE" and object_type == "price"):
            err = ApiError(404, f"Unrecognized request URL ({request.method}: {request.url.path}).")
            return self._answer(request, key, err.status, err.body(), replayed=False)
        request_id = f"req_{next(self._ids):014d}"
        try:
            status, answer = 200, self._execute(object_type, obj_id, request.method, params, key, request_id)
        except ApiError as err:
            if not err.saved:
                return self._answer(request, key, err.status, err.body(), replayed=False)
            status, answer = err.status, err.body()
        self.executed += 1
        if saved_key is not None:
            self._saved[saved_key] = _Saved(request.method, request.url.path, params, status, answer, time.time())
        if self.hold_after is not None and self.executed > self.hold_after and not self._released:
            self.held += 1
            if self._gate is None:
                self._gate, self._loop = asyncio.Event(), asyncio.get_running_loop()
            await self._gate.wait()
        return self._answer(request, key, status, answer, replayed=False, request_id=request_id)

    def _answer(self, request: Request, key: str | None, status: int, body: dict[str, Any], *, replayed: bool,
                request_id: str | None = None) -> JSONResponse:  # fmt: skip
        self.writes.append(Write(time.monotonic(), request.method, request.url.path, key, status, replayed))
        headers = {"Request-Id": request_id or f"req_{next(self._ids):014d}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(body, status, headers=headers)

    def _execute(self, object_type: str, obj_id: str | None, method: str, params: dict[str, Any],
                 key: str | None, request_id: str) -> dict[str, Any]:  # fmt: skip
        """Perform one write; its answer, or ApiError (``saved`` once execution began)."""
        store = self.objects.setdefault(object_type, {})
        request_info = {"id": request_id, "idempotency_key": key}
        if obj_id is None:  # create
            fields = check(object_type, params, update=False)
            if object_type == "price" and fields["product"] not in self.objects.get("product", {}):
                raise ApiError(400, f"No such product: '{fields['product']}'", "resource_missing", "product",
                               saved=True)  # fmt: skip
            new_id = fields.pop("id", None) or f"{PREFIX[object_type]}_{next(self._obj_ids)}"
            if new_id in store:
                raise ApiError(400, f"Object exists: {new_id}", "resource_already_exists", "id", saved=True)
            obj = new_object(object_type, new_id, self.now(), fields)
            store[new_id] = obj
            self._order[new_id] = next(self._seq)
            self._created.append(dict(obj))
            self._event(f"{object_type}.created", obj, None)["request"] = request_info
            return dict(obj)
        current = store.get(obj_id)
        if current is None:
            raise ApiError(404, f"No such {object_type}: '{obj_id}'", "resource_missing", "id", saved=True)
        obj = current
        if method == "DELETE":
            if object_type == "product" and any(
                p.get("product") == obj_id for p in self.objects.get("price", {}).values()
            ):
                raise ApiError(400, "This product cannot be deleted, because it has one or more user-created prices.",
                               saved=True)  # fmt: skip
            del store[obj_id]
            self._event(f"{object_type}.deleted", {**obj, "deleted": True} if object_type == "customer" else obj,
                        None)["request"] = request_info  # fmt: skip
            return {"id": obj_id, "object": object_type, "deleted": True}
        fields = check(object_type, params, update=True)
        fields.pop("transfer_lookup_key", None)
        if "metadata" in fields:
            fields["metadata"] = merge_metadata(obj.get("metadata") or {}, fields["metadata"])
        if "address" in fields and fields["address"] is not None and obj.get("address"):
            fields["address"] = {**obj["address"], **{k: v for k, v in params["address"].items()}}
            fields["address"] = {k: (v or None) for k, v in fields["address"].items()}
        prev = {k: obj.get(k) for k in fields if obj.get(k) != fields[k]}
        obj.update(fields)
        if object_type == "product":
            obj["updated"] = self.now()
        if prev:
            self._event(f"{object_type}.updated", obj, prev)["request"] = request_info
        return dict(obj)
