"""Metadata columns and soft deletes keep exactly-once under SIGKILL: `tidesync run`, Postgres -> Postgres.

A writer inserts, updates, deletes and re-inserts rows at the source while the
engine is killed three times, each time with a batch applied at the destination
but not yet checkpointed, so that the next start delivers it again. Afterwards the destination holds every row the
source ever had: the live ones equal to the source (checksums of the data
columns), the deleted ones kept and flagged. A trigger at the destination logs
each row version written with its ``_position``: no position is written twice
for a key, so no change was applied twice across the kills.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

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
from tidesync.event import unpack_value
from tidesync.testing import wait_until

pytestmark = pytest.mark.slow

ITEMS = "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text)"
AUDIT = """
CREATE TABLE audit (seq bigserial PRIMARY KEY, id bigint, pos text);
CREATE FUNCTION audit_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit (id, pos) VALUES (NEW.id, NEW._position);
  RETURN NEW;
END $$;
CREATE TRIGGER audit_items AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit_items();
"""
META = "{synced_at: _synced_at, committed_at: _committed_at, op: _op, deleted: _deleted, position: _position}"


@pytest.fixture
def dest_db() -> Iterator[str]:
    name = unique("tsmeta")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_dsn(name)
    drop_pg_database(name)


def ahead(state: sqlite3.Connection, dst: str, pipeline: str) -> bool:
    """Whether the destination holds changes after the state store's checkpoint."""
    row = state.execute("SELECT position FROM checkpoints WHERE pipeline = ?", (pipeline,)).fetchone()
    with psycopg.connect(dst) as conn:
        applied = conn.execute("SELECT position FROM _tidesync_applied WHERE pipeline = %s", (pipeline,)).fetchone()
    if applied is None:
        return False
    return row is None or unpack_value(bytes(applied[0])) > unpack_value(row[0])


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


class Writer(threading.Thread):
    """Inserts, version-bumping updates, deletes and re-inserts of deleted keys, in small transactions."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.next_id = 1
        self.deleted: set[int] = set()
        self.rng = random.Random(5)

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                with conn.transaction():
                    for _ in range(5):
                        conn.execute("INSERT INTO items VALUES (%s, 1, 'p')", (self.next_id,))
                        self.next_id += 1
                    for _ in range(3):
                        i = self.rng.randrange(1, self.next_id)
                        conn.execute("UPDATE items SET version = version + 1, payload = 'u' WHERE id = %s", (i,))
                    i = self.rng.randrange(1, self.next_id)
                    conn.execute("DELETE FROM items WHERE id = %s", (i,))
                    self.deleted.add(i)
                    if self.deleted and self.rng.random() < 0.3:
                        back = self.rng.choice(sorted(self.deleted))
                        conn.execute("INSERT INTO items VALUES (%s, 1, 'again') ON CONFLICT DO NOTHING", (back,))
                self.stop.wait(0.02)


def test_metadata_and_soft_deletes_keep_exactly_once_under_sigkill(
    tmp_path: Path, pg_database: str, dest_db: str
) -> None:
    src, dst = pg_database, dest_db
    sql(src, ITEMS)
    sql(dst, ITEMS, AUDIT)  # without the metadata columns: create_tables adds them
    name = "meta_" + dst.rsplit("_", 1)[1]
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}", tables: [items], heartbeat_interval: 1, progress: false}}
    sink: {{type: postgres, dsn: "{dst}", create_tables: true, deletes: soft, metadata: {META}}}
    batch: {{max_events: 500, max_wait_ms: 10}}
    retry: {{initial_delay: 0.2, max_delay: 2}}
"""
    )
    log = tmp_path / "engine.log"
    writer = Writer(src)
    proc = start_engine(config, log)
    try:
        wait_until(lambda: running(proc, log) and status(config)[0]["state"] == "running", timeout=60)
        writer.start()
        for _ in range(3):
            before = status(config)[0]["events_applied"]
            wait_until(
                lambda b=before, p=proc: running(p, log) and status(config)[0]["events_applied"] > b + 100,
                timeout=60,
                message="progress before the next kill",
            )
            # Kill in the window exactly-once is about: a batch is in the destination, its checkpoint not yet
            # in the state store (held back by a write lock of ours), so the next start reads it again.
            lock = sqlite3.connect(tmp_path / "state.db", isolation_level=None, timeout=10)
            try:
                lock.execute("BEGIN IMMEDIATE")
                wait_until(lambda lk=lock: ahead(lk, dst, name), timeout=4, message="a batch applied, not checkpointed")
                kill_engine(proc)
            finally:
                lock.close()
            proc = start_engine(config, log)
        writer.stop.set()
        writer.join()
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)
        stop_engine(proc, log)
    finally:
        writer.stop.set()
        if proc.poll() is None:
            kill_engine(proc)

    with psycopg.connect(src) as conn:
        source = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, version, payload FROM items")}
    with psycopg.connect(dst) as conn:
        dest = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT id, version, payload, _deleted, _op, _synced_at IS NOT NULL, _committed_at IS NOT NULL, "
                "_position IS NOT NULL FROM items"
            )
        }
        doubled = conn.execute("SELECT id, pos, count(*) FROM audit GROUP BY id, pos HAVING count(*) > 1").fetchall()
        sql(dst, "CREATE VIEW live_items AS SELECT * FROM items WHERE NOT _deleted")
    assert writer.next_id > 300 and writer.deleted
    assert set(dest) == set(range(1, writer.next_id))  # every row the source ever had
    assert {i: v[:2] for i, v in dest.items() if not v[2]} == source  # live rows equal the source
    gone = {i for i in dest if i not in source}
    assert gone and gone <= writer.deleted
    assert all(dest[i][2] is True and dest[i][3] == "delete" for i in gone)  # deleted ones flagged
    assert all(all(v[4:]) for v in dest.values())
    assert pg_checksum(dst, "live_items", "id, version, payload") == pg_checksum(src, "items", "id, version, payload")
    assert doubled == [], f"changes applied twice: {doubled[:5]}"
