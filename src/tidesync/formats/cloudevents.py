"""``cloudevents``: a CloudEvents 1.0 event in structured mode, JSON format.

::

    {"specversion": "1.0", "id": "msg_<32 hex>", "source": "tidesync/<pipeline>",
     "type": "io.tidesync.<op>", "subject": "<entity>/<key part>/...",
     "time": "<committed_at, RFC 3339, UTC>", "datacontenttype": "application/json",
     "data": <the event as tidesync.event.to_json writes it>}

- ``id``: :func:`tidesync.sinks.webhook.envelope.idempotency_id` of the pipeline, the sink and
  the event: the same on every retry and replay, so a consumer de-duplicates by ``source`` + ``id``
  as the specification intends; a webhook's ``webhook-id`` is the same id.
- ``source``: ``tidesync/<pipeline>`` (a URI reference; the pipeline name percent-encoded).
- ``type``: ``io.tidesync.`` and the op (``insert``, ``update``, ``delete``, ``snapshot``,
  ``truncate``): reverse-DNS, as the specification recommends; a router filters on the op alone.
- ``subject``: the entity, then each key value percent-encoded, joined by ``/``
  (``public.orders/42``, ``public.items/42/7``); the entity alone for a truncate.
- ``time``: the commit time with microseconds; left out when the event has none
  (``committed_at`` 0).
- ``data``: the whole event in tidesync's JSON, so decoding is :mod:`.native`'s (with its losses:
  typed values come back as their JSON forms). The decoder reads ``data`` only, after checking
  ``specversion`` and ``datacontenttype``; ``data_base64`` and binary mode are not read.

The media type of one event is ``application/cloudevents+json``; several in one body (the
webhook sink's batches) are a JSON array, ``application/cloudevents-batch+json``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Final
from urllib.parse import quote

import msgspec

from tidesync.event import ChangeEvent
from tidesync.formats import native
from tidesync.formats.errors import FormatError
from tidesync.sinks.webhook.envelope import idempotency_id

CONTENT_TYPE: Final = "application/cloudevents+json"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
TYPE_PREFIX: Final = "io.tidesync."


def subject(event: ChangeEvent) -> str:
    return "/".join([event.entity, *(quote(str(k), safe="") for k in event.key)])


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def encoder(*, pipeline: str, sink: str) -> Callable[[ChangeEvent], bytes]:
    source = "tidesync/" + quote(pipeline, safe="")

    def encode(event: ChangeEvent) -> bytes:
        data = native.encode(event)  # a FormatError for an event JSON cannot carry
        head = {
            "specversion": "1.0",
            "id": idempotency_id(pipeline, sink, event),
            "source": source,
            "type": TYPE_PREFIX + event.op,
            "subject": subject(event),
        }
        if event.committed_at:
            head["time"] = rfc3339(event.committed_at)
        head["datacontenttype"] = "application/json"
        return msgspec.json.encode(head)[:-1] + b',"data":' + data + b"}"

    return encode


class _Structured(msgspec.Struct):
    specversion: str
    id: str
    source: str
    type: str
    datacontenttype: str = "application/json"
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (a Raw in a union would not be read as raw)


_reader = msgspec.json.Decoder(_Structured)


def decode(data: bytes) -> ChangeEvent:
    try:
        ce = _reader.decode(data)
    except RecursionError:
        raise FormatError("cloudevents: the event is nested too deep") from None
    except msgspec.ValidationError as exc:
        raise FormatError(f"cloudevents: not a structured CloudEvent: {exc}") from None
    except msgspec.DecodeError as exc:
        raise FormatError(f"cloudevents: not valid JSON: {exc}") from None
    if ce.specversion != "1.0":
        raise FormatError(f"cloudevents: specversion {ce.specversion[:20]!r} is not 1.0")
    if ce.datacontenttype.split(";")[0].strip() != "application/json":
        raise FormatError(f"cloudevents: datacontenttype {ce.datacontenttype[:60]!r} is not application/json")
    if bytes(ce.data) in (b"", b"null"):
        raise FormatError("cloudevents: no data (the tidesync event)")
    return native.from_jsonable(ce.data, "cloudevents")
