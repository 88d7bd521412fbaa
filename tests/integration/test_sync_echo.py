"""No echo, no ping-pong: after a burst of edits on both sides, both sides converge and then stop changing.

Postgres <-> Postgres (echoes known by replication origin) and Postgres <->
MariaDB (polling: echoes known by the ledger of values written). The test
counts the sync's writes and each row's version (Postgres ``xmin``, MariaDB's
auto-updated ``updated_at``) once the sync went quiet, waits a while longer,
and requires both to be unchanged.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from tests.integration.test_sync_support import (
    Side,
    SyncHarness,
    pg_source,
    poll_source,
    versions,
)
from tidesync.testing import eventually

PG = "CREATE TABLE items (id int PRIMARY KEY, a text, b text, n int, updated_at timestamptz DEFAULT now())"
MARIADB = (
    "CREATE TABLE items (id int PRIMARY KEY, a varchar(40), b varchar(40), n int, "
    "updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6))"
)


@pytest.mark.parametrize("b_kind", ["pg", "mariadb"])
async def test_burst_of_edits_then_silence(
    b_kind: str, pg_database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    a = Side("pg", pg_database)
    b = Side(b_kind, request.getfixturevalue("pg_database_b" if b_kind == "pg" else "mariadb_database"))
    a.sql(PG)
    b.sql(PG if b_kind == "pg" else MARIADB)
    a.sql("INSERT INTO items (id, a, b, n) SELECT i, 'a0', 'b0', 0 FROM generate_series(1, 20) i")
    h = SyncHarness(tmp_path, f"e{uuid.uuid4().hex[:8]}", "")
    b_source = pg_source(b.dsn, "items", tmp_path / "wb") if b_kind == "pg" else poll_source(b.dsn, "items")
    h.config_text = f"""
state: sqlite:///{tmp_path / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp_path / "wa")}, table: items, key: id}}
    b: {{source: {b_source}, table: items, key: id}}
    fields: {{id: id, a: a, b: b, n: n}}
    rules: {{default: lww, skew: 0s, fields: {{n: sum}}}}
"""
    rng = random.Random(7)
    try:
        await h.start()
        await eventually(lambda: len(b.rows("id")) == 20, timeout=30, message="pairing")
        for i in range(150):  # A owns field a, B owns field b; both count in n
            row = rng.randint(1, 20)
            if i % 2:
                a.sql("UPDATE items SET a = %s, n = n + 1 WHERE id = %s", (f"a{i}", row))
            else:
                b.sql("UPDATE items SET b = %s, n = n + 1 WHERE id = %s", (f"b{i}", row))
        await eventually(
            lambda: a.rows("id, a, b, n") == b.rows("id, a, b, n") and sum(r[0] for r in a.rows("n")) == 150,
            timeout=60,
            message="both sides converge with every increment",
        )
        await h.quiet()
        proc = h.runner.processor
        assert proc is not None
        writes = dict(proc.stats.writes)
        before = (versions(a), versions(b))
        await h.quiet(cycles=h.runner.idle_cycles + 6)
        assert proc.stats.writes == writes, "the sync kept writing after the edits stopped"
        assert (versions(a), versions(b)) == before, "rows kept changing after the edits stopped"
        assert proc.stats.echoes + proc.stats.echo_fields > 0  # the sync's own writes were recognised
    finally:
        await h.close()
