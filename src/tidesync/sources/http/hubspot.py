"""The HubSpot polling source: CRM objects read through the search endpoint, diffed field by field.

Per object type, passes read every record modified in ``(high-water mark -
lookback, now - settle]`` (see :mod:`.hubspot_search` for windows, the
10,000-result ceiling and ties). Each record's properties are compared with
its shadow (the properties last emitted): no shadow is an ``insert`` (the
whole record), different values an ``update`` whose ``changed`` names only
the properties that differ (``before`` is the shadow, ``after`` the record
as read), equal values nothing. So the look-back, which re-reads records to
catch ones the search index showed late, emits nothing twice, and neither
does a window read again after its offsets shifted.

Entities are ``hubspot.<singular type>`` (``hubspot.contact``), keys
``(record id,)`` as text, like the webhook mapping; ``committed_at`` is the
cursor property's time.

Deleted (archived) records are not in search results: they are read from the
archived list (``GET /crm/v3/objects/{type}?archived=true``; see
:class:`.hubspot_search.Archived`). Each pass of an object type, after its
search, pages through that list and takes the records archived in
``(archive high-water mark - lookback, now - settle]``: one with a shadow is a
``delete`` (``before`` the shadow, ``committed_at`` its ``archivedAt``) and its
shadow goes in the same batch's state; one without (never emitted, or its
delete emitted already) is nothing. The archive mark travels in the position
with the search marks, so a restart neither misses a delete nor repeats one.
The list has no filter on ``archivedAt``: every pass reads it whole (HubSpot
keeps archived records 90 days), one request per 100 archived records.

With ``property_history: true`` an update is emitted as one event per
distinct time its properties changed (see :mod:`.hubspot_history`): after a
search page (or the part of it a read has room for), the records whose
properties differ from their shadows are read again through ``POST /crm/v3/objects/{type}/batch/read`` with
``propertiesWithHistory`` (50 records a request, paced by the same token
bucket), and the update's changed properties are grouped by the time each last
changed. The events go oldest first, each with ``changed`` = the properties
last changed at its time and ``committed_at`` = that time; ``before`` / ``after``
step from the shadow to the record as read, so the last event's ``after`` is
the record and its shadow is the one stored. Inserts and deletes stay one
event. A read that stops at ``max_events`` in the middle of a record's events
leaves the record held: the next read diffs it against the shadow the events
emitted left, which yields the rest.

Shadow rows (scope ``shadow_scope``, default the pipeline name) travel with
each batch in ``batch.state`` and are committed with its checkpoint;
until then the pending ones are consulted first (the same mechanism as the SQL
polling source: :mod:`tidesync.sources.polling.tracker`).

Requests: ``POST {base_url}/crm/v3/objects/{type}/search`` (the archived list, and the history reads) with a bearer
private-app token or OAuth2 access token (refreshed with the refresh token),
paced by a token bucket (default 5/s: the search endpoint's limit per account).

A batch run (``tidesync run --once``) ends once every object type is read up
to its newest modification at the start, and the archived list of that pass
is read (:meth:`HubSpotSource.end_position`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from tidesync.errors import SourceTransientError
from tidesync.event import Batch, Key, Position, Row, diff_fields
from tidesync.progress import Progress
from tidesync.protocols import Context
from tidesync.sources.http import hubspot_history
from tidesync.sources.http.auth import BearerKey, Credential, OAuth2Refresh
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.config import HubSpotObject, HubSpotSourceConfig
from tidesync.sources.http.hubspot_history import MODIFIED, History
from tidesync.sources.http.hubspot_search import Archived, Pass, cursor_ms
from tidesync.sources.http.positions import next_epoch, split
from tidesync.sources.http.ratelimit import TokenBucket
from tidesync.sources.polling.end import reserve_end
from tidesync.sources.polling.tracker import BatchBuilder, PendingShadows
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.sources.hubspot")


@dataclass
class _Object:
    spec: HubSpotObject
    hw: int | None = None  # every record modified at or before this (ms) was read
    run: Pass | None = None
    loading: bool = False  # the pass under way is the first (no high-water mark yet): its progress shows
    gone_hw: int | None = None  # every record archived at or before this (ms) was looked at
    gone: Archived | None = None  # the archived list's pass under way (after the search pass)

    def marks(self) -> tuple[Any, ...]:
        run = self.run.marks() if self.run is not None else None
        return (self.spec.entity_name, self.hw, run, self.gone_hw, self.gone.marks() if self.gone else None)


@dataclass
class _Held:
    """The records of a search page not diffed yet: a read stopped at ``max_events`` in the middle of it.

    ``marks`` are the source's marks from before the page: a batch holding only
    part of the page checkpoints there, so a reopen reads the whole page again
    (its records already emitted compare equal to their shadows and emit nothing).
    """

    spec: HubSpotObject
    records: list[tuple[Key, Row]]
    marks: tuple[Any, ...]
    archived: bool = False  # records of the archived list: deletes
    history: dict[str, History] = field(default_factory=dict)  # record id -> property history read (property_history)


def hubspot_client(config: HubSpotSourceConfig, name: str, ctx: Context) -> ApiClient:
    credential: Credential
    if config.oauth is not None:
        o = config.oauth
        credential = OAuth2Refresh(
            o.token_url or f"{config.base_url.rstrip('/')}/oauth/v1/token", o.client_id, o.client_secret,
            o.refresh_token, refresh_margin=o.refresh_margin, clock=ctx.clock,
        )  # fmt: skip
    else:
        assert config.token is not None
        credential = BearerKey(config.token, "HubSpot access token")
    rl, opts = config.rate_limit, config.http
    return ApiClient(
        name, config.base_url, credential, TokenBucket(rl.per_second, rl.burst, clock=ctx.clock),
        max_attempts=opts.max_attempts, max_throttled=opts.max_throttled, timeout=opts.timeout, clock=ctx.clock,
    )  # fmt: skip


class HubSpotSource:
    """See the module docstring."""

    def __init__(self, config: HubSpotSourceConfig) -> None:
        self.config = config
        self._ctx: Context | None = None
        self._client: ApiClient | None = None
        self._objects: list[_Object] = []
        self._pending = PendingShadows()
        self._scope = ""
        self._epoch = 0
        self._seq = 0
        self._marks: tuple[Any, ...] = ()
        self._next_poll: dict[str, float] = {}
        self.records_read = 0
        self.histories_read = 0  # records whose property history was read (property_history)
        self.progress: Progress | None = None  # the first pass's display (made at open; progress: false turns it off)
        self._end: int | None = None  # the seq of a batch run's end, while it is still to be reached
        self._end_ms: dict[str, int | None] = {}  # per object type, its newest cursor value at the run's start
        self._held: _Held | None = None  # the rest of a page the last read had no room for

    @property
    def client(self) -> ApiClient:
        assert self._client is not None, "open() first"
        return self._client

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        self._scope = self.config.shadow_scope or ctx.pipeline
        epoch, _, marks = split(after)
        # The batches read after `after` never reached a checkpoint: the passes restored below read their
        # records again, so their pending shadows go (kept, a re-read record would equal its shadow and
        # emit nothing, though the state store never got it).
        self._pending.forget_after(after)
        self._held = None  # its page is read again from the restored marks
        if self._end is None:  # else reopened during a batch run, before its end: the epoch stays (polling.end)
            self._epoch = await next_epoch(ctx.state, f"hubspot:{self._scope}", epoch)
            self._seq = 0
        stored = {m[0]: m for m in marks or ()}
        self._objects = []
        for spec in self.config.objects:
            obj = _Object(spec)
            if spec.entity_name in stored:
                # marks from before the archived list (three items) restore with no archive mark: the next
                # pass reads the whole list, and deletes already emitted have no shadow left
                _, obj.hw, run, *rest = stored[spec.entity_name]
                if run is not None:
                    obj.run = Pass.restore(spec.cursor_property, run, self.config.page_size, self.config.max_results)
                if rest:
                    obj.gone_hw, gone = rest
                    if gone is not None:
                        obj.gone = Archived.restore(gone, self.config.page_size)
            obj.loading = obj.hw is None
            self._objects.append(obj)
        self._marks = self._current_marks()
        self._next_poll = {o.spec.entity_name: -math.inf for o in self._objects}
        if self._client is None:
            self._client = hubspot_client(self.config, f"hubspot source {ctx.pipeline}", ctx)
        if self.progress is not None:
            self.progress.close()
        self.progress = Progress("first pass", unit="records", enabled=self.config.progress, logger=log)

    async def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def commit(self, position: Position) -> None:
        self._pending.release(position)

    def request_poll(self) -> None:
        for name in self._next_poll:
            self._next_poll[name] = -math.inf

    @property
    def idle(self) -> bool:
        return self._held is None and all(o.run is None and o.gone is None for o in self._objects)

    def passes(self) -> dict[str, Pass | None]:
        return {o.spec.entity_name: o.run for o in self._objects}

    # --- a batch run's end -----------------------------------------------------------------

    async def end_position(self) -> Position | None:
        """Where a batch run (``tidesync run --once``) ends: once every object type is read up to its newest change now.

        Per object type, one search sorted by the cursor property descending,
        limit 1, gives the newest modification time. The position returned is
        one this source reserves (:mod:`tidesync.sources.polling.end`) and
        hands out once every type's passes have read up to that time (its
        high-water mark, or the pass under way, at or past it) and no
        archived list is being read (the last pass's deletes are in). A pass reads
        only up to ``settle`` before its own start, so a record modified just
        before the run is read by the next pass: such a run takes up to
        ``settle + poll_interval`` longer. None when every type is read that
        far already: the run has nothing to read.
        """
        for obj in self._objects:
            spec = obj.spec
            body = {
                "sorts": [{"propertyName": spec.cursor_property, "direction": "DESCENDING"}],
                "properties": [spec.cursor_property],
                "limit": 1,
            }
            answer = await self.client.post(f"/crm/v3/objects/{spec.type}/search", body)
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list):
                raise SourceTransientError(f"{self.client.name}: search of {spec.type}: an answer without results")
            props = results[0].get("properties") if results and isinstance(results[0], dict) else None
            self._end_ms[spec.entity_name] = cursor_ms(props.get(spec.cursor_property)) if props else None
        if self._end_read():
            self._end = None
            return None
        self._end = reserve_end(self._seq, self._end)
        return (self._epoch, self._end)

    def _end_read(self) -> bool:
        """Whether every object type is read up to its newest cursor value of the run's start."""
        if self._held is not None:  # a page is fetched (its pass moved on) but not all emitted yet
            return False
        for obj in self._objects:
            if obj.gone is not None:  # the deletes of a pass are read after its search
                return False
            newest = self._end_ms.get(obj.spec.entity_name)
            if newest is None:
                continue
            if (obj.hw is None or obj.hw < newest) and (obj.run is None or obj.run.lo < newest):
                return False
        return True

    def _current_marks(self) -> tuple[Any, ...]:
        return tuple(o.marks() for o in self._objects)

    # --- reading ---------------------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        assert self._ctx is not None, "open() first"
        clock = self._ctx.clock
        deadline = clock.monotonic() + max_wait
        b = BatchBuilder(self._scope, self._epoch, self._seq, self._pending)
        while len(b.events) < max_events:
            worked = await self._step(b, max_events)
            if self._end is not None and self._end_read():
                break
            now = clock.monotonic()
            if worked and now < deadline:
                continue
            if worked or b.events or now >= deadline:
                break
            await clock.sleep(max(0.0, min(min(self._next_poll.values(), default=deadline), deadline) - now))
        # a batch ending in the middle of a page checkpoints before that page (see _Held)
        marks = self._held.marks if self._held is not None else self._current_marks()
        end = None
        if self._end is not None and self._end_read():
            end, self._end = self._end, None
        batch = b.build(marks, self._marks, clock.time(), end=end)
        self._marks, self._seq = marks, b.seq
        return batch

    async def _step(self, b: BatchBuilder, max_events: int) -> bool:
        assert self._ctx is not None
        clock = self._ctx.clock
        if self._held is not None:
            await self._drain(b, max_events)
            return True
        for obj in self._objects:
            if obj.run is not None:
                await self._page(obj, b, max_events)
                return True
        for obj in self._objects:
            if obj.gone is not None:
                await self._archived_page(obj, b, max_events)
                return True
        now = clock.monotonic()
        for obj in self._objects:
            if now >= self._next_poll[obj.spec.entity_name]:
                end = math.floor((clock.time() - self.config.settle) * 1000)
                lo = 0 if obj.hw is None else max(0, obj.hw - round(self.config.lookback * 1000))
                if end <= lo:
                    self._next_poll[obj.spec.entity_name] = now + self.config.poll_interval
                    continue
                before = self._current_marks()  # a pass not begun yet: a reopen begins it again
                obj.run = Pass(obj.spec.cursor_property, lo, end, limit=self.config.page_size,
                               ceiling=self.config.max_results)  # fmt: skip
                # the look-back re-reads deletes too: one whose shadow is gone emits nothing
                gone_lo = 0 if obj.gone_hw is None else max(0, obj.gone_hw - round(self.config.lookback * 1000))
                obj.gone = Archived(gone_lo, end, limit=self.config.page_size)
                obj.loading = obj.hw is None
                await self._page(obj, b, max_events, before)
                return True
        return False

    async def _page(
        self, obj: _Object, b: BatchBuilder, max_events: int, before: tuple[Any, ...] | None = None
    ) -> None:
        """Read the pass's next page and emit its changes, up to ``max_events`` in ``b`` (the rest is held)."""
        assert self._ctx is not None and obj.run is not None
        run, spec = obj.run, obj.spec
        before = self._current_marks() if before is None else before
        answer = await self.client.post(f"/crm/v3/objects/{spec.type}/search", run.request(spec.properties))
        try:
            results = run.advance(answer if isinstance(answer, dict) else {})
        except ValueError as exc:
            raise SourceTransientError(f"{self.client.name}: search of {spec.type}: {exc}") from exc
        if results:
            self.records_read += len(results)
            self._held = _Held(spec, self._records(results), before)
            await self._drain(b, max_events)
        if obj.loading and self.progress is not None:
            self._show(obj, run, len(results or ()))
        if run.done:
            obj.hw, obj.run, obj.loading = run.end, None, False
            self._next_poll[spec.entity_name] = self._ctx.clock.monotonic() + self.config.poll_interval

    async def _archived_page(self, obj: _Object, b: BatchBuilder, max_events: int) -> None:
        """Read the archived list's next page and emit its deletes, up to ``max_events`` in ``b`` (the rest is held)."""
        assert obj.gone is not None
        gone, spec = obj.gone, obj.spec
        before = self._current_marks()
        answer = await self.client.get(f"/crm/v3/objects/{spec.type}", gone.params([spec.cursor_property]))
        try:
            results = gone.advance(answer if isinstance(answer, dict) else {})
        except ValueError as exc:
            raise SourceTransientError(f"{self.client.name}: archived {spec.type}: {exc}") from exc
        if results:
            records = [((str(r["id"]),), {"archivedAt": r.get("archivedAt")})
                       for r in results if isinstance(r.get("id"), (str, int))]  # fmt: skip
            self._held = _Held(spec, records, before, archived=True)
            await self._drain(b, max_events)
        if gone.done:
            obj.gone_hw, obj.gone = gone.end, None

    def _show(self, obj: _Object, run: Pass, read: int) -> None:
        """Count a first-pass page. The search's ``total`` is the whole pass's only while its first window
        spans it (at most ``max_results`` records); past that, a count with a rate."""
        assert self.progress is not None
        name = obj.spec.entity_name
        self.progress.add(name)
        if run.lo == 0 and run.hi == run.end and run.total is not None:
            self.progress.set_total(name, run.total)
        self.progress.advance(name, read, done=run.done)

    def _records(self, results: list[dict[str, Any]]) -> list[tuple[Key, Row]]:
        records: list[tuple[Key, Row]] = []
        for r in results:
            rid, props = r.get("id"), r.get("properties")
            if not isinstance(rid, (str, int)) or not isinstance(props, dict):
                log.warning("%s: a search result without id or properties was skipped", self.client.name)
                continue
            records.append(((str(rid),), dict(props)))
        return records

    async def _drain(self, b: BatchBuilder, max_events: int) -> None:
        """Diff the held records against their shadows, in order, until ``b`` holds ``max_events`` events.

        A record emits at most one event, or with ``property_history`` one per
        distinct change time: a record whose events do not all fit emits those
        that do and stays held (diffed again, against the shadow they left, it
        yields the rest). The rest stays held for the next read. Shadows are
        looked up now, not when the page was fetched: a commit in between
        moves them from the pending ones to the state store.
        """
        assert self._ctx is not None and self._held is not None
        held = self._held
        while held.records and len(b.events) < max_events:
            # records that differ emit one event or more each: no more than `room` of them are diffed at once
            room = max_events - len(b.events)
            chunk, held.records = held.records[:room], held.records[room:]
            left = await (self._deleted if held.archived else self._diff)(held, chunk, b, max_events)
            held.records = [*left, *held.records]
        if not held.records:
            self._held = None

    async def _diff(self, held: _Held, records: list[tuple[Key, Row]], b: BatchBuilder, max_events: int
                    ) -> list[tuple[Key, Row]]:  # fmt: skip
        """Emit the changes of ``records`` against their shadows, up to ``max_events`` in ``b``; the records left."""
        assert self._ctx is not None
        spec = held.spec
        entity = spec.entity_name
        shadows = await self._shadows(entity, [k for k, _ in records])
        now = self._ctx.clock.time()
        changes = {k: diff_fields(s, r) for k, r in records if (s := shadows[k]) is not None}
        if self.config.property_history:
            await self._histories(held, changes)
        for i, (key, row) in enumerate(records):
            shadow = shadows[key]
            ms = cursor_ms(row.get(spec.cursor_property))
            at = min(ms / 1000, now) if ms is not None else now
            if shadow is None:
                if len(b.events) >= max_events:
                    return records[i:]
                b.emit(entity, key, "insert", before=None, after=row, changed=None, committed_at=at)
                continue
            changed = changes[key]
            if not changed:
                continue
            if not self.config.property_history or ms is None:
                if len(b.events) >= max_events:
                    return records[i:]
                b.emit(entity, key, "update", before=shadow, after=row, changed=changed, committed_at=at)
                continue
            plan = hubspot_history.steps(
                changed, row, held.history.get(str(key[0])), record_ms=ms, cursor=spec.cursor_property
            )
            for step, (before, after) in zip(plan, hubspot_history.rows(shadow, row, plan), strict=True):
                if len(b.events) >= max_events:
                    return records[i:]  # diffed again against the shadow these steps left: the rest
                b.emit(entity, key, "update", before=before, after=after, changed=step.changed,
                       committed_at=min(step.at_ms / 1000, now))  # fmt: skip
        return []

    async def _histories(self, held: _Held, changes: dict[Key, tuple[str, ...]]) -> None:
        """Read the property history of the updated records not read yet for this page (``held.history``)."""
        spec = held.spec
        modified = MODIFIED | {spec.cursor_property}
        wanted = {str(k[0]): [n for n in c if n not in modified] for k, c in changes.items()}
        ids = [rid for rid, names in wanted.items() if names and rid not in held.history]
        if not ids:
            return
        names = list(dict.fromkeys(n for rid in ids for n in wanted[rid]))
        read = await hubspot_history.read(self.client, spec.type, ids, names)
        self.histories_read += len(ids)
        for rid in ids:  # one the read did not find (archived since the search) takes the record's time
            held.history[rid] = read.get(rid, {})

    async def _deleted(self, held: _Held, records: list[tuple[Key, Row]], b: BatchBuilder, max_events: int
                       ) -> list[tuple[Key, Row]]:  # fmt: skip
        """Emit a ``delete`` for each archived record that has a shadow (its shadow goes); the records left."""
        assert self._ctx is not None
        entity = held.spec.entity_name
        shadows = await self._shadows(entity, [k for k, _ in records])
        now = self._ctx.clock.time()
        for i, (key, row) in enumerate(records):
            shadow = shadows[key]
            if shadow is None:  # never emitted, or its delete was emitted already
                continue
            if len(b.events) >= max_events:
                return records[i:]
            ms = cursor_ms(row.get("archivedAt"))
            at = min(ms / 1000, now) if ms is not None else now
            b.emit(entity, key, "delete", before=shadow, after=None, changed=None, committed_at=at)
        return []

    async def _shadows(self, entity: str, keys: list[Key]) -> dict[Key, Row | None]:
        """Each key's shadow now: the pending one when a batch not committed yet holds it, else the stored one."""
        assert self._ctx is not None
        unknown = [k for k in keys if not self._pending.lookup(entity, k)[0]]
        stored = await self._ctx.state.shadow_get(self._scope, entity, unknown) if unknown else {}
        out: dict[Key, Row | None] = {}
        for key in keys:
            known, shadow = self._pending.lookup(entity, key)
            if not known:
                hit = stored.get(key)
                shadow = hit.row if hit is not None else None
            out[key] = shadow
        return out
