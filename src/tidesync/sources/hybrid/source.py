"""The hybrid source: a primary event source, a fallback poller of the same records, merged without doubles.

Reading
    Each sub-source is read by a task of its own into a small queue, so a slow
    or rate-limited poller never delays the primary. :meth:`HybridSource.read`
    takes every primary batch that is ready, then every fallback batch whose
    *release time* has come: the newest ``committed_at`` in it plus ``grace``
    (a batch of old changes, after downtime, is released at once). Holding
    the poller's copy that long gives the primary's copy of the same change
    time to arrive first, so only changes the primary really missed count.

    ``read(max_events)`` returns at most ``max_events`` events. The tasks
    start reading at the first ``read`` and ask each part for at most the
    ``max_events`` of the latest one, so a read takes whole sub-batches, in
    order, while they fit. A sub-batch read ahead for a larger read is split:
    the front part is handed out first, without a sub-position or state, and
    the rest keeps the sub-batch's position and state (a reopen after the front
    part resumes the sub-source before it, so that part is read again: at
    least once).

Matching (``match``, see :mod:`.versions` for tokens)
    - ``event_id`` (Stripe webhook + Stripe Events API poller; ``auto`` picks
      it): both sides see the same events, so a change is one event id and
      ``missed_by_primary`` is exact.
    - ``version`` (a CDC source + the SQL poller; ``auto`` with ``sql_poll``):
      the row's cursor value (``updated_at``), read from the primary's row
      image through the poller's cursor column. A poller sees only the state
      at each poll: versions that both overwrote before a poll are invisible,
      so this counts observed versions the primary never delivered.
    - ``values`` (anything else, e.g. HubSpot webhooks + the HubSpot poller):
      the fields of a record as applied by either side are kept; a fallback
      record whose fields (less ``ignore_fields``) equal them is a duplicate,
      otherwise only the differing fields are emitted and, for a record
      already known, the change counts as missed (a record first seen by the
      poller is its initial load, not a miss).

    A primary event is always applied, unless the fallback applied the same
    version already (the primary was later than ``grace``: it was counted as
    missed then). A fallback event is dropped when the primary saw its
    version, else applied and counted: ``tidesync_missed_by_primary_total{pipeline,
    entity}`` and one log line per change with its entity and key. Snapshot
    rows are never counted. The count is exact while the process runs; a
    change released from the fallback but not yet checkpointed when the
    process dies is counted again when it is read again after the restart. With versions, an
    :class:`~tidesync.sources.webhook.ordering.OrderingGuard` over both sides
    (shadow scope ``hybrid:<pipeline>:order``) keeps an older version from
    overwriting a newer one that the other side delivered first.

Positions
    The hybrid numbers its events itself, ``(epoch, seq)`` as the polling
    sources do (a new epoch on every open, from a state-store counter), so
    the positions a destination compares are one totally ordered sequence
    whichever side an event came from, and a change re-read after a restart
    always gets a larger position. A batch's position is ``(epoch, seq,
    primary position, fallback position)``: the last sub-batch of each side
    that was merged whole into it (or an earlier one), which is where each
    side resumes.
    ``commit`` passes each side its own position when it moved. Only the
    ``(epoch, seq)`` prefix is ever compared.

State
    The sub-sources' own state changes (``batch.state``), the
    versions seen (:class:`.versions.SeenVersions`) and the guard's versions travel with
    the hybrid batch and are committed with its checkpoint.

Reopen
    After a transient error the engine reopens the hybrid after the last
    batch it handed out. Batches the tasks had read beyond that are dropped,
    and the fallback is built afresh from its config, so nothing it read
    ahead (its pending shadows) can hide a row when it is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from tidesync.event import DELETE, SNAPSHOT, UPDATE, Batch, ChangeEvent, Position, diff_fields
from tidesync.observe.metrics import MISSED_BY_PRIMARY
from tidesync.protocols import Context, Source
from tidesync.registry import REGISTRY
from tidesync.sources.http.positions import next_epoch
from tidesync.sources.hybrid.config import HybridConfig
from tidesync.sources.hybrid.versions import DELETED, FALLBACK, PRIMARY, SeenVersions, cursor_token, order_key
from tidesync.sources.webhook.ordering import OrderingGuard
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.sources.hybrid")
EPOCH_SCOPE = "hybrid"
QUEUE_BATCHES = 4  # batches read ahead per side
SUB_BATCH = 1000  # events per sub-source read
SUB_WAIT = 0.2  # seconds a sub-source read waits for its first event


def build_part(model: Any) -> Source:
    source: Source = REGISTRY.get("source", model.type).build(model)
    return source


@dataclass
class _Held:
    """A sub-batch read ahead: a primary one is due at once (``release_at`` 0), a fallback one after grace."""

    batch: Batch[StateChanges]
    release_at: float


@dataclass
class _Out:
    events: list[ChangeEvent] = field(default_factory=list)
    failures: list[tuple[ChangeEvent, str]] = field(default_factory=list)
    state: StateChanges | None = None
    primary: Position | None = None
    fallback: Position | None = None
    missed: int = 0


class HybridSource:
    """See the module docstring."""

    def __init__(self, config: HybridConfig) -> None:
        self.config = config
        self.match = config.resolved_match()
        self.primary: Source = build_part(config.primary_model)
        self.fallback: Source = build_part(config.fallback_model)
        self._ctx: Context | None = None
        self._epoch = 0
        self._seq = 0
        self._positions: tuple[Position | None, Position | None] = (None, None)
        self._committed: tuple[Position | None, Position | None] = (None, None)
        self._queues: tuple[deque[_Held], deque[_Held]] = (deque(), deque())
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._want = SUB_BATCH  # events per sub-source read: the max_events of the latest read()
        self._asked = asyncio.Event()  # set by the first read(): the tasks read no more than it wants
        self._error: BaseException | None = None
        self._seen: SeenVersions | None = None
        self._guard: OrderingGuard | None = None
        self._opened = 0
        self.missed = 0  # changes only the fallback saw, since this object was made (tests)
        self.duplicates = 0  # copies dropped because the other side had delivered them

    @property
    def held(self) -> int:
        """Fallback batches read and waiting for their release time."""
        return len(self._queues[1])

    @property
    def parts(self) -> tuple[Source, Source]:
        """The sub-sources (the HTTP server finds a webhook primary's intake here)."""
        return self.primary, self.fallback

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        epoch = int(after[0]) if after else 0
        primary_at, fallback_at = (after[2], after[3]) if after and len(after) >= 4 else (None, None)
        self._epoch = await next_epoch(ctx.state, f"{EPOCH_SCOPE}:{ctx.pipeline}", epoch)
        self._seq = 0
        self._positions = self._committed = (primary_at, fallback_at)
        if self._opened:
            self.fallback = build_part(self.config.fallback_model)  # forget what it read ahead
        self._opened += 1
        self._seen = SeenVersions(ctx.state, f"hybrid:{ctx.pipeline}", self.config.dedupe_window)
        self._guard = OrderingGuard(ctx.state, f"hybrid:{ctx.pipeline}:order") if self.match != "values" else None
        self._error = None
        self._queues = (deque(), deque())
        await self.primary.open(self._sub_ctx(ctx, "primary"), primary_at)
        await self.fallback.open(self._sub_ctx(ctx, "fallback"), fallback_at)
        self._tasks = [
            asyncio.create_task(self._pump(self.primary, True), name=f"{ctx.pipeline}:hybrid-primary"),
            asyncio.create_task(self._pump(self.fallback, False), name=f"{ctx.pipeline}:hybrid-fallback"),
        ]

    @staticmethod
    def _sub_ctx(ctx: Context, name: str) -> Context:
        return Context(pipeline=ctx.pipeline, name=name, state=ctx.state, clock=ctx.clock, schemas=ctx.schemas)

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for part in (self.primary, self.fallback):
            with contextlib.suppress(Exception):
                await part.close()

    async def commit(self, position: Position) -> None:
        if len(position) < 4:
            return
        primary_at, fallback_at = position[2], position[3]
        if primary_at is not None and primary_at != self._committed[0]:
            await self.primary.commit(primary_at)
        if fallback_at is not None and fallback_at != self._committed[1]:
            await self.fallback.commit(fallback_at)
        self._committed = (primary_at, fallback_at)
        if self._seen is not None:
            self._seen.committed(tuple(position[:2]))

    # --- the reading tasks ------------------------------------------------------------------

    async def _pump(self, part: Source, primary: bool) -> None:
        assert self._ctx is not None
        grace = self.config.grace
        queue = self._queues[0 if primary else 1]
        try:
            await self._asked.wait()
            while True:
                while len(queue) >= QUEUE_BATCHES:
                    self._room.clear()
                    await self._room.wait()
                batch = await part.read(self._want, SUB_WAIT)
                if not batch.events and batch.position is None and not batch.rejected:
                    continue
                if primary or not batch.events:
                    queue.append(_Held(batch, 0.0))
                else:
                    newest = max(e.committed_at for e in batch.events)
                    queue.append(_Held(batch, max(newest + grace, 0.0)))
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to read(), which raises it to the engine
            self._error = exc
            self._wake.set()

    # --- merging --------------------------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        assert self._ctx is not None, "open() first"
        clock = self._ctx.clock
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        max_events = max(1, max_events)
        self._want = min(SUB_BATCH, max_events)
        self._asked.set()
        out = _Out()
        while True:
            if self._error is not None:
                raise self._error
            self._wake.clear()
            if await self._take(out, max_events):
                break  # everything ready was taken: hand it out now
            now = loop.time()
            if now >= deadline:
                break
            held = self._queues[1]
            wait = deadline - now
            if held:  # wake when the oldest held fallback batch is due
                wait = min(wait, max(0.0, held[0].release_at - clock.time()) + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        return self._batch(out, clock.time())

    async def _take(self, out: _Out, max_events: int) -> bool:
        """Merge ready primary batches, then fallback batches due, while they fit; True when any was."""
        assert self._ctx is not None
        took = False
        try:
            for side, queue in zip((PRIMARY, FALLBACK), self._queues, strict=True):
                while queue and queue[0].release_at <= self._ctx.clock.time():
                    batch = _fit(queue, max_events - len(out.events), whole=bool(out.events))
                    if batch is None:
                        return took  # the next sub-batch waits for the next read
                    await self._merge(batch, out, side)
                    took = True
        except BaseException:
            assert self._seen is not None
            self._seen.discard()
            raise
        finally:
            self._room.set()
        return took

    def _batch(self, out: _Out, read_at: float) -> Batch[StateChanges]:
        """The hybrid batch of what ``out`` took: its position names the sub-batches merged whole."""
        assert self._seen is not None
        moved = (out.primary, out.fallback) != (None, None)
        if not out.events and not out.failures and not moved:
            return Batch([], None, read_at)
        primary_at = out.primary if out.primary is not None else self._positions[0]
        fallback_at = out.fallback if out.fallback is not None else self._positions[1]
        self._positions = (primary_at, fallback_at)
        if not out.events:
            self._seq += 1  # a checkpoint of its own: positions never repeat
        state = StateChanges(shadow_put=self._seen.finish((self._epoch, self._seq)))
        if self._guard is not None:
            state.shadow_put += self._guard.take(self._seq)
        merged = state if out.state is None else out.state.merge(state)
        return Batch(
            out.events,
            (self._epoch, self._seq, primary_at, fallback_at),
            read_at,
            state=None if merged.is_empty() else merged,
            rejected=out.failures,
        )

    async def _merge(self, batch: Batch[StateChanges], out: _Out, side: str) -> None:
        assert self._ctx is not None and self._seen is not None
        if batch.position is not None:
            if side == PRIMARY:
                out.primary = batch.position
            else:
                out.fallback = batch.position
        if batch.state is not None:
            out.state = batch.state if out.state is None else out.state.merge(batch.state)
        for ev, reason in batch.rejected:
            out.failures.append((ev.replace(position=self._next()), reason))
        if not batch.events:
            return
        tokens = self._tokens(batch, side)
        await self._seen.load([(e.entity, e.key) for e in batch.events])
        if self._guard is not None:
            await self._guard.load([e for e, t in zip(batch.events, tokens, strict=True) if order_key(t) is not None])
        now = self._ctx.clock.time()
        for ev, token in zip(batch.events, tokens, strict=True):
            entry = self._seen.get(ev.entity, ev.key, now)
            if self.match == "values":
                emitted = self._by_values(ev, entry, side)
            else:
                emitted = self._by_token(ev, token, entry, side, now)
            if emitted is not None:
                out.events.append(emitted)

    def _tokens(self, batch: Batch[StateChanges], side: str) -> list[Any]:
        events = batch.events
        if self.match == "values":
            return [None] * len(events)
        if self.match == "event_id":
            return list(batch.versions) if batch.versions else [None] * len(events)
        # version: the fallback's cursor column, read from either side's row image
        cursor_of = getattr(self.fallback, "cursor_column", None)
        out: list[Any] = []
        for ev in events:
            if ev.op == DELETE:
                out.append(DELETED)
                continue
            value = None
            if cursor_of is not None and ev.after is not None:
                try:
                    value = ev.after.get(cursor_of(ev.entity))
                except KeyError:
                    value = None
            out.append(cursor_token(value) if value is not None else None)
        return out

    def _next(self) -> Position:
        self._seq += 1
        return (self._epoch, self._seq)

    def _by_token(self, ev: ChangeEvent, token: Any, entry: Any, side: str, now: float) -> ChangeEvent | None:
        if token is None or ev.op == SNAPSHOT:
            return ev.replace(position=self._next())  # nothing to match it with: apply it
        sides = entry.sides(token)
        entry.mark(token, side, now)
        if side == PRIMARY and FALLBACK in sides:
            self.duplicates += 1
            return None  # the fallback applied it already, after grace ran out (counted then)
        if side == FALLBACK:
            if PRIMARY in sides or FALLBACK in sides:
                self.duplicates += 1
                return None
            self._missed(ev)
        position = self._next()
        event = ev.replace(position=position)
        key = order_key(token)
        if self._guard is not None and key is not None:
            return self._guard.admit(self._seq, event, key, ev.after if ev.op != DELETE else None)
        return event

    def _by_values(self, ev: ChangeEvent, entry: Any, side: str) -> ChangeEvent | None:
        ignore = self.config.ignore_fields
        if ev.op == DELETE:
            known = entry.row is not None
            entry.row = None
            if side == FALLBACK:
                if not known:
                    self.duplicates += 1
                    return None
                self._missed(ev)
            return ev.replace(position=self._next())
        after = ev.after or {}
        written = ev.fields_to_write()
        if side == PRIMARY:
            entry.row = {**(entry.row or {}), **{f: after[f] for f in written if f in after}}
            return ev.replace(position=self._next())
        if entry.row is None:
            entry.row = dict(after)
            return ev.replace(position=self._next())  # a record first seen by the poller: its initial load
        compared = {f: after[f] for f in written if f in after and f not in ignore}
        changed = diff_fields({f: entry.row[f] for f in compared if f in entry.row}, compared)
        entry.row.update({f: after[f] for f in written if f in after})
        if not changed:
            self.duplicates += 1
            return None
        if ev.op != SNAPSHOT:
            self._missed(ev)
        return ev.replace(op=UPDATE, before=None, changed=changed, position=self._next())

    def _missed(self, ev: ChangeEvent) -> None:
        assert self._ctx is not None
        self.missed += 1
        MISSED_BY_PRIMARY.labels(self._ctx.pipeline, ev.entity).inc()
        log.warning(
            "pipeline %s: %s %s was missed by the primary source (only the fallback saw it)",
            self._ctx.pipeline, ev.entity, list(ev.key),
        )  # fmt: skip


def _fit(queue: deque[_Held], room: int, *, whole: bool) -> Batch[StateChanges] | None:
    """The front sub-batch of ``queue`` when it fits in ``room`` events, else None.

    Unless ``whole``, one larger than ``room`` (read ahead for a larger read) is
    split: its front ``room`` events come out without a position or state, and
    the rest stays at the front of the queue with the sub-batch's position and
    state, which describe the whole sub-batch.
    """
    front = queue[0]
    batch = front.batch
    if len(batch.events) <= room:
        queue.popleft()
        return batch
    if whole or room <= 0:
        return None
    front.batch = replace(batch, events=batch.events[room:], versions=batch.versions[room:], rejected=[])
    return Batch(batch.events[:room], None, batch.read_at, rejected=batch.rejected, versions=batch.versions[:room])
