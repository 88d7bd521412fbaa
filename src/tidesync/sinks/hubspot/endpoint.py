"""A HubSpot CRM object (contacts; companies, deals or a custom object by name) as a two-way sync side.

The :class:`~tidesync.sync.endpoint.Endpoint` contract over HubSpot's records
API. The calls are the HubSpot sink's (:class:`~.api.HubSpotApi`: its error
translation, its 207 answers split per input; the reads it lacks are in
:mod:`.records`), on the one HTTP client
(:class:`~tidesync.sources.http.client.ApiClient`, paced by the side source's
``rate_limit`` and by HubSpot's rate-limit headers, :mod:`.pacing`); values
are cast by the sink's property model (:mod:`.properties`), read once from
``/crm/v3/properties/{type}`` and again when a written property is not in it.

Rows are ``{property: text}`` for the properties the side's source reads
(the sync fills the source's ``properties`` with the mapped ones and
``hs_object_id``), as HubSpot answers them, so a row returned here is the row
the ``hubspot`` source emits for that record. The key is ``(record id,)`` as
text (the side's ``key: hs_object_id``); HubSpot makes record ids, so the sync
keeps an ID map and pairs existing records by a match key (``match: {by:
email}``).

One :meth:`HubSpotEndpoint.apply` call:

1. reads the records its updates and deletes name (``batch/read`` by id,
   only the properties the ops touch) and, for inserts that carry a value of
   the side's ``id_property`` (a unique property such as ``email``), the
   records holding those values (``batch/read`` with ``idProperty``);
2. compares every op with them, in op order: an update's property is ``ok``
   when it holds the expected value, ``already`` when it holds the new one,
   ``conflict`` otherwise, ``failed`` when the property cannot hold the value
   (an enumeration option not offered, a word for a number), ``missing`` when
   the record is gone; an insert whose ``id_property`` value a record holds
   is ``exists`` with that record; a delete is ``conflict`` when a property
   no longer holds the expected value;
3. sends the writes: ``batch/update`` with only the properties written and
   changed, ``batch/upsert`` by ``id_property`` for new records that carry
   its value (``batch/create`` for the others), ``batch/archive`` for deletes;
   at most 100 inputs a request. A 5xx or lost answer fails the call as
   transient: repeated, updates find their values (``already``), upserted
   records are found by their ``id_property`` value (``exists``), archived
   ones are ``missing``. Only a ``batch/create`` cannot tell; the sync looks
   for such a record with :meth:`HubSpotEndpoint.find` before repeating it.

No compare-and-set, and its window: HubSpot's CRM API has no conditional
write (no version to send back, no ``If-Match``). The values are compared as
read in step 1, and the writes of step 3 follow one or two requests later. An
edit made in HubSpot in that window to a property the call writes is
overwritten: that value is lost, never reported as a conflict, and the
``hubspot`` source (which reads records by modification time) may never see
it. An edit of another property is kept. A record someone creates in that
window with the ``id_property`` value of an insert is merged into by the
upsert (its properties overwritten with the sync's values), not duplicated.

Values are compared as HubSpot stores them (:meth:`HubSpotEndpoint.stored`):
the sink's cast to the property's type, so ``5``, ``"5.0"`` and
``Decimal("5")`` are one number, a datetime its epoch milliseconds, a date
its midnight UTC; empty text and null are one (no) value.

HubSpot holds every value as text, and an emptied property reads back as
empty text: the side's source emits ``"42"`` where the other side holds 42,
and ``""`` where it holds NULL. The sync compares canonical values, so give
it the other side's form with ``b_to_a`` transforms, e.g. ``compute: {score:
"None if score == '' else int(score)", first: "None if first == '' else
first"}``. Without them a NULL written to HubSpot comes back as ``""`` and is
copied to the other side as an edit (once; then both hold still).

Deletes archive the record. The ``hubspot`` polling source sees records
archived in HubSpot through the archived list (``?archived=true``, read after
each search pass), so deletes flow both ways.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import ConfigError, TransientError
from tidesync.event import Key, Row
from tidesync.sinks.hubspot.api import BatchAnswer, InputError
from tidesync.sinks.hubspot.pacing import RateLimitHeaders
from tidesync.sinks.hubspot.properties import CastError, Property, PropertyModel, cast
from tidesync.sinks.hubspot.records import RecordsApi, credential, pick_object
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.config import HubSpotSourceConfig
from tidesync.sources.http.ratelimit import TokenBucket
from tidesync.sync.endpoint import DeleteOp, InsertOp, Op, OpResult, UpdateOp
from tidesync.sync.saas_endpoint import ApiSide

BATCH = 100  # inputs per batch request (HubSpot's limit)
ID = "hs_object_id"


@dataclass
class _Writes:
    """What one apply call sends, and which op each input answers for."""

    updates: dict[str, dict[str, str]] = field(default_factory=dict)  # record id -> property -> text
    updated_by: dict[str, list[int]] = field(default_factory=dict)  # record id -> op indexes
    upserts: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # id_property value -> op
    creates: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    archives: dict[str, int] = field(default_factory=dict)  # record id -> op index
    twins: list[tuple[int, int]] = field(default_factory=list)  # (insert, earlier insert of its id_property value)

    def __bool__(self) -> bool:
        return bool(self.updates or self.upserts or self.creates or self.archives)


class HubSpotEndpoint(ApiSide):
    """One HubSpot object type read and written as a sync side; see the module docstring (``writes``: calls
    that sent writes)."""

    def __init__(
        self,
        config: HubSpotSourceConfig,
        key: Sequence[str],
        *,
        object_type: str | None = None,
        id_property: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        obj = pick_object(config, object_type)
        self.config = config
        self.object_type = obj.type
        self.key = tuple(key)
        if self.key != (ID,):
            raise ConfigError(f"a hubspot sync side's key is the record id: key: {ID} (not {list(self.key)})")
        self.properties = tuple(dict.fromkeys([*(obj.properties or ()), ID]))
        self.id_property = id_property
        self.clock = clock
        self.where = f"HubSpot {self.object_type}"
        self._api: RecordsApi | None = None
        self._model: PropertyModel | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self, *, writes: bool = True) -> None:
        """Make the client and read the object's property model (nothing is written)."""
        if self._client is None:
            c = self.config
            bucket = TokenBucket(c.rate_limit.per_second, c.rate_limit.burst, clock=self.clock)
            self._client = ApiClient(
                f"hubspot sync side {self.object_type}", c.base_url, credential(c, self.clock), bucket,
                max_attempts=c.http.max_attempts, max_throttled=c.http.max_throttled, timeout=c.http.timeout,
                clock=self.clock, transport=RateLimitHeaders(bucket, self.clock),
            )  # fmt: skip
            self._api = RecordsApi(self._client)
        await self._properties(refresh=True)

    async def close(self) -> None:
        self._api = None
        await super().close()

    @property
    def api(self) -> RecordsApi:
        assert self._api is not None, "open() first"
        return self._api

    async def _properties(self, *, refresh: bool = False, needed: Iterable[str] = ()) -> PropertyModel:
        model = self._model
        if model is None or refresh or model.missing(needed):
            model = self._model = PropertyModel.from_api(self.object_type, await self.api.properties(self.object_type))
        return model

    # --- values ---------------------------------------------------------------------------

    def _prop(self, column: str) -> Property:
        found = self._model.get(column) if self._model is not None else None
        return found or Property(column, "string")

    def stored(self, column: str, value: Any) -> str | None:
        """``value`` as property ``column`` holds it, in one comparable form (None: empty)."""
        if value is None or value == "":
            return None
        try:
            text = cast(self._prop(column), value)
        except CastError:
            text = str(value)  # not a value of the property's type: compared as it reads
        return text or None

    def _same(self, column: str, x: Any, y: Any) -> bool:
        return self.stored(column, x) == self.stored(column, y)

    def _row(self, result: Mapping[str, Any]) -> Row:
        props = result.get("properties") or {}
        row = {p: props.get(p) for p in self.properties}
        row[ID] = str(result.get("id"))
        return row

    # --- reads ----------------------------------------------------------------------------

    async def _read(self, refs: Sequence[str], names: Iterable[str], id_property: str | None = None) -> list[Row]:
        wanted = list(dict.fromkeys([*names, ID]))
        rows: list[Row] = []
        for i in range(0, len(refs), BATCH):
            answer = await self.api.read_records(self.object_type, refs[i : i + BATCH], wanted, id_property)
            rows.extend(self._row(r) for r in answer.results if r.get("id") is not None)
        return rows

    async def fetch(self, keys: Sequence[Key]) -> dict[Key, Row]:
        refs = list(dict.fromkeys(str(k[0]) for k in keys))
        return {(row[ID],): row for row in await self._read(refs, self.properties)}

    async def find(self, values: Mapping[str, Any], limit: int = 20) -> list[tuple[Key, Row]]:
        """Records holding ``values``: by ``id_property`` when it is among them (``batch/read``), else by
        search (on up to three of the values; the rest compared here); newest record id first."""
        await self._properties(needed=values)
        given = {c: self.stored(c, v) for c, v in values.items()}
        idv = given.get(self.id_property or "")
        if self.id_property and idv is not None:
            rows = await self._read([idv], self.properties, self.id_property)
        else:
            filters = [{"propertyName": c, "operator": "EQ", "value": t} for c, t in given.items() if t is not None]
            body = {
                "filterGroups": [{"filters": filters[:3]}] if filters else [],
                "sorts": [{"propertyName": ID, "direction": "DESCENDING"}],
                "properties": list(self.properties),
                "limit": 100,
            }
            rows = [self._row(r) for r in await self.api.search(self.object_type, body)]
        hits = [r for r in rows if all(self.stored(c, r.get(c)) == t for c, t in given.items())]
        hits.sort(key=lambda r: int(r[ID]) if str(r[ID]).isdigit() else 0, reverse=True)
        return [((r[ID],), r) for r in hits[:limit]]

    async def scan(self, page_size: int = 5000) -> list[Row]:
        """Every live record (``GET /crm/v3/objects/{type}``, 100 a page), in record id order."""
        rows: list[Row] = []
        after: str | None = None
        while True:
            results, after = await self.api.page(self.object_type, self.properties, after, min(page_size, 100))
            rows.extend(self._row(r) for r in results)
            if after is None or not results:
                break
        rows.sort(key=lambda r: int(r[ID]) if str(r[ID]).isdigit() else 0)
        return rows

    # --- writes ---------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        if not ops:
            return []
        touched = {c for op in ops for c in _columns(op)}
        await self._properties(needed=touched - {ID})
        refs = list(dict.fromkeys(str(op.key[0]) for op in ops if isinstance(op, UpdateOp | DeleteOp)))
        current = {row[ID]: dict(row) for row in await self._read(refs, touched)} if refs else {}
        taken: dict[str, Row] = {}
        if self.id_property:
            values = [
                self.stored(self.id_property, op.row.get(self.id_property)) for op in ops if isinstance(op, InsertOp)
            ]
            wanted = list(dict.fromkeys(v for v in values if v is not None))
            if wanted:
                for row in await self._read(wanted, [*self.properties, self.id_property], self.id_property):
                    taken[str(self.stored(self.id_property, row.get(self.id_property)))] = row
        out = _Writes()
        results = [self._one(n, op, current, taken, out) for n, op in enumerate(ops)]
        if out:
            await self._send(out, results)
            self.writes += 1
        return results

    def _one(self, n: int, op: Op, current: dict[str, Row], taken: dict[str, Row], out: _Writes) -> OpResult:
        if isinstance(op, UpdateOp):
            return self._update(n, op, current, out)
        if isinstance(op, InsertOp):
            return self._insert(n, op, taken, out)
        rid = str(op.key[0])
        have = current.get(rid)
        if have is None or rid in out.archives:
            return OpResult("missing")
        if any(not self._same(c, have.get(c), v) for c, v in (op.expected or {}).items()):
            return OpResult("conflict")
        out.archives[rid] = n
        return OpResult("ok")

    def _update(self, n: int, op: UpdateOp, current: dict[str, Row], out: _Writes) -> OpResult:
        rid = str(op.key[0])
        have = current.get(rid)
        if have is None or rid in out.archives:
            return OpResult("missing", {f.column: "missing" for f in op.fields})
        status: dict[str, str] = {}
        errors: list[str] = []
        wrote = False
        for f in op.fields:
            now = have.get(f.column)
            if f.conditional and not self._same(f.column, now, f.expected):
                status[f.column] = "already" if self._same(f.column, now, f.value) else "conflict"
                continue
            prop = self._model.get(f.column) if self._model is not None else None
            try:
                if prop is None or prop.read_only:
                    raise CastError(f"{self.where} have no writable property {f.column}")
                text = cast(prop, f.value)
            except CastError as exc:
                status[f.column] = "failed"
                errors.append(str(exc))
                continue
            status[f.column] = "ok"
            if not self._same(f.column, now, text):
                out.updates.setdefault(rid, {})[f.column] = text
                have[f.column] = text  # a later op of this call sees it
                wrote = True
        if wrote:
            out.updated_by.setdefault(rid, []).append(n)
        return OpResult("ok", status, error="; ".join(errors))

    def _insert(self, n: int, op: InsertOp, taken: dict[str, Row], out: _Writes) -> OpResult:
        if op.key is not None:
            return OpResult("failed", error=f"{self.where}: HubSpot makes the record ids (the sides cannot share keys)")
        props: dict[str, str] = {}
        for column, value in op.row.items():
            if column == ID:
                continue
            prop = self._model.get(column) if self._model is not None else None
            if prop is None or prop.read_only:
                return OpResult("failed", error=f"{self.where} have no writable property {column}")
            try:
                props[column] = cast(prop, value)
            except CastError as exc:
                return OpResult("failed", error=str(exc))
        idv = self.stored(self.id_property, props.get(self.id_property)) if self.id_property else None
        if idv is None:
            out.creates.append((n, props))
            return OpResult("ok")
        found = taken.get(idv)
        if found is not None:
            return OpResult("exists", key=(found[ID],), row=found)
        if idv in out.upserts:  # two inserts of one value in one call: the second finds the first's record
            out.twins.append((n, out.upserts[idv][0]))
            return OpResult("exists")
        out.upserts[idv] = (n, props)
        return OpResult("ok")

    async def _send(self, out: _Writes, results: list[OpResult]) -> None:
        api, t = self.api, self.object_type
        items = list(out.updates.items())
        for i in range(0, len(items), BATCH):
            batch = items[i : i + BATCH]
            answer = await api.update(t, [{"id": rid, "properties": props} for rid, props in batch])
            for rid, _ in batch:
                error = answer.errors.get(rid)
                if error is not None:
                    for n in out.updated_by.get(rid, []):
                        results[n] = self._refused(results[n], error)
        ups = list(out.upserts.items())
        for i in range(0, len(ups), BATCH):
            chunk = ups[i : i + BATCH]
            inputs = [{"idProperty": self.id_property, "id": v, "properties": p, "objectWriteTraceId": str(n)}
                      for v, (n, p) in chunk]  # fmt: skip
            self._created(await api.upsert(t, inputs), [n for _, (n, _) in chunk], results)
        for i in range(0, len(out.creates), BATCH):
            part = out.creates[i : i + BATCH]
            inputs = [{"properties": p, "objectWriteTraceId": str(n)} for n, p in part]
            self._created(await api.create(t, inputs), [n for n, _ in part], results)
        for n, first in out.twins:
            made = results[first]
            results[n] = OpResult("exists", key=made.key, row=made.row) if made.status == "ok" else made
        doomed = list(out.archives)
        for i in range(0, len(doomed), BATCH):
            await api.archive(t, doomed[i : i + BATCH])

    def _created(self, answer: BatchAnswer, indexes: list[int], results: list[OpResult]) -> None:
        """Keys of the records an upsert or create made (matched by trace id; in input order otherwise)."""
        by_trace = {str(r.get("objectWriteTraceId")): r for r in answer.results if r.get("objectWriteTraceId")}
        rest = [r for r in answer.results if not r.get("objectWriteTraceId")]
        for n in indexes:
            error = answer.errors.get(str(n))
            if error is not None:
                results[n] = self._refused(results[n], error)
                continue
            r = by_trace.get(str(n)) or (rest.pop(0) if rest else None)
            if r is None or r.get("id") is None:
                raise TransientError(f"{self.where}: HubSpot answered a write without the record it made")
            results[n] = OpResult("ok", key=(str(r["id"]),), row=self._row(r))

    def _refused(self, result: OpResult, error: InputError) -> OpResult:
        if error.transient:
            raise TransientError(f"{self.where}: {error.message}")
        if error.category == "OBJECT_NOT_FOUND":
            return OpResult("missing", {c: "missing" for c in result.columns})
        return OpResult("failed", {c: "failed" for c in result.columns}, error=f"{self.where}: {error.message}")


def _columns(op: Op) -> list[str]:
    if isinstance(op, UpdateOp):
        return [f.column for f in op.fields]
    if isinstance(op, InsertOp):
        return list(op.row)
    return list(op.expected or ())
