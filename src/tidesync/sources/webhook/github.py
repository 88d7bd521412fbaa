"""GitHub: ``X-Hub-Signature-256`` verification and issue / pull request events mapped to changes.

Replays: GitHub signs the body only, with no timestamp, and neither
``X-GitHub-Delivery`` nor ``X-GitHub-Event`` is signed. So the id an event is
de-duplicated by is made from the body (``sha256:<hex>`` of it: a redelivery,
which repeats the body, is a duplicate, and a captured body sent again under a
new ``X-GitHub-Delivery`` is one too), and issue and pull request events are
ordered by the object's ``updated_at`` (``ordering`` is on by default): once a
newer version of a record was applied, an older body replayed after the
de-duplication window is dropped as stale. ``max_age`` also refuses (200,
not journaled) events whose ``updated_at`` is older than that. The event name
``X-GitHub-Event`` is journaled with the body, and the delivery id for logs;
an attacker who changes the event name only makes the body fail to map (the
payload of one event type does not map as another: ``issue`` vs
``pull_request``). Only the configured event names are journaled (default ``issues`` and ``pull_request``); others, and
``ping``, are acknowledged and counted as ignored.

Mapping: entity ``github.issue`` / ``github.pull_request``, key
``(repository full_name, number)``, ``committed_at`` the object's
``updated_at``, version ``(updated_at, id)`` (two versions within one second
are ordered by id, which is arbitrary: GitHub gives nothing finer).
``opened`` is an insert, ``deleted`` a delete, ``edited`` an update of the
fields listed in ``changes`` (their ``from`` values make ``before``),
``closed``/``reopened`` an update of the state fields, and any other action an
update of the whole object.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from tidesync.event import ChangeEvent
from tidesync.sources.webhook.provider import (
    Delivery,
    Malformed,
    Mapped,
    MappingError,
    RawRequest,
    body_id,
    is_integer,
    load_entry,
    request_json,
)
from tidesync.sources.webhook.signatures import verify_github
from tidesync.state.store import JournalEntry

_OBJECTS = {"issues": ("issue", "github.issue"), "pull_request": ("pull_request", "github.pull_request")}
_STATE_FIELDS = (
    "state",
    "state_reason",
    "closed_at",
    "updated_at",
    "merged",
    "merged_at",
    "merged_by",
    "merge_commit_sha",
)


class GitHubProvider:
    name = "github"

    def __init__(self, events: Sequence[str]) -> None:
        self.events = frozenset(events)

    def verify(self, request: RawRequest, secrets: Sequence[str], now: float) -> None:
        verify_github(request.body, request.headers, secrets)

    def split(self, request: RawRequest) -> tuple[list[Delivery], int]:
        delivery = request.headers.get("x-github-delivery")
        event = request.headers.get("x-github-event")
        if not delivery or not event:
            raise Malformed("X-GitHub-Delivery and X-GitHub-Event headers are required")
        doc = request_json(request)
        if not isinstance(doc, dict):
            raise Malformed("a GitHub delivery is a JSON object")
        if event not in self.events:
            return [], 1
        meta = {"event": event, "delivery": delivery[:200]}
        return [Delivery(github_event_id(request.body), request.body, meta, at=_updated_at(doc, event))], 0

    def map(self, entry: JournalEntry) -> list[Mapped]:
        event = map_github_event(str(entry.meta.get("event", "")), load_entry(entry))
        record = None if event.op == "delete" else event.after
        return [Mapped(event, (event.committed_at, entry.event_id), record)]


def github_event_id(body: bytes) -> str:
    """The id a GitHub delivery is de-duplicated by: a hash of its signed body (the delivery header is unsigned)."""
    return body_id(body)


def _updated_at(doc: dict[str, Any], event: str) -> float | None:
    field = _OBJECTS.get(event, ("", ""))[0]
    obj = doc.get(field)
    if isinstance(obj, dict) and isinstance(obj.get("updated_at"), str):
        return _when(obj["updated_at"]) or None
    return None


def _when(text: Any) -> float:
    if isinstance(text, str):
        try:
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return 0.0


def map_github_event(event: str, doc: Any) -> ChangeEvent:
    if event not in _OBJECTS:
        raise MappingError(f"GitHub {event or 'unnamed'} events cannot be turned into a record change")
    field, entity = _OBJECTS[event]
    obj, repo = (doc.get(field), doc.get("repository")) if isinstance(doc, dict) else (None, None)
    action = doc.get("action") if isinstance(doc, dict) else None
    if not isinstance(obj, dict) or not isinstance(repo, dict) or not isinstance(action, str):
        raise MappingError(f"a GitHub {event} event needs action, {field} and repository")
    name, number = repo.get("full_name"), obj.get("number")
    if not isinstance(name, str) or isinstance(number, bool) or not is_integer(number):
        raise MappingError("repository.full_name and the number are required")
    key, at = (name, number), _when(obj.get("updated_at"))
    if action == "opened":
        return ChangeEvent(entity, key, "insert", after=obj, committed_at=at)
    if action == "deleted":
        return ChangeEvent(entity, key, "delete", before=obj, committed_at=at)
    if action == "edited":
        changes = doc.get("changes")
        if isinstance(changes, dict) and changes:
            old = {k: v.get("from") for k, v in changes.items() if isinstance(v, dict)}
            changed = tuple(k for k in changes if k in obj)
            return ChangeEvent(
                entity, key, "update", before={**obj, **old}, after=obj, changed=changed, committed_at=at
            )
    if action in ("closed", "reopened"):
        changed = tuple(f for f in _STATE_FIELDS if f in obj)
        return ChangeEvent(entity, key, "update", after=obj, changed=changed, committed_at=at)
    return ChangeEvent(entity, key, "update", after=obj, committed_at=at)
