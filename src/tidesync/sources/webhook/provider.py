"""What every webhook provider supplies: verify a request, split it into deliveries, map a delivery to changes.

The three steps run at different times. ``verify`` and ``split`` run in the
HTTP request, before the 2xx: they must be fast and only look as deep into the
payload as needed to reject a malformed body (400) and find each event's id.
``map`` runs later, when the source reads the journal: an error there is a
:class:`MappingError`, and the entry goes to the dead-letter queue with its
reason (the sender already has its 2xx).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import Any, Protocol

import msgspec

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
    """One event to journal: its id (for de-duplication), its payload and the headers mapping needs.

    ``at`` is the event's own timestamp (epoch seconds) where the provider can read it at intake,
    for ``max_age``; None where it cannot.
    """

    event_id: str
    body: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    at: float | None = None


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


# Integers outside the signed 64-bit range: every destination's integer type, and msgpack, stop there.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# A run of 19 digits is the shortest text that can be an integer outside that range (|n| >= 2**63).
# Found as a run of "0" once every digit is "0" and every other byte " ": some ten times faster on
# a Stripe event than a regular expression, which tries a match from every digit.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19
_decoder = msgspec.json.Decoder()
_exact_encoder = msgspec.json.Encoder(decimal_format="number")
# The deepest nesting the intake parses (one level more is "nested too deep", a 400): the limit
# the intake has always had, kept so the same bodies are refused with the same reason; the
# configurable max_depth (at most tidesync.event.MAX_DEPTH) refuses far shallower ones afterwards.
PARSER_DEPTH = 1024
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))


def _exact_ints(doc: Any) -> Any:
    """``doc`` with every integer outside the signed 64-bit range as an exact :class:`~decimal.Decimal`.

    Iterative (no depth can make it fail); changes containers in place.
    """
    if type(doc) is int:
        return Decimal(doc) if not _INT_MIN <= doc <= _INT_MAX else doc
    stack = [doc]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            items: Any = node.items()
        elif type(node) is list:
            items = enumerate(node)
        else:
            continue
        for k, v in list(items):
            t = type(v)
            if t is int:
                if not _INT_MIN <= v <= _INT_MAX:
                    node[k] = Decimal(v)
            elif t is dict or t is list:
                stack.append(v)
    return doc


def _nesting(body: bytes) -> int:
    """How deep objects/arrays nest in ``body`` (brackets inside strings do not count). No recursion."""
    brackets = _STRINGS.sub(b"", body).translate(_BRACKETS, _NOT_BRACKETS)
    return max(accumulate(memoryview(brackets).cast("b")), default=0)


def _decode_deep(body: bytes) -> Any:
    """Parse a body the decoder gave up on for recursion (C recursion counts against Python's
    limit, so from a deep call stack it stops before :data:`PARSER_DEPTH`): refuse it past
    PARSER_DEPTH, else parse it again with room for PARSER_DEPTH levels. Rare: only bodies some
    900 levels deep get here, and each is refused by the shape check next."""
    if _nesting(body) > PARSER_DEPTH:
        raise Malformed("body nested too deep")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + PARSER_DEPTH + 100)
    try:
        return _decoder.decode(body)
    except RecursionError:
        raise Malformed("body nested too deep") from None
    except msgspec.DecodeError:
        raise Malformed("body is not valid JSON") from None
    finally:
        sys.setrecursionlimit(limit)


def parse_json(body: bytes) -> Any:
    """The body as JSON, every number exact or a float as written.

    Integers keep every digit: one outside the signed 64-bit range (which many JSON parsers
    turn into a float, so that two ids differing past the 17th digit would collide) becomes an
    integral :class:`~decimal.Decimal`, which every codec and destination keeps exact (msgpack
    through its extension tag, SQL as numeric, SQLite as text). Only bodies with a run of 19
    digits are walked for them. Nesting past :data:`PARSER_DEPTH` is Malformed("body nested too deep").
    """
    try:
        doc = _decoder.decode(body)
    except RecursionError:
        doc = _decode_deep(body)
    except msgspec.DecodeError:
        raise Malformed("body is not valid JSON") from None
    if _LONG_RUN not in body.translate(_DIGITS_AS_ZEROS):
        return doc
    return _exact_ints(doc)


def dump_json(value: Any) -> bytes:
    """JSON of a value :func:`parse_json` made, so that parsing it again gives the same value (exact integers)."""
    return _exact_encoder.encode(value)


def body_id(body: bytes) -> str:
    """An event id made from the signed bytes themselves, for senders whose id is not signed."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def request_json(request: RawRequest) -> Any:
    """The body as JSON (parsed once per request); raise Malformed when it is not JSON."""
    if request.parsed is not _UNPARSED:
        return request.parsed
    return parse_json(request.body)


def load_entry(entry: JournalEntry) -> Any:
    try:
        return parse_json(entry.body)
    except Malformed as exc:
        raise MappingError(f"journaled {exc}") from None


def is_integer(value: Any) -> bool:
    """An integer as :func:`parse_json` gives it: an int (not a bool) or an integral Decimal beyond 64 bits."""
    t = type(value)
    return t is int or (t is Decimal and value == value.to_integral_value())


def event_id_text(value: Any, what: str) -> str:
    """An event id as text: a non-empty string or an integer (exact, any size), at most 200 characters."""
    if isinstance(value, bool) or not (isinstance(value, str) or is_integer(value)):
        raise Malformed(f"{what} must be a string or an integer")
    text = str(value)
    if not text or len(text) > 200:
        raise Malformed(f"{what} must have 1 to 200 characters")
    return text
