"""HubSpot: ``X-HubSpot-Signature-v3`` verification and webhook events mapped to changes.

A POST carries a JSON array of events (up to 100). Each element is journaled
on its own, as its own JSON, under the id ``<subscriptionId>:<eventId>``
(``eventId`` alone when there is no subscription id): a retried batch adds
only the elements not seen before. The batch's signature was checked on the
raw body before it was split.

Mapping (entity ``hubspot.<object type>``, key ``(objectId,)``,
``committed_at`` = ``occurredAt`` / 1000):
- ``<type>.propertyChange``: an update of ONE field, ``propertyName`` set to
  ``propertyValue``.
- ``<type>.creation``: an insert of ``{"hs_object_id": objectId}`` (HubSpot
  sends no properties with it; they follow as property changes).
- ``<type>.deletion`` and ``<type>.privacyDeletion``: deletes.
- Anything else (merges, association changes) is dead-lettered as not mappable.
HubSpot does not keep order either; its events are not version-guarded here
(a property change is one field, so a late one can only restore that field).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tidesync.event import ChangeEvent
from tidesync.sources.webhook.provider import (
    Delivery,
    Malformed,
    Mapped,
    MappingError,
    RawRequest,
    dump_json,
    event_id_text,
    is_integer,
    load_entry,
    request_json,
)
from tidesync.sources.webhook.signatures import verify_hubspot_v3
from tidesync.state.store import JournalEntry

MAX_BATCH = 1000  # HubSpot sends up to 100; anything far beyond is not HubSpot


class HubSpotProvider:
    name = "hubspot"

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance

    def verify(self, request: RawRequest, secrets: Sequence[str], now: float) -> None:
        verify_hubspot_v3(request.method, request.url, request.body, request.headers, secrets, now, self.tolerance)

    def split(self, request: RawRequest) -> tuple[list[Delivery], int]:
        doc = request_json(request)
        if not isinstance(doc, list):
            raise Malformed("a HubSpot delivery is a JSON array of events")
        if len(doc) > MAX_BATCH:
            raise Malformed(f"more than {MAX_BATCH} events in one delivery")
        out = []
        for i, element in enumerate(doc):
            if not isinstance(element, dict):
                raise Malformed(f"event [{i}] is not an object")
            event_id = event_id_text(element.get("eventId"), f"[{i}].eventId")
            sub = element.get("subscriptionId")
            if sub is not None:
                event_id = f"{event_id_text(sub, f'[{i}].subscriptionId')}:{event_id}"
            out.append(Delivery(event_id, dump_json(element)))
        return out, 0

    def map(self, entry: JournalEntry) -> list[Mapped]:
        return [Mapped(map_hubspot_event(load_entry(entry)))]


def map_hubspot_event(doc: object) -> ChangeEvent:
    if not isinstance(doc, dict):
        raise MappingError("a HubSpot event is a JSON object")
    sub_type, object_id, occurred = doc.get("subscriptionType"), doc.get("objectId"), doc.get("occurredAt")
    if not isinstance(sub_type, str) or "." not in sub_type:
        raise MappingError("subscriptionType must look like contact.propertyChange")
    if isinstance(object_id, bool) or not (isinstance(object_id, str) or is_integer(object_id)):
        raise MappingError("objectId is missing")
    if isinstance(occurred, bool) or not isinstance(occurred, (int, float)) or not math.isfinite(occurred):
        raise MappingError("occurredAt (milliseconds) is missing")
    object_type, _, kind = sub_type.partition(".")
    entity, key, at = f"hubspot.{object_type}", (object_id,), occurred / 1000.0
    if kind == "propertyChange":
        name = doc.get("propertyName")
        if not isinstance(name, str) or not name:
            raise MappingError("a propertyChange event needs propertyName")
        return ChangeEvent(
            entity, key, "update", after={name: doc.get("propertyValue")}, changed=(name,), committed_at=at
        )
    if kind == "creation":
        return ChangeEvent(entity, key, "insert", after={"hs_object_id": object_id}, committed_at=at)
    if kind in ("deletion", "privacyDeletion"):
        return ChangeEvent(entity, key, "delete", committed_at=at)
    raise MappingError(f"HubSpot {sub_type} events cannot be turned into a record change")
