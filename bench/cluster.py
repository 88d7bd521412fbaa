"""Scale-out on NATS JetStream: end-to-end changes/s with 1 and with 2 `tidesync run` processes on one backlog.

The same backlog (``--rows`` inserts into a 4-column table, committed before
any process starts) is drained twice, each time into a fresh destination
database, through a fresh stream, slot and state schema, with a ``cluster:``
config (``partitions: 4``) and a CPU-bound transform on the apply side
(:func:`work`: ``--rounds`` rounds of BLAKE2b over one field per change, about
what a heavy mapping costs). Run 1 starts one process, run 2 two; the clock
runs from the processes' start until the destination holds every row (capture,
publish, apply, commit). Printed: each run's changes/s, the second over the
first as a ratio, and where the partitions ran.

What to expect on this 2-core machine: the capture, NATS, both Postgres
servers and the apply processes share two cores. One process already uses
about one core (its transforms and writes) plus what the servers use; a second
process adds at most the rest of the second core, so the ratio is well under
2 and depends on how heavy the transform is: the heavier, the closer to what
the second core can give. On N machines the apply side grows with N until the
capture (one replication slot's decode rate) is the limit (docs/scaling.md).

    .venv/bin/python bench/cluster.py [--rows 60000] [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROUNDS = int(os.environ.get("TIDESYNC_BENCH_ROUNDS", "200"))


def work(event: Any) -> Any:
    """The CPU-bound transform: ``ROUNDS`` rounds of BLAKE2b over the payload, stored in ``digest``."""
    if event.after is None:
        return event
    data = str(event.after.get("payload", "")).encode()
    for _ in range(ROUNDS):
        data = hashlib.blake2b(data, digest_size=16).digest()
    return event.replace(after={**event.after, "digest": data.hex()})


def dsn(db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{db}"


def create(db: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')


def drop(db: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s AND NOT active",
            (db,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def drop_stream(name: str) -> None:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def count(db: str) -> int:
    with psycopg.connect(dsn(db)) as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
    return int(row[0]) if row else 0


def run(src: str, rows: int, processes: int, tmp: Path) -> tuple[float, Counter[str]]:
    tag = secrets.token_hex(3)
    dst = f"bench_cl_dst_{tag}"
    create(dst)
    with psycopg.connect(dsn(dst), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, v int, payload text, digest text)")
    config = tmp / f"cluster_{tag}.yaml"
    config.write_text(
        f"""\
state: "{dsn(src)}?schema=ts_state_{tag}"
lease: {{ttl_seconds: 5}}
cluster: {{stream: BENCH_{tag}, partitions: 4}}
pipelines:
  - name: bench_{tag}
    source: {{type: postgres, dsn: "{dsn(src)}", tables: [items], progress: false, work_dir: "{tmp}/spill_{tag}"}}
    transforms: [{{function: "cluster:work"}}]
    sink: {{type: postgres, dsn: "{dsn(dst)}"}}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "TIDESYNC_BENCH_ROUNDS": str(ROUNDS)}
    logs = [tmp / f"p{i}_{tag}.log" for i in range(processes)]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "run", str(config)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        for log in logs
    ]
    try:
        while count(dst) < rows:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a process exited:\n{logs[0].read_text()[-3000:]}")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        drop(dst)
        asyncio.run(drop_stream(f"BENCH_{tag}"))
    where: Counter[str] = Counter()
    for i, log in enumerate(logs):
        where[f"process {i + 1}"] = log.read_text().count("took lease apply:")
    return elapsed, where


def main() -> None:
    global ROUNDS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    ROUNDS = args.rounds
    src = f"bench_cl_src_{secrets.token_hex(3)}"
    create(src)
    try:
        with psycopg.connect(dsn(src), autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, v int, payload text)")
        with tempfile.TemporaryDirectory() as tmp:
            # the backlog is written after a first slot exists, so every run captures it from the WAL
            figures = []
            for processes in (1, 2):
                figures.append(run_with_backlog(src, args.rows, processes, Path(tmp)))
        (t1, w1), (t2, w2) = figures
        r1, r2 = args.rows / t1, args.rows / t2
        print(f"backlog {args.rows:,} inserts, transform: {ROUNDS} rounds of BLAKE2b per change, 4 partitions")
        print(f"1 process : {r1:8,.0f} changes/s end to end ({t1:.1f} s); partitions taken: {dict(w1)}")
        print(f"2 processes: {r2:8,.0f} changes/s end to end ({t2:.1f} s); partitions taken: {dict(w2)}")
        print(f"ratio 2/1: {r2 / r1:.2f} (2 cores on this machine; see the docstring)")
    finally:
        drop(src)


def run_with_backlog(src: str, rows: int, processes: int, tmp: Path) -> tuple[float, Counter[str]]:
    """A fresh table of ``rows`` in ``src`` (truncated first), then one run; the snapshot carries the backlog."""
    with psycopg.connect(dsn(src), autocommit=True) as conn:
        conn.execute("TRUNCATE items")
        conn.execute(
            "INSERT INTO items SELECT g, g %% 100, md5(g::text) FROM generate_series(1, %s) g",
            (rows,),
        )
    return run(src, rows, processes, tmp)


if __name__ == "__main__":
    main()
