"""A lost replication connection is reconnected inside ``read``: no change lost, none repeated.

``test_pg_restart_*`` restarts the shared PostgreSQL server: it is marked
``serial`` (scripts/test runs those alone), and by hand it runs on its own
(``pytest -k pg_restart``), never next to other tests.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
from pathlib import Path

import pytest
from pgs_helpers import Harness, Writer, sql

from tidesync.event import ChangeEvent


def check_exactly_once_in_order(events: list[ChangeEvent], expected: int) -> None:
    keys = [e.key[0] for e in events]
    assert len(keys) == len(set(keys)), "a change was produced twice"
    assert sorted(keys) == list(range(1, expected + 1)), "a change is missing"
    positions = [e.position for e in events]
    assert all(a < b for a, b in itertools.pairwise(positions)), "positions went backwards"


async def test_killed_walsender_mid_stream_loses_and_repeats_nothing(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    src = await harness.open(["t"], snapshot="never", status_interval=0.2)
    sql(harness.dsn, "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 3000) g")  # one big transaction
    writer = Writer(harness.dsn, 3001, 3000)
    writer.start()
    events: list[ChangeEvent] = []
    kills = 0
    pids: set[int] = set()
    while len(events) < 6000:
        batch = await src.read(400, 0.2)  # the first transaction spans batches: killed in the middle of it too
        events.extend(batch.events)
        if batch.position is not None:
            await src.commit(batch.position)
        pid = src.replication_pid
        if kills < 3 and len(events) >= 1000 * (kills + 1) and pid not in pids:  # once per connection
            assert pid is not None
            pids.add(pid)
            assert sql(harness.dsn, "SELECT pg_terminate_backend(%s)", params=(pid,)) == [(True,)]
            kills += 1
    writer.join(30)
    assert writer.error is None
    assert kills == 3 and src.replication_pid not in pids  # really reconnected, three times
    check_exactly_once_in_order(events, 6000)
    assert await harness.settle(0.3) == []


def restart_postgres() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.serial  # restarts the shared server: scripts/test runs it alone, after the parallel phase
async def test_pg_restart_mid_stream_loses_and_repeats_nothing(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    src = await harness.open(["t"], snapshot="never", status_interval=0.2, reconnect_timeout=90)
    writer = Writer(harness.dsn, 1, 4000)
    writer.start()
    events: list[ChangeEvent] = []
    # the restart runs beside the reading: a fast shutdown waits for the slot's client to confirm what it was sent
    restart = threading.Thread(target=restart_postgres, daemon=True)
    while len(events) < 4000:
        batch = await src.read(500, 0.2)
        events.extend(batch.events)
        if batch.position is not None:
            await src.commit(batch.position)
        if not restart.is_alive() and restart.ident is None and len(events) >= 1000:
            pid_before = src.replication_pid
            restart.start()
    restart.join(120)
    writer.join(60)
    assert src.replication_pid != pid_before
    assert writer.error is None and writer.done == 4000
    check_exactly_once_in_order(events, 4000)
