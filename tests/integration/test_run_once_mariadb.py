"""Batch runs on the MariaDB binlog source: they end at the server's binlog end as of the start.

A writer thread keeps inserting into the captured table during each run (ids from
``WRITER_IDS`` on), so reads never come back empty: a run that ignored the source's
end (and waited for two empty reads) would never end. The first test runs
``tidesync run --once`` in a subprocess; the others drive the source and
:class:`~tidesync.engine.once.OnceRun` directly, to control what the binlog holds
at the moment the end is read (the last events another database's, a rotation).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pymysql
import pytest
from pymysqlreplication.event import (  # type: ignore[import-untyped]
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)

from tests.conftest import MARIADB, unique
from tidesync.engine.once import OnceRun
from tidesync.event import Position
from tidesync.protocols import Context
from tidesync.sources.mariadb import MariadbSource, MariadbSourceConfig
from tidesync.sources.mariadb.positions import Resume, boundary_position
from tidesync.sources.mariadb.records import Boundary
from tidesync.sources.mariadb.stream import BinlogReader
from tidesync.state import open_state_store

WRITER_IDS = 1_000_000


def connect(dsn: str | None = None) -> pymysql.connections.Connection[Any]:
    db = dsn.rsplit("/", 1)[1] if dsn is not None else None
    return pymysql.connect(**MARIADB, database=db, autocommit=True, charset="utf8mb4")


def run_sql(dsn: str | None, *statements: str) -> None:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
    finally:
        conn.close()


def source_rows(dsn: str) -> dict[int, tuple[Any, ...]]:
    """The rows the runs must copy (the writer's rows aside)."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, version, payload FROM t WHERE id < {WRITER_IDS}")
            return {int(r[0]): (int(r[0]), int(r[1]), r[2]) for r in cur.fetchall()}
    finally:
        conn.close()


class Writer:
    """Inserts rows into ``t`` (ids from WRITER_IDS on), one transaction each, until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = WRITER_IDS + random.randint(0, 10_000) * 1000  # each Writer its own ids

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        conn = connect(self.dsn)
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    self._next += 1
                    cur.execute("INSERT INTO t VALUES (%s, 1, 'writer')", (self._next,))
                    self.written += 1
        finally:
            conn.close()


def create_table(dsn: str, rows: int) -> None:
    run_sql(dsn, "CREATE TABLE t (id bigint PRIMARY KEY, version int NOT NULL, payload varchar(100))")
    if rows:
        values = ", ".join(f"({i}, 1, 'snap')" for i in range(1, rows + 1))
        run_sql(dsn, f"INSERT INTO t VALUES {values}")


# --- tidesync run --once ------------------------------------------------------


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    # A run that ignored the end would go on as long as the writer writes: the timeout fails it.
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "run", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=90,
    )


def sqlite_rows(path: Path) -> dict[int, tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return {r[0]: tuple(r) for r in conn.execute(f"SELECT id, version, payload FROM t WHERE id < {WRITER_IDS}")}


def test_once_on_a_mariadb_backlog_ends_at_the_start_while_a_writer_keeps_writing(
    tmp_path: Path, mariadb_database: str
) -> None:
    src, dst = mariadb_database, tmp_path / "dst.db"
    name = "once_" + src.rsplit("_", 1)[1]
    create_table(src, 300)
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: {name}
    source: {{type: mariadb, dsn: "{src}", tables: [t], snapshot_chunk_size: 100}}
    sink: {{type: sqlite, path: "{dst}", create_tables: true}}
    batch: {{max_events: 200, max_wait_ms: 200}}
"""
    )
    expected = source_rows(src)
    with Writer(src) as writer:  # the snapshot runs at the start; the stream then reads up to the end
        first = run_once(config)
        assert writer.written > 0
    assert first.returncode == 0, first.stderr[-4000:]
    assert sqlite_rows(dst) == expected

    # A backlog of many transactions (inserts, updates, deletes), then a run with the writer going on.
    run_sql(src, *(f"INSERT INTO t VALUES ({i}, 1, 'new')" for i in range(301, 501)))
    run_sql(src, *(f"UPDATE t SET version = version + 1, payload = 'u{k}' WHERE id % 10 = {k}" for k in range(10)))
    run_sql(src, "DELETE FROM t WHERE id % 7 = 0 AND id < 1000000")
    expected = source_rows(src)
    with Writer(src) as writer:
        second = run_once(config)
        assert writer.written > 0
    assert second.returncode == 0, second.stderr[-4000:]
    assert sqlite_rows(dst) == expected

    third = run_once(config)  # reads the writers' rows, and ends
    assert third.returncode == 0, third.stderr[-4000:]
    fourth = run_once(config)  # nothing new in the table: nothing applied, and it ends
    assert fourth.returncode == 0, fourth.stderr[-4000:]
    assert f"pipeline {name}: 0 event(s) applied" in fourth.stdout


# --- the source and OnceRun, in process ---------------------------------------


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    yield Context(pipeline="once-binlog-test", name="source", state=store)
    await store.close()


@pytest.fixture
def other_database() -> Iterator[str]:
    name = unique("ts_other")
    run_sql(None, f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        run_sql(None, f"DROP DATABASE IF EXISTS `{name}`")


def source(dsn: str, **options: Any) -> MariadbSource:
    cfg = {"dsn": dsn, "tables": ["t"], "server_id": random.randint(100_000, 2_000_000_000), "heartbeat": 0.2}
    return MariadbSource(MariadbSourceConfig.model_validate({**cfg, **options}))


async def read_to_end(src: MariadbSource, once: OnceRun, timeout: float = 30.0) -> list[int]:
    """Read as the engine does in a batch run, committing each batch at once; the ids read. Fails after
    ``timeout`` seconds without reaching the end."""
    ids: list[int] = []
    last: Position | None = once.committed
    loop_time = asyncio.get_running_loop().time
    deadline = loop_time() + timeout
    while not once.reached:
        assert loop_time() < deadline, f"the run did not reach its end {once.end} (last read {last})"
        batch = await src.read(200, 0.2)
        ids.extend(int(e.key[0]) for e in batch.events)
        if batch.position is not None:
            last = batch.position
        done = once.read(batch, last)
        once.wrote(batch.position, len(batch.events), [])
        if done:
            assert once.reached, f"read up to the end {once.end}, but the last committed is {once.committed}"
    return ids


async def test_the_last_events_at_the_start_of_another_database_still_end_the_run(
    mariadb_database: str, other_database: str, ctx: Context
) -> None:
    create_table(mariadb_database, 0)
    run_sql(other_database, "CREATE TABLE o (id int PRIMARY KEY, v int)")
    src = source(mariadb_database, snapshot="never")
    await src.open(ctx, None)
    try:
        run_sql(mariadb_database, *(f"INSERT INTO t VALUES ({i}, 1, 'before')" for i in range(1, 51)))
        # the binlog's last events: transactions and a DDL of a database the pipeline does not capture
        run_sql(
            other_database, *(f"INSERT INTO o VALUES ({i}, 0)" for i in range(20)), "ALTER TABLE o ADD COLUMN w int"
        )
        once = OnceRun()
        await once.start(src, None)
        assert once.end_known and once.end is not None
        with Writer(mariadb_database):  # keeps reads from coming back empty: only the end ends the run
            ids = await read_to_end(src, once)
        assert sorted(i for i in ids if i < WRITER_IDS) == list(range(1, 51))
        assert once.committed is not None and once.committed >= once.end
    finally:
        await src.close()


async def test_after_a_rotation_an_idle_stream_reaches_the_end_and_a_run_with_nothing_new_ends_at_once(
    mariadb_database: str, ctx: Context
) -> None:
    create_table(mariadb_database, 20)
    src = source(mariadb_database)  # a snapshot first, then the stream from the snapshot's binlog position
    await src.open(ctx, None)
    try:
        run_sql(mariadb_database, *(f"INSERT INTO t VALUES ({i}, 1, 'before')" for i in range(21, 31)))
        run_sql(None, "FLUSH BINARY LOGS")  # the end is then in a new file, past its header events
        once = OnceRun()
        await once.start(src, None)
        assert once.end_known and once.end is not None
        assert sorted(await read_to_end(src, once)) == list(range(1, 31))
        checkpoint = once.committed
    finally:
        await src.close()

    # Nothing new in the table: a run that ends as soon as it opened (when other tests write to the server,
    # the end is a little further, past only their events); the writer's rows all come after the end.
    src = source(mariadb_database, server_id=src.config.server_id)
    await src.open(ctx, checkpoint)
    try:
        once = OnceRun()
        await once.start(src, checkpoint)
        assert once.end_known
        with Writer(mariadb_database):
            ids = await read_to_end(src, once, timeout=15)
        assert all(i >= WRITER_IDS for i in ids)
    finally:
        await src.close()


# --- the stream's idle boundaries, on a scripted event sequence ---------------


class ScriptedStream:
    """Stands in for the decoder: yields prepared events, with the file name it has reached."""

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script = script
        self.log_file: str | None = None

    def __iter__(self) -> Iterator[Any]:
        for file, ev in self.script:
            self.log_file = file
            yield ev


def event(cls: type, log_pos: int, size: int = 40, **attrs: Any) -> Any:
    ev = object.__new__(cls)
    ev.packet = SimpleNamespace(log_pos=log_pos, event_size=size)
    for k, v in attrs.items():
        setattr(ev, k, v)
    return ev


def test_an_idle_stream_reaches_the_binlog_end_after_its_start_a_rotation_and_other_databases_events() -> None:
    """Where nothing captured follows (a fresh stream at the binlog end, events the stream does not read, a new
    file), the server's heartbeat, sent once everything was sent, gives the boundary at its file and offset:
    the end a batch run read there (``(file, offset, -1, "")``) is reached. Deterministic, as the shared server
    may be busy with other tests' transactions, whose boundaries would reach the end anyway."""
    f5, f6 = "mariadb-bin.000005", "mariadb-bin.000006"
    script = [
        (f5, event(RotateEvent, 0)),
        (f5, event(HeartbeatLogEvent, 1000, ident=f5)),  # a fresh stream at the end: nothing follows
        (f5, event(HeartbeatLogEvent, 1000, ident=f5)),  # still there: no second boundary
        (f5, event(MariadbGtidEvent, 1040, gtid="0-1-7")),  # another database's transaction (rows filtered)
        (f5, event(XidEvent, 1300)),
        (f5, event(HeartbeatLogEvent, 1300, ident=f5)),  # at the boundary just emitted: nothing new
        (f5, event(HeartbeatLogEvent, 1700, ident=f5)),  # past events the stream does not read (XA PREPARE...)
        (f5, event(MariadbGtidEvent, 1740, gtid="0-1-9")),
        (f5, event(QueryEvent, 1900, query="CREATE TABLE other.x (id int)")),  # a DDL: its own boundary
        (f6, event(RotateEvent, 0)),  # FLUSH BINARY LOGS: the end is past the new file's header events
        (f6, event(HeartbeatLogEvent, 389, ident=f6 + "\x00")),
    ]
    reader = BinlogReader(
        {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "x"},
        server_id=123_456,
        resume=Resume(f5, 1000),
        tables=[("x", "t")],
        shapes={},
        mariadb=True,
        zero_dates="null",
    )
    reader._loop_events(ScriptedStream(script))
    records = reader.take(10_000)
    assert all(isinstance(r, Boundary) for r in records)
    assert [r.position for r in records] == [
        boundary_position(5, 1000, ""),
        boundary_position(5, 1300, "0-1-7"),
        boundary_position(5, 1700, "0-1-7"),
        boundary_position(5, 1900, "0-1-9"),
        boundary_position(6, 389, "0-1-9"),
    ]
    ends = [boundary_position(5, 1000, ""), boundary_position(5, 1700, ""), boundary_position(6, 389, "")]
    for end in ends:  # each end read while idle is reached by the boundary at its place
        assert end in [(*r.position[:3], "") for r in records]
        assert any(r.position >= end for r in records)
