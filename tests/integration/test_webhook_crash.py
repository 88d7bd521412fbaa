"""kill -9 `tidesync run` while a sender posts 10,000 signed webhooks (retrying until acknowledged):
after the restarts every event the sender saw acknowledged is in the destination exactly once.

The destination is an SQLite table through the ``sqlite`` sink; triggers record every row the sink
inserts or updates, so an event applied twice (or a delivery journaled twice) would show.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from tidesync.sources.webhook.signatures import sign_standard
from tidesync.testing import wait_until

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"crash-test-key-0123456789abcdef!").decode()
TOTAL = 10_000
SENDERS = 4
CONFIG = """\
state: sqlite:///{tmp}/state.db
api: {{listen: "127.0.0.1:{port}"}}
pipelines:
  - name: hooks
    source:
      type: webhook
      provider: generic
      name: orders
      secrets: ["{secret}"]
      signature: {{scheme: standard-webhooks}}
      mapping: {{event_id_header: webhook-id, entity: crash.events, key: [id], default_op: insert}}
    sink: {{type: sqlite, path: {tmp}/dst.db}}
    batch: {{max_events: 500, max_wait_ms: 5}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sender(threading.Thread):
    """Posts its share of the events one by one; retries each until it gets a 2xx."""

    def __init__(self, url: str, ids: range) -> None:
        super().__init__(daemon=True)
        self.url, self.ids = url, ids
        self.acked: list[str] = []
        self.retries = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            for i in self.ids:
                event_id = f"evt-{i:05}"
                body = msgspec.json.encode({"id": event_id, "seq": i, "payload": "x" * (i % 50)})
                while not self.stop.is_set():
                    ts = int(time.time())
                    headers = {
                        "content-type": "application/json", "webhook-id": event_id,
                        "webhook-timestamp": str(ts), "webhook-signature": sign_standard(event_id, ts, body, [SECRET]),
                    }  # fmt: skip
                    try:
                        response = client.post(self.url, content=body, headers=headers)
                        if 200 <= response.status_code < 300:
                            self.acked.append(event_id)
                            break
                        assert response.status_code >= 500, response.text  # never a 4xx for a good delivery
                    except httpx.TransportError:
                        pass  # the server is down: try again
                    self.retries += 1
                    self.stop.wait(0.02)


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_sigkill_during_10000_webhooks_loses_and_doubles_nothing(tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    with sqlite3.connect(dst) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE events (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, payload TEXT)")
        conn.execute("CREATE TABLE audit (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT)")
        conn.execute("CREATE TRIGGER a_ins AFTER INSERT ON events BEGIN INSERT INTO audit (id) VALUES (NEW.id); END")
        conn.execute("CREATE TRIGGER a_upd AFTER UPDATE ON events BEGIN INSERT INTO audit (id) VALUES (NEW.id); END")
    conn.close()
    port = free_port()
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path, port=port, secret=SECRET))
    log = tmp_path / "run.log"
    proc = start(config, log)
    wait_until(lambda: healthy(port), timeout=30, message="the server up")
    share = TOTAL // SENDERS
    senders = [
        Sender(f"http://127.0.0.1:{port}/webhooks/orders", range(k * share, (k + 1) * share)) for k in range(SENDERS)
    ]
    for s in senders:
        s.start()

    def acked() -> int:
        return sum(len(s.acked) for s in senders)

    kills = 0
    try:
        for threshold in (2500, 6000):
            wait_until(lambda t=threshold: acked() >= t, timeout=120, message=f"{threshold} acknowledged")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = start(config, log)
        for s in senders:
            s.join(timeout=180)
        assert acked() == TOTAL, f"only {acked()} acknowledged"
        wait_until(lambda: count(dst, "SELECT count(*) FROM events") >= TOTAL, timeout=120, message="all applied")
    finally:
        for s in senders:
            s.stop.set()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()[-3000:]
    assert kills == 2 and sum(s.retries for s in senders) > 0  # the senders did hit the dead server
    with sqlite3.connect(dst) as conn:
        rows = dict(conn.execute("SELECT id, seq FROM events").fetchall())
        applied = conn.execute("SELECT id, count(*) FROM audit GROUP BY id HAVING count(*) > 1").fetchall()
    conn.close()
    every = [i for s in senders for i in s.acked]
    assert len(every) == len(set(every)) == TOTAL
    assert set(rows) == set(every) and all(rows[f"evt-{i:05}"] == i for i in range(TOTAL))
    assert applied == [], f"applied more than once: {applied[:5]}"
