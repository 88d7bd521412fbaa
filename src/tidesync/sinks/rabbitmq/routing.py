"""Routing keys for events: a template with ``{entity}`` and ``{partition}``, pure and stable across processes.

``{partition}`` is the key's partition as the ``nats`` sink computes it (xxh64
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
from tidesync.sinks.nats.subjects import partition_of

PLACEHOLDERS: Final = frozenset({"entity", "partition"})
_FIELD = re.compile(r"\{([^{}]*)\}")
_SPACE = re.compile(r"\s")
MAX_BYTES: Final = 255  # AMQP 0-9-1 shortstr


def check_template(template: str, partitions: int | None) -> None:
    """Raise ValueError when ``template`` names an unknown placeholder, or ``{partition}`` without partitions."""
    found = set(_FIELD.findall(template))
    unknown = found - PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)}; the routing key may use {{entity}} and {{partition}}"
        )
    if "partition" in found and not partitions:
        raise ValueError("the routing key uses {partition}: set partitions (the number of partitions)")
    if len(_FIELD.sub("", template).encode()) > MAX_BYTES:
        raise ValueError(f"the routing key template is longer than {MAX_BYTES} bytes")


def render(template: str, entity: str, key: Key, partitions: int | None) -> str:
    """The routing key of one event of ``entity`` with ``key``.

    Raises ValueError when the result is longer than AMQP allows (255 bytes).
    """
    out = template
    if "{entity}" in out:
        out = out.replace("{entity}", _SPACE.sub("_", entity))
    if "{partition}" in out:
        assert partitions, "check_template requires partitions with {partition}"
        out = out.replace("{partition}", str(partition_of(key, partitions)))
    if len(out.encode()) > MAX_BYTES:
        raise ValueError(f"routing key {out[:40]!r}... is longer than {MAX_BYTES} bytes")
    return out
