"""The Redis Streams sink: each event XADDed to its stream, exactly once, in per-key order.

Exactly once
    The position of the newest applied event is stored in Redis, under
    ``tidesync:applied:<pipeline>:<sink>`` (JSON), by the same Lua script that
    XADDs the events: a script runs atomically, so after a crash at any moment
    either the entries and the position are there, or neither is. A write
    first reads the stored position, skips every event at or before it (unless
    ``replay``: dead-letter replays are older than what was applied after
    them), and hands the script the value it read; the script refuses if the
    position moved meanwhile (a second writer), and the write starts over.
    Before any XADD the script checks every stream it writes is a stream (or
    absent), so a run-time error cannot leave half a batch behind a stored
    position. Large writes go in chunks of ``chunk`` events, each one script
    with its own position.

Per-key order
    The stream name depends on the entity (and pipeline) only, so the events
    of one key go to one stream, in the order they were written. An event
    that cannot be encoded fails alone (PermanentError, reported per event);
    later events of its key in the same write are not written but fail as
    ``blocked``, so a dead-letter replay never lands behind a newer event.

Trimming (``maxlen``)
    Every XADD trims the stream to about ``maxlen`` entries (``MAXLEN ~``:
    whole macro nodes, so a little more may stay). Redis trims regardless of
    consumer groups: a consumer that falls more than ``maxlen`` entries behind
    loses the oldest entries it has not read, and an entry delivered but not
    yet acknowledged can vanish from under it (XREADGROUP then returns it
    without fields). Size ``maxlen`` for the longest outage of the slowest
    consumer, or set it to null and trim by other means.

Outages
    A refused or lost connection, a timeout, LOADING, READONLY, OOM, BUSY or
    MASTERDOWN are transient (the engine retries with backoff; nothing was
    written, or the script ran whole and the retry skips it by position).
    Authentication, ACL refusals and a key of the wrong type are systemic.
    Durability is Redis's: an entry is acknowledged once Redis ran the script,
    which survives a Redis restart only with AOF (``appendfsync always`` to
    lose nothing on a crash of the Redis host; ``everysec`` may lose the last
    second, entries and stored position together, after the engine already
    checkpointed past them). Without persistence a Redis restart loses the
    streams and the stored positions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.exceptions as rx

from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, TransientError
from tidesync.event import ChangeEvent, Key, Position, json_dumps
from tidesync.protocols import Context
from tidesync.sinks.applied import live_events
from tidesync.sinks.redis import wire
from tidesync.sinks.redis.config import RedisSinkConfig

log = logging.getLogger("tidesync.sinks.redis")

# KEYS[1]: the applied-position key; KEYS[2..]: the streams. ARGV[1]: the stored position the writer read
# ('' when none); ARGV[2]: the position to store ('' to keep it); ARGV[3]: maxlen (0: no trimming); then
# (stream index, payload) pairs. Checks everything before the first write, so it writes all or nothing.
_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then
  return redis.error_reply('TIDESYNC_MOVED the applied position changed while this write was prepared')
end
for i = 2, #KEYS do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. t .. ', not a stream')
  end
end
local maxlen = tonumber(ARGV[3])
local ids = {}
for j = 4, #ARGV, 2 do
  local key = KEYS[tonumber(ARGV[j]) + 1]
  if maxlen > 0 then
    ids[#ids + 1] = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'event', ARGV[j + 1])
  else
    ids[#ids + 1] = redis.call('XADD', key, '*', 'event', ARGV[j + 1])
  end
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
end
return ids
"""
_CONFLICT_RETRIES = 3


class BlockedError(PermanentError):
    """Not written: an earlier event of the same key failed in this write."""

    error_class = "blocked"


def applied_key(prefix: str, pipeline: str, sink: str) -> str:
    return f"{prefix}:applied:{pipeline}:{sink}"


def encode_position(position: Position) -> bytes:
    return json_dumps(list(position))


def decode_position(raw: bytes | str | None) -> Position | None:
    if raw is None or raw in (b"", ""):
        return None
    return tuple(msgspec.json.decode(raw))


class RedisSink:
    def __init__(self, config: RedisSinkConfig) -> None:
        self.config = config
        self._encode = wire.encoder(config.format)  # a ConfigError here fails the pipeline at start
        self._client: Any = None
        self._script: Any = None
        self._key = ""
        self._pipeline = ""
        self.entries_written = 0

    async def open(self, ctx: Context) -> None:
        self._pipeline = ctx.pipeline
        self._key = applied_key(self.config.key_prefix, ctx.pipeline, ctx.name)
        self._encode = wire.encoder(self.config.format, ctx.pipeline, ctx.name)  # (cloudevents ids name the sink)
        if self._client is None:
            self._client = wire.connect(self.config.url, self.config.timeout)
            self._script = self._client.register_script(_SCRIPT)
        try:
            await self._client.ping()
        except Exception as exc:
            raise wire.delivery_error(exc, self.config.url) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def stream_of(self, event: ChangeEvent) -> str:
        return self.config.stream.format(entity=event.entity, pipeline=self._pipeline)

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        if self._client is None:
            raise RuntimeError("write() before open()")
        failures: dict[int, DeliveryError] = {}
        blocked: dict[tuple[str, Key], DeliveryError] = {}
        size = self.config.chunk
        for start in range(0, len(events), size):
            chunk = events[start : start + size]
            for attempt in range(_CONFLICT_RETRIES):
                try:
                    done = await self._write_chunk(chunk, start, replay, failures, blocked)
                except Exception as exc:
                    raise wire.delivery_error(exc, self.config.url) from exc
                if done:
                    break
                log.info("redis sink %s: the applied position moved (attempt %d); writing again", self._key, attempt)
            else:
                raise TransientError(f"{self._key}: another writer keeps moving the applied position")
        if failures:
            raise PartialBatchError(failures)

    async def _write_chunk(
        self,
        chunk: Sequence[ChangeEvent],
        offset: int,
        replay: bool,
        failures: dict[int, DeliveryError],
        blocked: dict[tuple[str, Key], DeliveryError],
    ) -> bool:
        """One atomic script for ``chunk``; False when the applied position moved meanwhile (try again)."""
        raw = await self._client.get(self._key)
        live, top = live_events(chunk, decode_position(raw), replay)
        if not live and top is None:
            return True
        streams: dict[str, int] = {}
        args: list[Any] = []
        mine: dict[int, DeliveryError] = {}
        held = dict(blocked)
        for i in live:
            ev = chunk[i]
            k = (ev.entity, ev.key)
            earlier = held.get(k)
            if earlier is not None:
                mine[offset + i] = BlockedError(f"waits behind an earlier failed event of the same key ({earlier})")
                continue
            try:
                payload = self._encode(ev)
                stream = self.stream_of(ev)
            except (TypeError, ValueError, OverflowError, KeyError, IndexError) as exc:
                err = PermanentError(
                    f"the event cannot be encoded as {self.config.format}: {type(exc).__name__}: {exc}"
                )
                mine[offset + i] = held[k] = err
                continue
            args += (streams.setdefault(stream, len(streams) + 1), payload)
        argv = [raw or b"", encode_position(top) if top is not None else b"", self.config.maxlen or 0, *args]
        try:
            await self._script(keys=[self._key, *streams], args=argv)
        except rx.ResponseError as exc:
            if "TIDESYNC_MOVED" in str(exc):
                return False
            raise
        failures.update(mine)
        blocked.update(held)
        self.entries_written += len(args) // 2
        return True
