"""What makes a ``syncs:`` side an app side (HubSpot, Stripe), checked and filled in on its source's config.

Pure functions over the side's ``source:`` mapping (the YAML as loaded), used
by :class:`tidesync.sync.config.SyncSide`:

- :func:`app_source`: the app's polling source config: the side's source, or a
  ``hybrid`` source's ``fallback`` (whose ``primary`` takes the app's webhooks);
- :func:`check_hybrid`: a hybrid taking an app's webhooks polls that same app;
- :func:`check`: the side's own keys fit an app side (no ``dsn``, the app's record
  id as key, an object the source reads);
- :func:`filled`: the source config reading what the side maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SAAS_KEYS = {"hubspot": "hs_object_id", "stripe": "id"}  # API sides: the record id the app makes is the key
STRIPE_OBJECTS = ("customers",)


def app_source(source: dict[str, Any]) -> dict[str, Any] | None:
    if source.get("type") in SAAS_KEYS:
        return source
    fallback = source.get("fallback") if source.get("type") == "hybrid" else None
    if isinstance(fallback, dict) and fallback.get("type") in SAAS_KEYS:
        return fallback
    return None


def check(kind: str, app: dict[str, Any], *, key: Sequence[str], table: str | None, dsn: str | None) -> None:
    if dsn is not None:
        raise ValueError(f"dsn: a {kind} side writes through the {kind} API, not a database: remove dsn:")
    if list(key) != [SAAS_KEYS[kind]]:
        raise ValueError(f"key: a {kind} side's key is the record id {kind.title()} makes: key: {SAAS_KEYS[kind]}")
    if kind == "stripe" and (table or "customers") not in STRIPE_OBJECTS:
        raise ValueError(f"table: a stripe side writes {', '.join(STRIPE_OBJECTS)} (not {table})")
    if kind == "hubspot":
        types = [o if isinstance(o, str) else o.get("type") for o in app.get("objects") or ()]
        if table is None and len(types) > 1:
            raise ValueError(f"table: name the object this side writes (the source reads {types})")
        if table is not None and table not in types:
            raise ValueError(f"table: {table!r} is not one of the source's objects ({types})")


def filled(app: dict[str, Any], columns: list[str], *, table: str | None, id_property: str | None) -> dict[str, Any]:
    """``app`` reading what the side maps: a hubspot object without ``properties`` gets the mapped ones and
    ``hs_object_id``, and a hubspot source reads property history unless told not to (``property_history:
    false``); a stripe source without ``objects`` emits customers only."""
    kind = app.get("type")
    if kind == "stripe" and app.get("objects") is None:
        app = {**app, "objects": ["customer"]}
    if kind == "hubspot":
        if app.get("property_history") is None:  # lww per property, from each one's own change time
            app = {**app, "property_history": True}
        wanted = list(dict.fromkeys([*columns, SAAS_KEYS["hubspot"], *([id_property] if id_property else [])]))
        objects = []
        for o in app.get("objects") or ():
            spec = {"type": o} if isinstance(o, str) else dict(o)
            if spec.get("properties") is None and (table is None or spec.get("type") == table):
                spec["properties"] = wanted
            objects.append(spec)
        app = {**app, "objects": objects}
    return app


def check_hybrid(source: dict[str, Any]) -> None:
    """A hybrid whose primary takes an app's webhooks is an app side: its fallback must poll that app, and the
    webhooks must name records as the fallback does (the entity ``hubspot.<type>`` / ``stripe.customer``)."""
    primary, fallback = source.get("primary"), source.get("fallback")
    if not isinstance(primary, dict) or not isinstance(fallback, dict):
        return  # the hybrid's own model says what is missing
    provider = primary.get("provider") if primary.get("type") == "webhook" else None
    f_type = fallback.get("type")
    if provider in SAAS_KEYS and f_type != provider:
        raise ValueError(
            f"source.fallback: a sync side taking {provider} webhooks is a {provider} side: its hybrid source's "
            f"fallback must be the {provider} polling source (fallback: {{type: {provider}, ...}}), not {f_type!r}: "
            "it says which records the side writes, and polls what the webhooks miss"
        )
    if f_type in SAAS_KEYS and primary.get("type") == "webhook" and provider != f_type:
        raise ValueError(
            f"source.primary: a {f_type} side's webhooks come from {f_type}: primary: {{type: webhook, "
            f"provider: {f_type}, ...}} (not provider {provider!r})"
        )
    if f_type == "hubspot":
        for o in fallback.get("objects") or ():
            if isinstance(o, dict) and o.get("entity") is not None:
                raise ValueError(
                    "source.fallback.objects: HubSpot webhooks name records hubspot.<object type>: leave entity: "
                    "out on a hybrid hubspot side"
                )
