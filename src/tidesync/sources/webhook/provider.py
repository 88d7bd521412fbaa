"""What every webhook provider supplies: verify a request, split it into deliveries, map a delivery to changes.

The three steps run at different times. ``verify`` and ``split`` run in the
HTTP request, before the 2xx: they must be fast and only look as deep into the
payload as needed to reject a malformed body (400) and find each event's id.
``map`` runs later, when the source reads the journal: an error there is a
:class:`MappingError`, and the entry goes to the dead-letter queue with its
reason (the sender already has its 2xx).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from tidesync.event import ChangeEvent
from tidesync.state.store import JournalEntry

_UNPARSED: Any = object()


@dataclass(frozen=True, slots=True)
class RawRequest:
    """One HTTP delivery as received: ``url`` is the URL the sender called (the public one behind a proxy).

    ``parsed`` is the body as JSON when the intake has parsed it already (to check its shape), so
    a provider does not parse it again; read it through :func:`request_json`.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    parsed: Any = field(default=_UNPARSED, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to journal: its id (for de-duplication), its payload and the headers mapping needs."""

    event_id: str
    body: bytes
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mapped:
    """A change made from a journal entry.

    ``version`` orders versions of one record where the sender does not keep
    order (Stripe: ``(created, event id)``); ``record`` is the whole record at
    that version when the payload carries it (kept as the shadow).
    """

    event: ChangeEvent
    version: tuple[float, str] | None = None
    record: dict[str, Any] | None = None


class Malformed(Exception):
    """The body cannot be a delivery of this provider (answered 400 with this short reason)."""


class MappingError(Exception):
    """An authentic delivery that cannot become a change (dead-lettered with this reason)."""


class Provider(Protocol):
    name: str

    def verify(self, request: RawRequest, secrets: Sequence[str], now: float) -> None:
        """Raise :class:`~tidesync.sources.webhook.signatures.SignatureError` unless authentic and recent."""

    def split(self, request: RawRequest) -> tuple[list[Delivery], int]:
        """The deliveries to journal and the number of events ignored on purpose; raise Malformed."""

    def map(self, entry: JournalEntry) -> list[Mapped]:
        """The changes of one journal entry; raise MappingError."""


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # the parser's own nesting limit (far above any source's max_depth)
            raise Malformed("body nested too deep") from None
        raise Malformed("body is not valid JSON") from None


def request_json(request: RawRequest) -> Any:
    """The body as JSON (parsed once per request); raise Malformed when it is not JSON."""
    if request.parsed is not _UNPARSED:
        return request.parsed
    return parse_json(request.body)


def load_entry(entry: JournalEntry) -> Any:
    try:
        return orjson.loads(entry.body)
    except orjson.JSONDecodeError:
        raise MappingError("journaled body is not valid JSON") from None


def event_id_text(value: Any, what: str) -> str:
    """An event id as text: a non-empty string or an integer, at most 200 characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Malformed(f"{what} must be a string or an integer")
    text = str(value)
    if not text or len(text) > 200:
        raise Malformed(f"{what} must have 1 to 200 characters")
    return text
