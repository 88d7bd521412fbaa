"""The write side of :class:`~tidesync.testing.stripe.FakeStripe`: form bodies, objects, idempotency.

What it follows from Stripe's API reference:

- Bodies are ``application/x-www-form-urlencoded`` with nested keys
  (``metadata[plan]=pro``, ``address[city]=Lyon``, ``preferred_locales[0]=fr``).
  Values are text; the endpoint reads each parameter as its type (integers,
  booleans ``true``/``false``). An empty value unsets a field on update;
  ``metadata[key]=`` removes that key, ``metadata=`` all of them.
- An unknown parameter is a 400 ``parameter_unknown``; a missing required one
  a 400 ``parameter_missing``; a malformed email 400 ``email_invalid``.
- Prices are immutable: an update accepts only ``active``, ``metadata``,
  ``nickname``, ``lookup_key``, ``tax_behavior``, ``transfer_lookup_key`` and
  ``currency_options`` (``unit_amount`` is an unknown parameter there). A
  product with prices cannot be deleted (400); prices cannot be deleted at all.
- Idempotency (API v1): the first answer to a POST with an ``Idempotency-Key``
  is saved once the endpoint started executing (not when parameters fail
  validation) and replayed, with ``Idempotent-Replayed: true``, for the same
  key and parameters within 24 hours; the same key with other parameters or
  another endpoint is a 400 ``idempotency_error``. Keys on GET and DELETE have
  no effect.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse

IDEMPOTENCY_WINDOW: Final = 24 * 3600

PARAMS: Final[dict[str, frozenset[str]]] = {
    "customer": frozenset({
        "address", "balance", "cash_balance", "coupon", "description", "email", "invoice_prefix",
        "invoice_settings", "metadata", "name", "next_invoice_sequence", "payment_method", "phone",
        "preferred_locales", "promotion_code", "shipping", "source", "tax", "tax_exempt", "tax_id_data",
        "test_clock", "expand",
    }),
    "product": frozenset({
        "id", "active", "default_price_data", "description", "images", "marketing_features", "metadata", "name",
        "package_dimensions", "shippable", "statement_descriptor", "tax_code", "unit_label", "url", "expand",
    }),
    "price": frozenset({
        "active", "billing_scheme", "currency", "currency_options", "custom_unit_amount", "lookup_key",
        "metadata", "nickname", "product", "recurring", "tax_behavior", "tiers", "tiers_mode",
        "transfer_lookup_key", "transform_quantity", "unit_amount", "unit_amount_decimal", "expand",
    }),
}  # fmt: skip
PRICE_UPDATE: Final = frozenset(
    {"active", "metadata", "nickname", "lookup_key", "tax_behavior", "transfer_lookup_key", "currency_options",
     "expand"}
)  # fmt: skip
ADDRESS: Final = frozenset({"city", "country", "line1", "line2", "postal_code", "state"})
INTEGERS: Final = frozenset({"balance", "next_invoice_sequence", "unit_amount"})
BOOLEANS: Final = frozenset({"active", "shippable", "transfer_lookup_key"})
PREFIX: Final = {"customer": "cus", "product": "prod", "price": "price"}


class ApiError(Exception):
    """An error answer. ``saved``: the endpoint had started executing, so an idempotent retry replays it."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 *, saved: bool = False, type_: str = "invalid_request_error") -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.param, self.saved, self.type = status, code, param, saved, type_

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status)

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": str(self)}
        if self.code:
            err["code"] = self.code
        if self.param:
            err["param"] = self.param
        return {"error": err}


def parse_form(body: bytes) -> dict[str, Any]:
    """Nested parameters from a form body: bracketed keys nest, all-digit keys make lists."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body.decode(), keep_blank_values=True):
        head, _, rest = raw_key.partition("[")
        path = [head, *re.findall(r"([^\[\]]*)\]", "[" + rest)] if rest else [head]
        node = root
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    out: dict[str, Any] = _lists(root)
    return out


def _lists(node: dict[str, Any]) -> Any:
    out = {k: _lists(v) if isinstance(v, dict) else v for k, v in node.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def _int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid integer: {value}", "parameter_invalid_integer", name) from None


def _bool(name: str, value: Any) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    raise ApiError(400, f"Invalid boolean: {value}", "parameter_invalid_boolean", name)


def check(object_type: str, params: dict[str, Any], *, update: bool) -> dict[str, Any]:
    """Validate and type ``params`` for a create (or an update); raise ApiError (not saved) when invalid."""
    allowed = PRICE_UPDATE if update and object_type == "price" else PARAMS[object_type]
    if update and object_type == "product":
        allowed = allowed - {"id"}
    typed: dict[str, Any] = {}
    for name, value in params.items():
        if name not in allowed:
            raise ApiError(400, f"Received unknown parameter: {name}", "parameter_unknown", name)
        if name == "expand":
            continue
        if value == "" and name != "metadata":
            typed[name] = None
        elif name in INTEGERS:
            typed[name] = _int(name, value)
        elif name in BOOLEANS:
            typed[name] = _bool(name, value)
        elif name == "address":
            if not isinstance(value, dict):
                raise ApiError(400, "Invalid object", "parameter_invalid_object", "address")
            for sub in value:
                if sub not in ADDRESS:
                    raise ApiError(400, f"Received unknown parameter: address[{sub}]", "parameter_unknown",
                                   f"address[{sub}]")  # fmt: skip
            typed[name] = {k: value.get(k) or None for k in sorted(ADDRESS)}
        elif name == "metadata":
            if value != "" and not isinstance(value, dict):
                raise ApiError(400, "Invalid object", "parameter_invalid_object", "metadata")
            for k, v in (value or {}).items():
                if len(k) > 40 or not isinstance(v, str) or len(v) > 500:
                    raise ApiError(400, f"Invalid metadata[{k}]", "parameter_invalid_string", f"metadata[{k}]")
            typed[name] = value
        elif name == "recurring":
            if not isinstance(value, dict) or value.get("interval") not in ("day", "week", "month", "year"):
                raise ApiError(400, "Invalid recurring[interval]", "parameter_invalid", "recurring[interval]")
            typed[name] = {"interval": value["interval"], "interval_count": _int("recurring[interval_count]",
                           value.get("interval_count", "1")), "usage_type": value.get("usage_type", "licensed"),
                           "meter": None, "aggregate_usage": None, "trial_period_days": None}  # fmt: skip
        else:
            typed[name] = value
    email = typed.get("email")
    if isinstance(email, str) and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise ApiError(400, f"Invalid email address: {email}", "email_invalid", "email")
    currency = typed.get("currency")
    if currency is not None and not re.fullmatch(r"[a-z]{3}", str(currency)):
        raise ApiError(400, f"Invalid currency: {currency}", "parameter_invalid", "currency")
    if not update:
        required = {"product": ("name",), "price": ("currency", "product")}.get(object_type, ())
        for name in required:
            if typed.get(name) is None:
                raise ApiError(400, f"Missing required param: {name}.", "parameter_missing", name)
        if object_type == "price" and all(typed.get(n) is None for n in ("unit_amount", "unit_amount_decimal",
                                                                          "custom_unit_amount", "tiers")):  # fmt: skip
            raise ApiError(400, "Missing required param: unit_amount.", "parameter_missing", "unit_amount")
    return typed


def merge_metadata(current: dict[str, str], change: Any) -> dict[str, str]:
    """Stripe's metadata update: keys merge, an empty value removes its key, ``metadata=""`` removes all."""
    if change == "" or change is None:
        return {}
    out = dict(current)
    for k, v in change.items():
        if v == "":
            out.pop(k, None)
        else:
            out[k] = v
    return out


def new_object(object_type: str, obj_id: str, created: int, fields: dict[str, Any]) -> dict[str, Any]:
    """A complete object as Stripe returns it: every attribute present, defaults where not given."""
    metadata = merge_metadata({}, fields.pop("metadata", {}) or {})
    base: dict[str, Any]
    if object_type == "customer":
        base = {"address": None, "balance": 0, "currency": None, "default_source": None, "delinquent": False,
                "description": None, "discount": None, "email": None, "invoice_prefix": obj_id[-8:].upper(),
                "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                     "rendering_options": None},
                "name": None, "next_invoice_sequence": 1, "phone": None, "preferred_locales": [],
                "shipping": None, "tax_exempt": "none", "test_clock": None}  # fmt: skip
    elif object_type == "product":
        base = {"active": True, "default_price": None, "description": None, "images": [], "marketing_features": [],
                "name": None, "package_dimensions": None, "shippable": None, "statement_descriptor": None,
                "tax_code": None, "unit_label": None, "updated": created, "url": None}  # fmt: skip
    else:
        base = {"active": True, "billing_scheme": "per_unit", "currency": None, "custom_unit_amount": None,
                "lookup_key": None, "nickname": None, "product": None, "recurring": None, "tax_behavior": "unspecified",
                "tiers_mode": None, "transform_quantity": None, "type": "one_time", "unit_amount": None,
                "unit_amount_decimal": None}  # fmt: skip
        fields.pop("transfer_lookup_key", None)
    base.update(fields)
    if object_type == "price":
        base["type"] = "recurring" if base.get("recurring") else "one_time"
        if base.get("unit_amount") is not None and base.get("unit_amount_decimal") is None:
            base["unit_amount_decimal"] = str(base["unit_amount"])
    return {"id": obj_id, "object": object_type, **base, "created": created, "livemode": False,
            "metadata": metadata}  # fmt: skip
