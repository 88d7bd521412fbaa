"""Postgres CDC → Redis Streams → Postgres, as two `tidesync run` processes, through kills and a Redis crash.

Process A captures a table written by a load generator (inserts, updates,
deletes, one row per statement) and XADDs each change to ``cdc.public.orders``;
process B reads that stream with a consumer group and applies it to a second
Postgres database. While the load runs, A and B are each SIGKILLed twice and
restarted, and Redis itself is SIGKILLed and restarted once.

The Redis is the test's own (a free port, a temporary directory), with AOF and
``appendfsync always``: a crash of it loses nothing that was acknowledged, so
the test can demand exactness, and the shared Redis on 6379 is never touched.
(Without persistence a restart empties every stream, group and stored
applied position: whatever was written and not yet consumed is lost, and the
sink cannot know; see the README's Redis Streams section.)

At the end the destination equals the source (checksums), the stream holds
exactly one entry per change made (the sink doubled nothing across A's
replays), and B's applied count equals the number of changes (nothing
applied twice by B's replays, nothing skipped).
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
import redis

from tests.integration.e2e_support import kill_engine, pg_checksum, running, start_engine, status, stop_engine
from tidesync.testing import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]

CAPTURE = """\
state: sqlite:///{tmp}/capture.db
pipelines:
  - name: cap_{run}
    source: {{type: postgres, dsn: "{src}", tables: [orders], heartbeat_interval: 1, progress: false,
              snapshot: never, work_dir: "{tmp}/spill"}}
    sink: {{type: redis, url: "redis://127.0.0.1:{port}", stream: "cdc.{{entity}}", maxlen: 1000000}}
    batch: {{max_events: 500, max_wait_ms: 20}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""
APPLY = """\
state: sqlite:///{tmp}/apply.db
pipelines:
  - name: apply_{run}
    source: {{type: redis, url: "redis://127.0.0.1:{port}", streams: [cdc.public.orders], group: apply}}
    sink: {{type: postgres, dsn: "{dst}", create_tables: true}}
    batch: {{max_events: 500, max_wait_ms: 20}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""
STREAM = "cdc.public.orders"
COLUMNS = "id, qty, note"


class RedisServer:
    """A redis-server of the test's own, with AOF fsynced on every write; SIGKILL and start again at will."""

    def __init__(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"],
        )  # fmt: skip
        wait_until(self._ready, timeout=20, interval=0.05, message="redis-server to load its data")

    def _ready(self) -> bool:
        try:
            with self.client() as r:
                return bool(r.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def xlen(self) -> int:
        try:
            with self.client() as r:
                return int(r.xlen(STREAM))
        except redis.RedisError:
            return -1


class Load:
    """Single-row inserts, updates and deletes in their own transactions, counted, until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.changes = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        rng = random.Random(7)
        live: list[int] = []
        next_id = 1
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    roll = rng.random()
                    if roll < 0.5 or len(live) < 20:
                        conn.execute("INSERT INTO orders VALUES (%s, %s, %s)", (next_id, 0, f"n{next_id}"))
                        live.append(next_id)
                        next_id += 1
                    elif roll < 0.9:
                        conn.execute("UPDATE orders SET qty = qty + 1 WHERE id = %s", (rng.choice(live),))
                    else:
                        conn.execute("DELETE FROM orders WHERE id = %s", (live.pop(rng.randrange(len(live))),))
                    self.changes += 1
                    self.stop.wait(0.003)  # pacing (~250 changes/s), not synchronisation
        except BaseException as exc:  # reported by the test
            self.error = exc


def _rows(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def _slot_exists(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


def test_postgres_to_redis_to_postgres_through_kills_and_a_redis_crash(
    tmp_path: Path, pg_database: str, pg_database_b: str
) -> None:
    src, dst = pg_database, pg_database_b
    run = src.rsplit("_", 1)[1]
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY, qty integer NOT NULL, note text)")
    server = RedisServer(tmp_path)
    server.start()
    cap, app = tmp_path / "capture.yaml", tmp_path / "apply.yaml"
    cap.write_text(CAPTURE.format(tmp=tmp_path, src=src, port=server.port, run=run))
    app.write_text(APPLY.format(tmp=tmp_path, dst=dst, port=server.port, run=run))
    cap_log, app_log = tmp_path / "capture.log", tmp_path / "apply.log"
    a = start_engine(cap, cap_log)
    b = start_engine(app, app_log)
    load = Load(src)
    try:
        wait_until(lambda: running(a, cap_log) and _slot_exists(src, f"tidesync_cap_{run}"), timeout=30,
                   interval=0.1, message="the capture slot")  # fmt: skip
        load.thread.start()

        def past(n: int) -> bool:
            return running(a, cap_log) and running(b, app_log) and server.xlen() >= n and _rows(dst) > 0

        steps = ["a", "b", "redis", "a", "b"]
        for i, step in enumerate(steps, 1):
            wait_until(lambda i=i: past(400 * i), timeout=90, interval=0.05, message=f"progress before step {i}")
            if step == "a":
                kill_engine(a)
                a = start_engine(cap, cap_log)
            elif step == "b":
                kill_engine(b)
                b = start_engine(app, app_log)
            else:
                server.kill()
                server.start()
        wait_until(lambda: server.xlen() >= 400 * (len(steps) + 1), timeout=90, interval=0.05, message="more load")
        load.stop.set()
        load.thread.join(10)
        assert load.error is None, load.error
        made = load.changes
        want = pg_checksum(src, "orders", COLUMNS)
        wait_until(
            lambda: running(a, cap_log) and running(b, app_log) and pg_checksum(dst, "orders", COLUMNS) == want,
            timeout=60,
            interval=0.2,
            message="the destination to equal the source",
        )
        assert server.xlen() == made, "the stream holds a change twice, or lacks one"
        wait_until(lambda: _applied(app, run) == made, timeout=30, interval=0.2, message="the applied count")
        stop_engine(a, cap_log)
        stop_engine(b, app_log)
    finally:
        load.stop.set()
        for proc in (a, b):
            if proc.poll() is None:
                kill_engine(proc)
        server.kill()
    assert made > 2000
    assert _applied(app, run) == made  # B applied each change once: its replays were skipped, none were lost


def _applied(config: Path, run: str) -> int:
    return next(int(r["events_applied"]) for r in status(config) if r["pipeline"] == f"apply_{run}")
