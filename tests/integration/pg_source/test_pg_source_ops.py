"""Operations: setup errors in plain words, heartbeats moving an idle slot, lag figures, dropping cleanly."""

from __future__ import annotations

import uuid

import pytest
from pgs_helpers import Harness, slot_row, sql, wait_slot_inactive

from tidesync.errors import SourceError
from tidesync.sources.postgres import drop_replication, slot_lag
from tidesync.sources.postgres.pgoutput import str_to_lsn
from tidesync.testing import eventually


async def test_setup_problems_are_reported_with_the_fix(harness: Harness) -> None:
    sql(
        harness.dsn,
        "CREATE TABLE ok (id int PRIMARY KEY)",
        "CREATE TABLE v0 (id int PRIMARY KEY)",
        "CREATE VIEW vw AS SELECT * FROM v0",
    )
    with pytest.raises(SourceError) as info:
        await harness.open(["ok", "vw", "missing_table"])
    text = str(info.value)
    assert "table 'missing_table' does not exist" in text
    assert "public.vw is not a table" in text
    # nothing was created for a source that cannot start
    assert slot_row(harness.dsn, harness.slot) is None


async def test_a_keyless_table_is_captured_append_only_with_a_warning(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    sql(harness.dsn, "CREATE TABLE nokey (a int, b text)")
    await harness.open(["nokey"])
    assert "public.nokey has no primary key and REPLICA IDENTITY DEFAULT" in caplog.text
    assert "ALTER TABLE public.nokey REPLICA IDENTITY FULL;" in caplog.text
    sql(harness.dsn, "INSERT INTO nokey VALUES (1, 'x'), (1, 'x')")
    events = await harness.read_n(2)
    assert [(e.op, e.after) for e in events] == [("insert", {"a": 1, "b": "x"})] * 2
    # PostgreSQL itself refuses keyless updates while the table is published: nothing slips through
    with pytest.raises(Exception, match="replica identity"):
        sql(harness.dsn, "UPDATE nokey SET b = 'y'")


async def test_a_role_without_replication_is_told_which_alter_role_to_run(harness: Harness) -> None:
    role = f"ts_role_{uuid.uuid4().hex[:8]}"
    sql(harness.dsn, f"CREATE ROLE {role} LOGIN", "CREATE TABLE t (id int PRIMARY KEY)", f"GRANT SELECT ON t TO {role}")
    try:
        harness.dsn = harness.dsn.replace("postgres@", f"{role}@")
        with pytest.raises(SourceError, match=f"ALTER ROLE {role} WITH REPLICATION;"):
            await harness.open(["t"])
    finally:
        sql(harness.dsn.replace(f"{role}@", "postgres@"), f"DROP OWNED BY {role}", f"DROP ROLE {role}")


async def test_an_existing_publication_is_used_and_must_hold_the_tables(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (id int PRIMARY KEY)")
    sql(harness.dsn, "CREATE PUBLICATION mine FOR TABLE a")
    with pytest.raises(
        SourceError, match=r"does not include public\.b\. Run: ALTER PUBLICATION mine ADD TABLE public\.b;"
    ):
        await harness.open(["a", "b"], publication="mine")
    await harness.open(["a"], publication="mine", snapshot="never")
    sql(harness.dsn, "INSERT INTO a VALUES (1)")
    assert [e.key for e in await harness.read_n(1)] == [(1,)]
    await harness.close()
    text = await drop_replication(harness.config(["a"], publication="mine"), harness.pipeline)
    assert f"dropped replication slot {harness.slot}" in text and "left publication mine in place" in text
    assert sql(harness.dsn, "SELECT count(*) FROM pg_publication WHERE pubname = 'mine'") == [(1,)]


async def test_heartbeats_move_an_idle_slot(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE idle (id int PRIMARY KEY)", "CREATE TABLE busy (id int PRIMARY KEY)")
    src = await harness.open(["idle"], snapshot="never", heartbeat_interval=0.2, status_interval=0.2)
    start = str_to_lsn(slot_row(harness.dsn, src.slot)[1])  # type: ignore[index]
    # WAL grows from a table this pipeline does not capture
    sql(harness.dsn, "INSERT INTO busy SELECT generate_series(1, 20000)")
    wal_after_writes = str_to_lsn(sql(harness.dsn, "SELECT pg_current_wal_lsn()::text")[0][0])
    empty_ends = 0

    async def advanced() -> bool:
        nonlocal empty_ends
        batch = await src.read(100, 0.2)
        assert batch.events == []  # nothing from the idle table
        if batch.position is not None:
            empty_ends += 1  # a heartbeat transaction: a position with no events, for the engine to commit
            await src.commit(batch.position)
        return str_to_lsn(slot_row(harness.dsn, src.slot)[1]) > wal_after_writes  # type: ignore[index]

    await eventually(advanced, timeout=20, message="confirmed_flush_lsn to pass the unrelated writes")
    assert empty_ends >= 1
    assert str_to_lsn(slot_row(harness.dsn, src.slot)[1]) > start  # type: ignore[index]


async def test_lag_figures_and_dropping_slot_and_publication(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    src = await harness.open(["t"], snapshot="never", status_interval=0.2)
    sql(harness.dsn, "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g")
    before = await src.lag()
    assert before.exists and before.active and before.wal_status in ("reserved", "extended")
    assert before.retained_wal_bytes is not None and before.retained_wal_bytes > 1_000_000
    assert before.unconfirmed_bytes is not None and before.unconfirmed_bytes > 1_000_000
    await harness.read_n(5000)
    assert await harness.settle(0.3) == []  # the transaction's end: a position, committed

    async def confirmed() -> bool:
        lag = await src.lag()
        return lag.unconfirmed_bytes is not None and lag.unconfirmed_bytes < 100_000

    await eventually(confirmed, timeout=15, message="the slot to confirm what was committed")
    assert (await src.lag()).lag_seconds == 0.0
    slot = src.slot
    await harness.close()
    await wait_slot_inactive(harness.dsn, slot)
    text = await drop_replication(harness.config(["t"]), harness.pipeline)
    assert text == f"dropped replication slot {harness.slot}; dropped publication {harness.slot}"
    assert slot_row(harness.dsn, slot) is None
    assert sql(harness.dsn, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert not (await slot_lag(harness.dsn, slot)).exists
    assert "no replication slot" in await drop_replication(harness.config(["t"]), harness.pipeline)


async def test_dropping_a_slot_in_use_is_refused(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    await harness.open(["t"], snapshot="never")
    with pytest.raises(SourceError, match=r"in use by server process .* stop the pipeline first"):
        await drop_replication(harness.config(["t"]), harness.pipeline)
