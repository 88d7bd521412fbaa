"""Topics for events: a template with ``{entity}`` and ``{partition}``, pure and stable across processes.

``{partition}`` is the key's stable hash modulo ``partitions`` (xxh64 of the key's JSON
form, as every publishing sink computes it: ``tidesync.sinks.templates``), so every event of
one key goes to one topic, in every process and after every restart. ``{entity}`` is the
entity name with the characters a topic level cannot hold (``+``, ``#``, ``/``, NUL) replaced
by ``_``: one entity is one topic level (``public.items`` stays ``public.items``), so
``cdc/#`` or ``cdc/+`` reads every entity.
"""

from __future__ import annotations

import re

from tidesync.event import Key
from tidesync.sinks.templates import FIELD, check_placeholders, fill

_BAD = re.compile(r"[+#/\x00]")


def check_template(template: str, partitions: int | None) -> None:
    """Raise ValueError for an unknown placeholder, ``{partition}`` without partitions, or a wildcard."""
    check_placeholders(template, partitions, "topic")
    literal = FIELD.sub("x", template)
    if not literal or "+" in literal or "#" in literal or "\x00" in literal:
        raise ValueError(f"{template!r} is not a topic to publish to (empty, or a wildcard '+' / '#')")


def entity_level(entity: str) -> str:
    return _BAD.sub("_", entity) or "_"


def render(template: str, entity: str, key: Key, partitions: int | None) -> str:
    """The topic of one event of ``entity`` with ``key``."""
    return fill(template, entity, key, partitions, entity_level)
