"""Subjects for events: a template with ``{entity}`` and ``{partition}``, pure and stable across processes.

``{partition}`` is a stable hash of the event's key (xxh64 of the key's JSON
form) modulo ``partitions``: every event of one key goes to one subject, in
every process and after every restart (Python's own ``hash`` is randomised per
process, so it is not used). ``{entity}`` is the entity name with the
characters a subject token cannot hold (whitespace, ``*``, ``>``) replaced by
``_``; its dots stay, so ``public.items`` becomes two tokens (``cdc.public.items``
under ``cdc.>``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from tidesync.event import Key
from tidesync.sinks.templates import FIELD, check_placeholders, fill, partition_of

__all__ = [
    "SCHEMA_HEADER",
    "check_template",
    "entity_token",
    "every_subject",
    "partition_of",
    "render",
    "stream_subjects",
]

SCHEMA_HEADER = "Tidesync-Schema"  # a message holding an entity's schema (this header's value), not an event

_BAD = re.compile(r"[\s*>]")


def check_template(template: str, partitions: int | None) -> None:
    """Raise ValueError when ``template`` names an unknown placeholder, or ``{partition}`` without partitions."""
    check_placeholders(template, partitions, "subject")
    if _BAD.search(FIELD.sub("x", template)) or not template.strip("."):
        raise ValueError(f"{template!r} is not a valid subject (no spaces, '*' or '>')")


@functools.lru_cache(maxsize=4096)  # called per published message; a pipeline has few entities
def entity_token(entity: str) -> str:
    cleaned = _BAD.sub("_", entity).strip(".")
    return re.sub(r"\.{2,}", ".", cleaned) or "_"


def render(template: str, entity: str, key: Key, partitions: int | None) -> str:
    """The subject of one event of ``entity`` with ``key``."""
    return fill(template, entity, key, partitions, entity_token)


def every_subject(template: str, entity: str, partitions: int | None) -> list[str]:
    """Every subject an event of ``entity`` may go to: one per partition (one without ``{partition}``)."""
    out = template.replace("{entity}", entity_token(entity))
    if "{partition}" not in out:
        return [out]
    return [out.replace("{partition}", str(n)) for n in range(partitions or 1)]


def stream_subjects(template: str) -> list[str]:
    """The subjects a stream must hold to take every subject ``template`` makes.

    Tokens up to the first one with a placeholder stay; from there on ``>``.
    ``cdc.{entity}`` → ``cdc.>``; ``cdc.{partition}.{entity}`` → ``cdc.>``; ``orders`` → ``orders``.
    """
    tokens: Sequence[str] = template.split(".")
    for i, token in enumerate(tokens):
        if FIELD.search(token):
            if i == 0:
                raise ValueError("the subject starts with a placeholder: give stream_subjects explicitly")
            return [".".join([*tokens[:i], ">"])]
    return [template]
