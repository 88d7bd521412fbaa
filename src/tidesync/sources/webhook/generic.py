"""Any other sender: an HMAC-SHA256 header or Standard Webhooks signature, and a mapping by JSON paths.

With ``mapping.events`` the body holds a list of events, each journaled on its
own (as its own JSON) under its id; otherwise the body is one event and is
journaled as received. The id of an event is the value at ``mapping.event_id``
(in the signed body), or ``webhook-id`` of Standard Webhooks
(``event_id_header``, refused at config load for any header no signature
covers), or with ``event_id_hash`` ``sha256:<hex>`` of the signed body (of each
event's JSON, with ``events``): identical bodies are then one event.

The op value found at ``mapping.op`` is looked up in ``ops``; a value that is
itself an op name stands for itself; no path, or no value, means
``default_op``. Timestamps are unix seconds, milliseconds or ISO 8601
(``timestamp_unit``).

Versions (what ``ordering: true`` compares, see :mod:`.ordering`): the value at
``mapping.version`` (a number, a numeric string, or an ISO 8601 timestamp, as
seconds), else the ``timestamp``, paired with the event id to break ties; with
neither, events carry no version. Whole-number versions compare exactly up to
2**53. The record kept for repairs is ``after``: ordering assumes ``after``
is the whole record at that version. A version written as text must be an
ASCII decimal number (not ``float()``'s wider syntax) or an ISO 8601 timestamp.

Keys: a key value that is a float (a fraction or an exponent) is a mapping
error (dead-lettered): an id parsed as a float loses digits past the 17th, so
distinct records would share a key. Integers keep every digit (beyond 64 bits
as an integral Decimal, see :func:`.provider.parse_json`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from tidesync.event import OPS, ChangeEvent
from tidesync.sources.webhook.config import GenericMapping, SignatureOptions
from tidesync.sources.webhook.paths import MISSING, compile_path, lookup
from tidesync.sources.webhook.provider import (
    Delivery,
    Malformed,
    Mapped,
    MappingError,
    RawRequest,
    body_id,
    dump_json,
    event_id_text,
    is_integer,
    load_entry,
    request_json,
)
from tidesync.sources.webhook.signatures import verify_hmac, verify_standard
from tidesync.state.store import JournalEntry

MAX_EVENTS = 10_000
# A version written as text: an optionally signed ASCII decimal number (float() alone would also take
# Unicode digits, underscores and surrounding space).
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _p(text: str | None) -> tuple[Any, ...] | None:
    return None if text is None else compile_path(text)


class GenericProvider:
    name = "generic"

    def __init__(self, signature: SignatureOptions, mapping: GenericMapping, tolerance: float) -> None:
        self.signature = signature
        self.mapping = mapping
        self.tolerance = tolerance
        m = mapping
        self._events, self._id = _p(m.events), _p(m.event_id)
        self._entity, self._op, self._after = _p(m.entity_path), _p(m.op), _p(m.after)
        self._before, self._changed, self._ts = _p(m.before), _p(m.changed), _p(m.timestamp)
        self._version = _p(m.version)
        self._key = [compile_path(k) for k in m.key]
        self._id_header = m.event_id_header.lower() if m.event_id_header else None

    def verify(self, request: RawRequest, secrets: Sequence[str], now: float) -> None:
        s = self.signature
        if s.scheme == "standard-webhooks":
            verify_standard(request.body, request.headers, secrets, now, self.tolerance)
        else:
            verify_hmac(request.body, request.headers, secrets, s.header, s.encoding, s.prefix)

    def split(self, request: RawRequest) -> tuple[list[Delivery], int]:
        doc = request_json(request)
        if self._events is None:
            event_id = self._event_id(doc, request, request.body, "event id")
            return [Delivery(event_id, request.body, at=self._time_or_none(doc))], 0
        events = lookup(doc, self._events)
        if not isinstance(events, list):
            raise Malformed(f"{self.mapping.events} must be a list of events")
        if len(events) > MAX_EVENTS:
            raise Malformed(f"more than {MAX_EVENTS} events in one delivery")
        out = []
        for i, e in enumerate(events):
            body = dump_json(e)
            out.append(Delivery(self._event_id(e, request, body, f"event [{i}] id"), body, at=self._time_or_none(e)))
        return out, 0

    def _event_id(self, event: Any, request: RawRequest, body: bytes, what: str) -> str:
        if self.mapping.event_id_hash:
            return body_id(body)
        if self._id is not None:
            value = lookup(event, self._id)
            if value is MISSING:
                raise Malformed(f"{what} missing at {self.mapping.event_id}")
            return event_id_text(value, what)
        assert self._id_header is not None
        value = request.headers.get(self._id_header)
        if not value:
            raise Malformed(f"{self.mapping.event_id_header} header is required")
        return event_id_text(value, self.mapping.event_id_header or "")

    def map(self, entry: JournalEntry) -> list[Mapped]:
        doc = load_entry(entry)
        event = self.map_event(doc)
        if self._version is not None:
            version: tuple[float, str] | None = (self._version_of(doc), entry.event_id)
        elif self._ts is not None:
            version = (event.committed_at, entry.event_id)
        else:
            return [Mapped(event)]
        return [Mapped(event, version, None if event.op == "delete" else event.after)]

    def _version_of(self, doc: Any) -> float:
        assert self._version is not None
        value = lookup(doc, self._version)
        number: float | None = None
        if (isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)) or (
            isinstance(value, str) and _NUMBER.fullmatch(value)
        ):
            number = float(value)
        if number is not None and math.isfinite(number):  # NaN would compare as neither older nor newer
            return number
        if isinstance(value, str) and number is None and (seconds := _iso_seconds(value)) is not None:
            return seconds
        raise MappingError(f"no version (a number or an ISO 8601 timestamp) at {self.mapping.version}")

    def map_event(self, doc: Any) -> ChangeEvent:
        m = self.mapping
        if self._entity is not None:
            name = lookup(doc, self._entity)
            if not isinstance(name, str) or not name:
                raise MappingError(f"no entity name at {m.entity_path}")
            entity = m.entity_prefix + name
        else:
            entity = m.entity or ""
        key = []
        for text, path in zip(m.key, self._key, strict=True):
            value = lookup(doc, path)
            if value is MISSING or value is None or isinstance(value, (dict, list)):
                raise MappingError(f"no key value at {text}")
            if isinstance(value, float) or (isinstance(value, Decimal) and not is_integer(value)):
                # a float is no id: two ids that differ past its 17th digit would be one key
                raise MappingError(
                    f"key value at {text} is a number with a fraction or exponent; use integers or strings"
                )
            key.append(value)
        op = self._op_of(doc)
        after = self._row(doc, self._after, m.after)
        before = self._row(doc, self._before, m.before)
        changed = self._changed_of(doc)
        if op == "delete":
            before, after, changed = before or after, None, None
        elif after is None:
            raise MappingError(f"no record at {m.after}")
        return ChangeEvent(entity, tuple(key), op, before, after, changed, committed_at=self._time(doc))

    def _op_of(self, doc: Any) -> str:
        if self._op is None:
            return self.mapping.default_op
        value = lookup(doc, self._op)
        if value is MISSING or value is None:
            return self.mapping.default_op
        op = self.mapping.ops.get(str(value), str(value))
        if op not in OPS or op == "truncate":
            raise MappingError(f"op value {str(value)[:50]!r} is not in ops")
        return op

    @staticmethod
    def _row(doc: Any, path: tuple[Any, ...] | None, text: str | None) -> dict[str, Any] | None:
        if path is None:
            return None
        value = lookup(doc, path)
        if value is MISSING or value is None:
            return None
        if not isinstance(value, dict):
            raise MappingError(f"{text} is not an object")
        return value

    def _changed_of(self, doc: Any) -> tuple[str, ...] | None:
        if self._changed is None:
            return None
        value = lookup(doc, self._changed)
        if value is MISSING or value is None:
            return None
        if isinstance(value, dict):
            return tuple(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise MappingError(f"{self.mapping.changed} must be a list of field names or an object")

    def _time(self, doc: Any) -> float:
        if self._ts is None:
            return 0.0
        value = lookup(doc, self._ts)
        unit = self.mapping.timestamp_unit
        if unit == "iso":
            if isinstance(value, str) and (seconds := _iso_seconds(value)) is not None:
                return seconds
        elif isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            seconds = float(value) / (1000.0 if unit == "ms" else 1.0)
            if math.isfinite(seconds):
                return seconds
        raise MappingError(f"no {unit} timestamp at {self.mapping.timestamp}")

    def _time_or_none(self, doc: Any) -> float | None:
        """The event's timestamp as seconds for ``max_age`` at intake; None where there is none."""
        if self._ts is None:
            return None
        try:
            return self._time(doc)
        except MappingError:
            return None


def _iso_seconds(text: str) -> float | None:
    """An ISO 8601 timestamp (``Z`` allowed; UTC when it names no zone) as epoch seconds; None when it is none."""
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
