"""Postgres CDC → nats sink → JetStream → nats source → Postgres, as two `tidesync run` processes.

While a load generator makes a known number of row changes, each process is SIGKILLed twice and
nats-server is restarted once. At the end the destination's checksum equals the source's, the
stream holds one message per change (Nats-Msg-Id de-duplicated every replay of the capture side),
and the applying pipeline applied exactly as many events as there were changes (nothing doubled).
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import nats
import psycopg
import pytest

from tests.integration.e2e_support import (
    applied,
    kill_engine,
    pg_checksum,
    running,
    start_engine,
    status,
    stop_engine,
)
from tidesync.testing import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # restarts the shared nats-server

NATS_START = [
    "start-stop-daemon",
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    "/usr/sbin/nats-server",
    "--",
    "-a",
    "127.0.0.1",
    "-p",
    "4222",
    "-js",
    "-sd",
    "/var/lib/nats-server",
    "-l",
    "/var/log/nats-server.log",
]  # fmt: skip; the command scripts/services.sh starts it with
OPS = 6000

CAPTURE = """\
state: sqlite:///{tmp}/capture.db
pipelines:
  - name: capture_{run}
    source: {{type: postgres, dsn: "{src}", tables: [items], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill"}}
    sink: {{type: nats, stream: {stream}, subject: "rt{run}.{{partition}}.{{entity}}", partitions: 4,
            timeout: 2, duplicate_window: 600}}
    batch: {{max_events: 500, max_wait_ms: 20}}
"""
APPLY = """\
state: sqlite:///{tmp}/apply.db
pipelines:
  - name: apply_{run}
    source: {{type: nats, stream: {stream}, consumer: apply-{run}, subjects: ["rt{run}.>"]}}
    sink: {{type: postgres, dsn: "{dst}", create_tables: true}}
    batch: {{max_events: 500, max_wait_ms: 20}}
"""


class Load(threading.Thread):
    """Inserts, updates and deletes rows of ``items``, one change per statement; counts the changes made."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="load", daemon=True)
        self.dsn = dsn
        self.changes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(16)
        live: list[int] = []
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for i in range(OPS):
                    r = rng.random()
                    if r < 0.4 or len(live) < 20:
                        conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (i, f"n{i}", 0))
                        live.append(i)
                    elif r < 0.9:
                        conn.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (rng.choice(live),))
                    else:
                        conn.execute("DELETE FROM items WHERE id = %s", (live.pop(rng.randrange(len(live))),))
                    self.changes += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def _nats_pid() -> int:
    out = subprocess.run(["pgrep", "-x", "nats-server"], capture_output=True, text=True, check=True)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 1, pids
    return pids[0]


def _nats_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return True
    except OSError:
        return False


def restart_nats() -> None:
    pid = _nats_pid()
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, interval=0.05, message="nats-server stopped")
    subprocess.run(NATS_START, check=True)
    wait_until(_nats_up, timeout=30, interval=0.05, message="nats-server up")


async def _stream_messages(stream: str) -> int:
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def _delete_stream(stream: str) -> None:
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


def test_pg_to_nats_to_pg_with_kills_and_a_broker_restart(tmp_path: Path, pg_database: str, pg_database_b: str) -> None:
    run = uuid.uuid4().hex[:8]
    stream = f"RT_{run}"
    src, dst = pg_database, pg_database_b
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer NOT NULL)")
    cap_cfg, app_cfg = tmp_path / "capture.yaml", tmp_path / "apply.yaml"
    cap_cfg.write_text(CAPTURE.format(tmp=tmp_path, src=src, stream=stream, run=run))
    app_cfg.write_text(APPLY.format(tmp=tmp_path, dst=dst, stream=stream, run=run))
    cap_log, app_log = tmp_path / "capture.log", tmp_path / "apply.log"
    cap = start_engine(cap_cfg, cap_log)
    app = cap  # until started: the stream must exist first (the capture side's sink creates it)
    load = Load(src)
    try:
        wait_until(lambda: _state(cap_cfg, f"capture_{run}") == "running", timeout=60, interval=0.2)
        app = start_engine(app_cfg, app_log)
        wait_until(lambda: _state(app_cfg, f"apply_{run}") == "running", timeout=60, interval=0.2)
        load.start()
        # Faults at points of the load: the capture side, the apply side, the broker, and again.
        for share, fault in ((0.15, "capture"), (0.3, "apply"), (0.45, "nats"), (0.6, "capture"), (0.75, "apply")):
            wait_until(lambda s=share: load.changes >= s * OPS or not load.is_alive(), timeout=60, interval=0.01)
            if fault == "capture":
                kill_engine(cap)
                cap = start_engine(cap_cfg, cap_log)
            elif fault == "apply":
                wait_until(lambda: _dst_rows(dst) > 0, timeout=30, message="the apply side wrote something")
                kill_engine(app)
                app = start_engine(app_cfg, app_log)
            else:
                restart_nats()
        load.join(120)
        assert load.error is None, load.error
        want = pg_checksum(src, "items", "id, name, qty")
        wait_until(
            lambda: (
                running(cap, cap_log)
                and running(app, app_log)
                and _dst_rows(dst) >= 0
                and pg_checksum(dst, "items", "id, name, qty") == want
            ),
            timeout=90,
            interval=0.2,
            message="the destination equals the source",
        )
        # Every change was checkpointed on both sides before the counts are read.
        wait_until(lambda: applied(app_cfg).get(f"apply_{run}", 0) >= load.changes, timeout=30, interval=0.2)
        stop_engine(cap, cap_log)
        stop_engine(app, app_log)
    finally:
        for proc in (cap, app):
            if proc.poll() is None:
                kill_engine(proc)
    try:
        assert asyncio.run(_stream_messages(stream)) == load.changes  # one message per change on the stream
        assert applied(app_cfg)[f"apply_{run}"] == load.changes  # and applied once each
        assert applied(cap_cfg)[f"capture_{run}"] >= load.changes
    finally:
        asyncio.run(_delete_stream(stream))


def _dst_rows(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM items").fetchone()
        return int(row[0]) if row else 0
    except psycopg.Error:
        return -1


def _state(config: Path, pipeline: str) -> str | None:
    return next((row.get("state") for row in status(config) if row["pipeline"] == pipeline), None)
