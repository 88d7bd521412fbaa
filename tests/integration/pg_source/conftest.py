"""Fixtures for the Postgres source tests: a database per test (the shared ``pg_database``) and a harness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pgs_helpers import Harness

from tidesync.state import open_state_store


@pytest.fixture
async def harness(pg_database: str, tmp_path: Path) -> AsyncIterator[Harness]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    h = Harness(pg_database, store, tmp_path / "work")
    try:
        yield h
    finally:
        await h.close()
        await store.close()
