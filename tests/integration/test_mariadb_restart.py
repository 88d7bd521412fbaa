"""`tidesync run` from MariaDB into Postgres under a write load, with two kill -9s and a MariaDB restart.

The server restart breaks every other test talking to MariaDB, so the test is marked
``serial`` (scripts/test runs those alone, after the parallel phase); by hand, run it on
its own: ``pytest -p no:randomly tests/integration/test_mariadb_restart.py``.

The writer survives the restart: each transaction is planned before it runs and is
idempotent by key (inserts upsert fixed values, updates set a version, deletes by key),
so retrying one whose commit was lost with the connection changes nothing more. The
final states compare by order-independent checksums.
"""

from __future__ import annotations

import random
import subprocess
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.integration.e2e_support import (
    kill_engine,
    mariadb_checksum,
    pg_checksum,
    running,
    start_engine,
    status,
    stop_engine,
)
from tidesync.testing import wait_until

COLUMNS = "id, version, payload, amount"


def maria_up() -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=2).close()
        return True
    except pymysql.MySQLError:
        return False


def mariadbd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode == 0


def restart_mariadb() -> None:
    """As scripts/services.sh does: shut down, wait for the process to exit (start-stop-daemon --oknodo would
    take a server still shutting down for a running one), start, wait until it answers."""
    subprocess.run(["mariadb-admin", "-uroot", "-h127.0.0.1", "shutdown"], check=True, capture_output=True)
    wait_until(lambda: not mariadbd_running(), timeout=120, message="mariadbd to exit")
    subprocess.run(
        ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"], check=True
    )
    wait_until(maria_up, timeout=120, interval=0.25, message="MariaDB to answer again")


class Writer(threading.Thread):
    """Transactions of 6 inserts, 3 updates and 1 delete (of existing rows), reconnecting and retrying through
    a server restart. ``deleted``/``ops`` count committed transactions' changes."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.db = dsn.rsplit("/", 1)[1]
        self.stop = threading.Event()
        self.rng = random.Random(20)
        self.next_id = 100_000
        self.tx = 0
        self.ops = 0
        self.deleted = 0
        self.retries = 0
        self.error: BaseException | None = None
        self.ids = list(range(1, 3001))

    def _connect(self) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host="127.0.0.1", user="root", password="", database=self.db, charset="utf8mb4", connect_timeout=2
        )

    def _plan(self) -> list[tuple[str, tuple[Any, ...]]]:
        self.tx += 1
        plan: list[tuple[str, tuple[Any, ...]]] = []
        fresh = list(range(self.next_id, self.next_id + 6))
        for i in fresh:
            plan.append(
                (
                    "INSERT INTO items (id, version, payload, amount) VALUES (%s, 1, %s, %s) "
                    "ON DUPLICATE KEY UPDATE version = 1, payload = VALUES(payload), amount = VALUES(amount)",
                    (i, f"p{i} 😀", Decimal(i) / 100),
                )
            )
        for _ in range(3):
            i = self.rng.choice(self.ids)
            plan.append(("UPDATE items SET version = %s, payload = %s WHERE id = %s", (self.tx + 1, f"u{self.tx}", i)))
        gone = self.ids[self.rng.randrange(len(self.ids))]
        plan.append(("DELETE FROM items WHERE id = %s", (gone,)))
        self._fresh, self._gone = fresh, gone
        return plan

    def _done(self) -> None:
        self.ids.extend(self._fresh)
        self.next_id += len(self._fresh)
        self.ids.remove(self._gone)
        self.deleted += 1
        self.ops += 10

    def run(self) -> None:
        conn: pymysql.connections.Connection[Any] | None = None
        try:
            while not self.stop.is_set():
                plan = self._plan()
                while True:  # the same transaction until it commits: idempotent, so a lost commit is harmless
                    try:
                        if conn is None:
                            conn = self._connect()
                        with conn.cursor() as cur:
                            for sql, args in plan:
                                cur.execute(sql, args)
                        conn.commit()
                        break
                    except pymysql.MySQLError:
                        self.retries += 1
                        if conn is not None:
                            try:
                                conn.close()
                            except pymysql.MySQLError:
                                pass
                        conn = None
                        if self.stop.wait(0.2):
                            return
                self._done()
                self.stop.wait(0.03)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            if conn is not None:
                conn.close()


class Watcher(threading.Thread):
    """Polls ``tidesync status`` and keeps every (state, last_error, dlq_depth) it sees."""

    def __init__(self, config: Path) -> None:
        super().__init__(daemon=True)
        self.config = config
        self.stop = threading.Event()
        self.seen: list[tuple[str, str | None, int]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            row = status(self.config)[0]
            self.seen.append((row["state"], row["last_error"], row["dlq_depth"]))
            self.stop.wait(0.2)


@pytest.mark.slow
@pytest.mark.serial  # restarts the shared MariaDB server: scripts/test runs it alone, after the parallel phase
def test_two_kills_and_a_mariadb_restart_under_load_end_equal(
    tmp_path: Path, mariadb_database: str, pg_database: str
) -> None:
    src, dst = mariadb_database, pg_database
    db = src.rsplit("/", 1)[1]
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=db, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload varchar(200), "
                    "amount decimal(12,2))")  # fmt: skip
        cur.execute("INSERT INTO items SELECT seq, 1, CONCAT('seed ', seq), seq / 100 FROM seq_1_to_3000")
    conn.close()
    with psycopg.connect(dst, autocommit=True) as pg:
        pg.execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text, amount numeric(12,2))"
        )
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: restart_{db}
    source: {{type: mariadb, dsn: "{src}", tables: [items], server_id: {random.randint(100_000, 2_000_000_000)},
              snapshot_chunk_size: 500}}
    sink: {{type: postgres, dsn: "{dst}", tables: {{{db}.items: items}}}}
    batch: {{max_events: 1000, max_wait_ms: 20}}
"""
    )
    log = tmp_path / "engine.log"
    writer = Writer(src)
    watcher = Watcher(config)
    proc = start_engine(config, log)

    def streamed(more: int) -> None:
        base, engine = status(config)[0]["events_applied"], proc
        wait_until(
            lambda: running(engine, log) and status(config)[0]["events_applied"] > base + more,
            timeout=120,
            message=f"{more} more changes applied",
        )

    def restart_engine() -> None:
        nonlocal proc
        kill_engine(proc)  # kill -9, mid-stream
        proc = start_engine(config, log)
        engine = proc
        wait_until(lambda: running(engine, log) and status(config)[0]["state"] == "running", timeout=60)

    try:
        wait_until(lambda: running(proc, log) and status(config)[0]["state"] == "running", timeout=60)
        writer.start()
        streamed(300)
        restart_engine()  # the first kill -9
        streamed(300)
        watcher.start()
        restart_mariadb()  # the engine runs on, the writer retries
        streamed(600)
        watcher.stop.set()
        watcher.join()
        restart_engine()  # the second kill -9
        streamed(300)
        writer.stop.set()
        writer.join()
        engine = proc

        def converged() -> bool:
            return running(engine, log) and pg_checksum(dst, "items", COLUMNS) == mariadb_checksum(
                src, "items", COLUMNS
            )

        wait_until(converged, timeout=120, interval=0.5, message="the destination to converge")
        final = status(config)[0]
        stop_engine(proc, log)
    finally:
        writer.stop.set()
        watcher.stop.set()
        if proc.poll() is None:
            kill_engine(proc)
    assert writer.error is None, writer.error
    assert writer.retries > 0  # the restart really hit the load
    assert writer.deleted > 100  # deletes reached the destination through the binlog: there is no key scan
    # the engine saw the source fail and recovered by itself: an error while the server was down, none after
    failing = [i for i, (_, error, _) in enumerate(watcher.seen) if error and error.startswith("source:")]
    assert failing, watcher.seen
    assert any(state == "running" and error is None for state, error, _ in watcher.seen[failing[-1] + 1 :])
    assert all(state in ("running", "retrying") for state, _, _ in watcher.seen), watcher.seen
    assert final["state"] == "running" and final["last_error"] is None
    assert final["dlq_depth"] == 0 and all(depth == 0 for _, _, depth in watcher.seen)
    assert "source recovered" in log.read_text()
    count, _ = mariadb_checksum(src, "items", COLUMNS)
    assert count > 3000
