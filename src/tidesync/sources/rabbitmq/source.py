"""The RabbitMQ source: a queue consumed with manual acks that follow the engine's checkpoint.

Positions
    A queue has no sequence, so the source numbers what it reads: ``(n,)``,
    one more for every message that becomes an event (or a rejected record).
    The number is carried by the checkpoint itself: ``open(ctx, after)``
    continues at ``after[0] + 1`` (or after the newest de-duplication chunk,
    when that is higher: a reset checkpoint still gets increasing positions).
    A batch's position is the number of its last message. "Resume after"
    holds because a message at or before the checkpoint was acked and is
    gone from the queue, or, if its ack was lost, is recognised (below).

Acks
    Messages are acked only in ``commit(position)``, after the engine's
    checkpoint covers them (one ``multiple`` ack when they are the oldest
    unacked deliveries of the channel); ``prefetch`` bounds what is read
    ahead of the checkpoint. A crash, a lost connection or a closed channel
    returns every unacked message to the queue; RabbitMQ delivers it again
    with the ``redelivered`` flag.

Nothing applied twice: the message-id window
    The sink gives every message a ``message_id`` (the event's idempotency
    id). The source keeps the ids of the last ``dedupe_window`` messages it
    handed out in the state store, written with each batch (``Batch.state``:
    one kv entry per batch), so they are durable exactly when the batch's
    checkpoint is. A message whose id is in the window was applied: it is
    acked and skipped. That covers both ways RabbitMQ delivers a message
    twice: a redelivery (a crash between the state commit and the ack), and
    a second copy (the sink published it again after its own crash or a lost
    confirm; that copy is not flagged ``redelivered``). A message whose id
    is read but not committed yet (a redelivery after a reconnect while its
    first delivery is still on its way to the sink) is acked with that batch.
    A message without ``message_id`` (another producer) cannot be recognised:
    it is applied again after a redelivery. An id older than the window is
    forgotten: a copy of it arriving later is applied again.

One process reads one queue. Several consumers of one queue would each get
part of it and per-key order would be lost.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from tidesync import formats
from tidesync.errors import SourceError, SourceTransientError
from tidesync.event import INSERT, Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.sinks.rabbitmq.wire import close_quietly, connect, describe, safe_url, source_error
from tidesync.sources.rabbitmq.config import RabbitMQSourceConfig
from tidesync.sources.rabbitmq.window import Window, chunk_key
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.rabbitmq")
NAMESPACE = "rabbitmq.applied"  # kv: the de-duplication window's chunks


class RabbitMQSource:
    def __init__(self, config: RabbitMQSourceConfig) -> None:
        self.config = config
        self.decode = formats.decoder(config.format, mapping=config.mapping)
        self.conn: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.underlay: aiormq.Channel | None = None  # the driver's channel: its consumers
        self.consumer = ""  # our consumer tag on it
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.counter = 0  # the number of the last message read (or ``after``)
        self.window = Window(config.dedupe_window, "")
        self.held: dict[str, int] = {}  # message id -> number: read, not yet committed
        self.unsaved: list[tuple[int, str, list[str]]] = []  # (number, chunk key, ids) of batches not committed
        self.pending: list[tuple[int, AbstractIncomingMessage]] = []  # (number it waits for, delivery) to ack
        self.duplicates = 0  # messages skipped as applied (or held) already
        self.redelivered = 0  # messages the broker flagged as delivered before

    async def open(self, ctx: Context, after: Position | None) -> None:
        cfg = self.config
        if after is not None and (len(after) != 1 or not isinstance(after[0], int)):
            raise SourceError(f"not a RabbitMQ source position: {after!r}; reset the pipeline's checkpoint")
        start = int(after[0]) if after else 0
        self.window = Window(cfg.dedupe_window, f"{ctx.pipeline}/{ctx.name}/")
        try:
            self.window.load(await ctx.state.kv_scan(NAMESPACE, self.window.prefix))
        except Exception as exc:
            raise SourceTransientError(f"cannot load the RabbitMQ de-duplication window: {describe(exc)}") from exc
        # A reopen in the same process resumes after the last read: those batches are still on their way.
        # One after an earlier position drops what was read beyond it (it comes again, as new).
        self.held = {m: n for m, n in self.held.items() if n <= start}
        self.unsaved = [u for u in self.unsaved if u[0] <= start]
        self.pending = []  # deliveries of the old channel cannot be acked on a new one: they come again
        self.counter = max(start, self.window.last)
        await self._close()
        try:
            self.conn = await connect(
                cfg.url, f"tidesync:{ctx.pipeline}:{ctx.name}", cfg.connect_timeout, cfg.heartbeat
            )
            self.channel = await self.conn.channel(publisher_confirms=False)
            await self.channel.set_qos(prefetch_count=cfg.prefetch)
            queue = await self._queue(self.channel)
            self.consumer = await queue.consume(self._deliver, no_ack=False)
            underlay = await self.channel.get_underlay_channel()
            self.underlay = underlay if isinstance(underlay, aiormq.Channel) else None
        except Exception as exc:
            await self._close()
            raise source_error(exc, f"cannot consume queue {cfg.queue!r} at {safe_url(cfg.url)}") from exc

    async def _queue(self, channel: AbstractChannel) -> AbstractQueue:
        cfg = self.config
        if cfg.bind is None:
            return await channel.get_queue(cfg.queue, ensure=True)
        queue = await channel.declare_queue(cfg.queue, durable=True, arguments={"x-queue-type": cfg.queue_type})
        exchange = await channel.declare_exchange(cfg.bind.exchange, cfg.bind.exchange_type, durable=True)
        for key in cfg.bind.routing_keys:
            await queue.bind(exchange, key)
        return queue

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self.inbox.put_nowait(message)  # bounded by prefetch

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        self._check()
        first: AbstractIncomingMessage | None = None
        if self.inbox.empty():
            try:
                first = await asyncio.wait_for(self.inbox.get(), timeout=max(max_wait, 0.001))
            except TimeoutError:
                self._check()
                return Batch([])
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        ids: list[str] = []
        dropped = self.duplicates
        while (first is not None or not self.inbox.empty()) and len(events) + len(rejected) < max_events:
            msg, first = (first, None) if first is not None else (self.inbox.get_nowait(), None)
            mid = msg.message_id
            self.redelivered += bool(msg.redelivered)
            if mid and mid in self.window:
                self.duplicates += 1
                await self._ack([msg])  # applied and checkpointed before: only the ack was lost
                continue
            if mid and mid in self.held:
                self.duplicates += 1
                self.pending.append((self.held[mid], msg))  # acked with the batch that holds the first copy
                continue
            self.counter += 1
            n = self.counter
            self.pending.append((n, msg))
            if mid:
                self.held[mid] = n
                ids.append(mid)
            try:
                events.append(self.decode(msg.body).replace(position=(n,)))
            except Exception as exc:  # any malformed payload: that message alone goes to the dead letters
                placeholder = ChangeEvent(self.config.queue, (n,), INSERT, position=(n,))
                rejected.append((placeholder, f"cannot decode message {mid or '(no message_id)'}: {describe(exc)}"))
        if self.duplicates > dropped:
            log.info(
                "queue %s: dropped %d message(s) applied before (redelivered, or published twice)",
                self.config.queue,
                self.duplicates - dropped,
            )
        if not events and not rejected:
            return Batch([])
        return Batch(events, (self.counter,), rejected=rejected, state=self._remember(ids))

    def _remember(self, ids: list[str]) -> StateChanges | None:
        """The batch's chunk of the window, and the chunks that fall out of it, for the state store."""
        if self.window.size == 0:
            return None
        key = chunk_key(self.window.prefix, self.counter)
        self.unsaved.append((self.counter, key, ids))
        gone = self.window.evict()
        put = {(NAMESPACE, key): ids} if ids else {}
        if not put and not gone:
            return None
        return StateChanges(kv_put=put, kv_delete=[(NAMESPACE, k) for k in gone])

    def _check(self) -> None:
        if self.channel is None or self.channel.is_closed:
            raise SourceTransientError(f"the RabbitMQ channel of queue {self.config.queue!r} is closed")
        if self.underlay is not None and self.consumer not in self.underlay.consumers:
            # basic.cancel from the broker: the queue was deleted (or its node went away)
            raise SourceTransientError(f"RabbitMQ cancelled the consumer of queue {self.config.queue!r}")

    async def commit(self, position: Position) -> None:
        upto = int(position[0])
        done = [m for n, m in self.pending if n <= upto]
        self.pending = [(n, m) for n, m in self.pending if n > upto]
        self.held = {m: n for m, n in self.held.items() if n > upto}
        for _, key, ids in [u for u in self.unsaved if u[0] <= upto]:
            if ids:
                self.window.add(key, ids)
        self.unsaved = [u for u in self.unsaved if u[0] > upto]
        await self._ack(done)

    async def _ack(self, messages: list[AbstractIncomingMessage]) -> None:
        """Ack deliveries; one ``multiple`` ack when no older delivery of the channel is still unacked."""
        if not messages:
            return
        messages.sort(key=lambda m: m.delivery_tag or 0)
        newest = messages[-1].delivery_tag or 0
        try:
            if all((m.delivery_tag or 0) > newest for _, m in self.pending):
                await messages[-1].ack(multiple=True)  # and every older delivery of the channel
                return
            for m in messages:
                await m.ack()
        except Exception as exc:  # redelivered later, and skipped then by its message id
            log.debug("ack of %d message(s) failed: %s", len(messages), describe(exc))

    async def _close(self) -> None:
        conn, self.conn, self.channel, self.underlay = self.conn, None, None, None
        await close_quietly(conn)
        self.inbox = asyncio.Queue()  # after the close: a delivery of the old channel cannot be acked on a new one

    async def close(self) -> None:
        """Close the connection: what was not acked returns to the queue (see the module docstring)."""
        await self._close()
