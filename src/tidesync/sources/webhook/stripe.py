"""Stripe: ``Stripe-Signature`` verification and snapshot events mapped to changes.

Mapping
- ``data.object`` is the record at the time of the event; entity
  ``stripe.<object type>``, key ``(object id,)``.
- ``*.created`` is an insert, ``*.deleted`` a delete (``before`` is the object),
  anything else an update. ``data.previous_attributes`` names exactly the
  fields that changed and holds their old values: ``changed`` is its keys and
  ``before`` the object with those old values put back. An update event
  without it (``invoice.paid``, ...) writes the whole object (``changed`` None).
- ``created`` (unix seconds) is ``committed_at``; ``(created, event id)`` is the
  record version used to drop events older than what was applied (Stripe does
  not keep order). Two events of one record in the same second are ordered by
  id, which is arbitrary: Stripe gives nothing finer.
- Thin (v2) events carry no object and are dead-lettered as not mappable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidesync.event import ChangeEvent
from tidesync.sources.webhook.provider import (
    Delivery,
    Malformed,
    Mapped,
    MappingError,
    RawRequest,
    event_id_text,
    load_entry,
    request_json,
)
from tidesync.sources.webhook.signatures import verify_stripe
from tidesync.state.store import JournalEntry


class StripeProvider:
    name = "stripe"

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance

    def verify(self, request: RawRequest, secrets: Sequence[str], now: float) -> None:
        verify_stripe(request.body, request.headers, secrets, now, self.tolerance)

    def split(self, request: RawRequest) -> tuple[list[Delivery], int]:
        doc = request_json(request)
        if not isinstance(doc, dict):
            raise Malformed("a Stripe event is a JSON object")
        event_id = event_id_text(doc.get("id"), "id")
        if not isinstance(doc.get("type"), str):
            raise Malformed("type must be a string")
        return [Delivery(event_id, request.body)], 0

    def map(self, entry: JournalEntry) -> list[Mapped]:
        return [map_stripe_event(load_entry(entry))]


def map_stripe_event(doc: Any) -> Mapped:
    if not isinstance(doc, dict):
        raise MappingError("a Stripe event is a JSON object")
    if doc.get("object") == "v2.core.event":
        raise MappingError("thin (v2) Stripe events carry no object to apply")
    type_, created, event_id = doc.get("type"), doc.get("created"), doc.get("id")
    data = doc.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(type_, str) or not isinstance(obj, dict):
        raise MappingError("a Stripe event needs type and data.object")
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise MappingError("a Stripe event needs created (unix seconds)")
    obj_type, obj_id = obj.get("object"), obj.get("id")
    if not isinstance(obj_type, str) or not isinstance(obj_id, str):
        raise MappingError("data.object needs object and id")
    entity, key = f"stripe.{obj_type}", (obj_id,)
    if type_.endswith(".deleted"):
        event = ChangeEvent(entity, key, "delete", before=obj, committed_at=float(created))
    elif type_.endswith(".created"):
        event = ChangeEvent(entity, key, "insert", after=obj, committed_at=float(created))
    else:
        prev = data.get("previous_attributes") if isinstance(data, dict) else None
        if isinstance(prev, dict):
            event = ChangeEvent(
                entity,
                key,
                "update",
                before={**obj, **prev},
                after=obj,
                changed=tuple(prev),
                committed_at=float(created),
            )
        else:
            event = ChangeEvent(entity, key, "update", after=obj, committed_at=float(created))
    return Mapped(event, (float(created), str(event_id)), None if event.op == "delete" else obj)
