"""What the webhook sink sends: the JSON envelope, the idempotency id, the Standard Webhooks headers.

One event per POST::

    {"id": "msg_<32 hex>", "type": "<entity>.<op>", "timestamp": "<committed_at, ISO 8601>",
     "data": <the event as tidesync.event.to_json gives it>}

A batch (``batch_size`` > 1) is ``{"id": ..., "type": "batch", "timestamp": ..., "data": [<envelope>, ...]}``.

With ``format: debezium`` or ``cloudevents`` there is no envelope: a body is the formatted event
(:mod:`tidesync.formats`), a batch a JSON array of them; the headers stay (content type per format).

The id is derived from the pipeline, the sink's name and the event (entity,
key, op, position), so it is the same on every retry and after a restart: a
receiver de-duplicates by it (the ``webhook-id`` header, and each envelope's
``id`` inside a batch). A batch's id is derived from its events' ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

import msgspec

from tidesync.event import ChangeEvent, json_dumps, to_json
from tidesync.sources.webhook.signatures import sign_standard


def idempotency_id(pipeline: str, sink: str, event: ChangeEvent) -> str:
    material = json_dumps([pipeline, sink, event.entity, list(event.key), event.op, list(event.position)])
    return "msg_" + hashlib.blake2b(material, digest_size=16).hexdigest()


def batch_id(ids: Sequence[str]) -> str:
    if len(ids) == 1:
        return ids[0]
    return "msg_" + hashlib.blake2b(",".join(ids).encode(), digest_size=16).hexdigest()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def envelope(event: ChangeEvent, msg_id: str) -> bytes:
    head = msgspec.json.encode(
        {"id": msg_id, "type": f"{event.entity}.{event.op}", "timestamp": _iso(event.committed_at)}
    )
    return head[:-1] + b',"data":' + to_json(event) + b"}"


def body_of(
    envelopes: Sequence[bytes], ids: Sequence[str], batched: bool, committed_at: float, *, enveloped: bool = True
) -> tuple[str, bytes]:
    """The webhook id and body for one POST of events already in their :func:`envelope`;
    ``committed_at`` is the last event's commit time (the batch's timestamp). Without
    ``enveloped`` (events in a format of their own) a batch is a JSON array of them."""
    if not batched:
        return ids[0], envelopes[0]
    bid = batch_id(ids)
    if not enveloped:
        return bid, b"[" + b",".join(envelopes) + b"]"
    head = msgspec.json.encode({"id": bid, "type": "batch", "timestamp": _iso(committed_at)})
    return bid, head[:-1] + b',"data":[' + b",".join(envelopes) + b"]}"


def standard_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str], content_type: str = "application/json"
) -> dict[str, str]:
    return {
        "content-type": content_type,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(msg_id, timestamp, body, secrets),
    }
