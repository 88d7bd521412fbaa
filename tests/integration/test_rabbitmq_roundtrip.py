"""Postgres CDC → rabbitmq sink → RabbitMQ → rabbitmq source → Postgres, as two `tidesync run` processes.

Both processes reach RabbitMQ through a loopback proxy. While a load generator makes a known number
of row changes, each process is SIGKILLed twice and the proxy cuts every RabbitMQ connection once
(the shared broker is not restarted: the test touches only its own exchange, queue and databases).
RabbitMQ does not de-duplicate, so every replay of the capture side and every redelivery to the
apply side puts a message on the queue again; at the end the destination's checksum equals the
source's and the applying pipeline applied exactly as many events as there were changes: the
source's message-id window dropped every copy.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conformance.rabbitmq_harness import delete
from tests.integration.e2e_support import (
    applied,
    kill_engine,
    pg_checksum,
    running,
    start_engine,
    status,
    stop_engine,
)
from tidesync.testing import TcpProxy, wait_until

pytestmark = [pytest.mark.slow]

OPS = 4000

CAPTURE = """\
state: sqlite:///{tmp}/capture.db
pipelines:
  - name: capture_{run}
    source: {{type: postgres, dsn: "{src}", tables: [items], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill"}}
    sink: {{type: rabbitmq, url: "amqp://guest:guest@127.0.0.1:{port}/", exchange: "{exchange}",
            routing_key: "rt.{{partition}}", partitions: 4, timeout: 3, connect_timeout: 1}}
    batch: {{max_events: 500, max_wait_ms: 20}}
"""
APPLY = """\
state: sqlite:///{tmp}/apply.db
pipelines:
  - name: apply_{run}
    source: {{type: rabbitmq, url: "amqp://guest:guest@127.0.0.1:{port}/", queue: "{queue}",
              bind: {{exchange: "{exchange}", routing_keys: ["rt.#"]}}, prefetch: 2000, connect_timeout: 1}}
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


def test_pg_to_rabbitmq_to_pg_with_kills_and_a_cut_connection(
    tmp_path: Path, pg_database: str, pg_database_b: str
) -> None:
    run = uuid.uuid4().hex[:8]
    exchange, queue = f"rt.{run}", f"rt.{run}.apply"
    src, dst = pg_database, pg_database_b
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer NOT NULL)")
    proxy = TcpProxy("127.0.0.1", 5672)
    port = proxy.start()
    cap_cfg, app_cfg = tmp_path / "capture.yaml", tmp_path / "apply.yaml"
    names = {"tmp": tmp_path, "run": run, "port": port, "exchange": exchange, "queue": queue}
    cap_cfg.write_text(CAPTURE.format(src=src, **names))
    app_cfg.write_text(APPLY.format(dst=dst, **names))
    cap_log, app_log = tmp_path / "capture.log", tmp_path / "apply.log"
    # The apply side first: it declares and binds the queue the capture side's (mandatory) publishes route to.
    app = start_engine(app_cfg, app_log)
    cap = app
    load = Load(src)
    try:
        wait_until(lambda: _state(app_cfg, f"apply_{run}") == "running", timeout=60, interval=0.2)
        cap = start_engine(cap_cfg, cap_log)
        wait_until(lambda: _state(cap_cfg, f"capture_{run}") == "running", timeout=60, interval=0.2)
        load.start()
        faults = ((0.15, "capture"), (0.3, "apply"), (0.45, "cut"), (0.6, "capture"), (0.75, "apply"))
        for share, fault in faults:
            wait_until(lambda s=share: load.changes >= s * OPS or not load.is_alive(), timeout=60, interval=0.01)
            if fault == "capture":
                kill_engine(cap)
                cap = start_engine(cap_cfg, cap_log)
            elif fault == "apply":
                wait_until(lambda: _dst_rows(dst) > 0, timeout=30, message="the apply side wrote something")
                kill_engine(app)
                app = start_engine(app_cfg, app_log)
            else:
                # Both sides running first: a source that cannot connect while its pipeline *starts* fails the
                # pipeline (the engine retries a source's reopen, not its first open).
                wait_until(lambda: _state(app_cfg, f"apply_{run}") == "running", timeout=60, interval=0.1)
                wait_until(lambda: _state(cap_cfg, f"capture_{run}") == "running", timeout=60, interval=0.1)
                proxy.block()  # every RabbitMQ connection of both processes is cut; new ones are refused
                at = load.changes
                wait_until(lambda a=at: load.changes >= a + 200 or not load.is_alive(), timeout=30, interval=0.01)
                proxy.unblock()
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
        # Every change was checkpointed on the apply side before the count is read.
        wait_until(lambda: applied(app_cfg).get(f"apply_{run}", 0) >= load.changes, timeout=30, interval=0.2)
        assert _state(app_cfg, f"apply_{run}") == "running" and _state(cap_cfg, f"capture_{run}") == "running"
        stop_engine(cap, cap_log)
        stop_engine(app, app_log)
    finally:
        for proc in (cap, app):
            if proc.poll() is None:
                kill_engine(proc)
        proxy.stop()
        asyncio.run(delete(exchange, queue))
    assert proxy.connections > 4  # both sides connected again after the kills and the cut
    assert applied(app_cfg)[f"apply_{run}"] == load.changes  # each change applied once: every copy dropped
    assert applied(cap_cfg)[f"capture_{run}"] >= load.changes


def _dst_rows(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM items").fetchone()
        return int(row[0]) if row else 0
    except psycopg.Error:
        return -1


def _state(config: Path, pipeline: str) -> str | None:
    return next((row.get("state") for row in status(config) if row["pipeline"] == pipeline), None)
