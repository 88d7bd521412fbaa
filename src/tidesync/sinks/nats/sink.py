"""The NATS JetStream sink: each event one message, published with an ack and a ``Nats-Msg-Id``.

Exactly once, within a window
    Every message carries ``Nats-Msg-Id`` = the event's idempotency id
    (pipeline, sink name, entity, key, op, position; the same id the webhook
    sink sends), and the stream drops a message whose id it saw within its
    ``duplicate_window`` (2 minutes by default; a stream this sink creates gets
    ``duplicate_window`` from the config). The engine replays the events after
    its last checkpoint after a crash, seconds old in practice, so a replay is
    dropped by the stream. A replay *older than the window* (a pipeline down
    longer than the window with an unacknowledged batch, a dead letter replayed
    later) is stored again: a duplicate on the stream, which a consumer must
    tolerate (the ``nats`` source gives it a new position, so a SQL sink behind
    it applies it again; for an update that is the same values, but it can
    reorder one key's history if later events of that key came in between).

Per-key order
    The events of one key go to one subject (the template's ``{partition}``
    is a stable hash of the key) and are never in flight together: a write
    publishes in waves, the n-th event of each key in wave n, and a wave starts
    when every ack of the one before it arrived. Up to ``max_in_flight``
    publishes of a wave await their acks at once. A failed publish stops the
    write; the engine retries the whole write (re-publishes are de-duplicated),
    so no later event of that key goes before it.

Outcome of a write: every event acked, or ``TransientError`` (some publish
failed transiently: retry the write), or ``PartialBatchError`` when an event
failed permanently (cannot be encoded, too large, refused): it and the later
events of its key fail (``blocked``), the other keys are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from tidesync import formats
from tidesync.errors import (
    DeliveryError,
    PartialBatchError,
    PermanentError,
    SystemicError,
    TransientError,
)
from tidesync.event import ChangeEvent, Key
from tidesync.protocols import Context
from tidesync.sinks.nats.config import NatsSinkConfig
from tidesync.sinks.nats.subjects import render
from tidesync.sinks.nats.wire import connect, describe, is_connection_error, publish_error
from tidesync.sinks.webhook.envelope import idempotency_id

log = logging.getLogger("tidesync.nats")


class BlockedError(PermanentError):
    """Not published: an earlier event of the same key failed permanently in this write."""

    error_class = "blocked"


@dataclass(slots=True)
class _Message:
    index: int
    subject: str
    payload: bytes
    msg_id: str


class NatsSink:
    """Publishes events to a JetStream stream (see the module docstring for the guarantees)."""

    def __init__(self, config: NatsSinkConfig) -> None:
        self.config = config
        self.encode = formats.encoder(config.format, pipeline="", sink="sink")  # (named again at open)
        self.pipeline = ""
        self.name = "sink"
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.duplicates = 0  # publishes the stream dropped as already stored (replays)

    async def open(self, ctx: Context) -> None:
        self.pipeline, self.name = ctx.pipeline, ctx.name
        self.encode = formats.encoder(self.config.format, pipeline=ctx.pipeline, sink=ctx.name)
        if self.nc is None or self.nc.is_closed:
            try:
                name = f"tidesync:{ctx.pipeline}:{ctx.name}"
                self.nc = await connect(self.config.url, name, self.config.connect_timeout)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                raise TransientError(f"cannot connect to NATS at {self.config.url}: {describe(exc)}") from exc
            self.js = self.nc.jetstream(timeout=self.config.timeout)
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        assert self.js is not None
        cfg = self.config
        try:
            await self.js.stream_info(cfg.stream)
            return
        except nats.js.errors.NotFoundError:
            if not cfg.create_stream:
                raise SystemicError(f"JetStream stream {cfg.stream} does not exist (create_stream is off)") from None
        except Exception as exc:
            raise publish_error(exc, "$JS.API.STREAM.INFO", cfg.stream) from exc
        try:
            await self.js.add_stream(
                StreamConfig(
                    name=cfg.stream,
                    subjects=cfg.created_subjects(),
                    storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
                    duplicate_window=cfg.duplicate_window,
                    discard=DiscardPolicy.NEW,
                )
            )
        except nats.js.errors.BadRequestError as exc:  # overlapping subjects, a name in use by a race
            try:
                await self.js.stream_info(cfg.stream)
            except Exception:
                raise SystemicError(f"cannot create stream {cfg.stream}: {exc.description}") from exc
        except Exception as exc:
            raise publish_error(exc, "$JS.API.STREAM.CREATE", cfg.stream) from exc
        log.info("created JetStream stream %s (subjects %s)", cfg.stream, cfg.created_subjects())

    async def close(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception as exc:  # closing a broken connection: nothing left to lose
                log.debug("closing NATS: %s", describe(exc))

    # --- write ------------------------------------------------------------------------------

    def _message(self, index: int, event: ChangeEvent) -> _Message:
        cfg = self.config
        return _Message(
            index,
            render(cfg.subject, event.entity, event.key, cfg.partitions),
            self.encode(event),
            idempotency_id(self.pipeline, self.name, event),
        )

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        if self.js is None:
            raise TransientError("the NATS sink is not connected (open() first)")
        failures: dict[int, DeliveryError] = {}
        blocked: dict[tuple[str, Key], DeliveryError] = {}
        waves: list[list[tuple[tuple[str, Key], _Message]]] = []
        depth: dict[tuple[str, Key], int] = {}
        for i, e in enumerate(events):
            k = (e.entity, e.key)
            if k in blocked:
                failures[i] = _behind(blocked[k])
                continue
            try:
                msg = self._message(i, e)
            except (TypeError, ValueError, OverflowError) as exc:
                failures[i] = blocked[k] = PermanentError(f"the event cannot be encoded: {describe(exc)}")
                continue
            n = depth.get(k, 0)
            depth[k] = n + 1
            if n == len(waves):
                waves.append([])
            waves[n].append((k, msg))
        down: DeliveryError | None = None
        for wave in waves:
            if down is not None:
                for _, msg in wave:
                    failures[msg.index] = TransientError(f"not published after an earlier failure ({down})")
                continue
            results = await self._publish_wave([msg for _, msg in wave])
            for (k, msg), err in zip(wave, results, strict=True):
                if k in blocked:
                    failures[msg.index] = _behind(blocked[k])
                elif err is not None:
                    failures[msg.index] = err
                    blocked[k] = err
                    if err.transient and down is None:
                        down = err
        if not failures:
            return
        if all(e.transient for e in failures.values()):
            first = next(iter(failures.values()))
            raise TransientError(f"{len(failures)} of {len(events)} event(s) not acked: {first}")
        raise PartialBatchError(failures)

    async def _publish_wave(self, wave: list[_Message]) -> list[DeliveryError | None]:
        """Publish one wave (no two messages of one key), at most ``max_in_flight`` awaiting acks at once."""
        limit = asyncio.Semaphore(self.config.max_in_flight)

        async def one(msg: _Message) -> DeliveryError | None:
            async with limit:
                return await self._publish(msg)

        if len(wave) == 1:
            return [await self._publish(wave[0])]
        return list(await asyncio.gather(*(one(m) for m in wave)))

    async def _publish(self, msg: _Message) -> DeliveryError | None:
        js, cfg = self.js, self.config
        if js is None:
            return TransientError("the NATS connection was closed")
        try:
            ack = await js.publish(
                msg.subject,
                msg.payload,
                timeout=cfg.timeout,
                stream=cfg.stream,
                headers={"Nats-Msg-Id": msg.msg_id},
            )
        except Exception as exc:
            return publish_error(exc, msg.subject, cfg.stream)
        if ack.duplicate:
            self.duplicates += 1
        return None


def _behind(earlier: DeliveryError) -> DeliveryError:
    if earlier.transient:
        return TransientError(f"waits behind an earlier failed event of the same key ({earlier})")
    return BlockedError(f"waits behind an earlier failed event of the same key ({earlier})")
