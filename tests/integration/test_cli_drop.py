"""``tidesync drop`` and the retained WAL in ``tidesync status``, via the real CLI on a real Postgres source."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tidesync.event import ChangeEvent
from tidesync.state import NewDeadLetter, StateChanges, open_state_store
from tidesync.testing import wait_until

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: crm
    source: {{type: postgres, dsn: "{dsn}", tables: [public.customers], slot: {slot}, heartbeat_interval: 0}}
    sink: {{type: discard}}
    batch: {{max_events: 100, max_wait_ms: 5}}
  - name: other
    source: {{type: sqlite, path: {tmp}/src.db, tables: [orders]}}
    sink: {{type: discard}}
"""


def tidesync(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin if stdin is not None else "",
        env={**os.environ, "COLUMNS": "250"},
    )


def status_json(config: Path) -> dict[str, dict[str, object]]:
    done = tidesync("status", str(config), "--json")
    assert done.returncode == 0, done.stderr
    return {r["pipeline"]: r for r in json.loads(done.stdout)}


def server_objects(dsn: str, slot: str) -> dict[str, object]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        slots = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchall()
        pubs = conn.execute(
            "SELECT pubname, obj_description(oid, 'pg_publication') FROM pg_publication ORDER BY pubname"
        ).fetchall()
    return {"slot": [r[0] for r in slots], "publications": pubs}


@pytest.fixture
def crm(tmp_path: Path, pg_database: str) -> tuple[Path, str, str]:
    slot = f"ts_drop_{Path(pg_database).name[-10:]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g")
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path, dsn=pg_database, slot=slot))
    return config, pg_database, slot


def run_until_applied(config: Path, tmp_path: Path, events: int) -> None:
    """Run the crm pipeline via the real CLI until it applied ``events``, then stop it with SIGTERM."""
    log = tmp_path / "run.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "run", str(config), "-p", "crm"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until(
            lambda: (status_json(config)["crm"]["events_applied"] or 0) >= events,  # type: ignore[operator]
            timeout=60,
            message="the snapshot applied",
        )
        # While it runs, drop refuses: the slot is active.
        refused = tidesync("drop", str(config), "crm", "--yes")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "running" in refused.stderr and "stop it first" in refused.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]


async def add_dead_letter(config: Path) -> None:
    store = open_state_store(f"sqlite:///{config.parent}/state.db")
    await store.open()
    try:
        ev = ChangeEvent("public.customers", (1,), "update", after={"id": 1}, position=(1, 0))
        for pipeline in ("crm", "other"):
            dead = NewDeadLetter(pipeline, "sink", ev, "permanent", "refused", 1, 1.0, 1.0)
            checkpoint = (5,) if pipeline == "other" else None
            await store.commit(pipeline, StateChanges(checkpoint=checkpoint, dead_letters=[dead]))
    finally:
        await store.close()


async def stored(config: Path, pipeline: str) -> dict[str, object]:
    store = open_state_store(f"sqlite:///{config.parent}/state.db")
    await store.open()
    try:
        return {
            "checkpoint": await store.load_checkpoint(pipeline),
            "status": await store.status_get(pipeline),
            "dlq": await store.dlq_count(pipeline),
            "kv": await store.kv_scan("postgres-source", f"{pipeline}/"),
        }
    finally:
        await store.close()


def test_drop_removes_slot_publication_and_state_after_status_showed_the_retained_wal(
    crm: tuple[Path, str, str], tmp_path: Path
) -> None:
    config, dsn, slot = crm
    run_until_applied(config, tmp_path, 50)
    asyncio.run(add_dead_letter(config))
    with psycopg.connect(dsn, autocommit=True) as conn:  # WAL written after the slot stopped is retained
        conn.execute("INSERT INTO customers SELECT g, repeat('x', 500) FROM generate_series(51, 2000) g")

    # Status: the stopped pipeline's slot and what it retains, with the hint, in JSON and in the table.
    wal = status_json(config)["crm"]["retained_wal"]
    assert isinstance(wal, dict)
    assert wal["slot"] == slot and wal["exists"] is True and wal["active"] is False
    assert isinstance(wal["bytes"], int) and wal["bytes"] > 500 * 1900
    assert status_json(config)["other"]["retained_wal"] is None  # no slot: a SQLite source
    table = tidesync("status", str(config))
    assert table.returncode == 0, table.stderr
    assert "retained WAL" in table.stdout and re.search(r"\d\.\d MiB \(stopped\)", table.stdout)
    hint = re.search(
        rf"pipeline crm is stopped and its slot {slot} retains (\S+ \S+) of WAL", " ".join(table.stdout.split())
    )
    assert hint and hint[1].endswith("MiB")
    assert "tidesync drop" in table.stdout

    before = server_objects(dsn, slot)
    assert before["slot"] == [False]
    assert before["publications"] == [("tidesync_crm", "created by tidesync for pipeline crm")]
    held = asyncio.run(stored(config, "crm"))
    assert held["checkpoint"] is not None and held["status"] is not None and held["dlq"] == 1 and held["kv"]

    # No terminal and no --yes: refuses, lists what it would remove, removes nothing.
    asked = tidesync("drop", str(config), "crm")
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert f"replication slot {slot}" in asked.stdout and "publication tidesync_crm" in asked.stdout
    assert "--yes" in asked.stderr
    assert server_objects(dsn, slot) == before

    done = tidesync("drop", str(config), "crm", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    printed = " ".join(done.stdout.split())
    assert f"dropped replication slot {slot}" in printed
    assert "dropped publication tidesync_crm" in printed
    assert "removed state of crm" in printed and "checkpoint 1" in printed and "dead letters 1" in printed
    assert server_objects(dsn, slot) == {"slot": [], "publications": []}
    assert asyncio.run(stored(config, "crm")) == {"checkpoint": None, "status": None, "dlq": 0, "kv": {}}
    other = asyncio.run(stored(config, "other"))
    assert other["checkpoint"] == (5,) and other["dlq"] == 1  # another pipeline's state stays
    assert status_json(config)["crm"]["retained_wal"]["exists"] is False  # type: ignore[index]

    # Again: nothing left to remove, still exit 0.
    again = tidesync("drop", str(config), "crm", "--yes")
    assert again.returncode == 0, again.stderr
    assert "dropped" not in again.stdout and "nothing was stored" in " ".join(again.stdout.split())


def test_drop_keeps_a_publication_tidesync_did_not_create(crm: tuple[Path, str, str], tmp_path: Path) -> None:
    config, dsn, slot = crm
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION tidesync_crm FOR TABLE customers")  # the user's own
    run_until_applied(config, tmp_path, 50)
    done = tidesync("drop", str(config), "crm", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kept: publication tidesync_crm (not created by tidesync)" in " ".join(done.stdout.split())
    assert server_objects(dsn, slot) == {"slot": [], "publications": [("tidesync_crm", None)]}


def test_status_reports_an_unreachable_source_without_failing(tmp_path: Path) -> None:
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path, dsn="postgresql://postgres@127.0.0.1:1/nowhere", slot="ts_nowhere"))
    rows = status_json(config)
    wal = rows["crm"]["retained_wal"]
    assert isinstance(wal, dict) and wal["bytes"] is None and wal["error"]
    table = tidesync("status", str(config))
    assert table.returncode == 0 and "unknown (" in table.stdout
    # Drop cannot check the slot: it removes nothing and says why.
    done = tidesync("drop", str(config), "crm", "--yes")
    assert done.returncode == 1 and "cannot reach the source of crm" in done.stderr


def test_drop_of_a_non_postgres_pipeline_removes_its_state(tmp_path: Path) -> None:
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path, dsn="postgresql://postgres@127.0.0.1:1/x", slot="ts_x"))
    asyncio.run(add_dead_letter(config))
    done = tidesync("drop", str(config), "other", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checkpoint 1" in done.stdout and "dead letters 1" in done.stdout and "slot" not in done.stdout
    assert asyncio.run(stored(config, "other"))["dlq"] == 0
    assert asyncio.run(stored(config, "crm"))["dlq"] == 1
    unknown = tidesync("drop", str(config), "nope", "--yes")
    assert unknown.returncode == 2 and "no pipeline or sync named 'nope'" in unknown.stderr
