"""Postgres → Postgres end to end: the CDC source and the Postgres sink in one pipeline.

Two measurements in one run, with the load generator (a separate process) and
both databases on this machine:

1. Sustained rate: changes are offered at increasing rates (inserts, updates
   and deletes of a 6-column table, 100-change transactions) for a while each;
   a rate is sustained when the pipeline's lag at the end of its step is under
   one second (the destination keeps up, lag stays flat).
2. Latency at 5,000 changes/s offered: p50/p99 from source commit to
   destination commit (the engine's end-to-end histogram: commit time →
   the sink's acknowledgement, which comes after the destination's COMMIT).

    .venv/bin/python bench/pg_to_pg.py [--rates 5000,10000,20000,30000] [--seconds 15]

Targets (issue 4): ≥ 20,000 changes/s sustained; p99 ≤ 20 ms at 5,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import tempfile
import time
import uuid

import psycopg

from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.observe.latency import LatencyHistogram
from tidesync.sinks.sql.postgres import PostgresSink, PostgresSinkConfig
from tidesync.sources.postgres import PostgresSource, PostgresSourceConfig
from tidesync.state import open_state_store

ADMIN = os.environ.get("TIDESYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DDL = (
    "CREATE TABLE items (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2), "
    "status text, note text, updated_at timestamptz NOT NULL DEFAULT now())"
)


def dsn(db: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + db


def generator(db: str, rate: float, seconds: float, start_id: int, done: mp.Queue) -> None:  # type: ignore[type-arg]
    """Offer ``rate`` changes/s for ``seconds``: 100-change transactions, 60% insert, 30% update, 10% delete."""
    try:
        _generate(db, rate, seconds, start_id, done)
    except BaseException as exc:
        done.put(exc)
        raise


def _generate(db: str, rate: float, seconds: float, start_id: int, done: mp.Queue) -> None:  # type: ignore[type-arg]
    conn = psycopg.connect(dsn(db), autocommit=True)
    per_tx = 100
    interval = per_tx / rate
    next_at = time.perf_counter()
    end = next_at + seconds
    nid = start_id
    sent = 0
    while time.perf_counter() < end:
        ins, upd, dele = 60, 30, 10
        with conn.transaction():
            conn.execute(
                "INSERT INTO items (id, account, amount, status, note) "
                "SELECT g, mod(g, 97), mod(g, 1000) / 10.0, 'new', 'generated row' "
                "FROM generate_series(%s::bigint, %s::bigint) g",
                (nid, nid + ins - 1),
            )
            conn.execute(
                "UPDATE items SET amount = amount + 1, status = 'paid', updated_at = now() WHERE id >= %s AND id < %s",
                (nid - 200, nid - 200 + upd),
            )
            conn.execute("DELETE FROM items WHERE id >= %s AND id < %s", (nid - 400, nid - 400 + dele))
        nid += ins
        sent += per_tx
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    conn.close()
    done.put((sent, nid))


async def measure(
    db_src: str, db_dst: str, rates: list[float], seconds: float
) -> list[tuple[float, float, float, float | None, float | None]]:
    workdir = tempfile.mkdtemp(prefix="tidesync-bench-")
    state = open_state_store(f"sqlite:///{workdir}/state.db")
    await state.open()
    pipeline = f"bench_{uuid.uuid4().hex[:8]}"
    source = PostgresSource(
        PostgresSourceConfig(
            dsn=dsn(db_src), tables=["items"], snapshot="never", progress=False, work_dir=workdir, heartbeat_interval=1
        )
    )
    sink = PostgresSink(PostgresSinkConfig(dsn=dsn(db_dst)))
    runner = PipelineRunner(
        pipeline, source, sink, state, batch=BatchPolicy(max_events=5000, max_wait=0.002), queue_batches=8
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    while runner.state_name != "running":
        await asyncio.sleep(0.05)
        if task.done():
            task.result()
    results = []
    next_id = 1_000
    ctx = mp.get_context("spawn")
    for rate in rates:
        done: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        before_lat = runner.stats.latency.cumulative
        base_counts = list(before_lat.counts)
        base_total = before_lat.total
        written0 = runner.stats.events_written
        t0 = time.perf_counter()
        proc = ctx.Process(target=generator, args=(db_src, rate, seconds, next_id, done))
        proc.start()
        got = await asyncio.to_thread(done.get)
        if isinstance(got, BaseException):
            raise got
        sent, next_id = got
        proc.join()
        elapsed = time.perf_counter() - t0
        lag_end = runner.lag_seconds()
        # a backlog in the slot that the reader has not reached yet is lag too
        await asyncio.sleep(0.5)
        backlog = sent - (runner.stats.events_written - written0)
        lag = max(lag_end, runner.lag_seconds())
        step = LatencyHistogram()
        step.counts = [c - b for c, b in zip(runner.stats.latency.cumulative.counts, base_counts, strict=True)]
        step.total = runner.stats.latency.cumulative.total - base_total
        results.append(
            (rate, sent / elapsed, lag + (1.0 if backlog > rate else 0.0), step.quantile(0.5), step.quantile(0.99))
        )
        # let the pipeline drain before the next step
        deadline = time.monotonic() + 120
        while runner.stats.events_written - written0 < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    stop.set()
    await task
    await state.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="5000,10000,20000,30000")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    src, dst = f"bench_src_{uuid.uuid4().hex[:6]}", f"bench_dst_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{src}"')
        conn.execute(f'CREATE DATABASE "{dst}"')
    try:
        for db in (src, dst):
            with psycopg.connect(dsn(db), autocommit=True) as conn:
                conn.execute(DDL)
        results = asyncio.run(measure(src, dst, rates, args.seconds))
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            for (slot,) in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (src,)
            ).fetchall():
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(f'DROP DATABASE IF EXISTS "{src}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{dst}" WITH (FORCE)')
    print("offered/s  achieved/s  lag-at-end  p50(ms)  p99(ms)  kept up")
    best = 0.0
    for rate, achieved, lag, p50, p99 in results:
        kept = lag < 1.0
        if kept:
            best = max(best, achieved)
        print(
            f"{rate:9,.0f}  {achieved:10,.0f}  {lag:8.2f}s  "
            f"{(p50 or 0) * 1000:7.1f}  {(p99 or 0) * 1000:7.1f}  {'yes' if kept else 'NO'}"
        )
    print(f"highest sustained rate: {best:,.0f} changes/s (target ≥ 20,000: {best / 20_000:.2f}x target)")
    at5k = [r for r in results if r[0] == 5000]
    if at5k and at5k[0][4] is not None:
        p99 = at5k[0][4] * 1000
        print(
            f"p99 at 5,000/s offered: {p99:.1f} ms (target ≤ 20 ms: {20 / p99 if p99 else float('inf'):.2f}x headroom)"
        )


if __name__ == "__main__":
    main()
