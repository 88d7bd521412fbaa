"""The webhook intake route: ``POST /webhooks/{source}``.

The body is read here, chunk by chunk, and refused with 413 as soon as it
passes the limit (a ``Content-Length`` over it is refused before reading), so
an unbounded body is never buffered. Everything else is decided by the
source's :class:`~tidesync.sources.webhook.intake.WebhookIntake`.
"""

from __future__ import annotations

import re

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from tidesync.api.runtime import ApiRuntime
from tidesync.sources.webhook.intake import Reply, reject
from tidesync.sources.webhook.provider import RawRequest

router = APIRouter()
UNKNOWN = "_unknown"
# ASCII digits only (str.isdigit also takes "²", which int() refuses), and few enough for int().
_LENGTH = re.compile(r"[0-9]{1,18}")


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (_LENGTH.fullmatch(declared) is None or int(declared) > limit):
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _public_url(request: Request, base: str | None) -> str:
    path = request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    tail = path + ("?" + query if query else "")
    if base:
        return base.rstrip("/") + tail
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}{tail}"


def _answer(reply: Reply) -> Response:
    return Response(msgspec.json.encode(reply.body), status_code=reply.status, media_type="application/json")


@router.post("/webhooks/{source}", summary="Receive a signed webhook delivery", tags=["webhooks"])
async def receive_webhook(source: str, request: Request) -> Response:
    runtime: ApiRuntime = request.app.state.runtime
    intake = runtime.intakes.get(source)
    if intake is None:
        return _answer(reject(UNKNOWN, 404, "unknown_source", "no webhook source of that name"))
    try:
        body = await _read_body(request, intake.max_body_bytes)
    except _TooLarge:
        return _answer(reject(intake.name, 413, "too_large", "body too large"))
    except ClientDisconnect:  # the body ended before its length, or the sender left: nothing to take
        return _answer(reject(intake.name, 400, "incomplete", "the body ended early"))
    url = intake.public_url or _public_url(request, runtime.public_url)
    if intake.public_url and request.url.query:
        url = intake.public_url + "?" + request.scope.get("query_string", b"").decode("latin-1")
    raw = RawRequest(request.method, url, request.headers, body)
    return _answer(await intake.receive(raw))
