"""The SQL polling source against real Postgres, MariaDB and SQLite.

What must hold on every backend: no change missed and none doubled when many
rows share one cursor value, late commits inside the look-back window are
caught, field-level ``changed``, soft and hard deletes, and a restart from the
checkpoint emits nothing twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa

from tests.integration.test_sql_poll_support import BASE, Driver, SourceDb, poll_config
from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.errors import SourceError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sources.polling.nulls import REJECT_NS, memo_key
from tidesync.sources.polling.source import SqlPollSource
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore
from tidesync.testing import MemorySink, eventually


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path) -> Iterator[SourceDb]:  # type: ignore[no-untyped-def]
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_database")
    elif request.param == "mariadb":
        dsn = request.getfixturevalue("mariadb_database")
    else:
        dsn = f"sqlite:///{tmp_path / 'source.db'}"
    source = SourceDb(dsn)
    yield source
    source.close()


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


def by_key(events) -> Counter:  # type: ignore[no-untyped-def]
    return Counter(e.key for e in events)


async def test_many_rows_sharing_one_timestamp_are_read_once_each(db: SourceDb, store: StateStore) -> None:
    db.insert({"id": i, "name": f"n{i}", "qty": i, "updated_at": 0} for i in range(2500))
    drv = Driver(poll_config(db.dsn), store)
    await drv.open()
    try:
        first = await drv.poll()
        assert [e.op for e in first] == ["insert"] * 2500
        assert by_key(first) == Counter({(i,): 1 for i in range(2500)})
        # Paged by (cursor, key) in pages of 100: one read of each row, plus the empty page at the end.
        assert drv.source.rows_read == 2500

        # A bulk update stamps every row with one new timestamp.
        with db.engine.begin() as c:
            c.execute(sa.text("UPDATE items SET qty = qty + 1, updated_at = :ts"), {"ts": db.ts(5)})
        second = await drv.poll()
        assert by_key(second) == Counter({(i,): 1 for i in range(2500)})
        assert {e.op for e in second} == {"update"}
        assert {e.changed for e in second} == {("qty", "updated_at")}
        assert all(e.after["qty"] == e.before["qty"] + 1 for e in second)

        # Positions only grow, across passes.
        positions = [e.position for e in first + second]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert await drv.poll() == []
    finally:
        await drv.close()


async def test_a_late_commit_inside_the_lookback_window_is_caught_once(db: SourceDb, store: StateStore) -> None:
    db.insert([{"id": 1, "name": "early", "updated_at": 0}])
    drv = Driver(poll_config(db.dsn, lookback=60), store)
    await drv.open()
    try:
        assert [e.key for e in await drv.poll()] == [(1,)]
        late_conn = None
        if db.dialect == "sqlite":
            # SQLite has one writer at a time: the late row simply appears after the later one was read.
            db.insert([{"id": 3, "name": "later", "updated_at": 30}])
        else:
            # A long transaction stamps its row at t=20 but commits after another one stamped t=30.
            late_conn = db.engine.connect()
            late_tx = late_conn.begin()
            db.insert([{"id": 2, "name": "late", "updated_at": 20}], conn=late_conn)
            db.insert([{"id": 3, "name": "later", "updated_at": 30}])
        seen = await drv.poll()
        assert [(e.key, e.op) for e in seen] == [((3,), "insert")]
        if late_conn is not None:
            late_tx.commit()
            late_conn.close()
        else:
            db.insert([{"id": 2, "name": "late", "updated_at": 20}])
        # Too late for the window: stamped 61 s below the high-water mark.
        db.insert([{"id": 4, "name": "too late", "updated_at": 30 - 61}])
        caught = await drv.poll()
        assert [(e.key, e.op, e.after["name"]) for e in caught] == [((2,), "insert", "late")]
        # Re-reading the window again emits nothing: the shadow has every row.
        assert await drv.poll() == []
        assert await drv.poll() == []
    finally:
        await drv.close()


async def test_updates_name_only_the_fields_that_changed(db: SourceDb, store: StateStore) -> None:
    db.insert({"id": i, "name": f"n{i}", "qty": 1, "price": "9.50", "updated_at": 0} for i in range(10))
    drv = Driver(poll_config(db.dsn), store)
    await drv.open()
    try:
        await drv.poll()
        db.update([3], 10, name="renamed")
        db.update([4], 11, qty=7)
        events = {e.key: e for e in await drv.poll()}
        assert set(events) == {(3,), (4,)}
        assert events[(3,)].op == "update" and events[(3,)].changed == ("name", "updated_at")
        assert events[(3,)].before["name"] == "n3" and events[(3,)].after["name"] == "renamed"
        assert events[(4,)].changed == ("qty", "updated_at") and events[(4,)].after["qty"] == 7
        # Touching a row without changing anything but its cursor emits just the cursor.
        db.update([5], 12, qty=1)
        (touched,) = await drv.poll()
        assert touched.key == (5,) and touched.changed == ("updated_at",)
        assert touched.committed_at == (BASE + dt.timedelta(seconds=12)).timestamp()
    finally:
        await drv.close()


async def test_soft_deletes_by_timestamp_and_by_flag(db: SourceDb, store: StateStore) -> None:
    db.insert({"id": i, "name": f"n{i}", "updated_at": 0} for i in range(6))
    by_time = Driver(poll_config(db.dsn, table={"soft_delete": {"column": "deleted_at"}}), store, "by-time")
    by_flag = Driver(poll_config(db.dsn, table={"soft_delete": {"column": "is_deleted", "value": True}}), store, "flag")
    for d in (by_time, by_flag):
        await d.open()
    try:
        for d in (by_time, by_flag):
            assert len(await d.poll()) == 6
        db.update([1], 10, deleted_at=10)
        db.update([2], 11, is_deleted=True)
        t_events = await by_time.poll()
        f_events = await by_flag.poll()
        assert [(e.key, e.op) for e in t_events if e.op == "delete"] == [((1,), "delete")]
        assert [(e.key, e.op) for e in f_events if e.op == "delete"] == [((2,), "delete")]
        assert t_events[0].before is not None and t_events[0].before["name"] == "n1"
        # Deleted stays deleted: re-reads emit nothing, and an undelete is an insert again.
        assert await by_time.poll() == []
        db.update([1], 20, deleted_at=None)
        assert [(e.key, e.op) for e in await by_time.poll()] == [((1,), "insert")]
        assert len(await store.shadow_scan("by-time", "items")) == 6
    finally:
        for d in (by_time, by_flag):
            await d.close()


async def test_hard_deletes_are_found_by_the_key_scan(db: SourceDb, store: StateStore) -> None:
    db.insert({"id": i, "name": f"n{i}", "updated_at": 0} for i in range(1000))
    drv = Driver(poll_config(db.dsn), store)
    await drv.open()
    try:
        assert len(await drv.poll()) == 1000
        gone = [7, 250, 251, 999, 500]
        db.delete(gone)
        assert await drv.poll() == []  # a pass alone cannot see a row that is not there
        deletes = await drv.poll(key_scan=True)
        assert sorted(e.key for e in deletes) == sorted((i,) for i in gone)
        assert {e.op for e in deletes} == {"delete"} and all(e.before["id"] == e.key[0] for e in deletes)
        assert drv.source.keys_scanned == 995  # in chunks of 250
        assert len(await store.shadow_scan("p", "items")) == 995
        assert await drv.poll(key_scan=True) == []
        # A key that comes back is an insert.
        db.insert([{"id": 7, "name": "again", "updated_at": 40}])
        assert [(e.key, e.op) for e in await drv.poll()] == [((7,), "insert")]
    finally:
        await drv.close()


async def test_restart_from_the_checkpoint_emits_nothing_twice(db: SourceDb, store: StateStore) -> None:
    db.insert({"id": i, "name": f"n{i}", "qty": 0, "updated_at": i % 7} for i in range(1200))
    config = poll_config(db.dsn, poll_interval=0.05, page_size=100)
    sink = MemorySink()

    async def run_until(predicate) -> PipelineRunner:  # type: ignore[no-untyped-def]
        runner = PipelineRunner("p", SqlPollSource(config), sink, store, batch=BatchPolicy(150, 0.01))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await eventually(lambda: predicate(runner) or task.done(), timeout=60, message="pipeline progress")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return runner

    def passes(runner: PipelineRunner, n: int) -> bool:
        src = runner.source
        assert isinstance(src, SqlPollSource)
        return src.rows_read >= n

    await run_until(lambda r: len(sink.writes) >= 1200 and passes(r, 2400))
    assert by_key(sink.writes) == Counter({(i,): 1 for i in range(1200)})
    assert len(await store.shadow_scan("p", "items")) == 1200

    # A restart re-reads the look-back window (every row here) and emits nothing.
    await run_until(lambda r: passes(r, 2400))
    assert len(sink.writes) == 1200

    db.update([5, 600, 1199], 100, name="changed")
    await run_until(lambda r: len(sink.writes) >= 1203 and passes(r, 1300))
    later = sink.writes[1200:]
    assert sorted(e.key for e in later) == [(5,), (600,), (1199,)]
    assert {e.changed for e in later} == {("name", "updated_at")}
    assert sink.tables["items"][(600,)]["name"] == "changed"


async def _poll_with_rejects(drv: Driver, max_events: int) -> tuple[list[ChangeEvent], list[tuple[ChangeEvent, str]]]:
    """:meth:`Driver.poll`, keeping the rejected records too (each batch's state committed with its checkpoint)."""
    drv.source.request_poll()
    events: list[ChangeEvent] = []
    rejected: list[tuple[ChangeEvent, str]] = []
    first = True
    while first or not drv.source.idle:
        first = False
        batch = await drv.source.read(max_events, 0.0)
        assert len(batch.events) + len(batch.rejected) <= max_events
        events.extend(batch.events)
        rejected.extend(batch.rejected)
        if batch.position is not None:
            state = batch.state or StateChanges()
            state.checkpoint = batch.position
            await drv.store.commit(drv.pipeline, state)
            await drv.source.commit(batch.position)
    return events, rejected


async def test_a_row_with_a_null_cursor_is_reported_once_while_it_stays_null(
    db: SourceDb, store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    # deleted_at as the cursor: a nullable timestamp on every backend
    db.insert({"id": i, "name": f"n{i}", "updated_at": 0, "deleted_at": i if i % 2 else None} for i in range(1, 7))
    config = poll_config(db.dsn, table={"cursor": "deleted_at"}, key_scan=None)
    drv = Driver(config, store)
    await drv.open()
    try:
        with caplog.at_level(logging.WARNING, logger="tidesync.sources.sql_poll"):
            events, rejected = await _poll_with_rejects(drv, max_events=1)
        assert [e.key for e in events] == [(1,), (3,), (5,)]
        assert [(e.key, why) for e, why in rejected] == [
            ((i,), f"items row (id={i}): cursor column deleted_at is NULL; it is never read by polling")
            for i in (2, 4, 6)
        ]
        assert rejected[0][0].after is not None and rejected[0][0].after["name"] == "n2"  # the row, for the DLQ
        positions = [e.position for e, _ in rejected] + [e.position for e in events]
        assert positions == sorted(positions) and len(set(positions)) == 6
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "3 row(s) whose cursor column deleted_at is NULL" in warnings[0], warnings
        memo = memo_key("p", "items", (4,))
        assert await store.kv_get(REJECT_NS, memo) is not None  # committed with the batch that reported it

        # Still NULL: not reported again, by the next pass nor after a restart (the memo is in the state store).
        assert await _poll_with_rejects(drv, max_events=100) == ([], [])
        await drv.close()
        drv = Driver(config, store)
        await drv.open()
        assert await _poll_with_rejects(drv, max_events=100) == ([], [])

        # Given a cursor, a row is read as any other and its memo goes; NULL again, it is reported again.
        db.update([4], 0, deleted_at=10)
        events, rejected = await _poll_with_rejects(drv, max_events=100)
        assert [(e.key, e.op) for e in events] == [((4,), "insert")] and rejected == []
        assert await store.kv_get(REJECT_NS, memo) is None
        db.update([4], 0, deleted_at=None)
        events, rejected = await _poll_with_rejects(drv, max_events=100)
        assert events == [] and [e.key for e, _ in rejected] == [(4,)]
    finally:
        await drv.close()


async def test_configuration_errors_name_what_to_fix(db: SourceDb, store: StateStore) -> None:
    ctx = Context(pipeline="p", name="source", state=store)
    for table, message in (
        ({"table": "missing"}, "does not exist"),
        ({"cursor": "nope"}, "no column 'nope' (the cursor)"),
        ({"soft_delete": {"column": "gone"}}, "no column 'gone' (the soft_delete column)"),
    ):
        cfg = poll_config(db.dsn, table=table)
        source = SqlPollSource(cfg)
        with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
            await source.open(ctx, None)
        await source.close()
