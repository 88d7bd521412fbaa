"""Concurrent writers on both sides, for 30 seconds: no edit is lost.

Two writers edit different fields of the same 1,000 rows at the same time,
one on each side (A writes ``fa``, B writes ``fb``, each a growing sequence
number), while the sync runs. Row-level sync would let a copy of A's row
overwrite B's concurrent edit of ``fb``; field-level, conditional writes must
not. Afterwards every row holds, on both sides, the last value each writer
wrote to its field. Postgres <-> Postgres (CDC both sides) and Postgres <->
MariaDB (polling on B).

The writers pace themselves (a short ``asyncio.sleep`` between statements) so
the load stays steady; waiting for the result uses ``eventually``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.integration.test_sync_support import (
    Side,
    SyncHarness,
    divergence,
    pg_source,
    poll_source,
)
from tidesync.testing import eventually

ROWS = 1000
SECONDS = 30.0
PG = "CREATE TABLE items (id int PRIMARY KEY, fa int NOT NULL, fb int NOT NULL, updated_at timestamptz DEFAULT now())"
MARIADB = (
    "CREATE TABLE items (id int PRIMARY KEY, fa int NOT NULL, fb int NOT NULL, "
    "updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6))"
)


async def pg_writer(dsn: str, column: str, seed: int, until: float) -> dict[int, int]:
    rng = random.Random(seed)
    last: dict[int, int] = {}
    n = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < until:
            n += 1
            row = rng.randint(1, ROWS)
            await conn.execute(f"UPDATE items SET {column} = %s WHERE id = %s", (n, row))
            last[row] = n
            await asyncio.sleep(0.002)
    return last


def mariadb_writer(dsn: str, column: str, seed: int, until: float) -> dict[int, int]:
    rng = random.Random(seed)
    last: dict[int, int] = {}
    n = 0
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=dsn.rsplit("/", 1)[1], autocommit=True)
    try:
        with conn.cursor() as cur:
            while time.monotonic() < until:
                n += 1
                row = rng.randint(1, ROWS)
                cur.execute(f"UPDATE items SET {column} = %s WHERE id = %s", (n, row))
                last[row] = n
                time.sleep(0.002)  # pacing of the load generator (it runs in its own thread)
    finally:
        conn.close()
    return last


@pytest.mark.slow
@pytest.mark.parametrize("b_kind", ["pg", "mariadb"])
async def test_concurrent_writers_lose_no_edit(
    b_kind: str, pg_database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    a = Side("pg", pg_database)
    b = Side(b_kind, request.getfixturevalue("pg_database_b" if b_kind == "pg" else "mariadb_database"))
    a.sql(PG)
    b.sql(PG if b_kind == "pg" else MARIADB)
    a.sql(f"INSERT INTO items (id, fa, fb) SELECT i, 0, 0 FROM generate_series(1, {ROWS}) i")
    h = SyncHarness(tmp_path, f"c{uuid.uuid4().hex[:8]}", "")
    b_source = pg_source(b.dsn, "items", tmp_path / "wb") if b_kind == "pg" else poll_source(b.dsn, "items")
    h.config_text = f"""
state: sqlite:///{tmp_path / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp_path / "wa")}, table: items, key: id}}
    b: {{source: {b_source}, table: items, key: id}}
    fields: {{id: id, fa: fa, fb: fb}}
    rules: {{default: manual}}
"""
    try:
        await h.start()
        await eventually(lambda: len(b.rows("id")) == ROWS, timeout=60, message="pairing")
        until = time.monotonic() + SECONDS
        writer_a = asyncio.create_task(pg_writer(a.dsn, "fa", 1, until))
        if b_kind == "pg":
            writer_b = asyncio.create_task(pg_writer(b.dsn, "fb", 2, until))
        else:
            writer_b = asyncio.create_task(asyncio.to_thread(mariadb_writer, b.dsn, "fb", 2, until))
        last_a, last_b = await writer_a, await writer_b
        assert len(last_a) > 500 and len(last_b) > 500  # both writers really covered the rows

        expected = sorted(((i, last_a.get(i, 0), last_b.get(i, 0)) for i in range(1, ROWS + 1)), key=repr)
        try:
            await eventually(
                lambda: a.rows("id, fa, fb") == expected and b.rows("id, fa, fb") == expected,
                timeout=180,
                interval=0.5,
                message="every edit of every field on both sides",
            )
        except AssertionError as exc:
            pytest.fail(f"{exc}\n{await divergence(h, a, b, expected, 'id, fa, fb')}")
        assert await h.cli_json("conflicts", "list", str(h.path)) == []  # different fields never conflict
    finally:
        await h.close()
