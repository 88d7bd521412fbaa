"""Every connector in the registry is under the conformance suite, or says why it cannot be."""

from __future__ import annotations

import pytest

from tests.conformance.harnesses import SINKS, SOURCES, UNCOVERED
from tidesync.registry import REGISTRY, Kind, Plugin

HARNESSES: dict[Kind, dict[str, type]] = {"source": SOURCES, "sink": SINKS}


def _same_connector(a: Plugin, b: Plugin) -> bool:
    """An alias (``mysql`` for ``mariadb``): the same config model and factory under another name."""
    return (a.config_model, a.factory) == (b.config_model, b.factory)


def _covered_by(kind: Kind, type_: str) -> str | None:
    """The harnessed type that runs ``type_``'s code: itself, or the type it is an alias of."""
    if type_ in HARNESSES[kind]:
        return type_
    plugin = REGISTRY.get(kind, type_)
    for other in sorted(HARNESSES[kind]):
        if other in REGISTRY.names(kind) and _same_connector(plugin, REGISTRY.get(kind, other)):
            return other
    return None


@pytest.mark.parametrize("kind", ["source", "sink"])
def test_every_registered_connector_has_a_harness_or_a_documented_reason(kind: Kind) -> None:
    missing = [t for t in REGISTRY.names(kind) if _covered_by(kind, t) is None and (kind, t) not in UNCOVERED]
    assert missing == [], f"{kind}s with neither a conformance harness nor a reason in harnesses.UNCOVERED"


def test_every_documented_reason_names_a_registered_connector_without_a_harness() -> None:
    for (kind, type_), why in UNCOVERED.items():
        assert type_ in REGISTRY.names(kind), (kind, type_)  # a stale entry: the connector is gone
        assert _covered_by(kind, type_) is None, (kind, type_)  # a stale entry: it has a harness now
        assert len(why) > 40, (kind, type_)


def test_an_alias_counts_as_covered_only_through_the_connector_it_names() -> None:
    assert _covered_by("source", "mysql") == "mariadb" and _covered_by("sink", "mysql") == "mariadb"
    assert _covered_by("sink", "discard") is None  # an unharnessed type is not covered by accident
