"""HubSpot's property model, and row values cast to what each property's type accepts.

HubSpot stores every property value as text; what text it accepts depends on
the property's ``type`` (as read from ``GET /crm/v3/properties/{objectType}``):

=============  ==============================================================
type           value sent
=============  ==============================================================
string         the value as text (dates in ISO 8601, JSON for containers)
number         a decimal number, no exponent
bool           ``true`` / ``false``
date           milliseconds since the epoch of that day's midnight UTC
datetime       milliseconds since the epoch (a naive time is taken as UTC)
enumeration    one of the property's option values (``;`` between several,
               for a multiple checkbox)
=============  ==============================================================

``None`` is sent as an empty string, which clears the property. A value that
cannot be cast (a word for a number, an option not offered) raises
:class:`CastError`: a permanent error of that one event.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from tidesync.errors import PermanentError

_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})


class CastError(PermanentError):
    """A value the property's type cannot hold; the event goes to the dead-letter queue."""

    error_class = "permanent"


@dataclass(frozen=True, slots=True)
class Property:
    name: str
    type: str
    field_type: str = ""
    options: frozenset[str] | None = None  # enumeration option values
    read_only: bool = False
    unique: bool = False

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Property:
        options = raw.get("options") or []
        meta = raw.get("modificationMetadata") or {}
        return cls(
            name=str(raw["name"]),
            type=str(raw.get("type") or "string"),
            field_type=str(raw.get("fieldType") or ""),
            options=frozenset(str(o["value"]) for o in options) if raw.get("type") == "enumeration" else None,
            read_only=bool(meta.get("readOnlyValue", False)),
            unique=bool(raw.get("hasUniqueValue", False)),
        )


@dataclass(frozen=True, slots=True)
class PropertyModel:
    """The properties of one object type, by name."""

    object_type: str
    properties: Mapping[str, Property]

    @classmethod
    def from_api(cls, object_type: str, results: Iterable[Mapping[str, Any]]) -> PropertyModel:
        return cls(object_type, {p.name: p for p in map(Property.from_api, results)})

    def get(self, name: str) -> Property | None:
        return self.properties.get(name)

    def missing(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in set(names) if n not in self.properties)

    def cast(self, name: str, value: Any) -> str:
        """``value`` as the text property ``name`` accepts; raises CastError (KeyError for an unknown name)."""
        return cast(self.properties[name], value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, separators=(",", ":"))
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _number(prop: Property, value: Any) -> str:
    if isinstance(value, bool):
        raise CastError(f"property {prop.name} (number): a boolean ({value}) is not a number")
    if isinstance(value, int):
        return str(value)
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise CastError(f"property {prop.name} (number): {value!r} is not a number") from None
    if not number.is_finite():
        raise CastError(f"property {prop.name} (number): {value!r} is not a finite number")
    text = format(number.normalize(), "f")
    return text


def _bool(prop: Property, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    word = str(value).strip().lower()
    if word in _TRUE:
        return "true"
    if word in _FALSE:
        return "false"
    raise CastError(f"property {prop.name} (bool): {value!r} is not true or false")


def _moment(prop: Property, value: Any) -> dt.datetime | dt.date:
    if isinstance(value, (dt.datetime, dt.date)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)  # HubSpot's own unit: milliseconds
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
        try:
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                pass
    raise CastError(f"property {prop.name} ({prop.type}): {value!r} is not a date or time")


def epoch_ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return round(moment.timestamp() * 1000)


def _date(prop: Property, value: Any) -> str:
    moment = _moment(prop, value)
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC)
        moment = moment.date()
    return str(epoch_ms(dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)))


def _datetime(prop: Property, value: Any) -> str:
    moment = _moment(prop, value)
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
    return str(epoch_ms(moment))


def _enumeration(prop: Property, value: Any) -> str:
    text = _text(value)
    options = prop.options or frozenset()
    chosen = text.split(";") if prop.field_type == "checkbox" else [text]
    bad = [c for c in chosen if c and c not in options]
    if bad:
        shown = ", ".join(sorted(options)[:20]) or "none"
        raise CastError(f"property {prop.name} (enumeration): {bad[0]!r} is not one of its options ({shown})")
    return text


_CASTS = {"number": _number, "bool": _bool, "date": _date, "datetime": _datetime, "enumeration": _enumeration}


def cast(prop: Property, value: Any) -> str:
    """``value`` as the text ``prop`` accepts (see the module docstring); raises CastError."""
    if value is None:
        return ""
    fn = _CASTS.get(prop.type)
    if fn is None:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return _text(value)
    return fn(prop, value)
