"""A two-way sync whose MariaDB side reads the binlog (``type: mariadb``), the other side SQLite (trigger capture).

The sync's writes to MariaDB run with ``skip_replication`` set, and the binlog
source reports those rows with the origin ``mariadb:skip_replication``: the
sync knows its own echoes by that mark (``tidesync.sources.mariadb.marker``).

Each test has its own MariaDB database and replica server id; the binlog is
shared with whatever else writes to the server meanwhile (other tests under
pytest-xdist), whose transactions pass the source by. Quiet periods are
measured as "nothing of ours changed for N seconds" with
:func:`tidesync.testing.eventually` (no sleeps): other databases' traffic keeps
the sync's loop busy, so its idle count cannot be used.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_sync_support import Side, SyncHarness
from tidesync.sources.mariadb import MariadbSource
from tidesync.sources.mariadb.marker import ORIGIN
from tidesync.testing import eventually

MARIADB = (
    "CREATE TABLE people (id int PRIMARY KEY, email varchar(80), name varchar(80), score int NOT NULL DEFAULT 0, "
    "updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6))"
)
SQLITE = "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, name TEXT, score INTEGER NOT NULL DEFAULT 0)"
COLUMNS = "id, email, name, score"
ROWS = 12


@dataclass(frozen=True)
class Seen:
    op: str
    key: tuple[Any, ...]
    changed: tuple[str, ...] | None
    position: tuple[Any, ...]
    origin: str | None


@dataclass
class Sync:
    h: SyncHarness
    m: Side  # MariaDB, read from the binlog (side a)
    s: Side  # SQLite (side b)
    seen: list[Seen]  # side a's changes of people, as the binlog source handed them out

    def rows(self, side: Side) -> list[tuple[Any, ...]]:
        return sorted(side.sql(f"SELECT {COLUMNS} FROM people"))

    def both(self) -> list[tuple[Any, ...]] | None:
        m, s = self.rows(self.m), self.rows(self.s)
        return m if m == s else None

    def counts(self) -> tuple[int, int, tuple[tuple[str, int], ...]]:
        """Changes of ours the sync read (both sides), echoes known by the mark, its writes per side."""
        proc = self.h.runner.processor
        assert proc is not None
        return proc.stats.events, proc.stats.echoes, tuple(sorted(proc.stats.writes.items()))

    async def steady(self, seconds: float, timeout: float = 30) -> None:
        """Until neither the sync's counts nor either table changed for ``seconds`` in a row."""
        last: list[Any] = [None, 0.0]

        def check() -> bool:
            now, snap = time.monotonic(), (self.counts(), self.rows(self.m), self.rows(self.s), self.versions())
            if snap != last[0]:
                last[:] = [snap, now]
                return False
            return now - float(last[1]) >= seconds

        await eventually(check, timeout=timeout, interval=0.1, message=f"nothing changing for {seconds}s")

    def versions(self) -> list[tuple[Any, ...]]:
        """MariaDB's per-row write stamp: it moves on every write of a row, even one that changes no value."""
        return sorted(self.m.sql("SELECT id, updated_at FROM people"))


@pytest.fixture
async def sync(mariadb_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sync]:
    m = Side("mariadb", mariadb_database)
    m.sql(MARIADB)
    m.sql(
        "INSERT INTO people (id, email, name, score) VALUES "
        + ", ".join(f"({i}, 'p{i}@x', 'P{i}', 0)" for i in range(1, ROWS + 1))
    )
    path = tmp_path / "b.db"
    with sqlite3.connect(path) as conn:
        conn.execute(SQLITE)
    s = Side("sqlite", f"sqlite:///{path}")
    h = SyncHarness(tmp_path, f"mb{uuid.uuid4().hex[:8]}", "")
    server_id = random.randint(100_000, 2_000_000_000)  # our own replica id beside other tests' readers
    h.config_text = f"""
state: sqlite:///{tmp_path / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {{type: mariadb, dsn: "{m.dsn}", tables: [people], server_id: {server_id}}}, table: people, key: id}}
    b: {{source: {{type: sqlite, path: '{path}', tables: [people], snapshot: never}}, table: people, key: id}}
    fields: {{id: id, email: email, name: name, score: score}}
    rules: {{default: lww, skew: 0s, fields: {{score: sum, email: {{prefer: a}}, name: {{prefer: b}}}}}}
"""
    seen: list[Seen] = []
    entity = f"{mariadb_database.rsplit('/', 1)[1]}.people"
    read = MariadbSource.read

    async def counted(self: MariadbSource, max_events: int, max_wait: float) -> Any:
        batch = await read(self, max_events, max_wait)
        seen.extend(
            Seen(e.op, tuple(e.key), e.changed, tuple(e.position), e.origin) for e in batch.events if e.entity == entity
        )
        return batch

    monkeypatch.setattr(MariadbSource, "read", counted)
    try:
        yield Sync(h, m, s, seen)
    finally:
        await h.close()


def edits(side: Side, column: str, seed: int, n: int) -> tuple[dict[int, str], dict[int, int]]:
    """``n`` edits of ``column`` with a score increment each, on random rows: the last value and the increments
    per row."""
    rng = random.Random(seed)
    last: dict[int, str] = {}
    counts: dict[int, int] = {}
    mark = "%s" if side.kind == "mariadb" else "?"
    for i in range(n):
        row = rng.randint(1, ROWS)
        last[row] = f"{column}{seed}-{i}"
        counts[row] = counts.get(row, 0) + 1
        side.sql(f"UPDATE people SET {column} = {mark}, score = score + 1 WHERE id = {mark}", (last[row], row))
    return last, counts


async def started(sync: Sync) -> None:
    await sync.h.start()
    await eventually(lambda: len(sync.rows(sync.s)) == ROWS, timeout=30, message="the rows paired into SQLite")


async def test_concurrent_edits_of_both_sides_and_deletes_both_ways(sync: Sync) -> None:
    await started(sync)
    # Both sides edit the same rows at once, different fields (MariaDB: email, SQLite: name), both count score.
    (emails, m_counts), (names, s_counts) = await asyncio.gather(
        asyncio.to_thread(edits, sync.m, "email", 1, 60), asyncio.to_thread(edits, sync.s, "name", 2, 60)
    )
    sync.m.sql("DELETE FROM people WHERE id = 11")
    sync.s.sql("DELETE FROM people WHERE id = 12")
    sync.m.sql("INSERT INTO people (id, email, name, score) VALUES (21, 'new@m', 'New M', 5)")
    sync.s.sql("INSERT INTO people (id, email, name, score) VALUES (22, 'new@s', 'New S', 7)")
    expected = sorted(
        [
            (i, emails.get(i, f"p{i}@x"), names.get(i, f"P{i}"), m_counts.get(i, 0) + s_counts.get(i, 0))
            for i in range(1, 11)
        ]
        + [(21, "new@m", "New M", 5), (22, "new@s", "New S", 7)]
    )
    await eventually(
        lambda: sync.both() == expected,
        timeout=30,
        message="every edit of both sides (fields and increments), the deletes and inserts, in both tables",
    )
    # Field-level: an update read from the binlog names exactly the fields that changed (FULL row images).
    theirs = [e for e in sync.seen if e.origin is None and e.op == "update"]
    assert theirs and all("score" in (e.changed or ()) and {"id", "name"}.isdisjoint(e.changed or ()) for e in theirs)

    # The sync's own writes came back marked, and were known as its echoes (names, scores, the insert).
    def ours() -> list[Seen]:
        return [e for e in sync.seen if e.origin == ORIGIN]

    await eventually(
        lambda: {e.op for e in ours()} == {"update", "insert", "delete"} and sync.counts()[1] == len(ours()),
        timeout=10,
        message="the sync's updates, insert and delete read back marked, each counted as an echo",
    )


async def test_no_echo_once_the_edits_stop(sync: Sync) -> None:
    await started(sync)
    for i in range(40):  # a burst on both sides, then nothing
        if i % 2:
            sync.m.sql("UPDATE people SET email = %s, score = score + 1 WHERE id = %s", (f"e{i}", i % ROWS + 1))
        else:
            sync.s.sql("UPDATE people SET name = ?, score = score + 1 WHERE id = ?", (f"n{i}", i % ROWS + 1))
    await eventually(
        lambda: (r := sync.both()) is not None and sum(x[3] for x in r) == 40,
        timeout=30,
        message="both sides converged with every increment",
    )
    await sync.steady(1.0)
    events, echoes, writes = sync.counts()
    read_a, versions = len(sync.seen), sync.versions()
    assert echoes > 0 and dict(writes).get("a", 0) > 0  # it wrote to MariaDB and knew those writes as its own
    await sync.steady(4.0)  # a quiet period: nothing of ours read, written or changed
    assert sync.counts() == (events, echoes, writes), "the sync kept reading or writing after the edits stopped"
    assert len(sync.seen) == read_a, "the binlog kept carrying changes of the table after the edits stopped"
    assert sync.versions() == versions, "MariaDB rows kept being written after the edits stopped"


async def test_restart_resumes_from_the_checkpoint_without_losing_or_repeating(sync: Sync) -> None:
    h = sync.h
    await started(sync)
    sync.m.sql("UPDATE people SET score = score + 1 WHERE id = 3")
    await eventually(lambda: sync.rows(sync.s)[2][3] == 1, timeout=30, message="a first change read from the binlog")
    await sync.steady(0.5)
    proc = h.runner.processor
    assert proc is not None
    checkpoint = proc.positions["a"]
    assert checkpoint is not None and isinstance(checkpoint[3], str) and checkpoint[3].count("-") == 2, checkpoint
    before = len(sync.seen)
    await h.stop()
    # While the sync is down: the same field edited on both sides (settled by its rule on restart), other
    # fields on one side, counter increments on both, a delete and an insert on each.
    sync.m.sql("UPDATE people SET email = 'm@x', score = score + 1 WHERE id = 1")
    sync.s.sql("UPDATE people SET email = 's@x' WHERE id = 1")
    sync.m.sql("UPDATE people SET name = 'M2' WHERE id = 2")
    sync.s.sql("UPDATE people SET name = 'S2', score = score + 2 WHERE id = 2")
    sync.m.sql("UPDATE people SET score = score + 10 WHERE id = 3")
    sync.s.sql("UPDATE people SET score = score + 20 WHERE id = 3")
    sync.m.sql("DELETE FROM people WHERE id = 4")
    sync.s.sql("DELETE FROM people WHERE id = 5")
    sync.m.sql("INSERT INTO people (id, email, name, score) VALUES (31, 'a@m', 'A', 0)")
    sync.s.sql("INSERT INTO people (id, email, name, score) VALUES (32, 'b@s', 'B', 0)")
    await h.start()
    expected = sorted(
        [(1, "m@x", "P1", 1), (2, "p2@x", "S2", 2), (3, "p3@x", "P3", 31)]
        + [(i, f"p{i}@x", f"P{i}", 0) for i in range(6, ROWS + 1)]
        + [(31, "a@m", "A", 0), (32, "b@s", "B", 0)]
    )
    await eventually(lambda: sync.both() == expected, timeout=30, message="the edits made while down, settled")
    await sync.steady(0.5)
    after = sync.seen[before:]
    # Resumed after the checkpoint: the first change read is the first one made while the sync was down.
    theirs = [e for e in after if e.origin is None]
    assert [(e.op, e.key) for e in theirs] == [
        ("update", (1,)),
        ("update", (2,)),
        ("update", (3,)),
        ("delete", (4,)),
        ("insert", (31,)),
    ]
    assert all(e.position > checkpoint for e in after)
    history = await h.cli_json("sync", "history", str(h.path), h.name)
    settled = sorted((tuple(e["rid"]), e["field"], e["winner"]) for e in history if e["winner"])
    assert settled == sorted(set(settled)), "a settlement was made twice"
    assert ((1,), "email", "a") in settled and ((2,), "name", "b") in settled, settled
    # A second restart with nothing new: nothing is read again, nothing written, no settlement repeated.
    await h.stop()
    await h.start()
    await sync.steady(2.0)
    events, echoes, writes = sync.counts()
    assert (events, echoes, sum(n for _, n in writes)) == (0, 0, 0)
    assert sync.both() == expected
    assert await h.cli_json("sync", "history", str(h.path), h.name) == history
