"""pgbench replicated from Postgres to a second Postgres and to MariaDB while `pgbench -c 4 -T 30` runs,
with the pipeline process SIGKILLed twice; at the end all four pgbench tables are equal row for row."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.e2e_support import (
    kill_engine,
    mariadb_checksum,
    pg_checksum,
    running,
    start_engine,
    stop_engine,
    wait_caught_up,
)
from tidesync.testing import wait_until

pytestmark = pytest.mark.slow

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: to_pg_{run}
    source: {{type: postgres, dsn: "{src}", tables: {tables}, heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill1"}}
    sink: {{type: postgres, dsn: "{pg}", create_tables: true}}
    batch: {{max_events: 5000, max_wait_ms: 20}}
  - name: to_mariadb_{run}
    source: {{type: postgres, dsn: "{src}", tables: {tables}, heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill2"}}
    sink: {{type: mariadb, dsn: "{maria}", create_tables: true}}
    batch: {{max_events: 5000, max_wait_ms: 20}}
"""
TABLES = {
    "pgbench_accounts": "aid, bid, abalance, filler",
    "pgbench_branches": "bid, bbalance, filler",
    "pgbench_tellers": "tid, bid, tbalance, filler",
    "pgbench_history": "tid, bid, aid, delta, mtime, filler",
}


def test_pgbench_to_postgres_and_mariadb_with_two_kills(
    tmp_path: Path, pg_database: str, mariadb_database: str, request: pytest.FixtureRequest
) -> None:
    import psycopg

    from tests.conftest import drop_pg_database, pg_dsn, unique

    dest_name = unique("tsdst")
    with psycopg.connect(pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dest_name}"')
    request.addfinalizer(lambda: drop_pg_database(dest_name))
    src, dst = pg_database, pg_dsn(dest_name)
    run = dest_name.rsplit("_", 1)[1]  # slot names are cluster-wide: one per test run
    subprocess.run(["pgbench", "-i", "-s", "10", "-q", src], check=True, capture_output=True)
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        CONFIG.format(
            tmp=tmp_path, src=src, pg=dst, maria=mariadb_database, tables="[" + ", ".join(TABLES) + "]", run=run
        )
    )
    log = tmp_path / "engine.log"
    proc = start_engine(config, log)
    try:
        # the initial snapshot (1,000,000 accounts) lands before the load starts
        wait_until(
            lambda: running(proc, log) and _rows(dst, "pgbench_accounts") == 1_000_000,
            timeout=300,
            interval=1,
            message="snapshot",
        )
        bench = subprocess.Popen(
            ["pgbench", "-c", "4", "-T", "30", "-n", src], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for delay in (8, 10):
            time.sleep(delay)
            kill_engine(proc)
            proc = start_engine(config, log)
        out, _ = bench.communicate(timeout=120)
        assert bench.returncode == 0, out.decode()
        wait_caught_up(src, [f"tidesync_to_pg_{run}", f"tidesync_to_mariadb_{run}"], timeout=300)
        stop_engine(proc, log)
    finally:
        if proc.poll() is None:
            kill_engine(proc)
    for table, columns in TABLES.items():
        want = pg_checksum(src, table, columns)
        assert pg_checksum(dst, table, columns) == want, f"{table} differs in Postgres"
        assert mariadb_checksum(mariadb_database, table, columns) == want, f"{table} differs in MariaDB"
    assert want[0] > 1000  # pgbench_history really grew under load


def _rows(dsn: str, table: str) -> int:
    import psycopg

    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0
    except psycopg.Error:
        return 0
