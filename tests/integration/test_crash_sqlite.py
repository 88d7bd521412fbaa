"""kill -9 the engine at random moments during a steady stream; after each restart nothing is lost,
nothing is applied twice, and nothing is applied out of order (SQLite → SQLite through `tidesync run`)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tidesync.testing import wait_until

pytestmark = pytest.mark.slow

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: crash
    source: {{type: sqlite, path: {tmp}/src.db, tables: [items], poll_interval_ms: 5}}
    sink: {{type: sqlite, path: {tmp}/dst.db}}
    batch: {{max_events: 200, max_wait_ms: 5}}
"""
DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, payload TEXT)"


class Writer(threading.Thread):
    """Inserts, updates (version + 1 each time) and deletes at a steady pace."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.rng = random.Random(42)
        self.live: list[int] = []
        self.next_id = 1
        self.ops = 0

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        while not self.stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(10):
                r = self.rng.random()
                if r < 0.35 or len(self.live) < 20:
                    conn.execute("INSERT INTO items VALUES (?, 1, ?)", (self.next_id, "x" * self.rng.randint(1, 50)))
                    self.live.append(self.next_id)
                    self.next_id += 1
                elif r < 0.9:
                    i = self.rng.choice(self.live)
                    conn.execute("UPDATE items SET version = version + 1, payload = ? WHERE id = ?", (str(r), i))
                else:
                    conn.execute("DELETE FROM items WHERE id = ?", (self.live.pop(self.rng.randrange(len(self.live))),))
                self.ops += 1
            conn.execute("COMMIT")
            self.stop.wait(0.004)
        conn.close()


def start_engine(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def rows(path: Path) -> dict[int, tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return {r[0]: tuple(r) for r in conn.execute("SELECT id, version, payload FROM items")}


def checkpoint_seq(state: Path) -> int:
    if not state.exists():
        return 0
    import asyncio

    from tidesync.state import open_state_store

    async def read() -> int:
        store = open_state_store(f"sqlite:///{state}")
        await store.open()
        try:
            cp = await store.load_checkpoint("crash")
            return int(cp[0]) if cp else 0
        finally:
            await store.close()

    return asyncio.run(read())


def last_logged(src: Path) -> int:
    with sqlite3.connect(src) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = '_tidesync_log_crash'").fetchone()
    return int(row[0]) if row else 0


def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    for p in (src, dst):
        with sqlite3.connect(p) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(DDL)
    # every row the sink writes into the destination is recorded, to check order and duplicates
    with sqlite3.connect(dst) as conn:
        conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER, version INTEGER)")
        conn.execute(
            "CREATE TRIGGER a_ins AFTER INSERT ON items "
            "BEGIN INSERT INTO audit (id, version) VALUES (NEW.id, NEW.version); END"
        )
        conn.execute(
            "CREATE TRIGGER a_upd AFTER UPDATE ON items WHEN NEW.version IS NOT OLD.version "
            "BEGIN INSERT INTO audit (id, version) VALUES (NEW.id, NEW.version); END"
        )
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    log = tmp_path / "engine.log"
    writer = Writer(src)
    writer.start()
    rng = random.Random(7)
    kills = 0
    proc = start_engine(config, log)
    try:
        for _ in range(6):
            # wait until this engine has made progress, then kill it a random while later
            before = checkpoint_seq(tmp_path / "state.db")
            wait_until(lambda b=before: checkpoint_seq(tmp_path / "state.db") > b, timeout=60, message="progress")
            time.sleep(rng.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = start_engine(config, log)
        time.sleep(1.0)
        writer.stop.set()
        writer.join()
        target = last_logged(src)
        wait_until(
            lambda: checkpoint_seq(tmp_path / "state.db") >= target,
            timeout=90,
            message="catch-up after the last restart",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        writer.stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert kills >= 5 and writer.ops > 1000
    assert rows(dst) == rows(src)
    with sqlite3.connect(dst) as conn:
        applied = conn.execute("SELECT id, version FROM audit ORDER BY seq").fetchall()
    last: dict[int, int] = {}
    for i, version in applied:
        assert version > last.get(i, 0), (
            f"row {i}: version {version} applied after {last.get(i)} (out of order or twice)"
        )
        last[i] = version
