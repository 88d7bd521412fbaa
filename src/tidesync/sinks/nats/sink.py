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
    is a stable hash of the key) and are never in flight together: the events
    of one key in a write form a chain, and an event is published when the ack
    of the one before it arrived (``publish.py``); the other keys' events keep
    going meanwhile, up to ``max_in_flight`` publishes awaiting their acks at
    once. A failed publish stops its key's chain and, when transient, the
    write; the engine retries the whole write (re-publishes are
    de-duplicated), so no later event of that key goes before it.

Schemas (``schemas: true``)
    Before the first event of an entity, and before the first event after its
    shape changed, the sink publishes the entity's schema as the source
    announced it (:class:`~tidesync.schema.EntitySchema` as JSON, header
    ``Tidesync-Schema``: the entity) to every subject its events may go to
    (each partition), so it precedes them on each. A ``nats`` source hands it
    to its sinks (:mod:`tidesync.sources.nats.source`): the destination gets
    the source's types, nullability and key instead of guessing them from
    values. Re-announced after a restart (de-duplicated within the window).

Outcome of a write: every event acked, or ``TransientError`` (some publish
failed transiently: retry the write), or ``PartialBatchError`` when an event
failed permanently (cannot be encoded, too large, refused): it and the later
events of its key fail (``blocked``), the other keys are written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
import nats.js.errors
import xxhash
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from tidesync.errors import DeliveryError, SystemicError, TransientError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.schema import EntitySchema, SchemaRegistry
from tidesync.sinks.blocked import BlockedError
from tidesync.sinks.nats.config import NatsSinkConfig
from tidesync.sinks.nats.publish import Message, Publisher
from tidesync.sinks.nats.subjects import SCHEMA_HEADER, every_subject, render
from tidesync.sinks.nats.wire import connect, describe, is_connection_error, publish_error
from tidesync.sinks.payloads import Payloads
from tidesync.sinks.waves import KeyOf, messages, raise_failures
from tidesync.sinks.webhook.envelope import idempotency_id

__all__ = ["BlockedError", "NatsSink"]

log = logging.getLogger("tidesync.nats")


class NatsSink:
    """Publishes events to a JetStream stream (see the module docstring for the guarantees)."""

    def __init__(self, config: NatsSinkConfig) -> None:
        self.config = config
        self.payloads = Payloads(config.format)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.publisher: Publisher | None = None
        self._duplicates = 0  # of publishers of earlier connections
        self.schemas = SchemaRegistry()  # the pipeline's, from open()
        self._announced: dict[str, EntitySchema] = {}  # entity -> the schema last published

    @property
    def duplicates(self) -> int:
        """Publishes the stream dropped as already stored (replays)."""
        return self._duplicates + (self.publisher.duplicates if self.publisher is not None else 0)

    async def open(self, ctx: Context) -> None:
        self.payloads.name(ctx)
        self.schemas = ctx.schemas
        if self.nc is None or self.nc.is_closed:
            try:
                name = f"tidesync:{ctx.pipeline}:{ctx.name}"
                self.nc = await connect(self.config.url, name, self.config.connect_timeout)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                raise TransientError(f"cannot connect to NATS at {self.config.url}: {describe(exc)}") from exc
            self.js = self.nc.jetstream(timeout=self.config.timeout)
            if self.publisher is not None:  # of a connection that was closed under us
                self._duplicates += self.publisher.duplicates
                self.publisher = None
        if self.publisher is None:
            publisher = Publisher(self.nc, self.config.stream, self.config.max_in_flight, self.config.timeout)
            try:
                await publisher.start()
            except Exception as exc:
                raise publish_error(exc, "(reply inbox)", self.config.stream) from exc
            self.publisher = publisher
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
                    num_replicas=cfg.replicas,
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
        if self.publisher is not None:
            self._duplicates += self.publisher.duplicates
        nc, self.nc, self.js, self.publisher = self.nc, None, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception as exc:  # closing a broken connection: nothing left to lose
                log.debug("closing NATS: %s", describe(exc))

    # --- write ------------------------------------------------------------------------------

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        publisher = self.publisher
        if publisher is None or self.nc is None or self.nc.is_closed:
            raise TransientError("the NATS sink is not connected (open() first)")
        cfg, encode, pipeline, name = self.config, self.payloads.encode, self.payloads.pipeline, self.payloads.sink
        template, partitions, stream = cfg.subject, cfg.partitions, cfg.stream
        if cfg.schemas:
            await self._announce({e.entity for e in events})
        failures: dict[int, DeliveryError] = {}
        last: dict[KeyOf, Message] = {}  # the latest message of each key: its chain's end
        firsts: list[Message] = []

        def make(i: int, e: ChangeEvent) -> Message:
            return Message(
                i,
                render(template, e.entity, e.key, partitions),
                encode(e),
                # Payloads.id, inlined: one call less per event on the hot path
                {"Nats-Msg-Id": idempotency_id(pipeline, name, e), "Nats-Expected-Stream": stream},
            )

        for _, k, msg in messages(events, make, failures, {}, _unusable):
            before = last.get(k)
            if before is None:
                firsts.append(msg)
            else:
                before.next = msg
            last[k] = msg
        failures |= await publisher.run(firsts)
        lost = len(events) - publisher.acked - len(failures)
        if lost:  # cannot happen; if it did, returning would claim events the stream never acked
            raise TransientError(f"lost track of {lost} publish(es) of this write")
        raise_failures(failures, len(events), "acked")

    async def _announce(self, entities: set[str]) -> None:
        assert self.js is not None
        cfg = self.config
        for entity in sorted(entities):
            schema = self.schemas.get(entity)
            if schema is None or self._announced.get(entity) == schema:
                continue
            data = msgspec.json.encode(schema)
            digest = xxhash.xxh64_hexdigest(data)
            for subject in every_subject(cfg.subject, entity, cfg.partitions):
                headers = {
                    SCHEMA_HEADER: entity,
                    "Nats-Msg-Id": f"schema:{self.payloads.pipeline}:{subject}:{digest}",
                    "Nats-Expected-Stream": cfg.stream,
                }
                try:
                    ack = await self.js.publish(subject, data, headers=headers)
                except Exception as exc:
                    raise publish_error(exc, subject, cfg.stream) from exc
                log.debug("announced the schema of %s on %s (stream sequence %s)", entity, subject, ack.seq)
            self._announced[entity] = schema


def _unusable(exc: Exception) -> str:
    return f"the event cannot be encoded: {describe(exc)}"
