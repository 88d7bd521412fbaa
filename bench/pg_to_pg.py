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

For each step it also prints where the time goes, from the engine's own stage
histograms: capture (source commit → read by the engine), the sink's write of
one batch, batches and events per batch, and the CPU this process (the engine)
used, as a share of one core and µs per change.

The pipeline is built from a YAML config the way ``tidesync run`` builds it
(``load_config_text`` → ``build_runner``), with every key at its default except
the source's ``snapshot: never``, ``progress: false`` and ``work_dir``, and runs
in this process so the bench reads the engine's latency histogram.
``--config-extra`` merges a YAML mapping into the pipeline's entry, to measure
other settings, e.g. ``--config-extra '{batch: {max_wait_ms: 2}, queue_batches: 8}'``
(nested mappings merge key by key; the effective batch settings are printed).

    .venv/bin/python bench/pg_to_pg.py [--rates 5000,10000,20000,25000,30000] [--seconds 15] [--config-extra YAML]

Targets (issue 15, default config): ≥ 25,000 changes/s sustained; p99 ≤ 10 ms at 5,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import yaml

from tidesync.config import load_config_text
from tidesync.engine.build import build_runner
from tidesync.engine.collector import tune_gc
from tidesync.observe.latency import LatencyHistogram
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
            changed = 0
            # count the rows each statement changed: the first steps update and delete ids
            # that were never inserted, and the drain below waits for exactly what was written
            for cur in (
                conn.execute(
                    "INSERT INTO items (id, account, amount, status, note) "
                    "SELECT g, mod(g, 97), mod(g, 1000) / 10.0, 'new', 'generated row' "
                    "FROM generate_series(%s::bigint, %s::bigint) g",
                    (nid, nid + ins - 1),
                ),
                conn.execute(
                    "UPDATE items SET amount = amount + 1, status = 'paid', updated_at = now() "
                    "WHERE id >= %s AND id < %s",
                    (nid - 200, nid - 200 + upd),
                ),
                conn.execute("DELETE FROM items WHERE id >= %s AND id < %s", (nid - 400, nid - 400 + dele)),
            ):
                changed += max(cur.rowcount, 0)
        nid += ins
        sent += changed
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    conn.close()
    done.put((sent, nid))


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s keys put in; a mapping in both is merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        out[key] = merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def pipeline_config(db_src: str, db_dst: str, workdir: str, extra: dict[str, Any]) -> str:
    """The YAML the pipeline is built from: defaults, the bench's three source keys, then ``extra``."""
    entry: dict[str, Any] = {
        "name": f"bench_{uuid.uuid4().hex[:8]}",
        "source": {
            "type": "postgres",
            "dsn": dsn(db_src),
            "tables": ["items"],
            "snapshot": "never",
            "progress": False,
            "work_dir": workdir,
        },
        "sink": {"type": "postgres", "dsn": dsn(db_dst)},
    }
    config = {"state": f"sqlite:///{workdir}/state.db", "pipelines": [merged(entry, extra)]}
    return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True, slots=True)
class Step:
    """One offered rate's results; the histograms hold only this step's samples."""

    rate: float
    achieved: float
    lag: float
    end_to_end: LatencyHistogram  # per event: source commit → the sink's acknowledgement
    capture: LatencyHistogram  # first and last event of each source batch: source commit → read by the engine
    write: LatencyHistogram  # per written batch: the sink's delivery
    batches: int
    cpu: float  # CPU seconds this process (the engine, all its threads) used per second of the step

    def ms(self, hist: LatencyHistogram, q: float) -> float:
        return (hist.quantile(q) or 0.0) * 1000


def histograms(runner: Any) -> tuple[LatencyHistogram, LatencyHistogram, LatencyHistogram]:
    """Copies of the runner's end-to-end, capture and write histograms (cumulative since start)."""
    stats = runner.stats
    return tuple(  # type: ignore[return-value]
        LatencyHistogram(list(h.counts), h.total, h.sum)
        for h in (stats.latency.cumulative, stats.stage["capture"], stats.stage["write"])
    )


def since(now: LatencyHistogram, before: LatencyHistogram) -> LatencyHistogram:
    counts = [c - b for c, b in zip(now.counts, before.counts, strict=True)]
    return LatencyHistogram(counts, now.total - before.total, now.sum - before.sum)


async def measure(db_src: str, db_dst: str, rates: list[float], seconds: float, extra: dict[str, Any]) -> list[Step]:
    with tempfile.TemporaryDirectory(prefix="tidesync-bench-") as workdir:
        return await _measure(db_src, db_dst, rates, seconds, extra, workdir)


async def _measure(
    db_src: str, db_dst: str, rates: list[float], seconds: float, extra: dict[str, Any], workdir: str
) -> list[Step]:
    loaded = load_config_text(pipeline_config(db_src, db_dst, workdir, extra))
    spec = loaded.pipelines[0]
    cfg = spec.config
    print(
        f"pipeline settings: batch max_events {cfg.batch.max_events}, max_wait_ms {cfg.batch.max_wait_ms:g}, "
        f"queue_batches {cfg.queue_batches}" + (f"; --config-extra {extra}" if extra else " (defaults)")
    )
    state = open_state_store(loaded.state_url)
    await state.open()
    runner = build_runner(spec, state)
    tune_gc()  # as tidesync run does after building its engine
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
        before = histograms(runner)
        batches0 = runner.stats.batches
        written0 = runner.stats.events_written
        t0, cpu0 = time.perf_counter(), time.process_time()
        proc = ctx.Process(target=generator, args=(db_src, rate, seconds, next_id, done))
        proc.start()
        got = await asyncio.to_thread(done.get)
        if isinstance(got, BaseException):
            raise got
        sent, next_id = got
        proc.join()
        elapsed = time.perf_counter() - t0
        cpu = (time.process_time() - cpu0) / elapsed
        lag_end = runner.lag_seconds()
        # a backlog in the slot that the reader has not reached yet is lag too
        await asyncio.sleep(0.5)
        backlog = sent - (runner.stats.events_written - written0)
        lag = max(lag_end, runner.lag_seconds())
        e2e, capture, write = (since(n, b) for n, b in zip(histograms(runner), before, strict=True))
        lag += 1.0 if backlog > rate else 0.0
        results.append(Step(rate, sent / elapsed, lag, e2e, capture, write, runner.stats.batches - batches0, cpu))
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
    parser.add_argument("--rates", default="5000,10000,20000,25000,30000")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument(
        "--config-extra",
        default="",
        help="a YAML mapping merged into the pipeline's config, e.g. '{batch: {max_wait_ms: 2}}'",
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    extra = yaml.safe_load(args.config_extra) or {}
    if not isinstance(extra, dict):
        parser.error("--config-extra must be a YAML mapping, e.g. '{batch: {max_wait_ms: 2}}'")
    src, dst = f"bench_src_{uuid.uuid4().hex[:6]}", f"bench_dst_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{src}"')
        conn.execute(f'CREATE DATABASE "{dst}"')
    try:
        for db in (src, dst):
            with psycopg.connect(dsn(db), autocommit=True) as conn:
                conn.execute(DDL)
        results = asyncio.run(measure(src, dst, rates, args.seconds, extra))
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
    for r in results:
        kept = r.lag < 1.0
        if kept:
            best = max(best, r.achieved)
        print(
            f"{r.rate:9,.0f}  {r.achieved:10,.0f}  {r.lag:8.2f}s  "
            f"{r.ms(r.end_to_end, 0.5):7.1f}  {r.ms(r.end_to_end, 0.99):7.1f}  {'yes' if kept else 'NO'}"
        )
    print("where the time goes (ms; capture: source commit → read by the engine, first and last event of each")
    print("source batch; write: the sink's delivery of one batch; the rest is the queue and the state commit):")
    print("offered/s  capture p50/p99  write p50/p99  batches  events/batch  engine CPU (of one core, µs/change)")
    for r in results:
        per = r.end_to_end.total / r.batches if r.batches else 0.0
        print(
            f"{r.rate:9,.0f}  {r.ms(r.capture, 0.5):6.1f} /{r.ms(r.capture, 0.99):6.1f}  "
            f"{r.ms(r.write, 0.5):5.1f} /{r.ms(r.write, 0.99):6.1f}  {r.batches:7,}  {per:12,.0f}  "
            f"{r.cpu:6.0%} ({r.cpu / r.achieved * 1e6:.0f})"
        )
    print(f"highest sustained rate: {best:,.0f} changes/s (target ≥ 25,000: {best / 25_000:.2f}x target)")
    at5k = [r for r in results if r.rate == 5000]
    if at5k and at5k[0].end_to_end.total:
        p99 = at5k[0].ms(at5k[0].end_to_end, 0.99)
        verdict = "met" if p99 <= 10 else "NOT met"
        print(f"p99 at 5,000/s offered: {p99:.1f} ms (target ≤ 10 ms: {verdict}, {p99 / 10:.2f}x the target)")


if __name__ == "__main__":
    main()
