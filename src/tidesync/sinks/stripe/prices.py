"""Stripe prices are immutable: what can change in place, and what makes a new price.

``POST /v1/prices/{id}`` accepts only :data:`MUTABLE` parameters. A change to
any other (the amount, the currency, the interval, the product) is a new
price: the sink creates one from the whole row and archives the old one
(``active=false``), then points the ID map at the new one. A ``lookup_key`` moves
to the new price (``transfer_lookup_key=true``).

The ID map keeps a fingerprint of the immutable parameters a price was created
with, so a snapshot row for a price already mapped (a re-snapshot) makes a new
price only when those differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from tidesync.sinks.stripe.forms import flatten

MUTABLE: Final = frozenset(
    {"active", "metadata", "nickname", "lookup_key", "tax_behavior", "transfer_lookup_key", "currency_options"}
)


def mutable_part(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k in MUTABLE}


def immutable_part(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in MUTABLE}


def fingerprint(params: Mapping[str, Any]) -> str:
    """A digest of the immutable parameters (order-independent), as the ID map stores it."""
    pairs = sorted(flatten(immutable_part(params)))
    return hashlib.blake2b(repr(pairs).encode(), digest_size=8).hexdigest()


def replacement(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of the price replacing an old one: ``params`` plus the lookup key's transfer."""
    out = dict(params)
    if out.get("lookup_key"):
        out["transfer_lookup_key"] = True
    return out
