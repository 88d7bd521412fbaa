"""``tidesync``: the event as :func:`tidesync.event.to_json` writes it, unchanged.

Decoding gives back what :func:`tidesync.event.from_json` gives: JSON types, so a Decimal,
datetime, date, time or UUID comes back as its string, bytes as base64 text and a timedelta
as seconds (a float); positions, keys and ``changed`` come back as tuples.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tidesync.event import ChangeEvent, ValueTooDeep, from_json, to_json
from tidesync.formats.errors import FormatError


def encode(event: ChangeEvent) -> bytes:
    try:
        return to_json(event)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FormatError(f"tidesync: the event cannot be written as JSON: {type(exc).__name__}: {exc}") from exc


def decode(data: bytes) -> ChangeEvent:
    return from_jsonable(data, "tidesync")


def from_jsonable(data: bytes | Any, fmt: str) -> ChangeEvent:
    """An event from its JSON form (bytes, or a ``msgspec.Raw``); a :class:`FormatError` naming ``fmt`` otherwise."""
    try:
        return from_json(data)
    except ValueTooDeep as exc:
        raise FormatError(f"{fmt}: the event is nested too deep ({exc})") from None
    except msgspec.ValidationError as exc:
        raise FormatError(f"{fmt}: not a tidesync event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise FormatError(f"{fmt}: not valid JSON: {exc}") from None
    except (TypeError, KeyError, AttributeError):  # valid JSON of another shape (a list, a string, ...)
        raise FormatError(f"{fmt}: not a tidesync event: expected a JSON object with entity, key and op") from None
