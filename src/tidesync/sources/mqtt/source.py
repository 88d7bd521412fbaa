"""The MQTT source: a persistent session whose PUBACKs follow the state store's intake journal.

Why a journal, not acks after the checkpoint
    MQTT acknowledges each QoS 1 message on its own, and a broker sends at
    most "receive maximum" unacknowledged messages: holding PUBACKs until the
    engine's checkpoint would stall the session as soon as a batch is larger
    than that window. aiomqtt (2.5) offers no manual acks in its API; paho
    (2.x, underneath it) does (``manual_ack_set``/``ack``), and this source
    switches them on through aiomqtt's paho client. So a message is
    acknowledged as soon as it is *durably journaled* in the state store
    (``IntakeJournal``, the table the webhook source uses), in one
    transaction per burst of messages, and never before: a kill -9 between
    receipt and journal leaves the message unacknowledged in the broker's
    session, which sends it again on the next connect.

Positions
    ``(journal_sequence,)``. ``read`` returns journaled entries with a
    sequence above the last one read; ``open(ctx, after)`` resumes after
    ``after[0]`` (entries journaled while the engine was down, or read and
    not checkpointed before a crash, are read again). ``commit(position)``
    trims the journal through the position.

De-duplication
    An MQTT publisher may publish an event twice (the ``mqtt`` sink replays
    after a crash; a publisher resends an unacknowledged QoS 1 message with
    DUP). Each message's ``tidesync-id`` user property is journaled as its
    event id, and the journal refuses an id it holds or trimmed less than
    ``dedupe_window`` ago: the duplicate is acknowledged and dropped. A
    message without the property (another publisher's) is never taken for a
    duplicate: it is at least once.

Session
    A fixed client id (``client_id``, default ``tidesync-<pipeline>-<name>``),
    ``clean_start`` false and a ``session_expiry``: the broker keeps the
    subscription and queues QoS 1 messages while the process is down, and
    delivers them after the restart. The broker bounds that queue (Mosquitto:
    ``max_queued_messages``, 1000 by default, after which it *drops* messages
    for the session): size it for the longest outage. One process per client
    id: a second connection with the same id takes the session over.

Backlog
    Messages are journaled and acknowledged as they arrive, whether or not
    the engine keeps up: during a sink outage the backlog waits in the state
    store (trimmed as checkpoints pass), not in the broker's bounded queue.

The journal's source name is the pipeline's name, so ``tidesync drop`` removes it with the pipeline
(the broker's session stays until ``session_expiry``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiomqtt

from tidesync import formats
from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import SourceError, SourceTransientError, StateStoreError
from tidesync.event import INSERT, Batch, ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.sinks.mqtt.wire import (
    Broker,
    connect,
    describe,
    disconnect,
    is_connection_error,
    make_client,
    message_id,
    refused,
)
from tidesync.sources.mqtt.config import MqttSourceConfig
from tidesync.state.store import IntakeJournal, JournalAppend, StateChanges

log = logging.getLogger("tidesync.mqtt")

BURST = 500  # messages journaled in one transaction, at most


class MqttSource:
    """Subscribes with a persistent session; reads what the intake journal holds (see the module docstring)."""

    def __init__(self, config: MqttSourceConfig) -> None:
        self.config = config
        self.broker = Broker.parse(config.url)
        self.decode = formats.decoder(config.format, mapping=config.mapping)
        self.client: aiomqtt.Client | None = None
        self.intake: asyncio.Task[None] | None = None
        self.arrived: asyncio.Event | None = None
        self.journal: IntakeJournal | None = None
        self.clock: Clock = SYSTEM_CLOCK
        self.name = ""  # the journal's source name: the pipeline's
        self.last = 0  # the highest journal sequence read (or known handled: ``after``)
        self.received = 0  # messages journaled
        self.duplicates = 0  # messages dropped as already journaled (re-publishes, redeliveries)

    def _fail(self, what: str, exc: BaseException) -> SourceError:
        msg = f"MQTT source {self.broker.redacted()}: {what}: {describe(exc)}"
        if refused(exc):
            return SourceError(msg)
        if is_connection_error(exc) or isinstance(exc, StateStoreError):
            return SourceTransientError(msg)
        return SourceError(msg)

    async def open(self, ctx: Context, after: Position | None) -> None:
        cfg = self.config
        self.journal, self.clock, self.name = ctx.state, ctx.clock, ctx.pipeline
        self.last = int(after[0]) if after else 0
        self.arrived = asyncio.Event()
        if self.client is not None:
            return
        ident = cfg.client_id or f"tidesync-{ctx.pipeline}-{ctx.name}"
        client = make_client(
            self.broker,
            ident,
            timeout=cfg.timeout,
            keepalive=cfg.keepalive,
            clean_start=False,
            session_expiry=cfg.session_expiry,
            receive_maximum=cfg.receive_maximum,
        )
        # Set before connecting: the broker resends the session's queue right after its CONNACK.
        client._client.manual_ack_set(True)  # aiomqtt exposes no manual acks: paho's
        try:
            await connect(client, cfg.connect_timeout)
        except Exception as exc:
            raise self._fail("cannot connect", exc) from exc
        try:
            await client.subscribe([(t, int(cfg.qos)) for t in cfg.topics])
        except Exception as exc:
            await disconnect(client)
            raise self._fail(f"cannot subscribe to {cfg.topics}", exc) from exc
        self.client = client
        self.intake = asyncio.create_task(self._intake(client), name=f"mqtt-intake-{ident}")

    async def _intake(self, client: aiomqtt.Client) -> None:
        """Journal what arrives, a burst per transaction, then acknowledge it (never before)."""
        assert self.journal is not None and self.arrived is not None
        messages = client.messages
        while True:
            burst = [await anext(messages)]
            while len(messages) and len(burst) < BURST:
                burst.append(await anext(messages))
            now = self.clock.time()
            entries = [
                JournalAppend(
                    self.name,
                    message_id(m.properties) or f"anon:{uuid.uuid4().hex}",
                    m.payload if isinstance(m.payload, bytes) else str(m.payload).encode(),
                    {"topic": m.topic.value},
                    now,
                )
                for m in burst
            ]
            seqs = await self.journal.journal_append(entries)
            dropped = sum(1 for s in seqs if s is None)
            self.received += len(seqs) - dropped
            self.duplicates += dropped
            if dropped:  # after a publisher's replay or a redelivery, not in a steady state
                log.info("mqtt source %s: dropped %d duplicate message(s) by their tidesync-id", self.name, dropped)
            for m in burst:
                if m.qos > 0:
                    client._client.ack(m.mid, m.qos)
            self.arrived.set()

    def _check_intake(self) -> None:
        task = self.intake
        if task is None:
            raise SourceTransientError("the MQTT source is not open")
        if task.done():
            exc = task.exception() if not task.cancelled() else None
            raise self._fail("the connection ended", exc or ConnectionError("intake stopped"))

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        if self.journal is None or self.arrived is None:
            raise SourceTransientError("the MQTT source is not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while True:
            self.arrived.clear()
            try:
                entries = await self.journal.journal_read(self.name, self.last, max_events)
            except StateStoreError as exc:
                raise SourceTransientError(f"MQTT source: cannot read the intake journal: {exc}") from exc
            if entries:
                break
            self._check_intake()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Batch([])
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                return Batch([])
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        for entry in entries:
            seq = entry.seq
            try:
                events.append(self.decode(entry.body).replace(position=(seq,)))
            except Exception as exc:  # any malformed payload: that message alone goes to the dead letters
                topic = str(entry.meta.get("topic", "mqtt"))
                placeholder = ChangeEvent(topic, (seq,), INSERT, position=(seq,))
                rejected.append((placeholder, f"cannot decode the message {seq} from {topic!r}: {describe(exc)}"))
        self.last = entries[-1].seq
        return Batch(events, (self.last,), rejected=rejected)

    async def commit(self, position: Position) -> None:
        if self.journal is None:
            return
        try:
            forget = self.clock.time() - self.config.dedupe_window
            await self.journal.journal_trim(self.name, int(position[0]), forget)
        except StateStoreError as exc:
            # Housekeeping: what is not trimmed now is trimmed by the next commit.
            log.warning("mqtt source %s: cannot trim the journal: %s", self.name, exc)

    async def close(self) -> None:
        """Stop the intake and disconnect; what was received and not journaled is not acknowledged (sent again)."""
        task, self.intake = self.intake, None
        client, self.client = self.client, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its error, if any, was the connection's
        if client is not None:
            await disconnect(client)
