"""Routing keys for events: a template with ``{entity}`` and ``{partition}``, pure and stable across processes.

``{partition}`` is the key's partition as every publishing sink computes it (xxh64
of the key's JSON form, modulo ``partitions``): every event of one key gets
one routing key, in every process and after every restart, so a queue bound
for it receives that key's events in order. ``{entity}`` is the entity name
as is (``public.items``: two words for a topic exchange's ``*``/``#``);
whitespace becomes ``_``.
"""

from __future__ import annotations

import re
from typing import Final

from tidesync.event import Key
from tidesync.sinks.templates import FIELD, check_placeholders, fill

_SPACE = re.compile(r"\s")
MAX_BYTES: Final = 255  # AMQP 0-9-1 shortstr


def check_template(template: str, partitions: int | None) -> None:
    """Raise ValueError when ``template`` names an unknown placeholder, or ``{partition}`` without partitions."""
    check_placeholders(template, partitions, "routing key")
    if len(FIELD.sub("", template).encode()) > MAX_BYTES:
        raise ValueError(f"the routing key template is longer than {MAX_BYTES} bytes")


def render(template: str, entity: str, key: Key, partitions: int | None) -> str:
    """The routing key of one event of ``entity`` with ``key``.

    Raises ValueError when the result is longer than AMQP allows (255 bytes).
    """
    out = fill(template, entity, key, partitions, _spaceless)
    if len(out.encode()) > MAX_BYTES:
        raise ValueError(f"routing key {out[:40]!r}... is longer than {MAX_BYTES} bytes")
    return out


def _spaceless(entity: str) -> str:
    return _SPACE.sub("_", entity)
