"""Stripe customers as a two-way sync side: the :class:`~tidesync.sync.endpoint.Endpoint` contract over the API.

Rows are customer objects as Stripe answers them (``id``, ``email``,
``name``, ``phone``, ``description``, ``balance``, ``address``,
``metadata``, ...), which is what the ``stripe`` source emits (an event's
``data.object``); the sync maps top-level attributes, a mapping
(``metadata``, ``address``) as one value. The key is ``(customer id,)``
(the side's ``key: id``): Stripe makes customer ids, so the sync keeps an ID
map and pairs existing customers by a match key (``match: {by: email}``).

Requests are the Stripe sink's: its client (:func:`~tidesync.sources.http.stripe_api.configured_client`,
paced by the side source's ``rate_limit``, 429s waited out), its form
encoding with nested keys (:mod:`.forms`) and its error translation. Stripe
has no batch writes and no conditional ones, so one :meth:`StripeEndpoint.apply`
call runs its ops in order, each a read then a write:

- update: ``GET /v1/customers/{id}``; each field is ``ok`` when it holds the
  expected value, ``already`` when it holds the new one, ``conflict``
  otherwise (``missing`` when the customer is gone); the ``ok`` fields that
  differ go in one ``POST /v1/customers/{id}``. A mapping is written whole:
  keys the customer holds and the value lacks are sent empty (Stripe unsets
  them). A value Stripe refuses (a malformed email: a 400) fails those fields.
- insert: ``POST /v1/customers`` with the row's non-empty values.
- delete: ``GET``, compared with the expected values (``conflict``), then
  ``DELETE /v1/customers/{id}``; a customer already gone is ``missing``.

Every POST carries an ``Idempotency-Key``, new for each op of each call and
the same on the client's own retries of that request (5xx, timeouts, lost
connections), so a request retried after a lost answer is answered by Stripe
from its first execution, never executed twice. A call the sync repeats (its
own retry after a failed call, or the same batch after a crash) compares
again: updates find their values (``already``), deletes nothing
(``missing``). Only a create cannot tell; before repeating one, the sync looks
for the customer with :meth:`StripeEndpoint.find` (by ``email``, ``GET
/v1/customers?email=``, when email is among the values; else a listing) and
adopts it, so a crash between the create and the sync's checkpoint never
makes a second customer.

Values are compared as the form text Stripe receives and answers (``42`` and
``"42"`` are one value; an empty text, an empty mapping and null are one).

No compare-and-set, and its window: the ``POST`` follows its ``GET`` by one
request. An edit of the same field made in Stripe in between is overwritten
(lost, not reported as a conflict); an edit of another field is kept, and
the ``stripe`` source reports it as usual.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import ConfigError, PermanentError, TransientError
from tidesync.event import Key, Row
from tidesync.sinks.stripe.forms import CONTENT_TYPE, encode, flatten
from tidesync.sinks.stripe.sink import StripeRequestError, _rejected
from tidesync.sources.http.config import StripeSourceConfig
from tidesync.sources.http.delivery import delivery_errors
from tidesync.sources.http.stripe_api import StripeApi, configured_client
from tidesync.sync.endpoint import DeleteOp, InsertOp, Op, OpResult, UpdateOp
from tidesync.sync.saas_endpoint import ApiSide

PATH = "/v1/customers"
MAX_FIND_PAGES = 100  # a find without an email lists at most this many pages of 100


def comparable(column: str, value: Any) -> frozenset[tuple[str, str]]:
    """``value`` of ``column`` as the form pairs Stripe would receive, empty ones left out."""
    return frozenset((k, t) for k, t in flatten({column: value}) if t != "")


def _same(column: str, x: Any, y: Any) -> bool:
    return comparable(column, x) == comparable(column, y)


def _params(column: str, value: Any, current: Any) -> dict[str, Any]:
    """The parameters that make ``column`` hold ``value``: a mapping's keys it lacks are sent empty (unset)."""
    if isinstance(value, Mapping) and isinstance(current, Mapping):
        gone = {str(k): "" for k, v in current.items() if k not in value and v not in (None, "")}
        return {column: {**gone, **value}}
    if value is None and isinstance(current, Mapping):
        return {column: ""}
    return {column: value}


class StripeEndpoint(ApiSide):
    """Stripe customers read and written as a sync side; see the module docstring (``writes``: POSTs and
    DELETEs sent)."""

    def __init__(self, config: StripeSourceConfig, key: Sequence[str], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.key = tuple(key)
        if self.key != ("id",):
            raise ConfigError(f"a stripe sync side's key is the customer id: key: id (not {list(self.key)})")
        self.clock = clock
        self.where = "Stripe customers"

    async def open(self, *, writes: bool = True) -> None:
        if self._client is None:
            self._client = configured_client("stripe sync side customers", self.config, self.clock)

    # --- the one boundary to the HTTP client ------------------------------------------------

    async def _ask(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        headers: dict[str, str] = {}
        body = None
        if method == "POST":
            body = encode(params or {})
            headers = {"Content-Type": CONTENT_TYPE, "Idempotency-Key": f"tidesync-sync-{uuid.uuid4().hex}"}
        with delivery_errors(_rejected, otherwise=PermanentError):
            answer = await self.client.request(method, path, content=body, headers=headers)
        if method != "GET":
            self.writes += 1
        return answer

    async def _get(self, customer: str) -> Row | None:
        try:
            found = await self._ask("GET", f"{PATH}/{customer}")
        except StripeRequestError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(found, dict) or found.get("deleted"):
            return None  # a deleted customer is retrieved as {id, deleted: true}
        return found

    async def _list(self, params: dict[str, str], max_pages: int) -> list[Row]:
        api = StripeApi(self.client)
        out: list[Row] = []
        params = {"limit": "100", **params}
        for _ in range(max_pages):
            with delivery_errors(_rejected, otherwise=PermanentError):
                page, more = await api.page(PATH, params)
            out.extend(page)
            if not more or not page:
                break
            params["starting_after"] = page[-1]["id"]
        return out

    # --- reads ------------------------------------------------------------------------------

    async def fetch(self, keys: Sequence[Key]) -> dict[Key, Row]:
        out: dict[Key, Row] = {}
        for k in dict.fromkeys(keys):
            row = await self._get(str(k[0]))
            if row is not None:
                out[(row["id"],)] = row
        return out

    async def find(self, values: Mapping[str, Any], limit: int = 20) -> list[tuple[Key, Row]]:
        """Customers holding ``values`` (by ``email`` when it is among them), newest first."""
        email = values.get("email")
        if isinstance(email, str) and email:
            rows = await self._list({"email": email}, MAX_FIND_PAGES)
        else:
            rows = await self._list({}, MAX_FIND_PAGES)
        hits = [r for r in rows if all(_same(c, r.get(c), v) for c, v in values.items())]
        return [((r["id"],), r) for r in hits[:limit]]

    async def scan(self, page_size: int = 5000) -> list[Row]:
        rows = await self._list({}, 1_000_000)
        return sorted(rows, key=lambda r: str(r["id"]))

    # --- writes -----------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        results: list[OpResult] = []
        for op in ops:
            if isinstance(op, UpdateOp):
                results.append(await self._update(op))
            elif isinstance(op, InsertOp):
                results.append(await self._insert(op))
            else:
                results.append(await self._delete(op))
        return results

    async def _update(self, op: UpdateOp) -> OpResult:
        customer = str(op.key[0])
        have = await self._get(customer)
        if have is None:
            return OpResult("missing", {f.column: "missing" for f in op.fields})
        status: dict[str, str] = {}
        params: dict[str, Any] = {}
        for f in op.fields:
            now = have.get(f.column)
            if f.conditional and not _same(f.column, now, f.expected):
                status[f.column] = "already" if _same(f.column, now, f.value) else "conflict"
                continue
            status[f.column] = "ok"
            if not _same(f.column, now, f.value):
                params.update(_params(f.column, f.value, now))
        if not params:
            return OpResult("ok", status)
        try:
            await self._ask("POST", f"{PATH}/{customer}", params)
        except StripeRequestError as exc:
            written = [c for c, s in status.items() if s == "ok"]
            outcome = "missing" if exc.status == 404 else "failed"
            return OpResult("ok", {**status, **dict.fromkeys(written, outcome)}, error=str(exc))
        return OpResult("ok", status)

    async def _insert(self, op: InsertOp) -> OpResult:
        if op.key is not None:
            return OpResult("failed", error=f"{self.where}: Stripe makes customer ids (the sides cannot share keys)")
        params = {c: v for c, v in op.row.items() if c != "id" and comparable(c, v)}
        try:
            made = await self._ask("POST", PATH, params)
        except StripeRequestError as exc:
            return OpResult("failed", error=str(exc))
        if not isinstance(made, dict) or not isinstance(made.get("id"), str):
            raise TransientError(f"{self.where}: Stripe answered a create without a customer id")
        return OpResult("ok", key=(made["id"],), row=made)

    async def _delete(self, op: DeleteOp) -> OpResult:
        customer = str(op.key[0])
        have = await self._get(customer)
        if have is None:
            return OpResult("missing")
        if any(not _same(c, have.get(c), v) for c, v in (op.expected or {}).items()):
            return OpResult("conflict")
        try:
            await self._ask("DELETE", f"{PATH}/{customer}")
        except StripeRequestError as exc:
            if exc.status == 404:
                return OpResult("missing")
            return OpResult("failed", error=str(exc))
        return OpResult("ok")
