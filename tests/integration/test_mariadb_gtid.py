"""The binlog source records each transaction's GTID, and resumes by it when the checkpoint's file is gone.

Purging binlogs on the shared server would break other tests reading them, so a
checkpoint is made unusable the other way round: it keeps its GTID and names a file
the server does not have (the state a purge by ``binlog_expire_logs_seconds``, or a
server whose files were replaced, leaves). The binary logs are flushed a few times
in between, so the checkpoint's transaction is no longer in the file being written.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.integration.e2e_support import (
    kill_engine,
    mariadb_checksum,
    pg_checksum,
    running,
    start_engine,
    status,
    stop_engine,
)
from tidesync.event import ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.sources.mariadb import BinlogGone, MariadbSource, MariadbSourceConfig
from tidesync.sources.mariadb.positions import file_seq, resume_by_gtid
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges
from tidesync.testing import wait_until


def connect(database: str | None) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=database, autocommit=True)


def run_sql(dsn: str, *statements: str) -> None:
    conn = connect(dsn.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
    finally:
        conn.close()


def server_files() -> list[str]:
    conn = connect(None)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            return [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


def source(dsn: str, server_id: int | None = None) -> MariadbSource:
    cfg = {"dsn": dsn, "tables": ["t"], "snapshot": "never",
           "server_id": server_id or random.randint(100_000, 2_000_000_000)}  # fmt: skip
    return MariadbSource(MariadbSourceConfig.model_validate(cfg))


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    yield Context(pipeline="gtid-test", name="source", state=store)
    await store.close()


async def drain(src: MariadbSource, want: int, rounds: int = 300) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for _ in range(rounds):
        out.extend((await src.read(100, 0.05)).events)
        if len(out) >= want:
            break
    return out


def unusable(position: Position) -> Position:
    """The same checkpoint, in a binlog file the server does not have."""
    gone = max(file_seq(f) for f in server_files()) + 1000
    return (gone, *position[1:])


@pytest.mark.parametrize("where", ["inside a transaction", "at a transaction boundary"])
async def test_a_checkpoint_whose_file_is_gone_resumes_by_gtid_losing_and_repeating_nothing(
    where: str, mariadb_database: str, ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = mariadb_database
    run_sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    src = source(dsn)
    await src.open(ctx, None)
    values = ", ".join(f"({i}, 0)" for i in range(1, 31))
    run_sql(dsn, f"INSERT INTO t VALUES {values}", "UPDATE t SET v = 1 WHERE id <= 5")
    first: list[ChangeEvent] = []
    checkpoint: Position | None = None
    if where == "inside a transaction":
        while len(first) < 12:
            batch = await src.read(4, 0.05)
            first += batch.events
            checkpoint = batch.position or checkpoint
        assert checkpoint is not None and checkpoint[2] >= 0  # inside the 30-row transaction
        assert checkpoint[3] == first[0].position[3]  # the GTID of the transaction the rows are from
    else:
        for _ in range(300):
            batch = await src.read(100, 0.05)
            first += batch.events
            checkpoint = batch.position or checkpoint
            if len(first) >= 35 and checkpoint is not None and checkpoint[2] == -1:
                break
        assert checkpoint is not None and checkpoint[2] == -1  # a boundary: the last transaction done, and its GTID
        # The last transaction passed may be another database's (other tests write to the same
        # server): the checkpoint's GTID is then later than the last event's, never earlier.
        last_event = str(first[-1].position[3]).split("-")
        at = str(checkpoint[3]).split("-")
        assert at[:2] == last_event[:2] and int(at[2]) >= int(last_event[2])
    gtid = str(checkpoint[3])
    domain, server_id, seq = (int(x) for x in gtid.split("-"))
    assert seq > 1
    await src.commit(checkpoint)
    await src.close()

    for _ in range(3):
        run_sql(dsn, "FLUSH BINARY LOGS")
        run_sql(dsn, "UPDATE t SET v = v + 100 WHERE id = 30")  # one change per file
    run_sql(dsn, "DELETE FROM t WHERE id > 25")
    files = server_files()
    assert file_seq(files[-1]) > int(checkpoint[0])  # the checkpoint's transaction is in an older file now

    again = source(dsn, src.config.server_id)
    with caplog.at_level(logging.WARNING, logger="tidesync.sources.mariadb"):
        await again.open(ctx, unusable(checkpoint))
    start = f"{domain}-{server_id}-{seq - 1 if checkpoint[2] >= 0 else seq}"
    assert f"resuming by GTID from {start}" in caplog.text
    total = 30 + 5 + 3 + 5
    rest = await drain(again, total - len(first))
    extra = await drain(again, 1, rounds=5)  # nothing more comes
    await again.close()
    assert extra == []
    seen = [(e.op, e.key, e.position[2:]) for e in first + rest]
    assert len(seen) == len(set(seen)) == total  # nothing doubled, nothing lost
    assert [k for op, k, _ in seen if op == "delete"] == [(i,) for i in range(26, 31)]
    assert sum(1 for op, k, _ in seen if op == "update" and k == (30,)) == 3
    # the resumed stream's positions are files the server has, in order, each with its GTID
    assert {e.position[0] for e in rest} <= {file_seq(f) for f in files}
    assert [e.position for e in rest] == sorted(e.position for e in rest)
    assert all(str(e.position[3]).startswith(f"{domain}-") for e in rest)


async def test_a_gone_checkpoint_the_server_cannot_resume_by_gtid_is_still_a_loud_error(
    mariadb_database: str, ctx: Context
) -> None:
    run_sql(mariadb_database, "CREATE TABLE t (id int PRIMARY KEY)")
    gone = max(file_seq(f) for f in server_files()) + 1000
    for gtid in ["", "0-1-999999999999", "77-1-5", "3e11fa47-71ca-11e1-9e33-c80aa9429562:5"]:
        src = source(mariadb_database)
        with pytest.raises(BinlogGone, match=r"no longer has .*Re-snapshot"):
            await src.open(ctx, (gone, 4, -1, gtid))
        await src.close()


@pytest.mark.parametrize(
    ("position", "state", "oldest", "start"),
    [
        ((9, 400, -1, "0-1-17"), "0-1-40", "0-1-3", "0-1-17"),  # a boundary: after its transaction
        ((9, 400, 2, "0-1-17"), "0-1-40", "0-1-3", "0-1-16"),  # inside: from the state before it
        ((9, 400, 2, "0-1-17", "k"), "0-1-40", "", "0-1-16"),  # the oldest file starts at the beginning
        ((9, 400, 2, "0-1-17"), "0-1-40", "0-1-16", "0-1-16"),  # the oldest file starts right before it
        ((9, 400, 2, "0-1-17"), "0-1-40", "0-1-17", None),  # the transaction itself was purged
        ((9, 400, -1, "0-1-17"), "0-1-10", "", None),  # the server never wrote it (a reset server)
        ((9, 400, -1, "0-1-17"), "0-1-40,1-2-5", "", None),  # another domain: where was it?
        ((9, 400, -1, ""), "0-1-40", "", None),  # no GTID recorded
        ((9, 400, 0, "0-1-1"), "0-1-40", "", None),  # nothing before the first transaction to start from
    ],
)
def test_where_a_gtid_resume_starts(position: Any, state: str, oldest: str, start: str | None) -> None:
    resume = resume_by_gtid(position, state, oldest)
    assert (resume.gtid if resume is not None else None) == start
    if resume is not None:
        assert resume.after == position


def test_the_engine_restarted_on_a_checkpoint_whose_file_is_gone_resumes_by_gtid(
    tmp_path: Path, mariadb_database: str, pg_database: str
) -> None:
    """`tidesync run` MariaDB -> Postgres, stopped; its stored checkpoint keeps the GTID but names a file the
    server does not have; the binlogs are flushed and more changes written; started again, it converges."""
    src, dst = mariadb_database, pg_database
    db = src.rsplit("/", 1)[1]
    columns = "id, version, payload"
    run_sql(src, "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload varchar(100))",
            "INSERT INTO items SELECT seq, 1, CONCAT('seed ', seq) FROM seq_1_to_200")  # fmt: skip
    with psycopg.connect(dst, autocommit=True) as pg:
        pg.execute("CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text)")
    name = f"gtid_{db}"
    state = f"sqlite:///{tmp_path}/state.db"
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: {state}
pipelines:
  - name: {name}
    source: {{type: mariadb, dsn: "{src}", tables: [items], server_id: {random.randint(100_000, 2_000_000_000)}}}
    sink: {{type: postgres, dsn: "{dst}", tables: {{{db}.items: items}}}}
    batch: {{max_events: 100, max_wait_ms: 20}}
"""
    )
    log = tmp_path / "engine.log"

    def converged(proc: Any) -> bool:
        return running(proc, log) and pg_checksum(dst, "items", columns) == mariadb_checksum(src, "items", columns)

    done = 0

    def changes(n: int) -> None:  # n rounds of an insert, an update and a delete (a transaction each)
        nonlocal done
        for _ in range(n):
            done += 1
            run_sql(src, f"INSERT INTO items VALUES ({1000 + done}, 1, 'new')",
                    f"UPDATE items SET version = version + 1, payload = 'u{done}' WHERE id = {done}",
                    f"DELETE FROM items WHERE id = {201 - done}")  # fmt: skip

    proc = start_engine(config, log)
    try:
        wait_until(lambda: running(proc, log) and status(config)[0]["state"] == "running", timeout=60)
        changes(5)
        wait_until(lambda: converged(proc), timeout=60, interval=0.3, message="the first changes")
        stop_engine(proc, log)

        async def forge() -> Position:
            store = open_state_store(state)
            await store.open()
            try:
                checkpoint = await store.load_checkpoint(name)
                assert checkpoint is not None and checkpoint[0] != 0 and str(checkpoint[3]).count("-") == 2
                await store.commit(name, StateChanges(checkpoint=unusable(checkpoint)))
                return checkpoint
            finally:
                await store.close()

        checkpoint = asyncio.run(forge())
        for _ in range(3):
            run_sql(src, "FLUSH BINARY LOGS")
            changes(3)
        proc = start_engine(config, log)
        wait_until(lambda: converged(proc), timeout=60, interval=0.3, message="the changes after the checkpoint")
        row = status(config)[0]
        stop_engine(proc, log)
    finally:
        if proc.poll() is None:
            kill_engine(proc)
    text = log.read_text()
    d, s, n = str(checkpoint[3]).split("-")
    start = f"{d}-{s}-{int(n) - 1}" if checkpoint[2] >= 0 else checkpoint[3]
    assert f"resuming by GTID from {start} " in text and "BinlogGone" not in text
    assert row["state"] == "running" and row["dlq_depth"] == 0 and row["last_error"] is None
    assert row["position"][0] in {file_seq(f) for f in server_files()}  # streaming from a file the server has
    count, _ = mariadb_checksum(src, "items", columns)
    assert count == 200  # 14 inserted, 14 deleted
