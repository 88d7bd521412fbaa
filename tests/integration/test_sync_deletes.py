"""Deletes between two real Postgres databases (CDC both sides): ``delete_wins`` and ``resurrect``.

While the sync is stopped, A deletes records and B edits some of them after
the delete; when the sync runs again:

- ``delete_wins``: every deleted record is gone from both sides, edited or not;
- ``resurrect``: a record B edited after A deleted it comes back on A, created
  from B's whole row; a record nobody edited after the delete is gone from both.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.test_sync_support import (
    Side,
    SyncHarness,
    pg_source,
    versions,
)
from tidesync.testing import eventually

TABLE = "CREATE TABLE items (id int PRIMARY KEY, name text, note text)"


@pytest.mark.parametrize("policy", ["delete_wins", "resurrect"])
async def test_deletes(policy: str, pg_database: str, pg_database_b: str, tmp_path: Path) -> None:
    a, b = Side("pg", pg_database), Side("pg", pg_database_b)
    a.sql(TABLE)
    b.sql(TABLE)
    a.sql("INSERT INTO items VALUES (1, 'one', NULL), (2, 'two', NULL), (3, 'three', NULL)")
    h = SyncHarness(tmp_path, f"d{uuid.uuid4().hex[:8]}", "")
    h.config_text = f"""
state: sqlite:///{tmp_path / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp_path / "wa")}, table: items, key: id}}
    b: {{source: {pg_source(b.dsn, "items", tmp_path / "wb")}, table: items, key: id}}
    fields: {{id: id, name: name, note: note}}
    deletes: {policy}
"""
    try:
        await h.start()
        await eventually(lambda: b.rows("*") == a.rows("*"), timeout=30, message="pairing")
        await h.stop()
        a.sql("DELETE FROM items WHERE id IN (1, 2)")
        b.sql("UPDATE items SET note = 'edited after the delete' WHERE id = 1")  # committed after A's delete
        await h.start()
        if policy == "delete_wins":
            expected = [(3, "three", None)]
        else:
            expected = [(1, "one", "edited after the delete"), (3, "three", None)]
        await eventually(
            lambda: a.rows("*") == expected and b.rows("*") == expected,
            timeout=30,
            message=f"{policy} applied on both sides",
        )
        await h.quiet()
        before = (versions(a), versions(b))
        await h.quiet(cycles=h.runner.idle_cycles + 4)
        assert (versions(a), versions(b), a.rows("*")) == (*before, expected)
    finally:
        await h.close()
