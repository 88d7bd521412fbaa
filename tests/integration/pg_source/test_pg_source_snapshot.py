"""The initial snapshot: consistent with the stream, chunked in key order, resumable after an interruption."""

from __future__ import annotations

from typing import Any

from pgs_helpers import Harness, apply, sql, table_state

from tidesync.sources.postgres.source import KV_NAMESPACE


async def test_snapshot_then_stream_misses_no_row_and_doubles_none(harness: Harness) -> None:
    sql(
        harness.dsn,
        "CREATE TABLE a (id int PRIMARY KEY, v text)",
        "CREATE TABLE b (k1 text, k2 int, v int, PRIMARY KEY (k1, k2))",
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 2345) g",
        "INSERT INTO b SELECT chr(65 + g % 3), g, g FROM generate_series(1, 700) g",
    )
    await harness.open(["a", "b"], snapshot_chunk_size=500)
    # written after the slot's consistent point, while the snapshot is being read
    sql(
        harness.dsn,
        "INSERT INTO a VALUES (5000, 'new')",
        "UPDATE a SET v = 'changed' WHERE id IN (1, 2000)",
        "DELETE FROM a WHERE id = 3",
        "UPDATE b SET v = -1 WHERE k2 = 10",
    )
    events = await harness.read_until(
        lambda ev: sum(e.op == "snapshot" for e in ev) >= 3045 and sum(e.op != "snapshot" for e in ev) >= 5
    )
    snap = [e for e in events if e.op == "snapshot"]
    stream = [e for e in events if e.op != "snapshot"]
    assert len(snap) == 3045 and len({(e.entity, e.key) for e in snap}) == 3045  # none doubled
    # the snapshot saw the rows as they were at the consistent point
    a_rows = {e.key: e.after for e in snap if e.entity == "public.a"}
    assert a_rows[(1,)] == {"id": 1, "v": "v1"} and (3,) in a_rows and (5000,) not in a_rows
    # key order within each table, composite keys included
    b_keys = [e.key for e in snap if e.entity == "public.b"]
    assert b_keys == sorted(b_keys)
    # the stream carried exactly the later changes, after every snapshot position
    assert [(e.op, e.entity, e.key) for e in stream] == [
        ("insert", "public.a", (5000,)),
        ("update", "public.a", (1,)),
        ("update", "public.a", (2000,)),
        ("delete", "public.a", (3,)),
        ("update", "public.b", ("A", 10)) if 10 % 3 == 0 else ("update", "public.b", ("B", 10)),
    ]
    assert max(e.position for e in snap) < min(e.position for e in stream)
    # chunk batches carry positions that sort after their rows
    chunk_positions = [b.position for b in harness.batches if b.events and b.events[0].op == "snapshot"]
    assert all(p is not None and p[0] == 0 for p in chunk_positions)
    model: dict[tuple[str, Any], dict[str, Any]] = {}
    apply(model, events)
    assert model == table_state(harness.dsn, {"public.a": ("id",), "public.b": ("k1", "k2")})
    plan = await harness.state.kv_get(KV_NAMESPACE, harness.kv_key)
    assert plan["complete"] is True


async def test_interrupted_snapshot_resumes_from_its_last_committed_chunk(harness: Harness) -> None:
    sql(
        harness.dsn,
        "CREATE TABLE a (id int PRIMARY KEY, v text)",
        "CREATE TABLE b (id uuid PRIMARY KEY, v int)",
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 1000) g",
        "INSERT INTO b SELECT md5(g::text)::uuid, g FROM generate_series(1, 300) g",
    )
    src = await harness.open(["a", "b"], snapshot_chunk_size=100)
    delivered: list[Any] = []
    # the engine commits three chunks; a fourth is read but never committed (lost in the crash)
    for _ in range(3):
        batch = await src.read(1000, 0.1)
        delivered.extend(batch.events)
        assert batch.position is not None
        await src.commit(batch.position)
        harness.checkpoint = batch.position
    lost = await src.read(1000, 0.1)
    assert len(lost.events) == 100
    await harness.close()  # the process stops; the exported snapshot is gone
    plan = await harness.state.kv_get(KV_NAMESPACE, harness.kv_key)
    assert plan["tables"]["public.a"]["last_key"] == ["300"] and not plan["complete"]
    # meanwhile the table changes, in the read part and in the unread part
    sql(
        harness.dsn,
        "UPDATE a SET v = 'early' WHERE id = 50",
        "UPDATE a SET v = 'late' WHERE id = 950",
        "DELETE FROM a WHERE id IN (320, 999)",
        "INSERT INTO a VALUES (1001, 'appended')",
        "DELETE FROM b WHERE v = 7",
    )
    await harness.open(["a", "b"], snapshot_chunk_size=100)
    rest = await harness.read_until(lambda ev: sum(e.op != "snapshot" for e in ev) >= 6)
    snap = [e for e in rest if e.op == "snapshot"]
    # resumed after key 300 of table a (chunk 4 is read again), then all of b
    assert min(e.key for e in snap if e.entity == "public.a") == (301,)
    # a new run: every position sorts after everything produced before the interruption
    assert all(e.position > lost.events[-1].position for e in rest)
    seen_a = {e.key[0] for e in delivered + snap if e.entity == "public.a"}
    assert seen_a >= set(range(1, 1001)) - {320, 999}  # no row missed
    model: dict[tuple[str, Any], dict[str, Any]] = {}
    apply(model, delivered + rest)
    assert model == table_state(harness.dsn, {"public.a": ("id",), "public.b": ("id",)})
