"""Reconciliation against real databases: exact drift found, repaired through the sink, reads bounded.

The large test: 1,000,000 rows Postgres -> Postgres with 100 scattered
differences. The others: MariaDB (hashing in the database, and in Python
behind transforms that rename and cast), and Postgres -> SQLite end to end
(the pipeline copies, then reconcile finds no drift across the type changes).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.conftest import MARIADB, PG_ADMIN, drop_pg_database, pg_dsn, unique
from tidesync.config import LoadedConfig, load_config_text
from tidesync.engine.build import build_runner
from tidesync.reconcile.config import ReconcileOptions
from tidesync.reconcile.run import PipelineReport, reconcile_pipeline
from tidesync.state import open_state_store
from tidesync.testing import eventually


@pytest.fixture
def pg_pair() -> Iterator[tuple[str, str]]:
    names = [unique("rc_src"), unique("rc_dst")]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for n in names:
            conn.execute(f'CREATE DATABASE "{n}"')
    try:
        yield pg_dsn(names[0]), pg_dsn(names[1])
    finally:
        for n in names:
            drop_pg_database(n)


@pytest.fixture
def mariadb_pair() -> Iterator[tuple[str, str]]:
    names = [unique("rc_src"), unique("rc_dst")]
    conn = pymysql.connect(**MARIADB, autocommit=True)
    try:
        with conn.cursor() as cur:
            for n in names:
                cur.execute(f"CREATE DATABASE `{n}`")
        yield tuple(f"mysql://root@127.0.0.1:3306/{n}" for n in names)  # type: ignore[misc]
    finally:
        with conn.cursor() as cur:
            for n in names:
                cur.execute(f"DROP DATABASE IF EXISTS `{n}`")
        conn.close()


def pipeline_config(tmp_path: Path, source: str, sink: str, transforms: str = "[]") -> LoadedConfig:
    return load_config_text(
        f"""
state: sqlite:///{tmp_path / "state.db"}
pipelines:
  - name: p
    source: {source}
    transforms: {transforms}
    sink: {sink}
"""
    )


def kinds(report: PipelineReport) -> dict[str, set[tuple[object, ...]]]:
    out: dict[str, set[tuple[object, ...]]] = {"missing": set(), "extra": set(), "different": set()}
    for t in report.tables:
        for d in t.differences:
            out[d.kind].add(d.key)
    return out


# --- 1,000,000 rows --------------------------------------------------------------------------------

BIG = 1_000_000
TABLE_PG = (
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty integer NOT NULL,"
    " price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL)"
)
# Source keys are even, so extra destination rows (odd keys) can sit anywhere between them.
FILL_PG = (
    "INSERT INTO items SELECT 2 * g, 'name-' || g, (g * 7) %% 1000, ((g %% 10000) / 100.0)::numeric(12,2),"
    " timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(1, %s) g"
)


async def test_a_million_rows_with_100_scattered_differences(pg_pair: tuple[str, str], tmp_path: Path) -> None:
    src, dst = pg_pair
    for dsn in pg_pair:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(TABLE_PG)
            c.execute(FILL_PG, (BIG,))
            c.execute("VACUUM ANALYZE items")
    rng = random.Random(20240301)
    picked = rng.sample(range(1, BIG + 1), 67)
    missing = {(2 * g,) for g in picked[:34]}
    different = {(2 * g,) for g in picked[34:]}
    extra = {(2 * rng.randrange(BIG) + 1,) for _ in range(33)}
    assert len(extra) == 33
    with psycopg.connect(dst, autocommit=True) as c, c.transaction():
        c.execute("DELETE FROM items WHERE id = ANY(%s)", ([k[0] for k in missing],))
        c.execute("UPDATE items SET qty = qty + 1 WHERE id = ANY(%s)", ([k[0] for k in different],))
        c.execute(
            "INSERT INTO items SELECT g, 'extra', 0, 0, now() FROM unnest(%s::bigint[]) g", ([k[0] for k in extra],)
        )
    config = pipeline_config(
        tmp_path,
        f'{{type: sql_poll, dsn: "{src}", tables: [items], cursor: updated_at}}',
        f'{{type: postgres, dsn: "{dst}"}}',
    )
    options = ReconcileOptions(chunk_size=2000)

    report = await reconcile_pipeline(config, "p", options)
    (t,) = report.tables
    assert t.mode == "db"
    assert kinds(report) == {"missing": missing, "extra": extra, "different": different}
    assert {d.fields for d in t.differences if d.kind == "different"} == {("qty",)}
    assert report.drift == 100 and t.result.settled == 0

    src_reads, dst_reads = t.source_counters, t.dest_counters
    beyond_src = src_reads.rows_hashed - t.top_hashed["source"]
    beyond_dst = dst_reads.rows_hashed - t.top_hashed["dest"]
    differing_rows = t.chunks_differing * options.chunk_size
    print(
        f"\n1M reconcile: {t.seconds:.1f}s, chunks differing {t.chunks_differing}/{t.chunks}, leaves {t.leaves}"
        f"\n  source: top-level hashed {t.top_hashed['source']:,}, hashed beyond {beyond_src:,},"
        f" rows fetched {src_reads.rows_fetched:,}, keys stepped {src_reads.keys_stepped:,},"
        f" queries {src_reads.queries}"
        f"\n  dest:   top-level hashed {t.top_hashed['dest']:,}, hashed beyond {beyond_dst:,},"
        f" rows fetched {dst_reads.rows_fetched:,}, queries {dst_reads.queries}"
        f"\n  differing chunks x chunk size = {differing_rows:,}"
    )
    assert t.top_hashed["source"] == BIG and t.top_hashed["dest"] == BIG - 34 + 33
    assert t.chunks_differing <= 100
    # Beyond the top-level hashes: at most twice the rows of the differing chunks are hashed again...
    assert beyond_src <= 2 * differing_rows and beyond_dst <= 2 * differing_rows
    # ...and rows are fetched only in the leaves (at most leaf_size per side each) and for the re-check.
    assert t.leaves <= 100
    assert src_reads.rows_fetched <= t.leaves * options.leaf_size + 100
    assert dst_reads.rows_fetched <= t.leaves * options.leaf_size + 100

    repaired = await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=2000, repair=True))
    assert repaired.drift == 100 and repaired.tables[0].result.repaired == 100 and repaired.unrepaired == 0
    after = await reconcile_pipeline(config, "p", options)
    assert after.drift == 0 and after.tables[0].chunks_differing == 0
    with psycopg.connect(dst) as c:
        rows = dict(
            c.execute(
                "SELECT id, qty FROM items WHERE id = ANY(%s)", ([k[0] for k in missing | different | extra],)
            ).fetchall()
        )
    with psycopg.connect(src) as c:
        expected = dict(
            c.execute("SELECT id, qty FROM items WHERE id = ANY(%s)", ([k[0] for k in missing | different],)).fetchall()
        )
    assert rows == expected


# --- MariaDB ---------------------------------------------------------------------------------------

TABLE_MARIADB = (
    "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, qty INT NOT NULL,"
    " price DECIMAL(10,2) NOT NULL, updated_at DATETIME(6) NOT NULL)"
)
TABLE_MARIADB_RENAMED = (
    "CREATE TABLE items (id INT PRIMARY KEY, title VARCHAR(100) NOT NULL, qty VARCHAR(20) NOT NULL,"
    " price DECIMAL(14,4) NOT NULL, updated_at DATETIME(6) NOT NULL)"
)


def mariadb_exec(dsn: str, *statements: tuple[str, object]) -> None:
    conn = pymysql.connect(**MARIADB, database=dsn.rsplit("/", 1)[1], autocommit=True)
    try:
        with conn.cursor() as cur:
            for sql, params in statements:
                if isinstance(params, list):
                    cur.executemany(sql, params)
                else:
                    cur.execute(sql, params)
    finally:
        conn.close()


def mariadb_rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    conn = pymysql.connect(**MARIADB, database=dsn.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("renamed", [False, True], ids=["db-hash", "python-hash"])
async def test_mariadb_drift_found_and_repaired(mariadb_pair: tuple[str, str], tmp_path: Path, renamed: bool) -> None:
    src, dst = mariadb_pair
    rows = [(i, f"n{i}", i % 50, Decimal(i % 1000) / 100, f"2024-01-01 00:00:{i % 60:02d}") for i in range(1, 5001)]
    mariadb_exec(src, (TABLE_MARIADB, None), ("INSERT INTO items VALUES (%s, %s, %s, %s, %s)", rows))
    mariadb_exec(
        dst,
        (TABLE_MARIADB_RENAMED if renamed else TABLE_MARIADB, None),
        (
            "INSERT INTO items VALUES (%s, %s, %s, %s, %s)",
            [(r[0], r[1], str(r[2]) if renamed else r[2], *r[3:]) for r in rows],
        ),
        ("DELETE FROM items WHERE id IN (17, 2500, 4999)", None),
        ("INSERT INTO items VALUES (9001, 'x', '1', 1, '2024-01-01'), (9002, 'y', '2', 2, '2024-01-01')", None),
        (f"UPDATE items SET {'title' if renamed else 'name'} = 'changed' WHERE id = 100", None),
        ("UPDATE items SET price = price + 0.01 WHERE id IN (200, 3000)", None),
    )
    transforms = "[{rename: {name: title}}, {cast: {qty: string}}]" if renamed else "[]"
    config = pipeline_config(
        tmp_path,
        f'{{type: sql_poll, dsn: "{src}", tables: [items], cursor: updated_at}}',
        f'{{type: mariadb, dsn: "{dst}"}}',
        transforms,
    )
    options = ReconcileOptions(chunk_size=500, fanout=4, leaf_size=16)
    report = await reconcile_pipeline(config, "p", options)
    (t,) = report.tables
    assert t.mode == ("python" if renamed else "db")
    assert kinds(report) == {
        "missing": {(17,), (2500,), (4999,)},
        "extra": {(9001,), (9002,)},
        "different": {(100,), (200,), (3000,)},
    }
    fields = {d.key: d.fields for d in t.differences if d.kind == "different"}
    assert fields == {(100,): ("title" if renamed else "name",), (200,): ("price",), (3000,): ("price",)}

    fixed = await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=500, repair=True))
    assert fixed.tables[0].result.repaired == 8 and fixed.unrepaired == 0
    assert (await reconcile_pipeline(config, "p", options)).drift == 0
    name = "title" if renamed else "name"
    got = mariadb_rows(dst, f"SELECT id, {name}, qty, price FROM items WHERE id IN (17, 100, 200, 9001) ORDER BY id")
    qty = (lambda v: str(v)) if renamed else (lambda v: v)
    assert got == [
        (17, "n17", qty(17), Decimal("0.17")),
        (100, "n100", qty(0), Decimal("1.00")),
        (200, "n200", qty(0), Decimal("2.00")),
    ]


# --- Postgres -> SQLite through the pipeline, then reconcile -----------------------------------------

TYPED_PG = """
CREATE TABLE accounts (
    id uuid PRIMARY KEY, name text NOT NULL, balance numeric(12,3), ratio double precision,
    active boolean NOT NULL, born date, prefs jsonb, updated_at timestamptz NOT NULL
)
"""


async def test_postgres_to_sqlite_types_compare_equal_after_the_pipeline(tmp_path: Path) -> None:
    name = unique("rc_typed")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        src = pg_dsn(name)
        with psycopg.connect(src, autocommit=True) as c:
            c.execute(TYPED_PG)
            c.execute(
                "INSERT INTO accounts SELECT md5(g::text)::uuid, 'acct ' || g, g * 1.125, g / 3.0, g % 2 = 0,"
                " date '2000-01-01' + g, jsonb_build_object('tier', g % 3, 'tags', jsonb_build_array('a', g)),"
                " timestamptz '2024-01-01 10:00:00+02' + g * interval '1 minute' FROM generate_series(1, 300) g"
            )
        dest = tmp_path / "dest.db"
        config = pipeline_config(
            tmp_path,
            f'{{type: sql_poll, dsn: "{src}", tables: [accounts], cursor: updated_at, poll_interval: 0.05}}',
            f'{{type: sqlite, path: "{dest}", create_tables: true}}',
        )
        store = open_state_store(config.state_url)
        await store.open()
        runner = build_runner(config.pipeline("p"), store)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await eventually(lambda: runner.stats.events_written >= 300 or task.done(), timeout=60, message="copy")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await store.close()

        report = await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=64))
        (t,) = report.tables
        assert t.mode == "python"
        assert report.drift == 0, t.differences[:5]

        import sqlite3

        with sqlite3.connect(dest) as c:
            first = c.execute("SELECT id FROM accounts ORDER BY id LIMIT 1").fetchone()[0]
            c.execute("UPDATE accounts SET balance = '9.999', prefs = '{\"tier\": 9}' WHERE id = ?", (first,))
        drift = await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=64))
        (d,) = drift.tables[0].differences
        assert d.kind == "different" and set(d.fields) == {"balance", "prefs"}
        repaired = await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=64, repair=True))
        assert repaired.tables[0].result.repaired == 1
        assert (await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=64))).drift == 0
    finally:
        drop_pg_database(name)
