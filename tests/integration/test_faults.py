"""Delivery under faults, end to end through `tidesync run` against real Postgres:
a 30-second destination outage, a Postgres restart, ten SIGKILLs under pgbench load, and 1% poison rows."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import PG_ADMIN, drop_pg_database, pg_dsn, unique
from tests.integration.e2e_support import (
    kill_engine,
    pg_checksum,
    running,
    start_engine,
    status,
    stop_engine,
    wait_caught_up,
)
from tidesync.testing import TcpProxy, wait_until

pytestmark = pytest.mark.slow

ITEMS = "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text, flag text)"
AUDIT = """
CREATE TABLE audit (seq bigserial PRIMARY KEY, id bigint, version int);
CREATE FUNCTION audit_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.version IS DISTINCT FROM OLD.version THEN
    INSERT INTO audit (id, version) VALUES (NEW.id, NEW.version);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER audit_items AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit_items();
"""


@pytest.fixture
def dest_db(request: pytest.FixtureRequest) -> Iterator[str]:
    name = unique("tsdst")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_dsn(name)
    drop_pg_database(name)


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def rows(dsn: str) -> dict[int, tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: tuple(r) for r in conn.execute("SELECT id, version, payload, flag FROM items")}


def assert_applied_in_order_once(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        applied = conn.execute("SELECT id, version FROM audit ORDER BY seq").fetchall()
    last: dict[int, int] = {}
    for i, version in applied:
        assert version > last.get(i, 0), f"row {i}: version {version} applied after {last.get(i)}"
        last[i] = version


class Writer(threading.Thread):
    """A steady stream of inserts and version-bumping updates; survives a server restart."""

    def __init__(self, dsn: str, per_second: float = 300) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = 10 / per_second
        self.stop = threading.Event()
        self.next_id = 1
        self.ops = 0
        self.rng = random.Random(3)

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                with conn.transaction():
                    for _ in range(7):
                        conn.execute("INSERT INTO items VALUES (%s, 1, 'p', 'ok')", (self.next_id,))
                        self.next_id += 1
                    for _ in range(3):
                        i = self.rng.randrange(1, self.next_id)
                        conn.execute(
                            "UPDATE items SET version = version + 1, payload = %s WHERE id = %s", (str(self.ops), i)
                        )
                self.ops += 10
            except psycopg.OperationalError:
                conn = None  # the server is restarting: the transaction was rolled back, try again
                self.stop.wait(0.2)
                continue
            self.stop.wait(self.interval)
        if conn is not None:
            conn.close()


def write_config(tmp: Path, name: str, src: str, sink: str, extra: str = "") -> Path:
    config = tmp / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}", tables: [items], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill", reconnect_timeout: 120}}
    sink: {sink}
    batch: {{max_events: 2000, max_wait_ms: 10}}
    retry: {{initial_delay: 0.2, max_delay: 2}}
{extra}"""
    )
    return config


def test_destination_outage_of_30_seconds_loses_and_doubles_nothing(
    tmp_path: Path, pg_database: str, dest_db: str
) -> None:
    src, dst = pg_database, dest_db
    sql(src, ITEMS)
    sql(dst, ITEMS, AUDIT)
    name = "outage_" + dst.rsplit("_", 1)[1]
    with TcpProxy("127.0.0.1", 5432) as proxy:
        via_proxy = dst.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        config = write_config(tmp_path, name, src, f'{{type: postgres, dsn: "{via_proxy}", connect_timeout: 2}}')
        log = tmp_path / "engine.log"
        writer = Writer(src)
        proc = start_engine(config, log)
        try:
            wait_until(lambda: running(proc, log) and status(config)[0]["state"] == "running", timeout=60)
            writer.start()
            wait_until(lambda: status(config)[0]["events_applied"] > 500, timeout=60, message="streaming")
            engine = psutil.Process(proc.pid)
            rss_before = engine.memory_info().rss
            proxy.block()
            outage_end = time.monotonic() + 30
            # a burst of 200,000 changes while the destination is down: far more than any buffer
            sql(src, "INSERT INTO items SELECT g, 1, 'burst', 'ok' FROM generate_series(10000000, 10199999) g")
            rss_peak, saw_retrying = rss_before, None
            while time.monotonic() < outage_end:
                running(proc, log)
                rss_peak = max(rss_peak, engine.memory_info().rss)
                st = status(config)[0]
                if st["state"] == "retrying" and st["last_error"] and st["next_attempt_at"]:
                    saw_retrying = st
                time.sleep(0.5)
            proxy.unblock()
            assert saw_retrying is not None, "status never showed the pipeline retrying during the outage"
            assert "127.0.0.1" in saw_retrying["last_error"] or "connect" in saw_retrying["last_error"].lower()
            time.sleep(3)
            writer.stop.set()
            writer.join()
            wait_caught_up(src, [f"tidesync_{name}"], timeout=240)
            stop_engine(proc, log)
        finally:
            writer.stop.set()
            if proc.poll() is None:
                kill_engine(proc)
    growth_mb = (rss_peak - rss_before) / 2**20
    assert growth_mb < 150, f"memory grew {growth_mb:.0f} MiB during the outage"
    assert rows(dst) == rows(src) and len(rows(src)) > 200_000
    assert_applied_in_order_once(dst)
    print(f"outage: RSS growth {growth_mb:.1f} MiB while 200,000 changes waited; {writer.ops} streamed changes")


@pytest.mark.serial
def test_postgres_restart_during_streaming_resumes_from_the_checkpoint(tmp_path: Path, pg_database: str) -> None:
    src = pg_database
    sql(src, ITEMS)
    dst = tmp_path / "dst.db"
    import sqlite3

    with sqlite3.connect(dst) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, payload TEXT, flag TEXT)")
    name = "restart_" + src.rsplit("_", 1)[1]
    config = write_config(tmp_path, name, src, f'{{type: sqlite, path: "{dst}"}}')
    log = tmp_path / "engine.log"
    writer = Writer(src, per_second=200)
    proc = start_engine(config, log)
    try:
        wait_until(lambda: running(proc, log) and status(config)[0]["state"] == "running", timeout=60)
        writer.start()
        wait_until(lambda: status(config)[0]["events_applied"] > 300, timeout=60)
        version = sorted(Path("/etc/postgresql").iterdir())[-1].name
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        applied = status(config)[0]["events_applied"]
        wait_until(
            lambda: running(proc, log) and status(config)[0]["events_applied"] > applied + 300,
            timeout=120,
            message="streaming after the restart",
        )
        writer.stop.set()
        writer.join()
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)
        stop_engine(proc, log)
    finally:
        writer.stop.set()
        if proc.poll() is None:
            kill_engine(proc)
    with sqlite3.connect(dst) as conn:
        got = {r[0]: tuple(r) for r in conn.execute("SELECT id, version, payload, flag FROM items")}
    assert got == rows(src)


PGBENCH_TABLES = {
    "pgbench_accounts": "aid, bid, abalance, filler",
    "pgbench_branches": "bid, bbalance, filler",
    "pgbench_tellers": "tid, bid, tbalance, filler",
    "pgbench_history": "tid, bid, aid, delta, mtime, filler",
}


def test_ten_sigkills_under_pgbench_load(tmp_path: Path, pg_database: str, dest_db: str) -> None:
    src, dst = pg_database, dest_db
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", src], check=True, capture_output=True)
    name = "kills_" + dst.rsplit("_", 1)[1]
    config = write_config(tmp_path, name, src, f'{{type: postgres, dsn: "{dst}", create_tables: true}}')
    config.write_text(config.read_text().replace("tables: [items]", "tables: [" + ", ".join(PGBENCH_TABLES) + "]"))
    log = tmp_path / "engine.log"
    rng = random.Random(11)
    proc = start_engine(config, log)
    bench = None
    try:
        wait_until(
            lambda: running(proc, log) and status(config)[0]["events_applied"] >= 100_000,
            timeout=120,
            message="initial snapshot",
        )
        # The load runs until the tenth kill (not for a fixed time: on a slow run it would end first, and the
        # wait for progress before a kill would wait for changes that never come).
        bench = subprocess.Popen(
            ["pgbench", "-c", "2", "-T", "600", "-n", src], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(10):
            before = status(config)[0]["events_applied"]
            wait_until(
                lambda b=before, p=proc: running(p, log) and status(config)[0]["events_applied"] > b,
                timeout=60,
                message="progress before the next kill",
            )
            time.sleep(rng.uniform(0.2, 2.0))
            kill_engine(proc)
            proc = start_engine(config, log)
        assert bench.poll() is None, bench.communicate()[0].decode()  # still loading: every kill was under load
        bench.terminate()
        bench.communicate(timeout=30)
        wait_caught_up(src, [f"tidesync_{name}"], timeout=240)
        stop_engine(proc, log)
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.communicate()
        if proc.poll() is None:
            kill_engine(proc)
    for table, columns in PGBENCH_TABLES.items():
        assert pg_checksum(dst, table, columns) == pg_checksum(src, table, columns), f"{table} differs"


def test_one_percent_poison_rows_wait_in_the_dead_letter_queue_until_replayed(
    tmp_path: Path, pg_database: str, dest_db: str
) -> None:
    src, dst = pg_database, dest_db
    sql(src, ITEMS)
    sql(dst, ITEMS, "ALTER TABLE items ADD CONSTRAINT no_bad_rows CHECK (flag <> 'bad')")
    name = "poison_" + dst.rsplit("_", 1)[1]
    config = write_config(tmp_path, name, src, f'{{type: postgres, dsn: "{dst}"}}')
    log = tmp_path / "engine.log"
    proc = start_engine(config, log)
    try:
        wait_until(lambda: running(proc, log) and status(config)[0]["state"] == "running", timeout=60)
        # 5,000 rows, 1% rejected by the destination; then every 10th row is updated twice
        sql(
            src,
            "INSERT INTO items SELECT g, 1, 'p', CASE WHEN g % 100 = 0 THEN 'bad' ELSE 'ok' END "
            "FROM generate_series(1, 5000) g",
            "UPDATE items SET version = 2, payload = 'u1' WHERE id % 10 = 0",
            "UPDATE items SET version = 3, payload = 'u2' WHERE id % 20 = 0",
        )
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)
        stop_engine(proc, log)
    finally:
        if proc.poll() is None:
            kill_engine(proc)
    bad = set(range(100, 5001, 100))
    listed = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "dlq", "list", str(config), "--json", "--limit", "1000"],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    entries = json.loads(listed.stdout)
    by_key: dict[int, list[str]] = {}
    for e in entries:
        by_key.setdefault(e["key"][0], []).append((e["op"], e["error_class"]))  # type: ignore[arg-type]
    assert set(by_key) == bad
    for k, ops in by_key.items():
        # the insert was rejected; each later update of the key waits behind it
        expected = [("insert", "permanent"), ("update", "blocked")] + ([("update", "blocked")] if k % 20 == 0 else [])
        assert ops == expected, (k, ops)
    got, want = rows(dst), rows(src)
    assert {k for k in want if k not in got} == bad
    assert all(got[k] == want[k] for k in got)  # everything else applied, updates included
    # fix the destination, replay everything: destination == source
    sql(dst, "ALTER TABLE items DROP CONSTRAINT no_bad_rows")
    replay = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "dlq", "replay", str(config), "--all"], capture_output=True, text=True
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert f"written {len(entries)}" in replay.stdout
    assert rows(dst) == rows(src)
    assert status(config)[0]["dlq_depth"] == 0
