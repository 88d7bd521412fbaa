"""kill -9 of a process running the source, at any moment (snapshot or stream), then a restart: nothing lost,
nothing out of order, and only events after the last checkpoint delivered again."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pgs_helpers import Writer, apply, sql, table_state

from tidesync.event import ChangeEvent
from tidesync.testing import wait_until

DRIVER = Path(__file__).with_name("pgs_driver.py")


def lines(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def starts(out: Path) -> int:
    """Runs that have begun: each writes its start record once its source is open."""
    return out.read_bytes().count(b'{"start"') if out.exists() else 0


@pytest.mark.slow
def test_kill_9_mid_snapshot_and_mid_stream_loses_nothing(pg_database: str, tmp_path: Path) -> None:
    dsn = pg_database
    sql(
        dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, 'old' FROM generate_series(1, 3000) g",
    )
    out = tmp_path / "sink.jsonl"
    stop = tmp_path / "stop"
    pipeline = f"crash{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable,
        str(DRIVER),
        dsn,
        f"sqlite:///{tmp_path / 'state.db'}",
        str(out),
        pipeline,
        str(tmp_path / "work"),
        str(stop),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    writer = Writer(dsn, 3001, 6000, per_tx=7)
    proc = subprocess.Popen(args, env=env)
    try:
        # kill it four times: twice during the snapshot, twice while streaming (with writes going on)
        for n, threshold in enumerate((700, 1900, 4200, 6500)):
            wait_until(lambda t=threshold: lines(out) > t, timeout=120, message=f"{threshold} events")  # type: ignore[misc]
            if n == 1:
                writer.start()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc = subprocess.Popen(args, env=env)
            # The next threshold may be passed already (the killed run wrote past it): kill the new
            # run only once it has begun, so every kill lands in a run of its own.
            wait_until(lambda k=n: starts(out) == k + 2, timeout=60, message=f"run {n + 2} to begin")  # type: ignore[misc]
        writer.join(120)
        assert writer.error is None
        sql(dsn, "UPDATE t SET v = 'last' WHERE id % 100 = 0", "DELETE FROM t WHERE id % 250 = 0")
        wait_until(lambda: lines(out) > 9000 + 90 + 36, timeout=120, message="the last changes")
        stop.touch()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    runs: list[list[dict[str, Any]]] = []
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        if "start" in rec:
            runs.append([{"start": rec["start"]}])
        else:
            runs[-1].append(rec)
    assert len(runs) == 5
    seen_at: dict[tuple[Any, ...], Any] = {}
    events: list[ChangeEvent] = []
    for run in runs:
        start = run[0]["start"]
        positions = [tuple(r["pos"]) for r in run[1:]]
        # each run produces strictly increasing positions, all after its checkpoint
        assert all(a < b for a, b in itertools.pairwise(positions))
        if start is not None and positions:
            assert positions[0] > tuple(start)
        for r in run[1:]:
            pos = tuple(r["pos"])
            ident = (r["op"], tuple(r["key"]))
            assert seen_at.setdefault(pos, ident) == ident  # a replayed position is the same change
            events.append(ChangeEvent("public.t", tuple(r["key"]), r["op"], after=r["after"], position=pos))
    # nothing lost: applying everything delivered, in order, gives the table
    model: dict[tuple[str, Any], dict[str, Any]] = {}
    apply(model, events)
    assert model == table_state(dsn, {"public.t": ("id",)})
    keys = {e.key[0] for e in events}
    assert keys >= set(range(1, 9001))
