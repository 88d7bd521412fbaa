"""Publishing a write's messages with bounded in-flight acks over one reply subscription (the sink's hot path).

Why not ``JetStreamContext.publish`` per message: it is a request, and each
costs a future, a ``wait_for`` task with its timer, and a JSON parse by the
standard library; at tens of thousands of messages a second that is most of
the process's time. Here every publish is a plain ``PUB`` with a reply subject
under one wildcard inbox this sink subscribes once per connection
(``<inbox>.<n>``, ``n`` never reused), and the replies (JetStream's PubAck, or a
503 status when nothing listens on the subject) are matched to their messages
by that token. The server sees the same publishes, with the same headers.

Contracts (what :class:`Publisher.run` guarantees to the sink):

- Per-key order: the messages of one key form a chain (``Message.next``); a
  message is published only after the one before it in its chain was acked.
  So two messages of one key are never in flight together, and a failed one
  stops its chain: every later message of the key fails with it (blocked behind it).
- At most ``max_in_flight`` publishes await their ack at once.
- A publish not acked within ``timeout`` seconds of being sent fails
  (transient); its late ack, if it comes, is ignored (the write is retried,
  and the re-publish is de-duplicated by ``Nats-Msg-Id``).
- After the first transient failure nothing new is published (the engine
  retries the whole write); the acks in flight are still awaited, and every
  message not published fails transiently.
- ``run`` returns when every message is acked or failed: acks are awaited before a write returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tidesync.errors import DeliveryError, TransientError
from tidesync.sinks.blocked import BlockedError, behind
from tidesync.sinks.nats.wire import ack_outcome, publish_error

__all__ = ["BlockedError", "Message", "Publisher", "behind"]


@dataclass(slots=True)
class Message:
    index: int  # in the write's events
    subject: str
    payload: bytes
    headers: dict[str, str]
    next: Message | None = None  # the next message of the same key in this write


class Publisher:
    """One connection's publishing machinery: the reply subscription and the in-flight table."""

    def __init__(self, nc: Client, stream: str, max_in_flight: int, timeout: float) -> None:
        self.nc, self.stream, self.max_in_flight, self.timeout = nc, stream, max_in_flight, timeout
        self.prefix = ""
        self.sub: Subscription | None = None
        self.sent = 0  # reply tokens handed out (never reused: a late ack of a failed write finds nothing)
        self.duplicates = 0  # publishes the stream dropped as already stored (replays)
        # state of the running write
        self.in_flight: dict[str, tuple[Message, float]] = {}  # token -> message, ack deadline (send order)
        self.ready: deque[Message] = deque()
        self.failures: dict[int, DeliveryError] = {}
        self.acked = 0  # messages of the running write the stream acked
        self.down: DeliveryError | None = None
        self.waiter: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Subscribe the reply inbox (the client re-subscribes it after a reconnect)."""
        self.prefix = self.nc.new_inbox() + "."
        self.sub = await self.nc.subscribe(self.prefix + "*", cb=self._on_reply)

    async def run(self, firsts: list[Message]) -> dict[int, DeliveryError]:
        """Publish the chains starting at ``firsts``; the failures by event index (empty: every message acked)."""
        self.in_flight.clear()  # a failed write's leftovers: their acks are ignored
        self.ready = deque(firsts)
        self.failures = {}
        self.acked = 0
        self.down = None
        loop = asyncio.get_running_loop()
        nc, in_flight, ready, limit, prefix = self.nc, self.in_flight, self.ready, self.max_in_flight, self.prefix
        while True:
            waiter = self.waiter = loop.create_future()  # before sending: an ack from now on wakes it
            while ready and self.down is None and len(in_flight) < limit:
                msg = ready.popleft()
                self.sent += 1
                token = str(self.sent)
                # in flight before the publish: it may yield (a full outbound buffer is flushed), and its ack
                # could come meanwhile
                in_flight[token] = (msg, loop.time() + self.timeout)
                try:
                    await nc.publish(msg.subject, msg.payload, reply=prefix + token, headers=msg.headers)
                except Exception as exc:  # translated at the boundary; an unknown error propagates
                    error = publish_error(exc, msg.subject, self.stream)
                    if in_flight.pop(token, None) is not None:  # else it went out after all, and was answered
                        self._failed(msg, error)
            if not in_flight:
                break
            oldest = next(iter(in_flight.values()))[1]
            if not waiter.done():
                timer = loop.call_later(max(0.0, oldest - loop.time()), _wake, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
            self._expire(loop.time())
        self.waiter = None
        if self.down is not None:
            for msg in ready:
                self._failed(msg, TransientError(f"not published after an earlier failure ({self.down})"))
            ready.clear()
        return self.failures

    def _expire(self, now: float) -> None:
        while self.in_flight:
            token, (msg, deadline) = next(iter(self.in_flight.items()))
            if deadline > now:
                return
            del self.in_flight[token]
            self._failed(msg, TransientError(f"no publish ack for {msg.subject!r} in time"))

    async def _on_reply(self, reply: Msg) -> None:
        entry = self.in_flight.pop(reply.subject[len(self.prefix) :], None)
        if entry is None:
            return  # an ack of a write that gave up on it
        msg = entry[0]
        try:
            outcome = ack_outcome(reply, msg.subject, self.stream)
        except Exception as exc:  # never leave a message unaccounted for (the write would seem complete)
            outcome = TransientError(f"an unreadable publish ack for {msg.subject!r}: {type(exc).__name__}: {exc}")
        if isinstance(outcome, DeliveryError):
            self._failed(msg, outcome)
        else:
            self.acked += 1
            if not outcome:
                self.duplicates += 1
            if msg.next is not None:
                self.ready.append(msg.next)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _failed(self, msg: Message, err: DeliveryError) -> None:
        self.failures[msg.index] = err
        if err.transient and self.down is None:
            self.down = err
        queued = behind(err)
        later = msg.next
        while later is not None:
            self.failures[later.index] = queued
            later = later.next


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
