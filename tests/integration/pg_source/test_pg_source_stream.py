"""Streaming: inserts, updates, deletes, truncate, positions, resume, feedback, origins, schema changes."""

from __future__ import annotations

import asyncio

import pytest
from pgs_helpers import Harness, slot_row, sql, wait_slot_inactive

from tidesync.errors import SourceError
from tidesync.protocols import Source
from tidesync.sources.postgres.pgoutput import str_to_lsn


async def test_streams_inserts_updates_deletes_with_transaction_positions(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, name text, n numeric)")
    src = await harness.open(["t"], snapshot="never")
    assert isinstance(src, Source)
    sql(
        harness.dsn,
        "BEGIN",
        "INSERT INTO t VALUES (1, 'a', 1.50), (2, 'b', NULL)",
        "UPDATE t SET name = 'bb' WHERE id = 2",
        "COMMIT",
        "DELETE FROM t WHERE id = 1",
    )
    events = await harness.read_n(4)
    assert [(e.op, e.key) for e in events] == [("insert", (1,)), ("insert", (2,)), ("update", (2,)), ("delete", (1,))]
    from decimal import Decimal

    assert events[0].after == {"id": 1, "name": "a", "n": Decimal("1.50")}
    assert events[2].after == {"id": 2, "name": "bb", "n": None}
    # no old row, every column sent: the source's shadow of row 2 (its insert) says only name changed
    assert events[2].changed == ("name",)
    assert events[2].before is None
    assert events[3].before == {"id": 1} and events[3].after is None
    # one transaction: same commit LSN, consecutive indexes, same txid and commit time
    tx = events[:3]
    assert len({e.position[0] for e in tx}) == 1 and [e.position[1] for e in tx] == [0, 1, 2]
    assert len({e.txid for e in tx}) == 1 and tx[0].txid is not None
    assert events[3].position > events[2].position and events[3].txid != events[0].txid
    assert all(abs(e.committed_at - events[0].committed_at) < 60 for e in events)
    assert events[0].origin is None
    positions = [e.position for e in events]
    assert positions == sorted(positions)
    # batch positions fall on transaction ends and sort after their events
    ends = [b.position for b in harness.batches if b.position is not None]
    assert ends and ends[-1] > events[-1].position and ends[-1][1] == -1
    # the schema reached the registry
    schema = harness.schemas.get("public.t")
    assert schema is not None and schema.primary_key == ("id",)
    assert [(c.name, c.type) for c in schema.columns] == [("id", "int32"), ("name", "string"), ("n", "decimal")]


async def test_resume_after_a_checkpoint_produces_nothing_at_or_before_it(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    await harness.open(["t"], snapshot="never")
    sql(harness.dsn, "INSERT INTO t SELECT generate_series(1, 5)")
    sql(harness.dsn, "INSERT INTO t SELECT generate_series(6, 10)")
    # read both transactions, commit only the first (the engine's checkpoint)
    first = await harness.read_n(10, max_events=5, commit=False)
    middle = next(b.position for b in harness.batches if b.position is not None)
    assert harness.source is not None
    await harness.source.commit(middle)
    await harness.close()
    sql(harness.dsn, "INSERT INTO t VALUES (11)")
    await harness.open(["t"], after=middle, snapshot="never")
    again = await harness.read_n(6, commit=False)
    assert [e.key[0] for e in again] == [6, 7, 8, 9, 10, 11]
    assert all(e.position > middle for e in again)
    assert [e.position for e in again[:5]] == [e.position for e in first[5:]]
    # and resuming after an event inside a transaction skips only up to that event
    await harness.close()
    await harness.open(["t"], after=first[7].position, snapshot="never")
    tail = await harness.read_n(3, commit=False)
    assert [e.key[0] for e in tail] == [9, 10, 11]


async def test_flush_position_moves_only_when_committed(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    src = await harness.open(["t"], snapshot="never", status_interval=0.1)
    start = slot_row(harness.dsn, src.slot)
    assert start is not None
    sql(harness.dsn, "INSERT INTO t VALUES (1)")
    events = await harness.read_until(lambda ev: len(ev) >= 1, commit=False)
    assert events
    # read but not committed: through several status updates (every 0.1 s) the slot's confirmed position
    # stays before the transaction (it may move over WAL that carried nothing for this slot)
    await asyncio.sleep(0.5)  # proving that something does not happen needs a window
    row = slot_row(harness.dsn, src.slot)
    assert row is not None and str_to_lsn(row[1]) < events[0].position[0]
    assert str_to_lsn(row[1]) >= str_to_lsn(start[1])
    end = next(b.position for b in harness.batches if b.position is not None)
    await src.commit(end)
    from tidesync.testing import eventually

    await eventually(
        lambda: str_to_lsn(slot_row(harness.dsn, src.slot)[1]) >= end[0],  # type: ignore[index]
        timeout=10,
        message="confirmed_flush_lsn to reach the committed position",
    )


async def test_truncate_and_replica_identity_full(harness: Harness) -> None:
    sql(
        harness.dsn,
        "CREATE TABLE f (id int PRIMARY KEY, a text, b int)",
        "ALTER TABLE f REPLICA IDENTITY FULL",
        "CREATE TABLE k (a int, b text)",
        "ALTER TABLE k REPLICA IDENTITY FULL",
    )
    await harness.open(["f", "k"], snapshot="never")
    sql(
        harness.dsn,
        "INSERT INTO f VALUES (1, 'x', 1)",
        "UPDATE f SET b = 2 WHERE id = 1",
        "DELETE FROM f WHERE id = 1",
        "INSERT INTO k VALUES (1, 'one')",
        "UPDATE k SET b = 'uno'",
        "TRUNCATE f, k",
    )
    ev = await harness.read_n(8)
    upd = ev[1]
    assert upd.op == "update" and upd.before == {"id": 1, "a": "x", "b": 1} and upd.changed == ("b",)
    assert ev[2].op == "delete" and ev[2].before == {"id": 1, "a": "x", "b": 2}
    # keyless table: the whole row is the key, so an update moves the key
    assert [(e.op, e.entity, e.key) for e in ev[3:6]] == [
        ("insert", "public.k", (1, "one")),
        ("delete", "public.k", (1, "one")),
        ("insert", "public.k", (1, "uno")),
    ]
    assert [(e.op, e.entity, e.key) for e in ev[6:]] == [("truncate", "public.f", ()), ("truncate", "public.k", ())]
    assert ev[6].position[0] == ev[7].position[0]


async def test_primary_key_change_is_a_delete_then_an_insert(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    await harness.open(["t"], snapshot="never")
    sql(harness.dsn, "UPDATE t SET id = 2 WHERE id = 1")
    ev = await harness.read_n(2)
    assert [(e.op, e.key, e.before, e.after) for e in ev] == [
        ("delete", (1,), {"id": 1}, None),
        ("insert", (2,), None, {"id": 2, "v": "a"}),
    ]


async def test_origin_of_a_replicated_session_is_on_its_events(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    await harness.open(["t"], snapshot="never")
    origin = "tidesync_test_origin"
    sql(
        harness.dsn,
        f"SELECT pg_replication_origin_create('{origin}') WHERE NOT EXISTS "
        f"(SELECT 1 FROM pg_replication_origin WHERE roname = '{origin}')",
    )
    try:
        sql(
            harness.dsn,
            f"SELECT pg_replication_origin_session_setup('{origin}')",
            "INSERT INTO t VALUES (1)",
            "SELECT pg_replication_origin_session_reset()",
            "INSERT INTO t VALUES (2)",
        )
        ev = await harness.read_n(2)
        assert [(e.key, e.origin) for e in ev] == [((1,), origin), ((2,), None)]
    finally:
        sql(harness.dsn, f"SELECT pg_replication_origin_drop('{origin}')")


async def test_added_and_dropped_columns_flow_through_new_schemas(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, a text)")
    await harness.open(["t"], snapshot="never")
    sql(harness.dsn, "INSERT INTO t VALUES (1, 'x')")
    await harness.read_n(1)
    v0 = harness.schemas.get("public.t")
    sql(harness.dsn, "ALTER TABLE t ADD COLUMN b jsonb", "INSERT INTO t VALUES (2, 'y', '{\"k\": [1]}')")
    ev = await harness.read_n(1)
    assert ev[0].after == {"id": 2, "a": "y", "b": {"k": [1]}}
    v1 = harness.schemas.get("public.t")
    assert v0 is not None and v1 is not None and v1.version == v0.version + 1
    assert v1.names == ("id", "a", "b") and v1.column("b").type == "json"  # type: ignore[union-attr]
    sql(harness.dsn, "ALTER TABLE t DROP COLUMN a", "INSERT INTO t VALUES (3, NULL)")
    ev = await harness.read_n(1)
    assert ev[0].after == {"id": 3, "b": None}
    assert harness.schemas.get("public.t").names == ("id", "b")  # type: ignore[union-attr]


async def test_a_dropped_slot_with_a_checkpoint_is_an_error_not_a_fresh_start(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    src = await harness.open(["t"], snapshot="never")
    sql(harness.dsn, "INSERT INTO t VALUES (1)")
    await harness.read_n(1)
    slot = src.slot
    await harness.close()
    await wait_slot_inactive(harness.dsn, slot)
    sql(harness.dsn, "SELECT pg_drop_replication_slot(%s)", params=(slot,))
    with pytest.raises(SourceError, match=r"no longer exists.*checkpoint"):
        await harness.open(["t"], snapshot="never")
