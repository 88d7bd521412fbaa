"""Payload formats: how a :class:`~tidesync.event.ChangeEvent` is written to, and read from, a message body.

Sinks that publish events (brokers, webhooks) write one of :data:`FORMATS`; sources that read
messages read one of :data:`SOURCE_FORMATS`:

==============  ==========================================================  ======================
format          body                                                        module
==============  ==========================================================  ======================
``tidesync``    the event as :func:`tidesync.event.to_json` writes it       :mod:`.native`
``debezium``    Debezium's PostgreSQL change-event envelope (bare payload)  :mod:`.debezium`
``cloudevents`` a structured-mode JSON CloudEvent 1.0 with the event as     :mod:`.cloudevents`
                its data
``json``        (read only) any JSON document, mapped by the generic        :mod:`.generic`
                webhook source's ``mapping:``
==============  ==========================================================  ======================

Contracts:

- :func:`encoder` and :func:`decoder` are called once, at open; the functions they return are
  pure and thread-safe, and are called per message.
- An encoder returns the body's bytes, or raises :class:`FormatError` (a
  :class:`~tidesync.errors.PermanentError`: dead-letter that event) for an event the format
  cannot carry (a value nested too deep, an unknown op).
- A decoder returns one event, or raises :class:`FormatError` naming what is wrong with the bytes
  (never a KeyError or a parser's own exception): the source dead-letters that message.
- Positions: ``tidesync``, ``cloudevents`` and tidesync's own ``debezium`` records carry the
  event's exact position; a Debezium record from Debezium gets one derived from its LSNs;
  ``json`` events have ``()``. A broker source that resumes by its own sequence sets the position.
- An unknown format name is a :class:`~tidesync.errors.ConfigError` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

from tidesync.errors import ConfigError
from tidesync.event import ChangeEvent
from tidesync.formats import debezium, native
from tidesync.formats.errors import FormatError

SinkFormat = Literal["tidesync", "debezium", "cloudevents"]
SourceFormat = Literal["tidesync", "debezium", "cloudevents", "json"]
FORMATS: Final[tuple[str, ...]] = ("tidesync", "debezium", "cloudevents")
SOURCE_FORMATS: Final[tuple[str, ...]] = (*FORMATS, "json")

_CONTENT_TYPES: Final = {
    "tidesync": "application/json",
    "debezium": "application/json",
    "cloudevents": "application/cloudevents+json",
    "json": "application/json",
}

__all__ = [
    "FORMATS",
    "SOURCE_FORMATS",
    "FormatError",
    "SinkFormat",
    "SourceFormat",
    "content_type",
    "decoder",
    "encoder",
]


def _unknown(fmt: str, known: tuple[str, ...], who: str) -> ConfigError:
    if fmt == "json" and known == FORMATS:
        return ConfigError(f"format 'json' can only be read (by a source); {who} one of: {', '.join(known)}")
    return ConfigError(f"unknown format {fmt!r}; {who} one of: {', '.join(known)}")


def encoder(fmt: str, *, pipeline: str, sink: str) -> Callable[[ChangeEvent], bytes]:
    """The function that writes an event in ``fmt``; ``pipeline`` and ``sink`` name the writer (ids, source)."""
    if fmt == "tidesync":
        return native.encode
    if fmt == "debezium":
        return debezium.encoder(pipeline=pipeline)
    if fmt == "cloudevents":
        # loaded when used: it builds on the webhook sink's ids, and that sink builds on this package
        from tidesync.formats import cloudevents

        return cloudevents.encoder(pipeline=pipeline, sink=sink)
    raise _unknown(fmt, FORMATS, "sinks write")


def decoder(fmt: str, *, mapping: Any | None = None, entity: str | None = None) -> Callable[[bytes], ChangeEvent]:
    """The function that reads an event in ``fmt``.

    ``mapping``: for ``json``, the generic webhook mapping (a dict or a
    :class:`~tidesync.sources.webhook.config.GenericMapping`), required; for ``debezium``,
    optionally ``{"key": [column, ...]}``, the key columns of records Debezium wrote (which carry
    their key outside the value). Other formats take none. ``entity``: for ``json``, the entity
    when the mapping names none; for ``debezium``, the entity of a record that names no table.
    Raises :class:`~tidesync.errors.ConfigError` for an unknown format or a bad mapping.
    """
    if fmt == "json":
        from tidesync.formats import generic  # the webhook source's mapping code, loaded only when used

        return generic.decoder(mapping, entity)
    if fmt == "debezium":
        return debezium.decoder(key_fields=_key_fields(mapping), entity=entity)
    if fmt not in SOURCE_FORMATS:
        raise _unknown(fmt, SOURCE_FORMATS, "sources read")
    if mapping is not None:
        raise ConfigError(f"format {fmt} takes no mapping: (its body names entity, key and op)")
    if fmt == "tidesync":
        return native.decode
    from tidesync.formats import cloudevents

    return cloudevents.decode


def _key_fields(mapping: Any) -> tuple[str, ...] | None:
    if mapping is None:
        return None
    key = mapping.get("key") if isinstance(mapping, dict) else None
    if (
        not isinstance(mapping, dict)
        or set(mapping) != {"key"}
        or not isinstance(key, list)
        or not key
        or not all(isinstance(k, str) and k for k in key)
    ):
        raise ConfigError('format debezium: mapping must be {key: ["column", ...]} (the key columns, in order)')
    return tuple(key)


def content_type(fmt: str) -> str:
    """The media type of one event in ``fmt`` (``Content-Type`` of a webhook, a broker header)."""
    try:
        return _CONTENT_TYPES[fmt]
    except KeyError:
        raise _unknown(fmt, SOURCE_FORMATS, "use") from None
