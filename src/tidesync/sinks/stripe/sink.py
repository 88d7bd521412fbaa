"""The Stripe sink: rows become customers, products and prices, one request per change.

Requests (Stripe has no batch writes)
    insert / snapshot of an unmapped key -> ``POST /v1/<objects>`` (create); the new id goes to the ID map
    update (or insert of a mapped key)   -> ``POST /v1/<objects>/<id>`` with the changed fields only
    price whose immutable part changed   -> ``POST /v1/prices`` (the new price), then
                                            ``POST /v1/prices/<old id>`` ``active=false`` (:mod:`.prices`)
    delete of a customer                 -> ``DELETE /v1/customers/<id>``
    delete of a product                  -> ``DELETE /v1/products/<id>``; Stripe refuses (400) for a product
                                            that has prices, and then the product is archived (``active=false``)
    delete of a price                    -> archived (``active=false``): Stripe cannot delete prices
    truncate                             -> a permanent error (dead-lettered): nothing is deleted in bulk

Idempotency
    Every request carries ``Idempotency-Key: tidesync-<idempotency id>-<step>``,
    where the idempotency id is the one every tidesync sink derives from the
    pipeline, the sink and the event (:func:`~tidesync.sinks.webhook.envelope.idempotency_id`)
    and the step names the request within the event (``create``, ``update``,
    ``replace``, ``archive``, ``delete``). Stripe answers a repeated key with
    the same parameters with what it did the first time (within 24 hours).
    A create is also recorded in the ID map (:mod:`.idmap`) before it is sent;
    after a crash between the call and the checkpoint, the next event of that
    key (the same one read again, or the same row at a new position, as a
    resumed snapshot numbers it) sends that very request again first, so it
    never creates a second customer. The ID map also stores the position
    applied per key, so a replayed event at or before it is skipped without a
    request (except dead-letter replays, ``replay=True``).

Errors, translated here from :class:`~tidesync.sources.http.client.ApiClient`'s
    a 429 is waited out by the client (``Retry-After``; not an error); 5xx, 408,
    timeouts and lost connections are retried by the client, then TransientError;
    401/403 SystemicError (every event would fail: the pipeline blocks until the
    key is fixed); 409 (a concurrent request with the same key) TransientError;
    any other 4xx (``invalid_request_error``: a bad email, an unknown parameter)
    a PermanentError of that event only. Failures are reported per event with
    PartialBatchError; a later event of a failed key is not sent (it waits behind).

Order
    Events of one key are sent one at a time in source order, ``concurrency``
    keys at once. A price waits for the earlier events of its product in the
    same write, so it finds the product created there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

from tidesync.errors import (
    DeliveryError,
    PartialBatchError,
    PermanentError,
    SystemicError,
    TransientError,
)
from tidesync.event import DELETE, TRUNCATE, UPDATE, ChangeEvent, Key
from tidesync.protocols import Context
from tidesync.secrets import REDACTOR
from tidesync.sinks.blocked import behind
from tidesync.sinks.stripe import prices
from tidesync.sinks.stripe.config import StripeObject, StripeSinkConfig
from tidesync.sinks.stripe.forms import CONTENT_TYPE, encode
from tidesync.sinks.stripe.idmap import IdMap, Mapped, at_or_before, normal_position
from tidesync.sinks.stripe.params import PARAMETERS, build, key_text
from tidesync.sinks.webhook.envelope import idempotency_id
from tidesync.sources.http.client import ApiClient, ApiStatusError
from tidesync.sources.http.delivery import delivery_errors
from tidesync.sources.http.stripe_api import configured_client

log = logging.getLogger("tidesync.sinks.stripe")


class StripeRequestError(PermanentError):
    """Stripe refused one request (a 4xx other than 401/403/409/429); ``code`` is Stripe's error code."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(slots=True)
class _Item:
    index: int
    event: ChangeEvent
    after: int | None = None  # index of an earlier event of this write that must be applied first

    @property
    def key(self) -> tuple[str, Key]:
        return (self.event.entity, self.event.key)


class StripeSink:
    def __init__(self, config: StripeSinkConfig, *, client: ApiClient | None = None) -> None:
        self.config = config
        self.client = client
        self.pipeline = ""
        self.name = "sink"
        self.ids: IdMap | None = None
        self._down: SystemicError | None = None

    @property
    def requests(self) -> int:
        """Requests sent (retries included)."""
        return self.client.requests if self.client is not None else 0

    async def open(self, ctx: Context) -> None:
        self.pipeline, self.name = ctx.pipeline, ctx.name
        self.ids = IdMap(ctx.state, ctx.pipeline, ctx.name)
        if self.client is None:
            self.client = configured_client(f"stripe sink of {ctx.pipeline}", self.config, ctx.clock)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()

    # --- write ------------------------------------------------------------------------------

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        assert self.ids is not None and self.client is not None, "open() first"
        self._down = None
        self.ids.forget_cache()
        failures: dict[int, DeliveryError] = {}
        blocked: dict[tuple[str, Key], DeliveryError] = {}
        latest: dict[tuple[str, Key], int] = {}  # the last index of each key so far
        lanes: dict[int, list[_Item]] = {}
        for i, e in enumerate(events):
            item = _Item(i, e, self._depends_on(e, latest))
            latest[item.key] = i
            lanes.setdefault(hash(item.key) % self.config.concurrency, []).append(item)
        done = [asyncio.Event() for _ in events]
        try:
            # Every lane runs to its end even when one raises (a state store error): none is left running.
            ended = await asyncio.gather(
                *(self._lane(lane, failures, blocked, done, replay) for lane in lanes.values()), return_exceptions=True
            )
        finally:
            await self.ids.flush()  # before the engine's checkpoint (see idmap)
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
        if failures:
            raise PartialBatchError(failures)

    def _depends_on(self, event: ChangeEvent, latest: dict[tuple[str, Key], int]) -> int | None:
        """A price's last earlier event of its product in this write (it must be applied first), or None."""
        obj = self.config.objects.get(event.entity)
        if obj is None or obj.object != "prices" or obj.product_entity is None:
            return None
        row = event.row
        if obj.product_column not in row:
            return None
        return latest.get((obj.product_entity, (row[obj.product_column],)))

    async def _lane(
        self,
        lane: list[_Item],
        failures: dict[int, DeliveryError],
        blocked: dict[tuple[str, Key], DeliveryError],
        done: list[asyncio.Event],
        replay: bool,
    ) -> None:
        # A lane waits only for events earlier in the write, so the earliest unfinished event can always run.
        for item in lane:
            try:
                if item.after is not None:
                    await done[item.after].wait()
                await self._one(item, failures, blocked, replay)
            finally:
                done[item.index].set()

    async def _one(
        self,
        item: _Item,
        failures: dict[int, DeliveryError],
        blocked: dict[tuple[str, Key], DeliveryError],
        replay: bool,
    ) -> None:
        earlier = blocked.get(item.key)
        if earlier is not None:
            failures[item.index] = blocked[item.key] = behind(earlier, refusing="Stripe refuses the key")
            return
        if self._down is not None:
            failures[item.index] = SystemicError(f"not sent while Stripe refuses the key ({self._down})")
            return
        try:
            await self._apply(item.event, replay, blocked)
        except DeliveryError as err:
            failures[item.index] = blocked[item.key] = err
            if isinstance(err, SystemicError):
                self._down = err

    async def _apply(self, event: ChangeEvent, replay: bool, blocked: dict[tuple[str, Key], DeliveryError]) -> None:
        assert self.ids is not None
        obj = self.config.objects.get(event.entity)
        if obj is None:
            raise PermanentError(f"no Stripe object is mapped for entity {event.entity!r} (sink objects)")
        mapped = await self.ids.get(event.entity, event.key)
        if not replay and mapped is not None and mapped.pending is None and at_or_before(event.position, mapped.at):
            return  # applied before a restart; the checkpoint did not move past it
        idem = "tidesync-" + idempotency_id(self.pipeline, self.name, event).removeprefix("msg_")
        if event.op == TRUNCATE:
            raise PermanentError(f"truncate of {event.entity} is not applied to Stripe (delete the objects one by one)")
        if mapped is not None and mapped.pending is not None:
            mapped, source_event = await self._finish(event.entity, event.key, mapped)
            if source_event == idem:  # this very event's create, interrupted: now done
                self.ids.put(event.entity, event.key, replace(mapped, at=self._at(event, mapped)))
                return
        if event.op == DELETE:
            await self._delete(obj, event, mapped, idem)
        else:
            await self._upsert(obj, event, mapped, idem, blocked)

    def _at(self, event: ChangeEvent, mapped: Mapped | None) -> list[Any] | None:
        """The position to store: the event's, unless the stored one is newer (a dead-letter replay)."""
        if not event.position:
            return mapped.at if mapped is not None else None
        if mapped is not None and at_or_before(event.position, mapped.at):
            return mapped.at
        return normal_position(event.position)

    async def _create(
        self, event: ChangeEvent, mapped: Mapped | None, path: str, params: dict[str, Any], idem: str, step: str,
        fixed: str | None = None, old: str | None = None,
    ) -> Mapped:  # fmt: skip
        """Create an object: the request is recorded in the ID map, durably, before it is sent (see idmap)."""
        assert self.ids is not None
        intent = {"path": path, "body": encode(params).decode(), "key": f"{idem}-{step}", "event": idem,
                  "fixed": fixed, "old": old}  # fmt: skip
        base = mapped or Mapped(None)
        self.ids.put(event.entity, event.key, replace(base, pending=intent))
        await self.ids.flush()
        created, _ = await self._finish(event.entity, event.key, replace(base, pending=intent))
        return created

    async def _finish(self, entity: str, key: Key, mapped: Mapped) -> tuple[Mapped, str | None]:
        """Send a recorded create (again): Stripe replays its first answer for the same key and body.

        Returns the mapping to the created object and the idempotency id of the event that recorded it.
        A refusal (4xx) created nothing, so the record is dropped; a transient failure keeps it.
        """
        assert self.ids is not None and mapped.pending is not None
        intent = mapped.pending
        try:
            created = await self._send(entity, "POST", intent["path"], intent["body"].encode(), intent["key"])
        except StripeRequestError:
            self.ids.put(entity, key, replace(mapped, pending=None))
            raise
        new = Mapped(_id_of(created), mapped.at, intent.get("fixed"))
        old = intent.get("old")
        if old:  # a price replaced: the old one is archived (the same answer when asked twice)
            try:
                archive = encode({"active": False})
                await self._send(entity, "POST", f"/v1/prices/{old}", archive, intent["key"] + "-archive")
            except StripeRequestError as err:
                if err.status != 404:
                    raise
        self.ids.put(entity, key, new)
        event_id = intent.get("event")
        return new, event_id if isinstance(event_id, str) else None

    async def _upsert(
        self,
        obj: StripeObject,
        event: ChangeEvent,
        mapped: Mapped | None,
        idem: str,
        blocked: dict[tuple[str, Key], DeliveryError],
    ) -> None:
        assert self.ids is not None
        row = event.after or {}
        plural = obj.object
        skip = (obj.product_column,) if plural == "prices" else ()
        full = build(obj, row, tuple(row), skip=skip)
        if mapped is None or mapped.id is None:
            if plural == "prices" and obj.product_column in row:
                full["product"] = await self._product(obj, row[obj.product_column], blocked)
            if obj.key_metadata:
                full.setdefault("metadata", {})[obj.key_metadata] = key_text(event.key)
            fixed = prices.fingerprint(full) if plural == "prices" else None
            created = await self._create(event, mapped, f"/v1/{plural}", full, idem, "create", fixed)
            self.ids.put(event.entity, event.key, replace(created, at=self._at(event, mapped)))
            return
        fields = event.fields_to_write() if event.op == UPDATE else tuple(row)
        if plural == "prices":
            await self._price(obj, event, mapped, full, fields, idem, blocked)
            return
        params = build(obj, row, fields, before=event.before)
        if params:
            await self._call(event.entity, "POST", f"/v1/{plural}/{mapped.id}", params, idem, "update")
        self.ids.put(event.entity, event.key, replace(mapped, at=self._at(event, mapped)))

    async def _price(
        self, obj: StripeObject, event: ChangeEvent, mapped: Mapped, full: dict[str, Any], fields: Sequence[str],
        idem: str, blocked: dict[tuple[str, Key], DeliveryError],
    ) -> None:  # fmt: skip
        assert self.ids is not None and mapped.id is not None
        row = event.after or {}
        if obj.product_column in row:
            product = await self._product(obj, row[obj.product_column], blocked, quiet=True)
            if product is not None:
                full["product"] = product
        fixed = prices.fingerprint(full)
        if event.op == UPDATE:
            names = {f.split(".")[0] for f in fields}
            known = PARAMETERS["prices"]
            renewed = obj.product_column in fields or any(n in known and n not in prices.MUTABLE for n in names)
        else:  # a row of a mapped price read again (a re-snapshot): compare with what it was created from
            renewed = "product" in full and mapped.fixed is not None and fixed != mapped.fixed
        if renewed:
            if "product" not in full and obj.product_column in row:
                await self._product(obj, row[obj.product_column], blocked)  # raises why there is none
            new = prices.replacement(full)
            if obj.key_metadata:
                new.setdefault("metadata", {})[obj.key_metadata] = key_text(event.key)
            created = await self._create(event, mapped, "/v1/prices", new, idem, "replace", fixed, old=mapped.id)
            self.ids.put(event.entity, event.key, replace(created, at=self._at(event, mapped)))
            return
        params = prices.mutable_part(build(obj, row, fields, before=event.before, skip=(obj.product_column,)))
        if params:
            await self._call(event.entity, "POST", f"/v1/prices/{mapped.id}", params, idem, "update")
        self.ids.put(event.entity, event.key, replace(mapped, at=self._at(event, mapped), fixed=mapped.fixed or fixed))

    @overload
    async def _product(self, obj: StripeObject, value: Any, blocked: dict[tuple[str, Key], DeliveryError]) -> str: ...

    @overload
    async def _product(
        self, obj: StripeObject, value: Any, blocked: dict[tuple[str, Key], DeliveryError], *, quiet: bool
    ) -> str | None: ...

    async def _product(
        self, obj: StripeObject, value: Any, blocked: dict[tuple[str, Key], DeliveryError], *, quiet: bool = False
    ) -> str | None:
        """The Stripe id of the price's product: from the products entity's ID map, or a ``prod_`` id as given.

        None (``quiet``) or an error when there is none: never written, failed, or deleted.
        """
        assert self.ids is not None and obj.product_entity is not None
        key = (value,)
        mapped = await self.ids.get(obj.product_entity, key)
        if mapped is not None and mapped.id is not None:
            return mapped.id
        if isinstance(value, str) and value.startswith("prod_"):
            return value
        if quiet:
            return None
        earlier = blocked.get((obj.product_entity, key))
        if earlier is not None:
            raise behind(earlier, refusing="Stripe refuses the key")
        raise PermanentError(
            f"product {value!r} ({obj.product_entity}) has no Stripe product: it was never written, or was deleted"
        )

    async def _delete(self, obj: StripeObject, event: ChangeEvent, mapped: Mapped | None, idem: str) -> None:
        assert self.ids is not None
        if mapped is not None and mapped.id is not None:
            path = f"/v1/{obj.object}/{mapped.id}"
            try:
                if obj.object == "prices":
                    await self._call(event.entity, "POST", path, {"active": False}, idem, "archive")
                else:
                    try:
                        await self._call(event.entity, "DELETE", path, {}, idem, "delete")
                    except StripeRequestError as err:
                        if obj.object != "products" or err.status != 400:
                            raise
                        # Stripe deletes only a product without prices; one with prices is archived.
                        await self._call(event.entity, "POST", path, {"active": False}, idem, "archive")
            except StripeRequestError as err:
                if err.status != 404:
                    raise  # 404: gone already (deleted in Stripe, or by this delete before a crash)
        self.ids.put(event.entity, event.key, Mapped(None, self._at(event, mapped)))

    # --- the one boundary to the HTTP client ------------------------------------------------

    async def _call(self, entity: str, method: str, path: str, params: dict[str, Any], idem: str, step: str) -> Any:
        body = encode(params) if method != "DELETE" else None
        return await self._send(entity, method, path, body, f"{idem}-{step}")

    async def _send(self, entity: str, method: str, path: str, body: bytes | None, key: str) -> Any:
        assert self.client is not None
        headers = {"Idempotency-Key": key}
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
        with delivery_errors(_rejected, entity=entity, otherwise=PermanentError):
            return await self.client.request(method, path, content=body, headers=headers)


def _id_of(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        return str(body["id"])
    raise TransientError("Stripe answered a create without an object id")


def _rejected(exc: ApiStatusError) -> DeliveryError:
    if exc.status == 409:  # a request with the same key still running, or a lock timeout
        return TransientError(_stripe_message(exc))
    return StripeRequestError(_stripe_message(exc), exc.status, _error_field(exc.body, "code"))


def _error_field(body: Any, name: str) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    value = err.get(name) if isinstance(err, dict) else None
    return value if isinstance(value, str) else None


def _stripe_message(exc: ApiStatusError) -> str:
    parts = [_error_field(exc.body, n) for n in ("type", "code", "param")]
    message = _error_field(exc.body, "message")
    if message is None:
        return str(exc)
    what = str(exc).split(": answered", 1)[0]
    detail = ", ".join(p for p in parts if p)
    return REDACTOR.redact(f"{what}: Stripe answered {exc.status} ({detail}): {message}")
