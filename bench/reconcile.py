"""Reconciliation on Postgres -> Postgres: hashing in the database versus in Python.

    .venv/bin/python bench/reconcile.py [--rows 1000000] [--diffs 100] [--chunk 2000]

Creates two scratch databases on the local server, loads ``--rows`` rows into
both (server-side ``generate_series``), scatters ``--diffs`` differences (a
third missing, a third extra, a third different), reconciles in ``db`` mode
and in ``python`` mode, and prints time and rows read per side. Drops the
databases afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid

import psycopg

from tidesync.config import load_config_text
from tidesync.reconcile.config import ReconcileOptions
from tidesync.reconcile.run import reconcile_pipeline

ADMIN = os.environ.get("TIDESYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLE = (
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty integer NOT NULL,"
    " price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL)"
)
FILL = (
    "INSERT INTO items SELECT g, 'name-' || g, (g * 7) %% 1000, ((g %% 10000) / 100.0)::numeric(12,2),"
    " timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(1, %s) g"
)


def dsn(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def scatter(conn: psycopg.Connection, rows: int, diffs: int, seed: int = 7) -> dict[str, set[int]]:
    rng = random.Random(seed)
    keys = rng.sample(range(1, rows + 1), diffs)
    third = diffs // 3
    missing, different = set(keys[:third]), set(keys[third : 2 * third])
    extra = {rows + 1 + rng.randrange(rows) for _ in range(diffs - 2 * third)}
    with conn.transaction():
        conn.execute("DELETE FROM items WHERE id = ANY(%s)", (list(missing),))
        conn.execute("UPDATE items SET qty = qty + 1 WHERE id = ANY(%s)", (list(different),))
        conn.execute("INSERT INTO items SELECT g, 'extra', 0, 0, now() FROM unnest(%s::bigint[]) g", (list(extra),))
    return {"missing": missing, "different": different, "extra": extra}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--diffs", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=2000)
    args = ap.parse_args()
    names = [f"bench_{uuid.uuid4().hex[:8]}_{side}" for side in ("src", "dst")]
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        for n in names:
            admin.execute(f'CREATE DATABASE "{n}"')
    try:
        t0 = time.perf_counter()
        for n in names:
            with psycopg.connect(dsn(n), autocommit=True) as c:
                c.execute(TABLE)
                c.execute(FILL, (args.rows,))
                c.execute("ANALYZE items")
        print(f"loaded {args.rows:,} rows x 2 in {time.perf_counter() - t0:.1f}s")
        with psycopg.connect(dsn(names[1]), autocommit=True) as c:
            truth = scatter(c, args.rows, args.diffs)
        config = load_config_text(
            f"""
state: sqlite:////tmp/{names[0]}-state.db
pipelines:
  - name: bench
    source: {{type: sql_poll, dsn: "{dsn(names[0])}", tables: [items], cursor: updated_at}}
    sink: {{type: postgres, dsn: "{dsn(names[1])}"}}
"""
        )
        for mode in ("db", "python"):
            opts = ReconcileOptions(chunk_size=args.chunk, mode="auto" if mode == "db" else "python")
            t0 = time.perf_counter()
            report = await reconcile_pipeline(config, "bench", opts)
            took = time.perf_counter() - t0
            t = report.tables[0]
            r = t.result
            ok = (r.missing, r.extra, r.different) == tuple(len(truth[k]) for k in ("missing", "extra", "different"))
            print(
                f"{t.mode:6} {took:6.1f}s  found {r.missing}/{r.extra}/{r.different} (exact: {ok})"
                f"  chunks {t.chunks_differing}/{t.chunks}  leaves {t.leaves}\n"
                f"        source {t.source_counters.as_dict()}\n"
                f"        dest   {t.dest_counters.as_dict()}"
            )
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            for n in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
