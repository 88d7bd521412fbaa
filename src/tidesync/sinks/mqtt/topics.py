"""Topics for events: a template with ``{entity}`` and ``{partition}``, pure and stable across processes.

``{partition}`` is the key's stable hash modulo ``partitions`` (the same function as the nats
sink's: xxh64 of the key's JSON form), so every event of one key goes to one topic, in every
process and after every restart. ``{entity}`` is the entity name with the characters a topic
level cannot hold (``+``, ``#``, ``/``, NUL) replaced by ``_``: one entity is one topic level
(``public.items`` stays ``public.items``), so ``cdc/#`` or ``cdc/+`` reads every entity.
"""

from __future__ import annotations

import re
from typing import Final

from tidesync.event import Key
from tidesync.sinks.nats.subjects import partition_of

PLACEHOLDERS: Final = frozenset({"entity", "partition"})
_FIELD = re.compile(r"\{([^{}]*)\}")
_BAD = re.compile(r"[+#/\x00]")


def placeholders(template: str) -> set[str]:
    return set(_FIELD.findall(template))


def check_template(template: str, partitions: int | None) -> None:
    """Raise ValueError for an unknown placeholder, ``{partition}`` without partitions, or a wildcard."""
    unknown = placeholders(template) - PLACEHOLDERS
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; the topic may use {{entity}} and {{partition}}")
    if "partition" in placeholders(template) and not partitions:
        raise ValueError("the topic uses {partition}: set partitions (the number of partitions)")
    literal = _FIELD.sub("x", template)
    if not literal or "+" in literal or "#" in literal or "\x00" in literal:
        raise ValueError(f"{template!r} is not a topic to publish to (empty, or a wildcard '+' / '#')")


def entity_level(entity: str) -> str:
    return _BAD.sub("_", entity) or "_"


def render(template: str, entity: str, key: Key, partitions: int | None) -> str:
    """The topic of one event of ``entity`` with ``key``."""
    out = template
    if "{entity}" in out:
        out = out.replace("{entity}", entity_level(entity))
    if "{partition}" in out:
        assert partitions, "check_template requires partitions with {partition}"
        out = out.replace("{partition}", str(partition_of(key, partitions)))
    return out
