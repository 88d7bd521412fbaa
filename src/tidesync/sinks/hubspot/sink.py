"""The HubSpot sink: change events written to CRM objects through HubSpot's batch APIs.

Per event (its entity names the object through ``objects``):

- insert / snapshot / update of a record the ID map knows: ``batch/update`` by
  record id, with only the changed properties;
- the same for a record it does not know: ``batch/upsert`` by ``id_property``
  with every known property (an upsert finds the record a crashed write made,
  so a replay never creates it twice); the record id of the answer goes into the
  ID map (:mod:`.idmap`);
- delete: ``batch/archive`` by record id (looked up by ``tidesync_key`` through
  ``batch/read`` when the map has none; a record HubSpot never had is done);
- truncate: a permanent error (HubSpot has no such operation).

Then associations: a column listed under ``associations`` holds the source key
of another object's record; the record is associated with it (v4 default
association, ``batch/associate/default``), and a changed or cleared column
archives the association it made before.

Order and batching: events go in waves (:mod:`.plan`), at most ``batch_size``
(100) inputs per request, one request at a time, paced by the token bucket and
HubSpot's rate-limit headers (:mod:`.pacing`). The ID map is committed after
each wave that changed it, before the next one, and before an archive request
(the record is marked ``archiving``, so a crash right after the archive does
not create it anew).

Outcomes (see :mod:`.api` for how HTTP answers become errors):

- a value a property cannot hold (an enumeration value not among its
  options, a word for a number): that event fails permanently (dead letter),
  the others are written;
- an input a 207 answer lists as failed: that event fails with HubSpot's
  message (permanently, or transiently for rate-limit and internal categories);
- a 400 naming a property: the property model is read again and the request
  re-sent once; a column whose property does not exist is systemic (every
  event of the object would fail: the pipeline blocks until it is created or
  excluded); any other 4xx is bisected down to the inputs it refuses;
- 401/403: systemic; 5xx and lost connections after the client's retries:
  transient for the events not yet written.

An event after a failed event of the same key is not sent and fails the same
way (``blocked`` behind a permanent failure), so per-key order holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import httpx

from tidesync.errors import (
    DeliveryError,
    PartialBatchError,
    PermanentError,
    StateStoreError,
    SystemicError,
    TransientError,
)
from tidesync.event import ChangeEvent, Key
from tidesync.protocols import Context
from tidesync.sinks.blocked import behind
from tidesync.sinks.hubspot.api import BatchAnswer, HubSpotApi, Rejected
from tidesync.sinks.hubspot.config import KEY_PROPERTY, HubSpotObjectSpec, HubSpotSinkConfig
from tidesync.sinks.hubspot.idmap import Entry, IdMap
from tidesync.sinks.hubspot.links import Associations
from tidesync.sinks.hubspot.pacing import RateLimitHeaders
from tidesync.sinks.hubspot.plan import Item, chunks, key_text, waves
from tidesync.sinks.hubspot.properties import CastError, PropertyModel
from tidesync.sources.http.auth import BearerKey
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.ratelimit import TokenBucket

log = logging.getLogger("tidesync.sinks.hubspot")


class HubSpotSink:
    """See the module docstring."""

    def __init__(self, config: HubSpotSinkConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.transport = transport
        self._ctx: Context | None = None
        self._client: ApiClient | None = None
        self._api: HubSpotApi | None = None
        self._ids: IdMap | None = None
        self._links: Associations | None = None
        self._models: dict[str, PropertyModel] = {}
        self._refreshed: set[str] = set()  # object types whose model was read again in this write
        self.pacing: RateLimitHeaders | None = None
        self._sent = 0  # requests of clients closed before

    @property
    def requests(self) -> int:
        """Requests sent, retries included, since this sink was made (benchmarks, tests)."""
        return self._sent + (self._client.requests if self._client is not None else 0)

    async def open(self, ctx: Context) -> None:
        self._ctx = ctx
        rl, opts = self.config.rate_limit, self.config.http
        bucket = TokenBucket(rl.per_second, rl.burst, clock=ctx.clock)
        self.pacing = RateLimitHeaders(bucket, ctx.clock, self.transport)
        self._client = ApiClient(
            f"hubspot sink {ctx.pipeline}/{ctx.name}", self.config.base_url,
            BearerKey(self.config.token, "HubSpot access token"), bucket,
            max_attempts=opts.max_attempts, max_throttled=opts.max_throttled, timeout=opts.timeout,
            clock=ctx.clock, transport=self.pacing,
        )  # fmt: skip
        self._api = HubSpotApi(self._client)
        self._ids = IdMap(ctx.state, ctx.pipeline, ctx.name)
        self._links = Associations(self.config, self._api, self._ids)
        try:
            await self._ids.load()
        except StateStoreError as exc:
            raise TransientError(f"cannot read the HubSpot ID map: {exc}") from exc
        self._models = {}

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._sent += client.requests
            await client.close()

    @property
    def api(self) -> HubSpotApi:
        assert self._api is not None, "open() first"
        return self._api

    @property
    def links(self) -> Associations:
        assert self._links is not None, "open() first"
        return self._links

    @property
    def ids(self) -> IdMap:
        assert self._ids is not None, "open() first"
        return self._ids

    # --- property model ---------------------------------------------------------------------------

    async def _model(self, object_type: str, *, refresh: bool = False) -> PropertyModel:
        model = self._models.get(object_type)
        if model is None or refresh:
            try:
                found = await self.api.properties(object_type)
            except Rejected as exc:  # an object type HubSpot does not have, a missing schema scope
                raise SystemicError(f"cannot read the properties of HubSpot {object_type}: {exc}") from exc
            model = PropertyModel.from_api(object_type, found)
            self._models[object_type] = model
            if refresh:
                self._refreshed.add(object_type)
        return model

    async def _checked_model(self, entity: str, spec: HubSpotObjectSpec, names: Iterable[str]) -> PropertyModel:
        """The model of ``spec.type``, read again once per write when it lacks a name; SystemicError if still so."""
        wanted = set(names)
        model = await self._model(spec.type)
        if model.missing(wanted) and spec.type not in self._refreshed:
            model = await self._model(spec.type, refresh=True)
        missing = model.missing(wanted)
        if missing:
            raise SystemicError(
                f"HubSpot {spec.type} have no propert{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
                f"(from {entity}): create {'it' if len(missing) == 1 else 'them'} in HubSpot, or add the "
                f"column{'s' if len(missing) > 1 else ''} to objects.{entity}.exclude",
                entity=entity,
            )
        return model

    def _key_columns(self, entity: str) -> frozenset[str]:
        """The entity's primary-key columns, as its source published them (empty when it did not)."""
        schema = self._ctx.schemas.get(entity) if self._ctx is not None else None
        return frozenset(schema.primary_key) if schema is not None else frozenset()

    # --- write ------------------------------------------------------------------------------------

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        self._refreshed = set()
        failures: dict[int, DeliveryError] = {}
        failed_keys: dict[tuple[str, Key], DeliveryError] = {}
        done: set[int] = set()
        if not replay:  # a re-delivery of what was written already: skipped, so later edits in HubSpot stay
            done = {
                i
                for i, e in enumerate(events)
                if self.ids.done(e.position) or self.ids.archived(e.entity, e.key, e.position)
            }
        try:
            for wave in waves(events, done):
                items: list[Item] = []
                for i in wave:
                    ev = events[i]
                    earlier = failed_keys.get((ev.entity, ev.key))
                    if earlier is not None:
                        failures[i] = behind(earlier)
                        continue
                    try:
                        item = await self._prepare(i, ev)
                    except (SystemicError, TransientError):
                        raise
                    except DeliveryError as exc:
                        failures[i] = exc
                        failed_keys[(ev.entity, ev.key)] = exc
                        continue
                    if item is None:
                        done.add(i)
                    else:
                        items.append(item)
                wave_failures: dict[int, DeliveryError] = {}
                await self._send_records(items, wave_failures)
                await self.links.write([it for it in items if it.index not in wave_failures], wave_failures)
                for it in items:
                    if it.index in wave_failures:
                        failures[it.index] = wave_failures[it.index]
                        failed_keys[it.key] = wave_failures[it.index]
                    else:
                        done.add(it.index)
                await self._flush()
        except TransientError as exc:
            pending = {i: failures.get(i, exc) for i in range(len(events)) if i not in done}
            self._advance(events, pending)
            await self._flush_quietly()
            if len(pending) == len(events) and not failures:
                raise
            raise PartialBatchError(pending) from exc
        except SystemicError:
            await self._flush_quietly()
            raise
        self._advance(events, failures)
        await self._flush()
        if failures:
            raise PartialBatchError(failures)

    def _advance(self, events: Sequence[ChangeEvent], failures: dict[int, DeliveryError]) -> None:
        """Move the applied position over the events before the first that will be sent again (a transient one)."""
        for i, e in enumerate(events):
            err = failures.get(i)
            if err is not None and err.transient:
                return
            self.ids.advance(e.position)

    async def _flush(self) -> None:
        try:
            await self.ids.flush()
        except StateStoreError as exc:
            raise TransientError(f"cannot store the HubSpot ID map: {exc}") from exc

    async def _flush_quietly(self) -> None:
        try:
            await self.ids.flush()
        except StateStoreError as exc:
            log.warning("cannot store the HubSpot ID map: %s", exc)

    async def _prepare(self, index: int, ev: ChangeEvent) -> Item | None:
        """What to send for one event (None: nothing to send); raises a DeliveryError for a bad event."""
        spec = self.config.objects.get(ev.entity)
        if spec is None:
            known = ", ".join(self.config.objects)
            raise PermanentError(f"no HubSpot object is configured for {ev.entity} (objects: {known})")
        if ev.op == "truncate":
            raise PermanentError(f"{ev.entity}: HubSpot has no truncate; archive the records one by one")
        entry = self.ids.get(ev.entity, ev.key)
        if ev.op == "delete":
            return Item(index, ev, spec, "archive", record_id=entry.id if entry else None)
        row = ev.after or {}
        fields = ev.fields_to_write() if entry is not None else tuple(row)
        skip = set(spec.exclude) | set(spec.associations)
        columns = [c for c in fields if c in row and c not in skip]
        key_columns = self._key_columns(ev.entity)
        if key_columns:  # a source's primary key (a serial id) is sent only where HubSpot has that property
            current = await self._model(spec.type)
            columns = [c for c in columns if c not in key_columns or current.get(spec.property_of(c)) is not None]
        names = [spec.property_of(c) for c in columns]
        model = await self._checked_model(ev.entity, spec, [*names, spec.id_property])
        properties: dict[str, str] = {}
        for column, name in zip(columns, names, strict=True):
            try:
                properties[name] = model.cast(name, row[column])
            except CastError as exc:
                raise CastError(f"{ev.entity} {list(ev.key)} column {column}: {exc}") from None
        if entry is not None:
            touches_links = any(c in row for c in spec.associations if c in fields)
            if not properties and not touches_links:
                return None
            return Item(index, ev, spec, "update", properties, record_id=entry.id)
        if spec.id_property == KEY_PROPERTY:
            id_value = key_text(ev.key)
        else:
            id_value = properties.get(spec.id_property, "")
            if not id_value:
                raise PermanentError(
                    f"{ev.entity} {list(ev.key)}: no value for {spec.id_property}, the property upserts match on"
                )
        return Item(index, ev, spec, "upsert", properties, id_value=id_value)

    # --- records ----------------------------------------------------------------------------------

    async def _send_records(self, items: list[Item], failures: dict[int, DeliveryError]) -> None:
        groups: dict[tuple[str, str, str], list[Item]] = {}
        for it in items:
            groups.setdefault((it.spec.type, it.action, it.spec.id_property), []).append(it)
        for (object_type, action, _), group in groups.items():
            if action == "archive":
                await self._resolve(object_type, group)
                group = [it for it in group if it.record_id is not None]  # never in HubSpot: done
                for it in group:  # durable before the request: a crash after it must not re-create (see idmap)
                    self.ids.archiving(*it.key, str(it.record_id), it.event.position)
                if group:
                    await self._flush()
            for part in chunks(group, self.config.batch_size):
                await self._send(object_type, action, list(part), failures)

    async def _resolve(self, object_type: str, group: list[Item]) -> None:
        """Record ids of archived records the ID map lacks, looked up by their ``id_property`` value: the
        source key for ``tidesync_key``, else the value in the delete's before image, when it has one."""
        unknown: list[Item] = []
        for it in group:
            if it.record_id is not None:
                continue
            if it.spec.keyed_by_source:
                it.id_value = key_text(it.event.key)
            else:
                before = it.event.before or {}
                column = next((c for c in before if it.spec.property_of(c) == it.spec.id_property), None)
                it.id_value = str(before[column]) if column is not None and before[column] is not None else ""
            if it.id_value:
                unknown.append(it)
        for part in chunks(unknown, self.config.batch_size):
            found = await self.api.read(object_type, [it.id_value for it in part], part[0].spec.id_property)
            for it in part:
                it.record_id = found.get(it.id_value)

    async def _send(self, object_type: str, action: str, part: list[Item], failures: dict[int, DeliveryError]) -> None:
        try:
            answer = await self._request(object_type, action, part)
        except Rejected as exc:
            if exc.status == 400 and exc.property_names() and object_type not in self._refreshed:
                log.info("HubSpot refused %s properties %s; reading its property model again", object_type,
                         sorted(exc.property_names()))  # fmt: skip
                await self._model(object_type, refresh=True)
                await self._recast(part, failures)
                part = [it for it in part if it.index not in failures]
                if part:
                    await self._send(object_type, action, part, failures)
                return
            if len(part) > 1:  # find the inputs it refuses
                mid = len(part) // 2
                await self._send(object_type, action, part[:mid], failures)
                await self._send(object_type, action, part[mid:], failures)
                return
            failures[part[0].index] = PermanentError(f"HubSpot refused {object_type} {action}: {exc}")
            return
        self._settle(object_type, action, part, answer, failures)

    async def _request(self, object_type: str, action: str, part: list[Item]) -> BatchAnswer | None:
        if action == "archive":
            await self.api.archive(object_type, [it.record_id for it in part if it.record_id is not None])
            return None
        if action == "update":
            inputs = [{"id": it.record_id, "properties": it.properties, "objectWriteTraceId": str(n)}
                      for n, it in enumerate(part)]  # fmt: skip
            return await self.api.update(object_type, inputs)
        inputs = [{"id": it.id_value, "idProperty": it.spec.id_property, "properties": it.properties,
                   "objectWriteTraceId": str(n)} for n, it in enumerate(part)]  # fmt: skip
        return await self.api.upsert(object_type, inputs)

    async def _recast(self, part: list[Item], failures: dict[int, DeliveryError]) -> None:
        for it in part:
            try:
                fresh = await self._prepare(it.index, it.event)
            except (SystemicError, TransientError):
                raise
            except DeliveryError as exc:
                failures[it.index] = exc
                continue
            if fresh is not None:
                it.properties = fresh.properties

    def _settle(
        self, object_type: str, action: str, part: list[Item], answer: BatchAnswer | None,
        failures: dict[int, DeliveryError],
    ) -> None:  # fmt: skip
        if answer is None:  # an archive: 204, every input done
            for it in part:
                self.ids.drop(*it.key, gone_at=it.event.position)
            return
        by_trace = {str(r.get("objectWriteTraceId")): r for r in answer.results if r.get("objectWriteTraceId")}
        by_id = {str(r.get("id")): r for r in answer.results}
        by_value = {str((r.get("properties") or {}).get(part[0].spec.id_property)): r for r in answer.results}
        for n, it in enumerate(part):
            trace = str(n)
            ref = it.record_id if action == "update" else it.id_value
            err = answer.errors.get(trace) or answer.errors.get(str(ref))
            if err is not None:
                what = f"HubSpot refused {object_type} {action} of {it.event.entity} {list(it.event.key)}"
                if action == "update" and err.category == "OBJECT_NOT_FOUND":
                    # archived in HubSpot behind our back: forget the id, so the retry upserts it
                    self.ids.drop(*it.key)
                    failures[it.index] = TransientError(f"{what}: {err.message}; it will be created again")
                elif err.transient:
                    failures[it.index] = TransientError(f"{what}: {err.message}")
                else:
                    failures[it.index] = PermanentError(f"{what}: {err.category}: {err.message}")
                continue
            result = by_trace.get(trace) or (by_id.get(str(ref)) if action == "update" else by_value.get(str(ref)))
            if result is None or result.get("id") is None:
                failures[it.index] = TransientError(f"HubSpot's answer to a batch {action} lacks input {ref}")
                continue
            record_id = str(result["id"])
            entry = self.ids.get(*it.key)
            if entry is None or entry.id != record_id:
                self.ids.put(*it.key, Entry(record_id, dict(entry.links) if entry else {}))
            it.record_id = record_id
