"""Destination templates of the publishing sinks: mqtt topics, nats subjects, rabbitmq routing keys.

A template may name ``{entity}`` and ``{partition}``. ``{partition}`` is a
stable hash of the event's key (xxh64 of the key's JSON form) modulo
``partitions``: every event of one key goes to one destination, in every
process and after every restart (Python's own ``hash`` is randomised per
process, so it is not used). What ``{entity}`` becomes (the characters a
destination cannot hold replaced), and what else a template must satisfy, each
sink says in its own module (``topics.py``, ``subjects.py``, ``routing.py``).
Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Protocol

import xxhash
from pydantic import Field, model_validator

from tidesync.event import Key, json_dumps

PLACEHOLDERS: Final = frozenset({"entity", "partition"})
FIELD: Final = re.compile(r"\{([^{}]*)\}")

# The config key that goes with a template (the mqtt, nats and rabbitmq sinks).
Partitions = Annotated[int | None, Field(ge=1, le=65536, description="number of partitions for {partition}")]


def placeholders(template: str) -> set[str]:
    return set(FIELD.findall(template))


def check_placeholders(template: str, partitions: int | None, what: str) -> None:
    """Raise ValueError when ``template`` (a ``what``: topic, subject, ...) names an unknown placeholder,
    or ``{partition}`` without ``partitions``."""
    found = placeholders(template)
    unknown = found - PLACEHOLDERS
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; the {what} may use {{entity}} and {{partition}}")
    if "partition" in found and not partitions:
        raise ValueError(f"the {what} uses {{partition}}: set partitions (the number of partitions)")


def partition_of(key: Key, partitions: int) -> int:
    """The key's partition: stable across processes and restarts."""
    return xxhash.xxh64_intdigest(json_dumps(list(key))) % partitions


def fill(template: str, entity: str, key: Key, partitions: int | None, clean: Callable[[str], str]) -> str:
    """``template`` for one event of ``entity`` with ``key``; ``{entity}`` becomes ``clean(entity)``."""
    out = template
    if "{entity}" in out:
        out = out.replace("{entity}", clean(entity))
    if "{partition}" in out:
        assert partitions, "check_template requires partitions with {partition}"
        out = out.replace("{partition}", str(partition_of(key, partitions)))
    return out


class _Templated(Protocol):
    partitions: int | None


def template_validator(key: str, check: Callable[[str, int | None], None]) -> Any:
    """A config model's validator (run after its fields): ``check`` the template at ``key`` with ``partitions``."""

    def validate(model: _Templated) -> _Templated:
        check(getattr(model, key), model.partitions)
        return model

    return model_validator(mode="after")(validate)
