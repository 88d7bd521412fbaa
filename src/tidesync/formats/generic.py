"""``json`` (read only): any JSON document, mapped into an event by the generic webhook source's ``mapping:``.

The mapping is :class:`tidesync.sources.webhook.config.GenericMapping` (JSON paths for the
entity, key, op, after, before, changed and timestamp), applied by the same code the webhook
source runs (:meth:`tidesync.sources.webhook.generic.GenericProvider.map_event`), so a document
maps the same way whether it arrived as a webhook or as a broker message. Differences:

- a message is one event: ``mapping.events`` (a list of events in one body) is refused;
- the id settings (``event_id``, ``event_id_header``, ``event_id_hash``) de-duplicate webhook
  deliveries; a broker has its own message ids, so they may be left out here (and are not read);
- ``entity`` (the decoder's argument) is the fixed entity when the mapping names neither
  ``entity`` nor ``entity_path``;
- the event's position is ``()``: the source that read the message gives it its own (a stream
  sequence). Numbers are parsed as the webhook source parses them (integers exact at any size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from tidesync.errors import ConfigError
from tidesync.event import ChangeEvent
from tidesync.formats.errors import FormatError
from tidesync.sources.webhook.config import GenericMapping, SignatureOptions
from tidesync.sources.webhook.generic import GenericProvider
from tidesync.sources.webhook.provider import Malformed, MappingError, parse_json

_ID_SETTINGS = ("event_id", "event_id_header", "event_id_hash")


def mapping_of(mapping: Any, entity: str | None) -> GenericMapping:
    """The mapping to apply: a GenericMapping, or a dict of its fields. Raises ConfigError naming what is wrong."""
    if mapping is None:
        raise ConfigError("format json needs a mapping: (entity, key, op, after, ... as JSON paths)")
    if isinstance(mapping, GenericMapping):
        fields = mapping.model_dump(exclude_unset=True)
    elif isinstance(mapping, dict):
        fields = dict(mapping)
    else:
        raise ConfigError(f"format json: mapping must be an object, not {type(mapping).__name__}")
    if not any(fields.get(n) for n in _ID_SETTINGS):
        fields["event_id_hash"] = True  # not read here; GenericMapping insists on one id setting
    if entity and fields.get("entity") is None and fields.get("entity_path") is None:
        fields["entity"] = entity
    try:
        checked = GenericMapping.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'mapping'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"format json: bad mapping: {problems}") from None
    if checked.events is not None:
        raise ConfigError("format json: mapping.events is for webhook bodies holding many events; a message is one")
    return checked


def decoder(mapping: Any, entity: str | None) -> Callable[[bytes], ChangeEvent]:
    provider = GenericProvider(SignatureOptions.model_validate({}), mapping_of(mapping, entity), tolerance=0.0)

    def decode(data: bytes) -> ChangeEvent:
        try:
            return provider.map_event(parse_json(data))
        except Malformed as exc:
            raise FormatError(f"json: {exc}") from None
        except MappingError as exc:
            raise FormatError(f"json: {exc}") from None

    return decode
