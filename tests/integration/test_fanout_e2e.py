"""Fan-out end to end: Postgres CDC → (Postgres, SQLite) through one slot, under load, with two kill -9s."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from tests.integration.e2e_support import kill_engine, running, start_engine, status, stop_engine, wait_caught_up
from tests.integration.test_faults import AUDIT, ITEMS, Writer, assert_applied_in_order_once, dest_db, rows, sql
from tidesync.testing import wait_until

__all__ = ["dest_db"]  # the fixture, used here by name

pytestmark = pytest.mark.slow


def test_two_sinks_from_one_slot_survive_two_kills(tmp_path: Path, pg_database: str, dest_db: str) -> None:
    src, dst = pg_database, dest_db
    sql(src, ITEMS)
    sql(dst, ITEMS, AUDIT)
    lite = tmp_path / "dst.db"
    with sqlite3.connect(lite) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, payload TEXT, flag TEXT)")
    name = "fan_" + dst.rsplit("_", 1)[1]
    config = tmp_path / "tidesync.yaml"
    config.write_text(f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}", tables: [items], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp_path}/spill"}}
    sinks:
      - {{name: pg, type: postgres, dsn: "{dst}"}}
      - {{name: lite, type: sqlite, path: "{lite}"}}
    batch: {{max_events: 500, max_wait_ms: 10}}
""")
    log = tmp_path / "engine.log"
    writer = Writer(src, per_second=300)
    proc = start_engine(config, log)
    try:
        wait_until(
            lambda: (
                running(proc, log)
                and {r["pipeline"]: r["state"] for r in status(config)}
                == {f"{name}.pg": "running", f"{name}.lite": "running"}
            ),
            timeout=60,
            message="both sink pipelines running",
        )
        writer.start()
        for kill in (1, 2):
            applied = min(r["events_applied"] for r in status(config) if r["pipeline"].startswith(name + "."))
            wait_until(
                lambda a=applied, p=proc: (
                    running(p, log)
                    and min(r["events_applied"] for r in status(config) if r["pipeline"].startswith(name + "."))
                    > a + 300
                ),
                timeout=90,
                message=f"both sinks progressing before kill {kill}",
            )
            kill_engine(proc)
            proc = start_engine(config, log)
        writer.stop.set()
        writer.join()
        with psycopg.connect(src) as conn:
            slots = conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
            ).fetchall()
        assert slots == [(f"tidesync_{name}",)]  # one slot for both sinks
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)  # moves only once both sinks have it
        stop_engine(proc, log)
    finally:
        writer.stop.set()
        if proc.poll() is None:
            kill_engine(proc)
    want = rows(src)
    assert len(want) > 500
    assert rows(dst) == want
    assert_applied_in_order_once(dst)  # nothing applied twice or out of order in the Postgres sink
    with sqlite3.connect(lite) as conn:
        got = {r[0]: tuple(r) for r in conn.execute("SELECT id, version, payload, flag FROM items")}
    assert got == want
