from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harnesses import SINKS, SOURCES
from tidesync.protocols import Context
from tidesync.state import open_state_store


@pytest.fixture(params=sorted(SOURCES))
def source_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    h = SOURCES[request.param](tmp_path)
    yield h
    h.cleanup()


@pytest.fixture(params=sorted(SINKS))
def sink_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    h = SINKS[request.param](tmp_path)
    yield h
    h.cleanup()


@pytest.fixture
async def source_ctx(tmp_path: Path) -> Any:
    """A context with an open state store (sources may keep progress in it)."""
    store = open_state_store(f"sqlite:///{tmp_path / 'conformance-state.db'}")
    await store.open()
    yield Context(pipeline="conformance", name="source", state=store)
    await store.close()


@pytest.fixture
async def sink_store(tmp_path: Path) -> Any:
    """An open state store for sinks (the webhook sink keeps its retry schedule in it)."""
    store = open_state_store(f"sqlite:///{tmp_path / 'conformance-sink-state.db'}")
    await store.open()
    yield store
    await store.close()
