"""On-demand re-snapshot of one table while writes and streaming go on (DBLog watermarks)."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest
from pgs_helpers import Harness, apply, sql, table_state

from tidesync.errors import SourceError
from tidesync.event import ChangeEvent
from tidesync.sources.postgres.source import KV_NAMESPACE


class Churn(threading.Thread):
    """Random updates, inserts and deletes over the whole key range, in small transactions."""

    def __init__(self, dsn: str, ops: int, seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.dsn, self.ops, self.rng = dsn, ops, random.Random(seed)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for i in range(self.ops):
                    k = self.rng.randint(1, 3200)
                    with conn.transaction():
                        r = self.rng.random()
                        if r < 0.6:
                            conn.execute("UPDATE t SET v = %s WHERE id = %s", (f"u{i}", k))
                        elif r < 0.8:
                            conn.execute(
                                "INSERT INTO t VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                                (k, f"i{i}"),
                            )
                        else:
                            conn.execute("DELETE FROM t WHERE id = %s", (k,))
        except BaseException as exc:
            self.error = exc


async def drain(harness: Harness, churn: Churn) -> list[ChangeEvent]:
    src = harness.source
    assert src is not None
    events: list[ChangeEvent] = []

    def finished(ev: list[ChangeEvent]) -> bool:
        events[:] = ev
        return not src.backfilling and not churn.is_alive()

    await harness.read_until(finished, timeout=120)
    events.extend(await harness.settle(0.5))
    return events


async def test_backfill_while_writing_ends_with_the_table_state(harness: Harness) -> None:
    sql(
        harness.dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, 'orig' FROM generate_series(1, 3000) g",
    )
    src = await harness.open(["t"], snapshot="never", snapshot_chunk_size=150)
    churn = Churn(harness.dsn, 2500)
    await src.request_snapshot("public.t")
    churn.start()
    events = await drain(harness, churn)
    churn.join(30)
    assert churn.error is None
    snap = [e for e in events if e.op == "snapshot"]
    assert len(snap) >= 2000 and src.backfilling is False
    # snapshot rows sit inside the stream, in stream order: positions keep increasing
    positions = [e.position for e in events]
    assert positions == sorted(positions)
    # a destination that started empty ends equal to the table: no row missed, no stale row on top
    model: dict[tuple[str, Any], dict[str, Any]] = {}
    apply(model, events)
    assert model == table_state(harness.dsn, {"public.t": ("id",)})
    assert await harness.state.kv_get(KV_NAMESPACE, f"{harness.kv_key}/backfill") == {}


async def test_backfill_resumes_after_a_restart(harness: Harness) -> None:
    sql(
        harness.dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, 'orig' FROM generate_series(1, 2000) g",
    )
    src = await harness.open(["t"], snapshot="never", snapshot_chunk_size=100)
    await src.request_snapshot("t")
    first = await harness.read_until(lambda ev: len(ev) >= 500)
    progress = await harness.state.kv_get(KV_NAMESPACE, f"{harness.kv_key}/backfill")
    assert progress and progress["public.t"]["last_key"] is not None
    await harness.close()
    sql(harness.dsn, "UPDATE t SET v = 'after restart' WHERE id IN (10, 1990)", "DELETE FROM t WHERE id = 1500")
    await harness.open(["t"], snapshot="never", snapshot_chunk_size=100)
    churn = Churn(harness.dsn, 0)
    churn.start()
    rest = await drain(harness, churn)
    resumed_from = int(progress["public.t"]["last_key"][0])
    snap_keys = [e.key[0] for e in rest if e.op == "snapshot"]
    assert min(snap_keys) == resumed_from + 1  # from the last committed chunk, not from the start
    model: dict[tuple[str, Any], dict[str, Any]] = {}
    apply(model, first + rest)
    assert model == table_state(harness.dsn, {"public.t": ("id",)})


async def test_backfill_of_a_table_not_captured_is_refused(harness: Harness) -> None:
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY)", "CREATE TABLE other (id int PRIMARY KEY)")
    src = await harness.open(["t"], snapshot="never")
    with pytest.raises(SourceError, match="not one of this source's tables"):
        await src.request_snapshot("other")
