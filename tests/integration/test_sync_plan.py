"""``tidesync sync plan CONFIG NAME`` is a dry run: it changes nothing on either side nor in the state store.

Postgres <-> Postgres, where a running sync writes under replication
origins: the plan must not create them (they are cluster-wide), must not
create a state store that does not exist, and must leave an existing one,
and both tables, exactly as they were. The old argument order
(``NAME CONFIG``) is still accepted.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.test_sync_support import PG_ADMIN, Side, SyncHarness, pg_source, versions
from tidesync.sync.build import origin_name
from tidesync.testing import eventually

TABLE = "CREATE TABLE items (id int PRIMARY KEY, name text, qty int)"


def origins(name: str) -> list[tuple[Any, ...]]:
    """This sync's replication origins and their progress."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        return conn.execute(
            "SELECT o.roname, s.remote_lsn::text, s.local_lsn::text FROM pg_replication_origin o"
            " LEFT JOIN pg_replication_origin_status s ON s.external_id = o.roname"
            " WHERE o.roname IN (%s, %s) ORDER BY 1",
            (origin_name(name, "a"), origin_name(name, "b")),
        ).fetchall()


def dump(path: Path) -> list[str]:
    """Every table of the state store, schema and rows (tidesync's records, ledger, ID map, positions)."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


async def plan(h: SyncHarness, *args: str) -> dict[str, Any]:
    code, out, err = await h.cli("sync", "plan", *args, "--json")
    assert code == 0, (out, err)
    return json.loads(out)  # type: ignore[no-any-return]


async def test_sync_plan_changes_nothing(pg_database: str, pg_database_b: str, tmp_path: Path) -> None:
    a, b = Side("pg", pg_database), Side("pg", pg_database_b)
    a.sql(TABLE)
    b.sql(TABLE)
    a.sql("INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 2), (3, 'three', 3)")
    b.sql("INSERT INTO items VALUES (2, 'two', 20), (4, 'four', 4)")
    state = tmp_path / "state.db"
    h = SyncHarness(tmp_path, f"d{uuid.uuid4().hex[:8]}", "")
    h.config_text = f"""
state: sqlite:///{state}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp_path / "wa")}, table: items, key: id}}
    b: {{source: {pg_source(b.dsn, "items", tmp_path / "wb")}, table: items, key: id}}
    fields: {{id: id, name: name, qty: qty}}
    rules: {{default: {{prefer: a}}}}
"""
    h.write()
    try:
        before = (versions(a), versions(b))
        first = await plan(h, str(h.path), h.name)
        assert (first["matched"], first["create_on_b"], first["create_on_a"]) == (1, 2, 1)
        assert [d["field"] for d in first["differences"]] == ["qty"]
        assert origins(h.name) == []  # no replication origin created
        assert not state.exists()  # no state store created
        assert (versions(a), versions(b)) == before  # no row written

        # After a run: origins, records, ledger and positions exist; the plan leaves all of them as they are.
        await h.start()
        await eventually(lambda: len(a.rows("id")) == 4 and len(b.rows("id")) == 4, timeout=60, message="pairing")
        a.sql("UPDATE items SET name = 'uno' WHERE id = 1")
        await eventually(lambda: ("uno",) in b.rows("name"), timeout=30, message="an edit copied")
        await h.stop()
        made, stored, rows = origins(h.name), dump(state), (versions(a), versions(b))
        assert len(made) == 2 and stored
        for args in ((str(h.path), h.name), (h.name, str(h.path))):  # config first; the old order still works
            again = await plan(h, *args)
            assert again["already_tracked"] == 4
            assert origins(h.name) == made
            assert dump(state) == stored
            assert (versions(a), versions(b)) == rows
    finally:
        await h.close()
