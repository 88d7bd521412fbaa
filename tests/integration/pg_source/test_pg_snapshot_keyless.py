"""A table without a key (NULLs in it, duplicate rows, more rows than a snapshot chunk) replicated by a real
`tidesync run` that is SIGKILLed twice during its initial snapshot while rows are inserted: after the restarts
the destination holds exactly the source's rows, as a multiset (nothing lost, nothing doubled)."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from tests.integration.e2e_support import kill_engine, pg_checksum, running, start_engine, status, stop_engine

from tidesync.testing import wait_until

pytestmark = pytest.mark.slow

ROWS = 60_000
COLUMNS = "tid, bid, aid, delta, mtime, filler"
CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: keyless_{run}
    source: {{type: postgres, dsn: "{src}", tables: [public.history], heartbeat_interval: 1, progress: false,
              snapshot_chunk_size: 500, work_dir: "{tmp}/spill"}}
    sink: {{type: postgres, dsn: "{dst}", create_tables: true}}
    batch: {{max_events: 500, max_wait_ms: 20}}
"""


class Inserter(threading.Thread):
    """Appends rows (some with NULLs) in small transactions until stopped: changes after the consistent point."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.rows = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set() and self.rows < 3000:
                    n = self.rows
                    conn.execute(
                        "INSERT INTO history SELECT 1, 2, 100000 + %s + g, NULL, now(), "
                        "CASE WHEN g %% 2 = 0 THEN NULL ELSE 'new' END FROM generate_series(0, 4) g",
                        (n,),
                    )
                    self.rows += 5
                    self.stop.wait(0.005)
        except BaseException as exc:  # reported by the test
            self.error = exc


def count(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM history").fetchone()
        return int(row[0]) if row else 0
    except psycopg.Error:
        return 0  # not created yet


def test_keyless_snapshot_survives_kill_9_without_loss_or_doubles(
    tmp_path: Path, pg_database: str, pg_database_b: str
) -> None:
    src, dst = pg_database, pg_database_b
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE TABLE history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))")
        conn.execute(
            "INSERT INTO history SELECT g %% 10, g %% 3, g, (g %% 50) - 25, "
            "timestamp '2024-01-01' + g * interval '1 second', "
            "CASE WHEN g %% 3 = 0 THEN NULL ELSE 'f' || (g %% 7) END FROM generate_series(1, %s) g",
            (ROWS - 50,),
        )
        conn.execute("INSERT INTO history SELECT 1, 1, 1, 1, NULL, NULL FROM generate_series(1, 50)")  # doubles
    config = tmp_path / "tidesync.yaml"
    run = dst.rsplit("_", 1)[1]  # slot names are cluster-wide
    config.write_text(CONFIG.format(tmp=tmp_path, src=src, dst=dst, run=run))
    log = tmp_path / "engine.log"
    inserter = Inserter(src)
    proc = start_engine(config, log)
    try:
        inserter.start()
        for threshold in (5_000, 25_000):
            wait_until(
                lambda t=threshold, p=proc: running(p, log) and count(dst) >= t,  # type: ignore[misc]
                timeout=120,
                interval=0.01,
                message=f"{threshold} rows",
            )
            kill_engine(proc)
            assert count(dst) < ROWS, "the snapshot ended before the kill: the test proves nothing"
            proc = start_engine(config, log)
        inserter.stop.set()
        inserter.join(30)
        assert inserter.error is None and inserter.rows > 0
        want = pg_checksum(src, "history", COLUMNS)
        assert want[0] == ROWS + inserter.rows
        wait_until(
            lambda: running(proc, log) and pg_checksum(dst, "public.history", COLUMNS) == want,
            timeout=180,
            interval=0.5,
            message=f"the destination to hold the source's {want[0]} rows",
        )
        (pipeline,) = status(config)
        assert pipeline["state"] != "failed", pipeline
        stop_engine(proc, log)
    finally:
        inserter.stop.set()
        if proc.poll() is None:
            kill_engine(proc)
    assert pg_checksum(dst, "public.history", COLUMNS) == want
    assert "paging key column is NULL" not in log.read_text()
