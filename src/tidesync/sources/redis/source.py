"""The Redis Streams source: a consumer group read with XREADGROUP; entries acknowledged after the checkpoint.

Contract, as the engine sees it (see :mod:`tidesync.sources.redis.positions`)
- ``open(ctx, after)`` creates each stream's group if missing (``XGROUP CREATE
  ... MKSTREAM`` at ``start``), then reads this consumer's pending entries (the
  ones delivered before and never acknowledged: XREADGROUP from id 0). Those at
  or before the durable checkpoint (the state store's) were handled: they are
  acknowledged and skipped. Those after it but at or before ``after`` (a reopen
  in the same process resumes after the last position read, whose batches are
  still on their way) are skipped and stay pending until a commit covers them.
  The rest are handed out again, first, in id order. Then new entries (``>``).
- ``read`` returns at most ``max_events`` events; with several streams, the
  entries one XREADGROUP returned are merged by id and handed out over as many
  reads as it takes before the next XREADGROUP.
- ``commit(position)`` XACKs every entry handed out at or before it, per
  stream; nothing is acknowledged before that, so a crash at any moment leaves
  the unhandled entries pending, and the next ``open`` hands them out again.
  A failed XACK is logged and tried again at the next commit (or at the next
  open, which acknowledges what the checkpoint covers).
- A payload that cannot be decoded, or an entry that was trimmed or deleted
  while pending, is reported in ``batch.rejected`` (for the dead-letter queue)
  and acknowledged with its batch.

One consumer per group is the model: consumers sharing a group split a stream
between them, so per-key order holds only within what each one reads. A lost
connection, LOADING, READONLY or a vanished group (NOGROUP) is a
``SourceTransientError``: the engine reopens, which creates the group again
(after a Redis restart without persistence the stream is new and empty: what
it held is gone).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rx

from tidesync.errors import SourceError
from tidesync.event import Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.sinks.redis import wire
from tidesync.sources.redis import positions
from tidesync.sources.redis.config import RedisSourceConfig
from tidesync.sources.redis.positions import EntryId
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.sources.redis")
_PAGE = 1000  # entries per XREADGROUP while reading the pending list, per XACK


class RedisSource:
    def __init__(self, config: RedisSourceConfig) -> None:
        self.config = config
        self._decode = wire.decoder(config.format, config.mapping)
        self.streams: list[str] = list(config.streams)
        self._client: Any = None
        self._consumer = ""
        self._at: dict[str, EntryId] = {}  # per stream: the newest entry handed out
        self._ahead: deque[tuple[EntryId, str, dict[bytes, bytes] | None]] = deque()
        self._unacked: dict[str, list[EntryId]] = {}  # per stream: handed out (or skipped), not yet acked
        self.acked = 0

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._consumer = self.config.consumer or ctx.pipeline
        try:
            self._at = positions.parse(after, self.streams)
        except ValueError as exc:
            raise SourceError(f"{exc}; reset the pipeline's checkpoint to read these streams") from exc
        durable = await self._durable(ctx)
        self._ahead.clear()
        self._unacked = {s: [] for s in self.streams}
        if self._client is None:
            # Blocking reads are capped at half the timeout, so the socket's timeout only fires on a dead peer.
            self._client = wire.connect(self.config.url, self.config.timeout)
        try:
            for stream in self.streams:
                await self._create_group(stream)
                await self._reclaim(stream, durable[stream])
        except rx.RedisError as exc:
            raise wire.source_error(exc, self.config.url) from exc
        pending = sorted(self._ahead, key=lambda item: item[0])
        self._ahead = deque(pending)

    async def _durable(self, ctx: Context) -> dict[str, EntryId]:
        """Per stream, what the state store's checkpoint covers (nothing when it is not this source's)."""
        try:
            return positions.parse(await ctx.state.load_checkpoint(ctx.pipeline), self.streams)
        except ValueError:
            return positions.parse(None, self.streams)

    async def _create_group(self, stream: str) -> None:
        try:
            await self._client.xgroup_create(stream, self.config.group, id=self.config.start, mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _reclaim(self, stream: str, durable: EntryId) -> None:
        """Read this consumer's pending entries: ack the handled ones, queue the rest (see the module docstring)."""
        start = "0"
        done: list[EntryId] = []
        while True:
            reply = await self._client.xreadgroup(self.config.group, self._consumer, {stream: start}, count=_PAGE)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            for raw_id, raw_fields in entries:
                eid = wire.entry_id(raw_id)
                if eid <= durable:
                    done.append(eid)
                    continue
                self._unacked[stream].append(eid)
                if eid > self._at[stream]:
                    self._ahead.append((eid, stream, wire.fields_of(raw_fields)))
            start = wire.id_text(*wire.entry_id(entries[-1][0]))
        await self._ack(stream, done)

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        if self._client is None:
            raise RuntimeError("read() before open()")
        if not self._ahead:
            await self._fetch(max_events, max_wait)
        if not self._ahead:
            return Batch([])
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        while self._ahead and len(events) + len(rejected) < max_events:
            eid, stream, fields = self._ahead.popleft()
            self._at[stream] = eid
            position = positions.make(self._at, self.streams)
            event, problem = self._event(stream, eid, fields, position)
            if problem is None:
                events.append(event)
            else:
                rejected.append((event, problem))
        return Batch(events, positions.make(self._at, self.streams), rejected=rejected)

    async def _fetch(self, max_events: int, max_wait: float) -> None:
        block = int(min(max_wait, self.config.timeout / 2) * 1000)
        try:
            reply = await self._client.xreadgroup(
                self.config.group,
                self._consumer,
                dict.fromkeys(self.streams, ">"),
                count=max_events,
                block=block if block > 0 else None,
            )
        except rx.RedisError as exc:
            raise wire.source_error(exc, self.config.url) from exc
        got: list[tuple[EntryId, str, dict[bytes, bytes] | None]] = []
        for raw_stream, entries in reply or []:
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
            for raw_id, raw_fields in entries:
                eid = wire.entry_id(raw_id)
                self._unacked[stream].append(eid)
                got.append((eid, stream, wire.fields_of(raw_fields)))
        got.sort(key=lambda item: item[0])
        self._ahead.extend(got)

    def _event(
        self, stream: str, eid: EntryId, fields: dict[bytes, bytes] | None, position: Position
    ) -> tuple[ChangeEvent, str | None]:
        """The event an entry holds, at ``position``; or a placeholder and why it cannot be one."""
        where = f"entry {wire.id_text(*eid)} of stream {stream}"
        if fields is None:
            problem = f"{where} was trimmed or deleted before it was handled"
        elif wire.EVENT_FIELD not in fields:
            problem = f"{where} has no field 'event' (fields: {sorted(f.decode(errors='replace') for f in fields)})"
        else:
            try:
                return self._decode(fields[wire.EVENT_FIELD]).replace(position=position), None
            except Exception as exc:  # any payload a producer wrote: bad input is this entry's error, never fatal
                problem = f"{where}: the payload is not a {self.config.format} event: {type(exc).__name__}: {exc}"
        raw = {k.decode(errors="replace"): v.decode(errors="replace")[:1000] for k, v in (fields or {}).items()}
        placeholder = ChangeEvent(stream, (wire.id_text(*eid),), "insert", after=raw, position=position)
        return placeholder, problem

    async def commit(self, position: Position) -> None:
        try:
            upto = positions.parse(position, self.streams)
        except ValueError:
            return
        for stream in self.streams:
            ids = self._unacked.get(stream, [])
            n = sum(1 for eid in ids if eid <= upto[stream])  # handed out in id order
            if not n:
                continue
            try:
                await self._ack(stream, ids[:n])
            except rx.RedisError as exc:
                log.warning("redis source: cannot acknowledge %d entries of %s yet: %s", n, stream, exc)
                continue
            del ids[:n]

    async def _ack(self, stream: str, ids: Sequence[EntryId]) -> None:
        for start in range(0, len(ids), _PAGE):
            page = [wire.id_text(*eid) for eid in ids[start : start + _PAGE]]
            await self._client.xack(stream, self.config.group, *page)
            self.acked += len(page)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
