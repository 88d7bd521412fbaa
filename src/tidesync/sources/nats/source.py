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

Without a checkpoint (``after`` None) an existing consumer resumes after its
ack floor; a new one starts at ``start`` (a sequence or a time), else at the
stream's first message.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

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

    def _fail(self, what: str, exc: BaseException) -> SourceError:
        msg = f"NATS stream {self.config.stream} consumer {self.config.consumer}: {what}: {describe(exc)}"
        if is_connection_error(exc) or isinstance(exc, nats.js.errors.ServiceUnavailableError):
            return SourceTransientError(msg)
        return SourceError(msg)

    async def open(self, ctx: Context, after: Position | None) -> None:
        cfg = self.config
        if self.nc is None or self.nc.is_closed:
            try:
                self.nc = await connect(cfg.url, f"tidesync:{ctx.pipeline}:{ctx.name}", cfg.connect_timeout)
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
            self.sub = await self.js.pull_subscribe_bind(durable=cfg.consumer, stream=cfg.stream)
        except SourceError:
            raise
        except Exception as exc:
            raise self._fail("cannot prepare the consumer", exc) from exc
        self.buffer.clear()

    def _wanted(self, start: int | None) -> ConsumerConfig:
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
            durable_name=cfg.consumer,
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
        info: ConsumerInfo | None
        try:
            info = await self.js.consumer_info(cfg.stream, cfg.consumer)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None and after is None:
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            after = floor or None
        if info is not None and not self._stale(info, after):
            self.last = max(self.last, after or 0)
            return
        if info is not None:
            await self.js.delete_consumer(cfg.stream, cfg.consumer)
            self.recreated += 1
            log.info("re-created consumer %s on %s to start after %s", cfg.consumer, cfg.stream, after)
        await self.js.add_consumer(cfg.stream, self._wanted(after + 1 if after else None))
        # Held deliveries belong to the consumer just replaced: its replacement starts after ``after``.
        self.held = {s: m for s, m in self.held.items() if s > (after or 0)}
        self.last = after or 0

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
        if not self.buffer:
            try:
                self.buffer.extend(await self.sub.fetch(max_events, timeout=max(max_wait, 0.01)))
            except (TimeoutError, nats.errors.TimeoutError):
                pass
            except Exception as exc:
                raise self._fail("fetch", exc) from exc
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        while self.buffer and len(events) + len(rejected) < max_events:
            msg = self.buffer.popleft()
            seq = msg.metadata.sequence.stream
            if seq <= self.last:
                await self._seen(seq, msg)
                continue
            self.last = seq
            self.held[seq] = msg.reply
            try:
                events.append(self.decode(msg.data).replace(position=(seq,)))
            except Exception as exc:  # any malformed payload: that message alone goes to the dead letters
                placeholder = ChangeEvent(msg.subject, (seq,), INSERT, position=(seq,))
                rejected.append((placeholder, f"cannot decode the message at sequence {seq}: {describe(exc)}"))
        if not events and not rejected:
            return Batch([])
        return Batch(events, (self.last,), rejected=rejected)

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
