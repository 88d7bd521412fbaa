"""Stripe's request bodies: ``application/x-www-form-urlencoded`` with nested keys. Pure, no I/O.

A nested mapping becomes bracketed keys, a list indexed ones::

    {"metadata": {"plan": "pro"}, "address": {"city": "Lyon"}, "preferred_locales": ["fr", "en"]}
    -> metadata[plan]=pro&address[city]=Lyon&preferred_locales[0]=fr&preferred_locales[1]=en

Scalars are written as Stripe reads them: booleans ``true``/``false``, ``None``
as the empty string (which *unsets* a field or a metadata key), decimals in
plain notation (never an exponent), datetimes as unix seconds, dates in ISO
form. Keys keep the mapping's order, so one set of parameters always encodes
to the same bytes (an idempotent retry must send the same request).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

CONTENT_TYPE = "application/x-www-form-urlencoded"


def scalar(value: Any) -> str:
    """One value as its form text."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return str(int(moment.timestamp()))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def flatten(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(key, text)`` pairs in order, nested keys bracketed."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        key = f"{prefix}[{name}]" if prefix else str(name)
        _add(pairs, key, value)
    return pairs


def _add(pairs: list[tuple[str, str]], key: str, value: Any) -> None:
    if isinstance(value, Mapping):
        if not value:
            pairs.append((key, ""))  # an empty mapping unsets the whole field (metadata="" clears all keys)
        pairs.extend(flatten(value, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _add(pairs, f"{key}[{i}]", item)
    else:
        pairs.append((key, scalar(value)))


def encode(params: Mapping[str, Any]) -> bytes:
    """The request body for ``params``: percent-encoded UTF-8, brackets kept readable as Stripe's libraries do."""
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in flatten(params)).encode()
