"""Postgres CDC → mqtt sink → Mosquitto → mqtt source → Postgres, as two `tidesync run` processes.

While a load generator makes a known number of row changes, each process is SIGKILLed twice and the
connection to the broker is cut once (both processes reach Mosquitto through a :class:`TcpProxy`;
the shared broker is not restarted). At the end the destination's checksum equals the source's and
the applying pipeline applied exactly as many events as there were changes: what the capture side
published again after its kills was dropped by the source's de-duplication (``tidesync-id``), and
what the apply side held when killed was journaled (nothing lost) and applied once.

The load is paced on what the apply side has journaled (its state store's journal, read directly):
at most ``WINDOW`` changes ahead of it. That keeps what Mosquitto queues for the apply side's
session while it is down under the broker's ``max_queued_messages`` (1000 by default), beyond
which the broker drops messages: a documented limit of MQTT brokers, not what this test is about.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conformance.mqtt_harness import drop_session
from tests.integration.e2e_support import applied, kill_engine, pg_checksum, running, start_engine, status, stop_engine
from tidesync.testing import TcpProxy, wait_until

pytestmark = [pytest.mark.slow]

OPS = 3000
WINDOW = 400  # changes the load may be ahead of what the apply side journaled

CAPTURE = """\
state: sqlite:///{tmp}/capture.db
pipelines:
  - name: capture_{run}
    source: {{type: postgres, dsn: "{src}", tables: [items], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill"}}
    sink: {{type: mqtt, url: "mqtt://127.0.0.1:{port}", topic: "rt{run}/{{partition}}/{{entity}}", partitions: 4,
            timeout: 2, connect_timeout: 1}}
    batch: {{max_events: 500, max_wait_ms: 20}}
"""
APPLY = """\
state: sqlite:///{tmp}/apply.db
pipelines:
  - name: apply_{run}
    source: {{type: mqtt, url: "mqtt://127.0.0.1:{port}", topics: ["rt{run}/#"], client_id: "rt-{run}",
              connect_timeout: 1}}
    sink: {{type: postgres, dsn: "{dst}", create_tables: true}}
    batch: {{max_events: 500, max_wait_ms: 20}}
"""


def journaled(tmp: Path, pipeline: str) -> int:
    """Messages the apply side journaled (and so acknowledged to the broker), duplicates not counted."""
    try:
        with sqlite3.connect(f"file:{tmp / 'apply.db'}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM journal WHERE source = ?", (pipeline,)).fetchone()
        return int(row[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


class Load(threading.Thread):
    """Inserts, updates and deletes rows of ``items``, one change per statement; counts the changes made."""

    def __init__(self, dsn: str, received: Callable[[], int]) -> None:
        super().__init__(name="load", daemon=True)
        self.dsn = dsn
        self.received = received
        self.changes = 0
        self.stalled = threading.Event()  # set while the load waits for the apply side
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(16)
        live: list[int] = []
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for i in range(OPS):
                    if i % 50 == 0 and self.changes - self.received() > WINDOW:
                        self.stalled.set()
                        wait_until(lambda: self.changes - self.received() <= WINDOW, timeout=60, interval=0.05)
                        self.stalled.clear()
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


def test_pg_to_mqtt_to_pg_with_kills_and_a_cut_connection(tmp_path: Path, pg_database: str, pg_database_b: str) -> None:
    run = uuid.uuid4().hex[:8]
    src, dst = pg_database, pg_database_b
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer NOT NULL)")
    proxy = TcpProxy("127.0.0.1", 1883)
    port = proxy.start()
    cap_cfg, app_cfg = tmp_path / "capture.yaml", tmp_path / "apply.yaml"
    cap_cfg.write_text(CAPTURE.format(tmp=tmp_path, src=src, run=run, port=port))
    app_cfg.write_text(APPLY.format(tmp=tmp_path, dst=dst, run=run, port=port))
    cap_log, app_log = tmp_path / "capture.log", tmp_path / "apply.log"
    apply_name = f"apply_{run}"
    # The apply side first: its session must exist before anything is published.
    app = start_engine(app_cfg, app_log)
    cap = app
    load = Load(src, lambda: journaled(tmp_path, apply_name))
    try:
        wait_until(lambda: _state(app_cfg, apply_name) == "running", timeout=30, interval=0.2)
        cap = start_engine(cap_cfg, cap_log)
        wait_until(lambda: _state(cap_cfg, f"capture_{run}") == "running", timeout=30, interval=0.2)
        load.start()
        for share, fault in ((0.15, "capture"), (0.3, "apply"), (0.45, "cut"), (0.6, "capture"), (0.75, "apply")):
            wait_until(lambda s=share: load.changes >= s * OPS or not load.is_alive(), timeout=60, interval=0.01)
            if fault == "capture":
                kill_engine(cap)
                cap = start_engine(cap_cfg, cap_log)
            elif fault == "apply":
                kill_engine(app)
                app = start_engine(app_cfg, app_log)
            else:
                proxy.block()
                # The outage is seen end to end: nothing reaches the apply side, the load waits for it.
                wait_until(load.stalled.is_set, timeout=30, interval=0.01, message="the load stalled")
                proxy.unblock()
        load.join(60)
        assert load.error is None, load.error
        want = pg_checksum(src, "items", "id, name, qty")
        wait_until(
            lambda: (
                running(cap, cap_log) and running(app, app_log) and pg_checksum(dst, "items", "id, name, qty") == want
            ),
            timeout=60,
            interval=0.2,
            message="the destination equals the source",
        )
        wait_until(lambda: applied(app_cfg).get(apply_name, 0) >= load.changes, timeout=30, interval=0.2)
        stop_engine(cap, cap_log)
        stop_engine(app, app_log)
    finally:
        for proc in (cap, app):
            if proc.poll() is None:
                kill_engine(proc)
        proxy.stop()
        asyncio.run(drop_session(f"rt-{run}"))
    assert applied(app_cfg)[apply_name] == load.changes  # applied once each
    assert applied(cap_cfg)[f"capture_{run}"] >= load.changes
    assert journaled(tmp_path, apply_name) == load.changes  # one message per change kept; re-publishes dropped


def _state(config: Path, pipeline: str) -> str | None:
    return next((row.get("state") for row in status(config) if row["pipeline"] == pipeline), None)
