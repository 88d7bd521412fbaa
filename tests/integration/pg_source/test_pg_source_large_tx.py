"""Protocol v2: transactions streamed while in progress are spilled to disk, emitted on commit, dropped on abort."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from pgs_helpers import Harness, sql

from tidesync.sources.postgres.catalog import session_dsn


def small_work_mem(dsn: str) -> str:
    # make the server stream a transaction after 64 kB of changes instead of 64 MB
    return session_dsn(dsn, options="-c logical_decoding_work_mem=64kB")


def spill_files(work: Path) -> list[Path]:
    return list(work.rglob("*.spill"))


async def test_streamed_transaction_with_a_rolled_back_savepoint(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    harness.dsn = small_work_mem(harness.dsn)
    src = await harness.open(["t"], snapshot="never", proto_version=2)
    sql(
        harness.dsn,
        "BEGIN",
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g",
        "SAVEPOINT s",
        "INSERT INTO t SELECT g, 'gone' FROM generate_series(5001, 9000) g",
        "ROLLBACK TO SAVEPOINT s",
        "INSERT INTO t VALUES (9999, 'last')",
        "COMMIT",
    )
    events = await harness.read_n(5001)
    assert [e.key[0] for e in events] == [*range(1, 5001), 9999]
    assert len({e.position[0] for e in events}) == 1 and [e.position[1] for e in events] == list(range(5001))
    assert not [e for e in events if e.after and e.after.get("v") == "gone"]
    assert not spill_files(harness.work_dir)
    assert src.spilled_transactions == 1


async def test_aborted_streamed_transaction_leaves_nothing(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    harness.dsn = small_work_mem(harness.dsn)
    src = await harness.open(["t"], snapshot="never", proto_version=2)
    sql(harness.dsn, "BEGIN", "INSERT INTO t SELECT g, repeat('y', 100) FROM generate_series(1, 20000) g", "ROLLBACK")
    sql(harness.dsn, "INSERT INTO t VALUES (1, 'kept')")
    events = await harness.read_n(1)
    assert [(e.key, e.after) for e in events] == [((1,), {"id": 1, "v": "kept"})]
    assert await harness.settle(0.3) == []
    assert not spill_files(harness.work_dir)
    assert src.spilled_transactions == 1


@pytest.mark.slow
async def test_a_million_row_transaction_streams_with_bounded_memory(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    src = await harness.open(["t"], snapshot="never", proto_version=2)  # default 64 MB decoding memory
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    # ~300 MB of changes in one transaction: far more than the server keeps in memory, and than we may
    sql(harness.dsn, "INSERT INTO t SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 1000000) g")
    count = 0
    key_sum = 0
    peak = baseline
    saw_spill = False
    last_position = None
    deadline = time.monotonic() + 600
    while count < 1_000_000:
        assert time.monotonic() < deadline, f"only {count} events"
        batch = await src.read(5000, 0.5)
        count += len(batch.events)
        for e in batch.events:
            key_sum += e.key[0]
        if batch.events:
            assert last_position is None or batch.events[0].position > last_position
            last_position = batch.events[-1].position
        if batch.position is not None:
            await src.commit(batch.position)
        saw_spill = saw_spill or bool(spill_files(harness.work_dir))
        peak = max(peak, proc.memory_info().rss)
    assert count == 1_000_000 and key_sum == 1_000_000 * 1_000_001 // 2
    assert saw_spill and src.spilled_transactions == 1  # through a spill file, not memory
    growth_mb = (peak - baseline) / 2**20
    assert growth_mb < 150, f"memory grew by {growth_mb:.0f} MB while streaming a 1,000,000-row transaction"
    # the transaction's end comes next, and its spill file is gone
    end = await src.read(5000, 2.0)
    assert end.events == [] and end.position is not None and end.position > last_position  # type: ignore[operator]
    assert not spill_files(harness.work_dir)
