"""A local stand-in for the HubSpot CRM API, served over real HTTP on loopback.

It follows the documented request and response shapes (what tidesync relies on):

- HubSpot: ``POST /crm/v3/objects/{type}/search`` with ``filterGroups`` (AND within a
  group, OR across), one sort rule, ``limit``, ``after``; answers ``{total, results:
  [{id, properties, createdAt, updatedAt, archived}], paging: {next: {after}}}``;
  400 once ``after`` reaches the result ceiling (10,000). Records sharing a sort
  value come back in an arbitrary (hash) order, as real ties do.
  ``POST /oauth/v1/token`` (form) refreshes OAuth2 access tokens.

It can answer 429 with Retry-After, or 5xx, for the next requests on demand (``faults``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidesync.testing.http_fakes import Faults, Seen, _record

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
