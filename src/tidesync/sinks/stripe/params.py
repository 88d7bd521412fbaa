"""From a row to a Stripe object's parameters. Pure, no I/O.

Which columns become which parameters (see :mod:`.config` for the options):

- the ``metadata_column``: a mapping (or its JSON text) sent as ``metadata[key]``;
  on an update, a key the row lost is sent empty, which unsets it in Stripe;
- a column named like a parameter of the object (``email``, ``address``,
  ``unit_amount``) is sent as that parameter; a mapping value nests
  (``address[city]``); a dotted name nests too (``address.city`` ->
  ``address[city]``), so a flat table maps with a rename;
- an ``exclude``d column is never sent; any other column follows
  ``extra_columns``: ``metadata[column]`` as text, ignored, or an error.

Only the fields an event changed are sent on an update (field-level), so an
edit made in Stripe to another field survives.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from tidesync.errors import PermanentError
from tidesync.event import Key, Row
from tidesync.sinks.stripe.config import ObjectType, StripeObject
from tidesync.sinks.stripe.forms import scalar

# The parameters each create endpoint accepts (Stripe API reference, 2024 versions).
PARAMETERS: Final[dict[ObjectType, frozenset[str]]] = {
    "customers": frozenset({
        "address", "balance", "cash_balance", "coupon", "description", "email", "invoice_prefix",
        "invoice_settings", "metadata", "name", "next_invoice_sequence", "payment_method", "phone",
        "preferred_locales", "promotion_code", "shipping", "source", "tax", "tax_exempt", "tax_id_data",
        "test_clock",
    }),
    "products": frozenset({
        "active", "default_price_data", "description", "images", "marketing_features", "metadata", "name",
        "package_dimensions", "shippable", "statement_descriptor", "tax_code", "unit_label", "url",
    }),
    "prices": frozenset({
        "active", "billing_scheme", "currency", "currency_options", "custom_unit_amount", "lookup_key",
        "metadata", "nickname", "product", "recurring", "tax_behavior", "tiers", "tiers_mode",
        "transfer_lookup_key", "transform_quantity", "unit_amount", "unit_amount_decimal",
    }),
}  # fmt: skip


def _key_part(value: Any) -> Any:
    # The forms key texts already stored in Stripe have (a changed text would no longer match):
    # exponents as "1e+16", times in isoformat ("+00:00"), Decimal, bytes and the rest as str().
    if value is None or isinstance(value, (str, int, uuid.UUID)):
        return value
    if isinstance(value, float):
        text = msgspec.json.encode(value)
        return msgspec.Raw(text.replace(b"e", b"e+") if b"e" in text and b"e-" not in text else text)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _key_part(value.value)
    return str(value)


def key_text(key: Key) -> str:
    """The source key as metadata text: the value of a one-column key, else its JSON (integers exact)."""
    if len(key) == 1:
        return scalar(key[0])
    return msgspec.json.encode([_key_part(v) for v in key]).decode()


def _mapping(value: Any, column: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, (str, bytes)):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            raise PermanentError(f"column {column!r} is not a JSON object: {exc}") from exc
        except RecursionError:
            raise PermanentError(f"column {column!r} is not a JSON object: nested too deep") from None
    if not isinstance(value, Mapping):
        raise PermanentError(f"column {column!r} holds {type(value).__name__}, not a mapping of metadata")
    return dict(value)


def _put(params: dict[str, Any], path: list[str], value: Any) -> None:
    node = params
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def build(
    obj: StripeObject,
    row: Row,
    fields: Iterable[str],
    *,
    before: Row | None = None,
    skip: Iterable[str] = (),
) -> dict[str, Any]:
    """The parameters for ``fields`` of ``row`` (in ``fields`` order); ``skip`` names columns handled elsewhere.

    Raises PermanentError for a metadata column that is not a mapping, or a
    column that is no parameter when ``extra_columns`` is ``error``.
    """
    known = PARAMETERS[obj.object]
    excluded = set(obj.exclude) | set(skip)
    params: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for name in fields:
        if name in excluded or name not in row:
            continue
        value = row[name]
        if name == obj.metadata_column:
            now = _mapping(value, name)
            if before is not None and name in before:
                for gone in _mapping(before[name], name).keys() - now.keys():
                    metadata[str(gone)] = ""  # unset in Stripe
            metadata.update({str(k): scalar(v) for k, v in now.items()})
            continue
        path = name.split(".")
        if path[0] in known:
            _put(params, path, value)
        elif obj.extra_columns == "metadata":
            metadata[name] = scalar(value)
        elif obj.extra_columns == "error":
            raise PermanentError(f"column {name!r} is not a parameter of Stripe {obj.object}")
    if metadata:
        params["metadata"] = metadata
    return params
