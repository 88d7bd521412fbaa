"""Connection limits of the HTTP server: deadlines on each request head and body, a size cap on the head.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) and
answers 503 past ``limit_concurrency``, but it has no deadline on reading a
request: a fresh connection that sends nothing, a head dribbled one byte at a
time (slowloris), or a complete head followed by a body dribbled one byte at a
time (an unsigned POST to ``/webhooks/*`` is enough) is kept forever; and its
httptools parser has no cap on a head's size. :class:`GuardedHttp` adds them
with the least machinery:

- the head: one timer per connection, armed when a connection opens and when
  the bytes of a next request begin, disarmed when the head is complete; on
  expiry the connection is closed. Bytes received while a head is incomplete
  are counted; past ``max_header_bytes`` the answer is 431 and the connection
  is closed.
- the body: a deadline on the *whole* body, ``body_timeout`` seconds from the
  end of the read that completed the head (armed only when a body is still to
  come, so a request without one costs no timer). A limit on the idle gap
  between two reads would not do: a byte every gap-minus-a-little keeps a
  1 MiB body coming for months. When it expires before the app has begun its
  answer, the answer is 408 and the connection is closed (the app sees the
  client gone; whatever it answers then is dropped); after that, the
  connection is just closed. The time a body waits unread counts too (a
  pipelined request behind a slow one): the default is generous for that.

A body's size is the app's limit (``api/guard.py``, ``api/webhooks.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The server's per-connection limits (``api:`` in the config; see ``ApiConfig``)."""

    limit_concurrency: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_header_bytes: int = 64 * 1024


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines and a head size cap (set by :func:`protocol_for`)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a request began and its head is not complete
        self._head_bytes = 0
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_body = False  # a request's head is complete and its body is not

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_body()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm()  # a next request's bytes (or stray CRLFs) on a keep-alive connection
        carried = self._in_head
        super().data_received(data)
        if carried and self._in_head and not self.transport.is_closing():
            # Every byte of this read belongs to the head begun earlier. (A head that began inside this
            # read is not counted for it: that leaves at most one read, 256 KiB, above the cap.)
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(b"431 Request Header Fields Too Large", b"request head too large")
        if self._in_body and self._body_timer is None and not self.transport.is_closing():
            # A head completed in this read and its body did not: from now on the whole body has body_timeout.
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_expired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm_body()
        super().on_message_complete()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_expired(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()  # an answer is (being) sent: no second status line on this connection
            return
        # To the app the client is gone (as uvicorn tells it when a connection drops): its receive() returns
        # http.disconnect at once and whatever it answers is dropped, so the 408 below is the only answer.
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(b"408 Request Timeout", b"request body not received in time")

    def _refuse(self, status: bytes, text: bytes) -> None:
        self._disarm()
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, len(text), text)
        )
        self.transport.close()


def protocol_for(limits: ConnectionLimits) -> type[GuardedHttp]:
    """A :class:`GuardedHttp` class with ``limits``' deadlines and head size cap (uvicorn takes a class)."""
    return type(
        "GuardedHttp",
        (GuardedHttp,),
        {
            "header_timeout": limits.header_timeout,
            "body_timeout": limits.body_timeout,
            "max_header_bytes": limits.max_header_bytes,
        },
    )
