"""The Stripe polling source: the Events API as a change feed, list endpoints for a first snapshot.

Changes come from ``GET /v1/events`` and are mapped exactly as webhook
deliveries are (:func:`tidesync.sources.webhook.stripe.map_stripe_event`):
entity ``stripe.<object type>``, key ``(object id,)``, ``changed`` from
``previous_attributes``, ``committed_at`` = ``created``, and the record
version ``(created, event id)`` in ``batch.versions`` (what a hybrid
source matches against the webhook's). An :class:`~tidesync.sources.webhook.ordering.OrderingGuard`
(shadow scope ``stripe:<pipeline>``) keeps an older event from overwriting a
newer one of the same record.

Feed
    The cursor is ``(created, id)`` of the newest event applied, in Stripe's
    list order. A pass walks forward from it with ``ending_before=<cursor id>``
    (the page just newer than the cursor, reversed to oldest first) until
    ``has_more`` is false, so ties within one second keep Stripe's own order.
    Then, when ``lookback`` > 0, it re-lists ``created[gte]=<cursor created -
    lookback>`` (paging with ``starting_after``) and emits any event not seen
    yet: one that Stripe listed late, behind the cursor. The ids seen within
    ``lookback`` of the cursor are kept in the position for that.

    At the first start (in ``open``) the cursor is the newest event there is
    (or, with none, the current time): the feed starts *now*, before anything
    the caller does after opening (a two-way sync pairs its sides then: an
    edit made in Stripe meanwhile is in the feed). Events older than 30 days
    cannot be listed (:data:`~.stripe_api.EVENTS_WINDOW`); a cursor that old
    (a pipeline stopped for a month) raises a SourceError that says to
    re-snapshot: events in between are gone.

Snapshot
    Object types named in ``snapshot`` are listed once at the first start,
    after the cursor was fixed and before the feed: ``GET /v1/<type>s?limit=100``
    (``created[gte]`` with ``snapshot_since``), paging with ``starting_after``
    (resumable: the last id is in the position). Rows are ``snapshot``
    events. A change during the listing is in the feed after it, so the
    destination converges.

Positions are :mod:`.positions`' ``(epoch, seq)``; a batch carries everything
a restart needs (cursor, seen ids, snapshot progress) in its marks.

A batch run (``tidesync run --once``) ends once the newest event at its
start has been read, after the snapshot (:meth:`StripeSource.end_position`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tidesync.errors import SourceError
from tidesync.event import SNAPSHOT, Batch, ChangeEvent, Position, RecordVersion
from tidesync.progress import Progress
from tidesync.protocols import Context
from tidesync.sources.http.client import ApiStatusError
from tidesync.sources.http.config import StripeSourceConfig
from tidesync.sources.http.positions import Sequencer, next_epoch, split
from tidesync.sources.http.stripe_api import EVENTS_WINDOW, StripeApi, configured_client
from tidesync.sources.polling.end import reserve_end
from tidesync.sources.webhook.ordering import OrderingGuard
from tidesync.sources.webhook.provider import MappingError
from tidesync.sources.webhook.stripe import map_stripe_event
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.sources.stripe")
MARKS_VERSION = 1


@dataclass
class FeedState:
    """What a restart needs: the cursor, the ids seen near it, the snapshot still to list."""

    created: float | None = None  # None: no cursor fixed yet (the very first start)
    event_id: str = ""  # "" while no event was ever listed
    seen: dict[str, float] = field(default_factory=dict)  # event id -> created, within lookback of the cursor
    snapshot: list[tuple[str, str | None]] = field(default_factory=list)  # (object type, starting_after)

    def marks(self) -> tuple[Any, ...]:
        seen = tuple(sorted(self.seen.items()))
        return (MARKS_VERSION, self.created, self.event_id, seen, tuple(self.snapshot))

    @classmethod
    def restore(cls, marks: Any) -> FeedState:
        if not marks or marks[0] != MARKS_VERSION:
            return cls()
        _, created, event_id, seen, snapshot = marks
        return cls(created, event_id, {i: c for i, c in seen}, [(t, a) for t, a in snapshot])

    def advance(self, doc: dict[str, Any]) -> None:
        """``doc`` is the newest event listed so far."""
        self.created, self.event_id = float(doc.get("created") or 0), doc["id"]

    def prune(self, lookback: float) -> None:
        if self.created is not None:
            floor = self.created - lookback
            self.seen = {i: c for i, c in self.seen.items() if c >= floor}


@dataclass
class _Held:
    """A page a read had no room for all of (``max_events``): the next read goes on with the rest.

    ``kind``: ``walk`` (events after the cursor), ``sweep`` (the look-back
    re-listing) or ``snapshot`` (objects of ``object_type``); ``more``: the
    list goes on past this page. The feed state moves one item at a time as
    items are emitted, so a batch's marks cover what it holds and a reopen
    lists the rest again.
    """

    kind: str
    docs: list[dict[str, Any]]
    more: bool = False
    object_type: str = ""


@dataclass
class _Out:
    events: list[ChangeEvent] = field(default_factory=list)
    versions: list[RecordVersion | None] = field(default_factory=list)
    failures: list[tuple[ChangeEvent, str]] = field(default_factory=list)


class StripeSource:
    """See the module docstring."""

    def __init__(self, config: StripeSourceConfig) -> None:
        self.config = config
        self._ctx: Context | None = None
        self._api: StripeApi | None = None
        self._guard: OrderingGuard | None = None
        self._seq = Sequencer()
        self.state = FeedState()
        self._marks: tuple[Any, ...] = ()
        self._walking = False  # a pass is in progress: walking forward from the cursor
        self._sweeping = False  # the pass has walked to the newest event and re-lists the look-back now
        self._held: _Held | None = None  # the rest of a page the last read had no room for
        self._next_poll = -math.inf
        self._progress: Progress | None = None  # the snapshot's, made at its first page
        self._end: int | None = None  # the seq of a batch run's end, while it is still to be reached
        self._end_event: tuple[str, float] | None = None  # (id, created) of the newest event at the run's start

    @property
    def api(self) -> StripeApi:
        assert self._api is not None, "open() first"
        return self._api

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        epoch, _, marks = split(after)
        if self._end is None:  # else reopened during a batch run, before its end: the epoch stays (polling.end)
            self._seq = Sequencer(await next_epoch(ctx.state, f"stripe:{ctx.pipeline}", epoch))
        self.state = FeedState.restore(marks)
        self._marks = self.state.marks()
        self._guard = OrderingGuard(ctx.state, f"stripe:{ctx.pipeline}")
        self._walking = self._sweeping = False
        self._held = None  # the restored state lists its rest again
        self._next_poll = -math.inf
        if self._api is None:
            self._api = StripeApi(configured_client(f"stripe source {ctx.pipeline}", self.config, ctx.clock))
        if self.state.created is None:
            # The first start fixes the cursor here, not at the first read: whatever happens between the open
            # and that read (a sync pairing its sides, a snapshot's listing) is then in the feed after it.
            await self._start()

    async def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    async def commit(self, position: Position) -> None:
        """Nothing upstream to release: Stripe keeps its events for 30 days regardless."""

    def request_poll(self) -> None:
        """Start the next pass now instead of at its time."""
        self._next_poll = -math.inf

    @property
    def idle(self) -> bool:
        """No pass and no snapshot in progress."""
        return not self._walking and self._held is None and not self.state.snapshot and self.state.created is not None

    # --- a batch run's end -----------------------------------------------------------------

    async def end_position(self) -> Position | None:
        """Where a batch run (``tidesync run --once``) ends: once the newest event now has been read.

        Asks for the newest event (``GET /v1/events?limit=1``, of the
        configured ``types``). The position returned is one this source
        reserves (:mod:`tidesync.sources.polling.end`) and hands out once the
        feed has read that event (or moved past its second) and the snapshot,
        if one is still to list, is done. None when all of that is true
        already: the run has nothing to read.
        """
        params = {"limit": "1"}
        for i, t in enumerate(self.config.types or ()):
            params[f"types[{i}]"] = t  # as Stripe's clients send arrays
        docs, _ = await self.api.page("/v1/events", params)
        newest = docs[0] if docs else None
        self._end_event = (newest["id"], float(newest.get("created") or 0)) if newest is not None else None
        if self._end_read():
            self._end = self._end_event = None
            return None
        self._end = reserve_end(self._seq.seq, self._end)
        return (self._seq.epoch, self._end)

    def _end_read(self) -> bool:
        """Whether the feed has read the newest event of the run's start (and the snapshot is done)."""
        st = self.state
        if st.created is None or st.snapshot:
            return False
        if self._end_event is None:
            return True
        event_id, created = self._end_event
        return event_id in st.seen or st.created > created

    # --- reading ---------------------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        assert self._ctx is not None, "open() first"
        clock = self._ctx.clock
        deadline = clock.monotonic() + max_wait
        out = _Out()
        while len(out.events) + len(out.failures) < max_events:
            worked = await self._step(out, max_events)
            if self._end is not None and self._end_read():
                break
            now = clock.monotonic()
            if worked and now < deadline:
                continue
            if worked or out.events or out.failures or now >= deadline:
                break
            await clock.sleep(max(0.0, min(self._next_poll, deadline) - now))
        return self._batch(out, clock.time())

    def _batch(self, out: _Out, read_at: float) -> Batch[StateChanges]:
        marks = self.state.marks()
        if self._end is not None and self._end_read():
            # the batch run's end: this batch's position jumps to the one end_position reserved
            self._seq.seq = max(self._seq.seq, self._end)
            self._end = self._end_event = None
        elif not out.events and not out.failures and marks == self._marks:
            return Batch([], None, read_at)
        elif not out.events:
            self._seq.next()  # a checkpoint of its own: positions never repeat
        self._marks = marks
        assert self._guard is not None
        shadows = self._guard.take(self._seq.seq)
        return Batch(
            out.events,
            self._seq.checkpoint(marks),
            read_at,
            state=StateChanges(shadow_put=shadows) if shadows else None,
            rejected=out.failures,
            versions=out.versions,
        )

    async def _step(self, out: _Out, max_events: int) -> bool:
        """One request's worth of work (or the rest of the last page); False when nothing is due.

        Emits at most ``max_events`` in ``out`` in all; what a page has past
        that is held (:class:`_Held`) for the next step.
        """
        assert self._ctx is not None
        st = self.state
        if self._held is not None:
            await self._drain(out, max_events)
            return True
        if st.created is None:
            await self._start()
            return True
        if st.snapshot:
            object_type, objects, more = await self._snapshot_page()
            self._held = _Held("snapshot", objects, more and bool(objects), object_type)
        else:
            if not self._walking:
                if self._ctx.clock.monotonic() < self._next_poll:
                    return False
                self._check_window()
                self._walking, self._sweeping = True, not st.event_id
            if not self._sweeping:
                docs, more = await self._events_after(st.event_id)
                self._held = _Held("walk", docs, more)
            else:
                assert st.created is not None
                docs = await self.api.events_created_since(
                    st.created - self.config.lookback, limit=self.config.page_size, types=self.config.types
                )
                self._held = _Held("sweep", docs)
        await self._drain(out, max_events)
        return True

    async def _drain(self, out: _Out, max_events: int) -> None:
        """Emit the held page's items in order while ``out`` has room; at its end, move the pass on."""
        assert self._ctx is not None and self._held is not None
        held = self._held
        while held.docs and len(out.events) + len(out.failures) < max_events:
            room = max_events - len(out.events) - len(out.failures)
            if held.kind == "snapshot":
                self._snapshot_objects(held, room, out)
            else:
                await self._emit(held.docs, room, out)
        if held.docs:
            return
        self._held = None
        if held.kind == "snapshot":
            self._snapshot_done(held)
        elif held.kind == "walk" and held.more:
            pass  # the next step walks on from the cursor
        elif held.kind == "walk" and self.config.lookback > 0:
            self._sweeping = True
        else:
            self._walking = self._sweeping = False
            self._next_poll = self._ctx.clock.monotonic() + self.config.poll_interval

    async def _start(self) -> None:
        """The first start: fix the cursor at the newest event (ids within lookback count as seen)."""
        assert self._ctx is not None
        st = self.state
        newest = await self.api.newest_event()
        if newest is None:
            st.created = self._ctx.clock.time()
        else:
            st.advance(newest)
            if self.config.lookback > 0:
                floor = float(newest.get("created") or 0) - self.config.lookback
                docs = await self.api.events_created_since(floor, limit=self.config.page_size)
                st.seen = {d["id"]: float(d.get("created") or 0) for d in docs}
            st.seen[newest["id"]] = float(newest.get("created") or 0)
        st.snapshot = [(t, None) for t in self.config.snapshot]
        log.info("stripe source %s: the event feed starts at %s", self._ctx.pipeline, st.event_id or "the first event")

    def _check_window(self) -> None:
        assert self._ctx is not None
        st = self.state
        if st.event_id and st.created is not None and st.created < self._ctx.clock.time() - EVENTS_WINDOW:
            raise self._too_old()

    def _too_old(self) -> SourceError:
        st = self.state
        at = dt.datetime.fromtimestamp(st.created or 0, dt.UTC).isoformat(timespec="seconds")
        return SourceError(
            f"stripe source {self._ctx.pipeline if self._ctx else ''}: the newest event applied ({st.event_id}, "
            f"created {at}) is older than the 30 days of events Stripe lists, so the changes since then cannot "
            "be read: a re-snapshot is needed (remove the pipeline's checkpoint and restart with snapshot: "
            "[...] naming the object types)"
        )

    async def _events_after(self, event_id: str) -> tuple[list[dict[str, Any]], bool]:
        try:
            return await self.api.events_after(event_id, self.config.page_size, self.config.types)
        except ApiStatusError as exc:
            if exc.status in (400, 404) and _error_code(exc.body) == "resource_missing":
                raise self._too_old() from exc
            raise

    async def _emit(self, docs: list[dict[str, Any]], room: int, out: _Out) -> None:
        """Take events off the front of ``docs`` (oldest first) until ``room`` of them are to emit; map them,
        guard their order, and move the cursor past each (so the state covers exactly what was taken)."""
        assert self._ctx is not None and self._guard is not None
        st = self.state
        taken: list[Any] = []  # in order: a mapping (to admit) or (doc, reason) (a failure)
        while docs and len(taken) < room:
            doc = docs.pop(0)
            # in list order; a late-listed event behind the cursor never moves it back
            if float(doc.get("created") or 0) >= (st.created or 0) or not st.event_id:
                st.advance(doc)
            if doc["id"] not in st.seen:  # else emitted already (a sweep re-lists what the walk found, and back)
                st.seen[doc["id"]] = float(doc.get("created") or 0)
                try:
                    m = map_stripe_event(doc)
                except MappingError as exc:
                    taken.append((doc, f"stripe event: {exc}"))
                else:
                    entity = m.event.entity.removeprefix("stripe.")
                    if self.config.objects is None or entity in self.config.objects:
                        taken.append(m)
            st.prune(self.config.lookback)
        await self._guard.load([m.event for m in taken if not isinstance(m, tuple)])
        for m in taken:
            if isinstance(m, tuple):
                out.failures.append((self._placeholder(m[0]), m[1]))
                continue
            assert m.version is not None  # every mapped Stripe event has (created, id)
            position = self._seq.next()
            event = self._guard.admit(self._seq.seq, m.event.replace(position=position), m.version, m.record)
            if event is not None:
                out.events.append(event)
                out.versions.append(m.version)

    def _placeholder(self, doc: dict[str, Any]) -> ChangeEvent:
        after = {"event_id": doc["id"], "body": msgspec.json.encode(doc).decode()}
        return ChangeEvent(
            "stripe.event", (doc["id"],), "insert", after=after, position=self._seq.next(),
            committed_at=float(doc.get("created") or 0) if isinstance(doc.get("created"), (int, float)) else 0.0,
        )  # fmt: skip

    async def _snapshot_page(self) -> tuple[str, list[dict[str, Any]], bool]:
        """The next page of the object type being listed: ``(object type, objects, more)``."""
        object_type, starting_after = self.state.snapshot[0]
        params = {"limit": str(self.config.page_size)}
        if self.config.snapshot_since is not None:
            params["created[gte]"] = str(int(self.config.snapshot_since))
        if starting_after:
            params["starting_after"] = starting_after
        objects, more = await self.api.page(self.config.list_path(object_type), params)
        return object_type, objects, more

    def _snapshot_objects(self, held: _Held, room: int, out: _Out) -> None:
        """Emit up to ``room`` held objects; the listing resumes after the last one (it is in the marks)."""
        assert self._ctx is not None
        now = self._ctx.clock.time()
        objects, held.docs = held.docs[:room], held.docs[room:]
        for obj in objects:
            entity = f"stripe.{obj.get('object') or held.object_type}"
            out.events.append(ChangeEvent(entity, (obj["id"],), SNAPSHOT, after=obj, position=self._seq.next(),
                                          committed_at=now))  # fmt: skip
            out.versions.append(None)
        if objects:
            self.state.snapshot[0] = (held.object_type, objects[-1]["id"])
        if self._progress is None:
            self._progress = Progress("snapshot", unit="objects", enabled=self.config.progress, logger=log)
        self._progress.advance(f"stripe.{held.object_type}", len(objects))

    def _snapshot_done(self, held: _Held) -> None:
        """The held page is all emitted: the listing goes on, or this object type is done."""
        assert self._ctx is not None
        if held.more:
            return  # the next page starts after the last object emitted
        if self._progress is None:
            self._progress = Progress("snapshot", unit="objects", enabled=self.config.progress, logger=log)
        self._progress.advance(f"stripe.{held.object_type}", 0, done=True)
        self.state.snapshot.pop(0)
        log.info("stripe source %s: snapshot of %s done", self._ctx.pipeline, held.object_type)


def _error_code(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) else None
