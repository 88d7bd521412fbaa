"""A Postgres CDC pipeline seen through /metrics and the admin API: the slot's retained WAL, a re-snapshot job."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from tests.integration.api_harness import running, sample
from tidesync.testing import eventually

CONFIG = """\
state: sqlite:///{tmp}/state.db
api: {{listen: "127.0.0.1:0", token: "${{file:{tmp}/token.txt}}"}}
pipelines:
  - name: crm
    source: {{type: postgres, dsn: "{dsn}", tables: [public.customers], work_dir: "{tmp}/work", progress: false}}
    sink: {{type: sqlite, path: "{tmp}/dst.db", create_tables: true}}
    batch: {{max_events: 500, max_wait_ms: 5}}
alerts:
  interval: 100ms
  rules:
    - {{name: wal, metric: retained_wal_bytes, above: 1}}
"""


def dst_count(tmp: Path) -> int:
    try:
        with sqlite3.connect(tmp / "dst.db") as conn:
            return int(conn.execute("SELECT count(*) FROM customers").fetchone()[0])
    except sqlite3.OperationalError:  # the table is created with the first write
        return 0


async def test_retained_wal_bytes_and_an_on_demand_snapshot(pg_database: str, tmp_path: Path) -> None:
    password = "pgpw-" + tmp_path.name[-10:]
    dsn = pg_database.replace("postgres@", f"postgres:{password}@", 1)  # trust auth ignores it; it must not leak
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO customers SELECT g, 'c' || g || '@x' FROM generate_series(1, 50) g")
    token = "tok-pg-" + tmp_path.name[-8:]
    (tmp_path / "token.txt").write_text(token)
    async with running(tmp_path, CONFIG.format(tmp=tmp_path, dsn=dsn), token) as run:
        await eventually(lambda: dst_count(tmp_path) == 50, timeout=60, message="the snapshot applied")
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("INSERT INTO customers SELECT g, 'c' || g || '@x' FROM generate_series(51, 80) g")
        await eventually(lambda: dst_count(tmp_path) == 80, timeout=60, message="the changes streamed")

        async def wal() -> float | None:
            s = await run.scrape()
            return next((v for (name, labels), v in s.items()
                         if name == "tidesync_replication_slot_retained_wal_bytes" and ("pipeline", "crm") in labels),
                        None)  # fmt: skip

        assert (await eventually(wal, timeout=30, message="retained WAL exported") or 0) > 0
        [p] = await run.get("/api/pipelines")
        assert p["retained_wal_bytes"] and p["retained_wal_bytes"] > 0
        view = await eventually(
            lambda: _firing(run), timeout=30, message="the retained-WAL alert fires on the same reading"
        )
        assert view["alerts"][0]["metric"] == "retained_wal_bytes"

        job = await run.post("/api/pipelines/crm/snapshot", {"table": "public.customers"}, expect=202)
        assert (job["kind"], job["state"] in ("running", "done")) == ("snapshot", True)
        bad = await run.client.post("/api/pipelines/crm/snapshot", json={"table": "public.nope"})
        assert bad.status_code == 400 and "not one of this source's tables" in bad.json()["detail"]

        async def resnapshotted() -> dict | None:  # type: ignore[type-arg]
            s = await run.scrape()
            n = sample(s, "tidesync_events_total", pipeline="crm", sink="sink", op="snapshot") or 0
            return s if n >= 50 + 80 else None  # the initial 50 rows, then all 80 again

        s = await eventually(resnapshotted, timeout=60, message="the on-demand snapshot's rows applied")
        texts = [(await run.client.get(path)).text for path in ("/metrics", "/api/pipelines", "/api/errors")]
    assert sample(s, "tidesync_events_total", pipeline="crm", sink="sink", op="insert") == 30
    assert password not in "".join(texts)


async def _firing(run):  # type: ignore[no-untyped-def]
    view = await run.get("/api/alerts")
    return view if view["alerts"] and view["alerts"][0]["phase"] == "firing" else None
