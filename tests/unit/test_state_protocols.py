"""Both state store backends satisfy every protocol of ``tidesync.state.store``, and the protocols partition the store.

The protocols are found in the module, so a new one is checked without
listing it here. A backend satisfies a protocol when it has every member
(``isinstance`` on the runtime-checkable protocol) and each method has the
protocol's signature: the same parameters, kinds, defaults and annotations,
and is a coroutine function where the protocol's is. ``_static_check`` at the
end says the same to mypy (``mypy --strict tests/unit/test_state_protocols.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from tidesync.state import store as store_module
from tidesync.state.postgres import PostgresStateStore
from tidesync.state.sqlite import SqliteStateStore
from tidesync.state.store import (
    Checkpoints,
    DeadLetterQueue,
    IntakeJournal,
    KeyValues,
    PipelineStatuses,
    Shadows,
    StateStore,
    StoreLifecycle,
    SupportsCommit,
)

_PROTOCOL_BASES = {"Protocol", "Generic", "object"}


def protocols() -> list[type]:
    """Every protocol class defined in ``tidesync.state.store``, in name order."""
    found = [
        cls
        for cls in vars(store_module).values()
        if isinstance(cls, type) and cls.__module__ == store_module.__name__ and getattr(cls, "_is_protocol", False)
    ]
    return sorted(found, key=lambda c: c.__name__)


def own_members(proto: type) -> set[str]:
    """The public members ``proto`` itself declares (methods and annotated attributes), not its bases'."""
    names = {n for n in vars(proto) if not n.startswith("_")}
    return names | {n for n in vars(proto).get("__annotations__", {}) if not n.startswith("_")}


def members(proto: type) -> set[str]:
    """The public members of ``proto`` and of the protocols it extends."""
    out: set[str] = set()
    for cls in proto.__mro__:
        if cls.__name__ not in _PROTOCOL_BASES:
            out |= own_members(cls)
    return out


def backends() -> list[Any]:
    # Built, not opened: a backend's members exist before it connects.
    return [
        SqliteStateStore(":memory:"),
        PostgresStateStore("postgresql://postgres@127.0.0.1:5432/postgres", schema="unused"),
    ]


def test_the_module_defines_the_concern_protocols() -> None:
    assert {p.__name__ for p in protocols()} == {
        "SupportsCommit",
        "Checkpoints",
        "DeadLetterQueue",
        "Shadows",
        "IntakeJournal",
        "KeyValues",
        "PipelineStatuses",
        "Leases",
        "StoreLifecycle",
        "StateStore",
    }


@pytest.mark.parametrize("proto", protocols(), ids=lambda p: p.__name__)
@pytest.mark.parametrize("backend", backends(), ids=lambda b: type(b).__name__)
def test_each_backend_satisfies_each_protocol(backend: Any, proto: type) -> None:
    missing = {name for name in members(proto) if not hasattr(backend, name)}
    assert not missing, f"{type(backend).__name__} lacks {sorted(missing)} of {proto.__name__}"
    assert isinstance(backend, proto)
    for name in sorted(members(proto)):
        declared = getattr(proto, name, None)
        if not callable(declared):
            continue  # a data member (``url``): presence is all a protocol says
        implemented = getattr(type(backend), name)
        assert str(inspect.signature(implemented)) == str(inspect.signature(declared)), (
            f"{type(backend).__name__}.{name}{inspect.signature(implemented)} differs from "
            f"{proto.__name__}.{name}{inspect.signature(declared)}"
        )
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), name


def test_a_store_missing_one_method_fails_the_check() -> None:
    """The check above can fail: a backend without ``kv_scan`` is no ``KeyValues`` and no ``StateStore``."""

    class Partial:
        pass

    sqlite = SqliteStateStore(":memory:")
    for name in members(StateStore):
        value = getattr(sqlite, name)
        setattr(Partial, name, value if not callable(value) else getattr(SqliteStateStore, name))
    assert isinstance(Partial(), StateStore)
    del Partial.kv_scan  # type: ignore[attr-defined]
    assert not isinstance(Partial(), KeyValues)
    assert not isinstance(Partial(), StateStore)
    assert isinstance(Partial(), Shadows)


def test_state_store_is_exactly_the_concerns_and_each_method_has_one_concern() -> None:
    concerns = [p for p in protocols() if p not in (StateStore, SupportsCommit)]
    assert not own_members(StateStore), "StateStore declares nothing of its own: every member has a concern"
    assert members(StateStore) == set().union(*(members(p) for p in concerns))
    owners: dict[str, list[str]] = {}
    for p in concerns:
        for name in own_members(p):
            owners.setdefault(name, []).append(p.__name__)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}
    assert own_members(SupportsCommit) == {"commit"}
    for p in concerns:
        assert (SupportsCommit in p.__mro__) == (p is not StoreLifecycle), p.__name__


def _static_check(sqlite: SqliteStateStore, postgres: PostgresStateStore) -> None:
    """Never called: mypy checks these assignments, each needing the backend to match the protocol's types."""
    s_all: StateStore = sqlite
    s_commit: SupportsCommit = sqlite
    s_checkpoints: Checkpoints = sqlite
    s_dlq: DeadLetterQueue = sqlite
    s_shadows: Shadows = sqlite
    s_journal: IntakeJournal = sqlite
    s_kv: KeyValues = sqlite
    s_statuses: PipelineStatuses = sqlite
    s_lifecycle: StoreLifecycle = sqlite
    p_all: StateStore = postgres
    p_commit: SupportsCommit = postgres
    p_checkpoints: Checkpoints = postgres
    p_dlq: DeadLetterQueue = postgres
    p_shadows: Shadows = postgres
    p_journal: IntakeJournal = postgres
    p_kv: KeyValues = postgres
    p_statuses: PipelineStatuses = postgres
    p_lifecycle: StoreLifecycle = postgres
    del s_all, s_commit, s_checkpoints, s_dlq, s_shadows, s_journal, s_kv, s_statuses, s_lifecycle
    del p_all, p_commit, p_checkpoints, p_dlq, p_shadows, p_journal, p_kv, p_statuses, p_lifecycle
