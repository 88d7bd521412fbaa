"""A local stand-in for the HubSpot CRM API, served over real HTTP on loopback.

It follows the documented request and response shapes (what tidesync relies on):

- HubSpot: ``POST /crm/v3/objects/{type}/search`` with ``filterGroups`` (AND within a
  group, OR across), one sort rule, ``limit``, ``after``; answers ``{total, results:
  [{id, properties, createdAt, updatedAt, archived}], paging: {next: {after}}}``;
  400 once ``after`` reaches the result ceiling (10,000). Records sharing a sort
  value come back in an arbitrary (hash) order, as real ties do.
  ``POST /oauth/v1/token`` (form) refreshes OAuth2 access tokens.

It can answer 429 with Retry-After, or 5xx, for the next requests on demand (``faults``).

The write side (records, property definitions, associations; see
:mod:`tidesync.testing.hubspot_crm`): ``/crm/v3/properties/{type}``,
``/crm/v3/objects/{type}/batch/{create,upsert,update,read,archive}`` (a read with
``propertiesWithHistory`` answers each property's values, newest first, 50 records at most), ``GET
/crm/v3/objects/{type}`` (paged; with ``archived=true`` the archived records instead, each with
``archived: true`` and ``archivedAt``: batch archive and :meth:`FakeHubSpot.archive` keep them),
``/crm/v4/associations/{from}/{to}/batch/{associate/default,archive}``,
``PUT /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}`` and
``GET /crm/v4/objects/{from}/{id}/associations/{to}``.
With ``rate_limit=(max, seconds)`` every answer carries ``X-HubSpot-RateLimit-Max``,
``-Remaining`` and ``-Interval-Milliseconds``, and a request beyond ``max`` in the
rolling interval gets 429 with ``Retry-After`` (whole seconds, rounded up). ``error_rate``
answers that share of requests (seeded) with 502 before doing anything; clearing
``gate`` holds write-side requests until it is set again.
:func:`serve_in_thread` serves the fake from a thread, so it outlives an engine
subprocess the test drives with blocking calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidesync.testing import wait_until
from tidesync.testing.http_fakes import Faults, Seen, _record
from tidesync.testing.hubspot_crm import UI_SOURCE, CrmStore

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
    return bool({"EQ": a == b, "NEQ": a != b, "GT": a > b, "GTE": a >= b, "LT": a < b, "LTE": a <= b}[op])


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
    def __init__(
        self,
        tokens: set[str] | None = None,
        ceiling: int = 10_000,
        *,
        rate_limit: tuple[int, float] | None = None,
        error_rate: float = 0.0,
        seed: int = 7,
        keep_bodies: bool = True,
    ) -> None:
        self.tokens = tokens if tokens is not None else {"pat-na1-fake"}
        self.ceiling = ceiling
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.archived: dict[str, dict[str, dict[str, Any]]] = {}  # type -> id -> record with archivedAt
        self.crm = CrmStore(self.records)
        self.seen: list[Seen] = []
        self.faults = Faults()
        self.rate_limit = rate_limit
        self.error_rate = error_rate
        self.keep_bodies = keep_bodies  # False: count requests only (benchmarks)
        self._rng = random.Random(seed)
        self._arrivals: collections.deque[float] = collections.deque()
        self.requests: collections.Counter[str] = collections.Counter()  # "batch/upsert", "associate", ... -> count
        self.injected = 0  # 5xx answered by error_rate
        self.limited = 0  # 429 answered by rate_limit
        self.gate = threading.Event()  # cleared: write-side requests wait (a slow destination)
        self.gate.set()
        self.client_id, self.client_secret = "client-1", "client-secret-1"
        self.refresh_tokens = {"refresh-1"}
        self.access: dict[str, float] = {}  # access token -> expires at (wall time)
        self.expires_in = 1800
        self.issued = 0
        self.app = Starlette(routes=[
            Route("/crm/v3/objects/{type}/search", self._search, methods=["POST"]),
            Route("/oauth/v1/token", self._token, methods=["POST"]),
            Route("/crm/v3/properties/{type}", self._guarded(self._properties), methods=["GET"]),
            Route("/crm/v3/objects/{type}", self._guarded(self._page), methods=["GET"]),
            Route("/crm/v3/objects/{type}/batch/{verb}", self._guarded(self._batch), methods=["POST"]),
            Route("/crm/v4/associations/{a}/{b}/batch/associate/default", self._guarded(self._associate),
                  methods=["POST"]),
            Route("/crm/v4/associations/{a}/{b}/batch/archive", self._guarded(self._unassociate), methods=["POST"]),
            Route("/crm/v4/objects/{a}/{id}/associations/default/{b}/{to}", self._guarded(self._associate_one),
                  methods=["PUT"]),
            Route("/crm/v4/objects/{a}/{id}/associations/{b}", self._guarded(self._list_associations),
                  methods=["GET"]),
        ])  # fmt: skip

    def upsert(self, object_type: str, record_id: int, modified_ms: int, **props: Any) -> None:
        """A person's edit in the HubSpot UI at ``modified_ms``: the record's properties set (created if new),
        its cursor property stamped, and the history of each property it changes kept at that time."""
        table = self.records.setdefault(object_type, {})
        rid = str(record_id)
        cursor = "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"
        old = table.get(rid)
        created = old["createdAt"] if old else iso_ms(modified_ms)
        merged = {**(old["properties"] if old else {"createdate": created}), **{k: str(v) for k, v in props.items()}}
        merged.update({"hs_object_id": rid, cursor: iso_ms(modified_ms)})
        self.crm.remember(object_type, rid, old["properties"] if old else {}, merged, iso_ms(modified_ms), UI_SOURCE)
        table[rid] = {"id": rid, "properties": merged, "createdAt": created, "updatedAt": iso_ms(modified_ms)}
        self.archived.get(object_type, {}).pop(rid, None)  # restored

    def archive(self, object_type: str, record_id: int | str, archived_ms: int | None = None) -> None:
        """Archive a record as the HubSpot UI does (at ``archived_ms``, default now): gone from search and lists,
        listed with ``archived=true``."""
        with self.crm.lock:
            rid = str(record_id)
            if rid not in self.records.get(object_type, {}):
                raise KeyError(rid)
            before = {rid: self.records[object_type][rid]}
            self.crm.archive(object_type, {"inputs": [{"id": rid}]})
            self._archived(object_type, before, archived_ms)

    def _archived(self, object_type: str, before: dict[str, Any], archived_ms: int | None = None) -> None:
        """Keep the records of ``before`` (id -> record) that an archive took away, stamped with ``archivedAt``."""
        table = self.records.get(object_type, {})
        at = iso_ms(archived_ms if archived_ms is not None else int(time.time() * 1000))
        for rid, record in before.items():
            if record is not None and rid not in table:
                self.archived.setdefault(object_type, {})[rid] = {**record, "archivedAt": at}

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

    # --- the write side -------------------------------------------------------------------------

    def _limit_headers(self, now: float) -> dict[str, str]:
        if self.rate_limit is None:
            return {}
        most, seconds = self.rate_limit
        return {"X-HubSpot-RateLimit-Max": str(most),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(seconds * 1000)),
                "X-HubSpot-RateLimit-Remaining": str(max(0, most - len(self._arrivals)))}  # fmt: skip

    def _throttle(self) -> Response | None:
        """A 429 when this request is over the rolling limit; else counts it."""
        if self.rate_limit is None:
            return None
        most, seconds = self.rate_limit
        now = time.monotonic()
        while self._arrivals and self._arrivals[0] <= now - seconds:
            self._arrivals.popleft()
        if len(self._arrivals) >= most:
            self.limited += 1
            wait = math.ceil(self._arrivals[0] + seconds - now)
            return JSONResponse({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                                 "errorType": "RATE_LIMIT", "category": "RATE_LIMITS",
                                 "policyName": "TEN_SECONDLY_ROLLING"}, 429,
                                headers={"Retry-After": str(max(1, wait)), **self._limit_headers(now)})  # fmt: skip
        self._arrivals.append(now)
        return None

    def _guarded(
        self, handler: Callable[[Request], Awaitable[tuple[int, Any]]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Record, pace, inject faults and check the token before ``handler``; answer in HubSpot's shapes."""

        async def route(request: Request) -> Response:
            if self.keep_bodies:
                await _record(request, self.seen)
            verb = request.path_params.get("verb")
            self.requests[f"{handler.__name__.lstrip('_')}{'/' + verb if verb else ''}"] += 1
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
            throttled = self._throttle()
            if throttled is not None:
                return throttled
            headers = self._limit_headers(time.monotonic())
            fault = self.faults.take()
            if fault is not None:
                return fault
            if self.error_rate and self._rng.random() < self.error_rate:
                self.injected += 1
                return JSONResponse({"status": "error", "message": "injected", "category": "INTERNAL_ERROR"}, 502,
                                    headers=headers)  # fmt: skip
            if not self._authorized(request):
                return JSONResponse({"status": "error", "category": "INVALID_AUTHENTICATION",
                                     "message": "Authentication credentials not found."}, 401)  # fmt: skip
            status, answer = await handler(request)
            if answer is None:
                return Response(status_code=status, headers=headers)
            return JSONResponse(answer, status, headers=headers)

        return route

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def _page(self, request: Request) -> tuple[int, Any]:
        """``GET /crm/v3/objects/<type>?limit=n&after=&properties=a,b&archived=true``: records in id order, a page
        at a time (``paging.next.after`` while more follow); ``properties`` names what each shows (default: every
        one); ``archived=true`` lists the archived records instead (``archived: true``, ``archivedAt``)."""
        q = request.query_params
        limit = int(q.get("limit", "10"))
        if not 1 <= limit <= 100:
            return 400, {"status": "error", "category": "VALIDATION_ERROR", "message": "limit: 1 to 100"}
        after = int(q.get("after") or 0)
        names = [n for n in (q.get("properties") or "").split(",") if n] or None
        archived = q.get("archived", "false").lower() == "true"
        with self.crm.lock:
            table = (self.archived if archived else self.records).get(request.path_params["type"], {})
            ids = sorted(int(i) for i in table if int(i) > after)
            rows = [self.crm._shown(table[str(i)], names) for i in ids[:limit]]
            if archived:
                for row in rows:
                    row.update(archived=True, archivedAt=table[row["id"]]["archivedAt"])
        answer: dict[str, Any] = {"results": rows}
        if len(ids) > limit:
            last = rows[-1]["id"]
            answer["paging"] = {"next": {"after": last, "link": f"?after={last}"}}
        return 200, answer

    async def _properties(self, request: Request) -> tuple[int, Any]:
        return self.crm.list_properties(request.path_params["type"])

    async def _batch(self, request: Request) -> tuple[int, Any]:
        verb, object_type = request.path_params["verb"], request.path_params["type"]
        body = await self._body(request)
        ops = {"upsert": self.crm.upsert, "update": self.crm.update, "read": self.crm.read,
               "archive": self.crm.archive, "create": self.crm.create}  # fmt: skip
        op = ops.get(verb)
        if op is None:
            return 404, {"status": "error", "message": f"no batch {verb}", "category": "OBJECT_NOT_FOUND"}
        if verb != "archive":
            return op(object_type, body)
        with self.crm.lock:  # the records archived are kept for the archived list
            table = self.records.get(object_type, {})
            inputs = body.get("inputs")
            ids = [str(i.get("id")) for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else []
            before = {rid: table.get(rid) for rid in ids}
            status, answer = op(object_type, body)
            self._archived(object_type, before)
            return status, answer

    async def _associate(self, request: Request) -> tuple[int, Any]:
        p = request.path_params
        return self.crm.associate(p["a"], p["b"], await self._body(request))

    async def _unassociate(self, request: Request) -> tuple[int, Any]:
        p = request.path_params
        return self.crm.unassociate(p["a"], p["b"], await self._body(request))

    async def _associate_one(self, request: Request) -> tuple[int, Any]:
        p = request.path_params
        status, answer = self.crm.associate(
            p["a"], p["b"], {"inputs": [{"from": {"id": p["id"]}, "to": {"id": p["to"]}}]}
        )
        if status == 207:
            return 400, answer["errors"][0]
        return status, answer

    async def _list_associations(self, request: Request) -> tuple[int, Any]:
        p = request.path_params
        spec = self.crm._spec(p["a"], p["b"])
        results = [{"toObjectId": int(t), "associationTypes": [{"category": spec["associationCategory"],
                    "typeId": spec["associationTypeId"], "label": None}]}
                   for t in self.crm.associated(p["a"], p["id"], p["b"])]  # fmt: skip
        return 200, {"results": results}

    # --- for tests --------------------------------------------------------------------------------

    def snapshot(self, object_type: str, names: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
        """Records of a type by id: their properties (only ``names``, when given), copied under the lock."""
        with self.crm.lock:
            return {rid: {k: r["properties"].get(k) for k in names} if names else dict(r["properties"])
                    for rid, r in self.records.get(object_type, {}).items()}  # fmt: skip


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) from a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="fake-api", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=10, message="the fake API server to start")
    if not server.started:
        raise RuntimeError("the fake API server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
