"""The guard in front of the HTTP app: the admin token and a body limit, checked before the body is read.

FastAPI reads and parses a request's body before a route's dependencies run,
so a token dependency alone lets anyone make the process buffer any body.
:class:`Guard` is a pure ASGI middleware (it sees the request head and wraps
``receive``; it never buffers) that, for every HTTP request except the
webhook intake routes:

- refuses ``/api/*``, ``/openapi.json`` and ``/metrics`` (unless
  ``api.metrics_public``) without the admin token: 401, the same answer and
  the same constant-time comparison as :func:`tidesync.api.auth.require_token`,
  before the app runs, so not a byte of the body is read;
- refuses a body over ``api.admin_max_body_bytes``: 413 at once when
  ``Content-Length`` says so, else (a chunked body) as soon as the bytes
  counted while the app reads pass the limit.

A refused request that has a body is answered with ``connection: close``: the
server drops the rest of the body with the connection instead of reading it.

``/webhooks/*`` pass through untouched: the intake route enforces each
source's own ``max_body_bytes`` the same way (see :mod:`tidesync.api.webhooks`)
and answers in the intake's reply format; its senders prove themselves by
signature, not by token.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from tidesync.api.auth import CHALLENGE, denial
from tidesync.api.runtime import ApiRuntime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

TOO_LARGE = "body too large"
# ASCII digits only (str.isdigit also takes "²", which int() refuses), and few enough for int().
_LENGTH = re.compile(r"[0-9]{1,18}")


def _protected(path: str, runtime: ApiRuntime) -> bool:
    if path == "/api" or path.startswith("/api/") or path == "/openapi.json":
        return True
    return path == "/metrics" and not runtime.metrics_public


def _head(scope: Scope) -> tuple[str | None, str | None, bool]:
    """The request's ``Authorization`` and ``Content-Length`` values, and whether it is chunked."""
    authorization = length = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"transfer-encoding":
            chunked = True
    return authorization, length, chunked


async def _reply(send: Send, status: int, detail: str, *, close: bool, headers: dict[str, str] | None = None) -> None:
    body = msgspec.json.encode({"detail": detail})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Guard:
    """ASGI middleware: the token and the body limit, before the app reads the body (see the module docstring)."""

    def __init__(self, app: App, runtime: ApiRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        authorization, length, chunked = _head(scope)
        has_body = chunked or (length is not None and length != "0")
        if _protected(path, self.runtime):
            detail = denial(authorization, self.runtime.token)
            if detail is not None:
                await _reply(send, 401, detail, close=has_body, headers=CHALLENGE)
                return
        limit = self.runtime.admin_max_body_bytes
        if length is not None and (_LENGTH.fullmatch(length) is None or int(length) > limit):
            await _reply(send, 413, TOO_LARGE, close=True)
            return
        await _Limited(self.app, limit).run(scope, receive, send)


class _Limited:
    """One request whose body is counted as the app reads it, cut off with 413 past ``limit`` bytes."""

    def __init__(self, app: App, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.received = 0
        self.started = False  # the app began its response
        self.refused = False  # we answered 413; the app's own answer is dropped

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.refused = True
                    if not self.started:
                        await _reply(send, 413, TOO_LARGE, close=True)
                    # To the app the client is gone: it stops reading, and whatever it answers is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if self.refused:
                return
            self.started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not self.refused:
                raise
            # The app failed on the body we cut off; the client already has its 413.
