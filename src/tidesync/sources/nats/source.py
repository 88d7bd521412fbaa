"""The NATS JetStream source: a durable pull consumer whose acks follow the engine's checkpoint.

Positions
    ``(stream_sequence,)`` of the message. ``open(ctx, after)`` reads the
    messages with a sequence above ``after[0]``; a batch's position is the
    sequence of its last message (a rejected one included).

Acks
    A message is acked only in ``commit(position)``, after the engine's
    checkpoint covers it, never earlier. A lost ack is harmless: the server
    redelivers the message, and a redelivery at or before the checkpoint is
    acked and skipped.

Redelivery while the engine holds a message
    ``ack_wait`` (default 300 s) is how long the server waits for an ack
    before it redelivers; a message waits in the engine at most a queue of
    batches plus the write in flight, which is well under a second while the
    sink keeps up, but as long as an outage lasts while it does not. So
    ``ack_wait`` is set long, and a redelivery that comes anyway (an outage
    longer than ``ack_wait``) is recognised by its sequence, at or below the
    last one read, and skipped: the engine still holds the first delivery and
    acks it with its commit (the newest delivery's ack subject is kept).
    ``max_ack_pending`` (default 20,000) only bounds what is read ahead of
    the checkpoint; it must exceed one read (``max_events``), or reads stall.

Restart
    After a crash the consumer still counts the messages the dead process
    read as delivered: the server would redeliver them only after
    ``ack_wait``, and would meanwhile deliver newer ones first (out of order).
    So ``open`` compares the consumer with ``after``: when it delivered
    anything beyond ``after`` (or its settings differ from the config), the
    consumer is deleted and created again to start at ``after[0] + 1``. Which
    is safe only on a stream with ``retention: limits``, where deleting a
    consumer deletes no message: another retention is refused at open. One
    process reads one consumer; two readers of one durable would each see a
    part of the stream.

A lost connection
    Messages the server delivered while the connection was going down never
    arrive, yet the consumer counts them as delivered: it would redeliver
    them only after ``ack_wait``, after newer ones, which the source would
    then take for redeliveries of handled messages and skip (lost). So the
    first read after a disconnect fails as transient, and the engine reopens
    the source after the last message it read: ``open`` re-creates the
    consumer there (see Restart), and nothing delivered into the void is
    skipped.

Schemas
    A message with header ``Tidesync-Schema`` (published by a ``nats`` sink
    with ``schemas: true``) holds an entity's schema, not an event: it is
    handed to the pipeline's sinks (``ctx.schemas``, in effect from its
    sequence on), and kept in the state store (kv namespace
    ``nats_schemas:<pipeline>``) in the transaction of the checkpoint that
    passes it, so a reopen after a restart or a takeover starts with the
    shapes it had read.

Without a checkpoint (``after`` None) an existing consumer resumes after its
ack floor; a new one starts at ``start`` (a sequence or a time), else at the
stream's first message.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections import deque
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, RetentionPolicy

from tidesync import formats
from tidesync.errors import SourceError, SourceTransientError
from tidesync.event import INSERT, Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.schema import EntitySchema, SchemaRegistry
from tidesync.sinks.nats.subjects import SCHEMA_HEADER
from tidesync.sinks.nats.wire import connect, describe, is_connection_error
from tidesync.sources.nats.config import NatsSourceConfig
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.nats")


class NatsSource:
    def __init__(self, config: NatsSourceConfig) -> None:
        self.config = config
        self.decode = formats.decoder(config.format, mapping=config.mapping)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.sub: JetStreamContext.PullSubscription | None = None
        self.last = 0  # the highest sequence read (or known handled: ``after``)
        self.held: dict[int, str] = {}  # read, not yet committed: sequence -> newest delivery's ack subject
        self.buffer: deque[Msg] = deque()  # fetched beyond what one read returns
        self.recreated = 0  # times open() re-created the consumer (after a crash or a config change)
        self.schemas = SchemaRegistry()  # the pipeline's, from open()
        self.schema_ns = ""
        self.interrupted = False  # the connection dropped since open(): deliveries may be lost
        self.consumer = config.consumer  # the durable read: the configured one, or this open's (fresh_consumer)

    def _fail(self, what: str, exc: BaseException) -> SourceError:
        msg = f"NATS stream {self.config.stream} consumer {self.config.consumer}: {what}: {describe(exc)}"
        if is_connection_error(exc) or isinstance(exc, nats.js.errors.ServiceUnavailableError):
            return SourceTransientError(msg)
        return SourceError(msg)

    async def open(self, ctx: Context, after: Position | None) -> None:
        cfg = self.config
        self.schemas, self.schema_ns = ctx.schemas, f"nats_schemas:{ctx.pipeline}"
        for value in (await ctx.state.kv_scan(self.schema_ns)).values():
            self.schemas.put(msgspec.convert(value, EntitySchema))
        if self.nc is None or self.nc.is_closed:
            try:
                name = f"tidesync:{ctx.pipeline}:{ctx.name}"
                self.nc = await connect(cfg.url, name, cfg.connect_timeout, self._disconnected)
            except Exception as exc:
                raise self._fail(f"cannot connect to {cfg.url}", exc) from exc
            self.js = self.nc.jetstream()
        assert self.js is not None and self.nc is not None
        if len(cfg.subjects) > 1 and _version(self.nc) < (2, 10):
            version = self.nc.connected_server_version
            raise SourceError(f"several subjects need nats-server 2.10 or newer; this one is {version}")
        try:
            stream = await self.js.stream_info(cfg.stream)
        except nats.js.errors.NotFoundError as exc:
            # The stream may be made by a sink in another process that has not started yet.
            raise SourceTransientError(f"JetStream stream {cfg.stream} does not exist (yet)") from exc
        except Exception as exc:
            raise self._fail("stream info", exc) from exc
        if stream.config.retention not in (None, RetentionPolicy.LIMITS):
            raise SourceError(
                f"stream {cfg.stream} has retention {stream.config.retention.value}: the nats source needs "
                "retention: limits (it re-creates its consumer after a crash, which would delete messages)"
            )
        seq = int(after[0]) if after else None
        try:
            await self._prepare_consumer(seq)
            self.sub = await self.js.pull_subscribe_bind(durable=self.consumer, stream=cfg.stream)
        except SourceError:
            raise
        except Exception as exc:
            raise self._fail("cannot prepare the consumer", exc) from exc
        self.buffer.clear()
        self.interrupted = False

    def _disconnected(self) -> None:
        self.interrupted = True

    def _wanted(self, start: int | None, name: str | None = None) -> ConsumerConfig:
        cfg = self.config
        policy: dict[str, Any] = {"deliver_policy": DeliverPolicy.ALL}
        if start is not None:
            policy = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start}
        elif cfg.start is not None and cfg.start.sequence is not None:
            policy = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": cfg.start.sequence}
        elif cfg.start is not None and cfg.start.time is not None:
            policy = {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": cfg.start.time}
        one = len(cfg.subjects) == 1
        return ConsumerConfig(
            durable_name=name or cfg.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=cfg.ack_wait,
            max_ack_pending=cfg.max_ack_pending,
            max_deliver=-1,
            filter_subject=cfg.subjects[0] if one else None,
            filter_subjects=None if one else list(cfg.subjects),
            **policy,
        )

    async def _prepare_consumer(self, after: int | None) -> None:
        """Make the durable consumer deliver the messages after ``after``, in order (see the module docstring)."""
        assert self.js is not None
        cfg = self.config
        if cfg.fresh_consumer:
            await self._fresh_consumer(after)
            return
        info: ConsumerInfo | None
        try:
            info = await self.js.consumer_info(cfg.stream, cfg.consumer)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None and after is None:
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            after = floor or None
        if info is not None and not self._stale(info, after):
            # Not max(self.last, after): the engine may reopen at an older checkpoint than this object read up
            # to (its pipeline stopped with batches read and not written, then ran again). Every message after
            # ``after`` must come again; treating one as a redelivery of something handled would lose it.
            self.last = after or 0
            self.held = {s: m for s, m in self.held.items() if s <= self.last}
            return
        if info is not None:
            await self.js.delete_consumer(cfg.stream, cfg.consumer)
            self.recreated += 1
            log.info("re-created consumer %s on %s to start after %s", cfg.consumer, cfg.stream, after)
        await self.js.add_consumer(cfg.stream, self._wanted(after + 1 if after else None))
        # Held deliveries belong to the consumer just replaced: its replacement starts after ``after``.
        self.held = {s: m for s, m in self.held.items() if s > (after or 0)}
        self.last = after or 0

    async def _fresh_consumer(self, after: int | None) -> None:
        """A consumer never used before, starting after ``after``; the earlier ones of this source are deleted.

        Why not one durable re-created under the same name: on a JetStream cluster, a node that was down
        while a consumer was deleted and created again can come back holding the old one's state, and the
        messages it then skips are never seen here. A new name has no past on any node.
        """
        assert self.js is not None
        cfg = self.config
        prefix = f"{cfg.consumer}_"
        for info in await self.js.consumers_info(cfg.stream):
            if info.name.startswith(prefix):
                try:
                    await self.js.delete_consumer(cfg.stream, info.name)
                except nats.js.errors.NotFoundError:
                    pass
        self.consumer = f"{prefix}{secrets.token_hex(4)}"
        wanted = self._wanted(after + 1 if after else None, self.consumer)
        wanted.inactive_threshold = 3600.0  # a consumer left behind by a killed process goes by itself
        await self.js.add_consumer(cfg.stream, wanted)
        self.held = {s: m for s, m in self.held.items() if s <= (after or 0)}
        self.last = after or 0
        self.recreated += 1

    def _stale(self, info: ConsumerInfo, after: int | None) -> bool:
        cfg, have = self.config, info.config
        delivered = info.delivered.stream_seq if info.delivered else 0
        if delivered > (after or 0):
            return True  # a previous reader took messages past the checkpoint: they would come late
        filters = [have.filter_subject] if have.filter_subject else list(have.filter_subjects or [])
        return (
            filters != list(cfg.subjects)
            or have.ack_wait != cfg.ack_wait
            or have.max_ack_pending != cfg.max_ack_pending
            or have.ack_policy != AckPolicy.EXPLICIT
        )

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        if self.sub is None:
            raise SourceTransientError("the NATS source is not open")
        if self.interrupted:
            raise SourceTransientError(
                f"the connection to NATS dropped: re-reading consumer {self.consumer} after sequence "
                f"{self.last} (deliveries in flight may be lost)"
            )
        if not self.buffer:
            try:
                self.buffer.extend(await self.sub.fetch(max_events, timeout=max(max_wait, 0.01)))
            except (TimeoutError, nats.errors.TimeoutError):
                pass
            except Exception as exc:
                raise self._fail("fetch", exc) from exc
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        state = StateChanges()
        while self.buffer and len(events) + len(rejected) < max_events:
            msg = self.buffer.popleft()
            seq = msg.metadata.sequence.stream
            if seq <= self.last:
                await self._seen(seq, msg)
                continue
            self.last = seq
            self.held[seq] = msg.reply
            if msg.headers and SCHEMA_HEADER in msg.headers:
                self._schema(msg, seq, state, rejected)
                continue
            try:
                events.append(self.decode(msg.data).replace(position=(seq,)))
            except Exception as exc:  # any malformed payload: that message alone goes to the dead letters
                placeholder = ChangeEvent(msg.subject, (seq,), INSERT, position=(seq,))
                rejected.append((placeholder, f"cannot decode the message at sequence {seq}: {describe(exc)}"))
        if not events and not rejected and state.is_empty():
            return Batch([])
        return Batch(events, (self.last,), state=state, rejected=rejected)

    def _schema(self, msg: Msg, seq: int, state: StateChanges, rejected: list[tuple[ChangeEvent, str]]) -> None:
        try:
            schema = dataclasses.replace(msgspec.json.decode(msg.data, type=EntitySchema), since=(seq,))
        except Exception as exc:  # a malformed schema: said like a malformed event (the events still go)
            placeholder = ChangeEvent(msg.subject, (seq,), INSERT, position=(seq,))
            rejected.append((placeholder, f"cannot decode the schema at sequence {seq}: {describe(exc)}"))
            return
        self.schemas.put(schema)
        state.kv_put[(self.schema_ns, schema.entity)] = msgspec.to_builtins(schema)

    async def _seen(self, seq: int, msg: Msg) -> None:
        """A redelivery: of a message the engine holds (keep it for the commit), or of one already handled."""
        if seq in self.held:
            self.held[seq] = msg.reply  # the newest delivery's ack subject is the one the server expects
            return
        await self._ack(seq, msg.reply)  # at or before the checkpoint: handled, only its ack was lost

    async def _ack(self, seq: int, reply: str) -> None:
        # Through the current connection: a delivery read before a reopen is acked by its subject alone.
        if self.nc is None:
            return
        try:
            await self.nc.publish(reply, b"+ACK")
        except Exception as exc:  # redelivered later and skipped then (it is at or before the checkpoint)
            log.debug("ack of %s failed: %s", seq, describe(exc))

    async def commit(self, position: Position) -> None:
        upto = int(position[0])
        done = [s for s in self.held if s <= upto]
        for s in done:
            await self._ack(s, self.held.pop(s))

    async def close(self) -> None:
        """Close the connection; held deliveries are kept (a reopen resumes after the last read)."""
        nc, self.nc, self.js, self.sub = self.nc, None, None, None
        self.buffer.clear()
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()  # flushes the acks written so far
            except Exception as exc:
                log.debug("closing NATS: %s", describe(exc))


def _version(nc: Client) -> tuple[int, int]:
    try:
        major, minor, *_ = str(nc.connected_server_version).split(".")
        return int(major), int(minor)
    except ValueError:
        return (0, 0)
