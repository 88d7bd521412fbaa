"""Scale-out on NATS JetStream: `tidesync run` processes on one `cluster:` config share a pipeline's partitions.

Each test runs real processes against Postgres (source, destination, state store) and NATS JetStream, under a
steady write load, kills processes with kill -9, and checks at the end: source and destination checksums are equal,
every change was applied once and in order per key (an audit trigger in the destination), a keyless append-only
table holds exactly the source's rows, and no lease epoch was taken by two processes.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psycopg
import pytest

from tests.integration.e2e_support import kill_engine, pg_checksum, running, start_engine, stop_engine, wait_caught_up
from tests.integration.test_faults import AUDIT, ITEMS, Writer, assert_applied_in_order_once, dest_db, sql
from tidesync.event import unpack_value
from tidesync.testing import wait_until

__all__ = ["dest_db"]  # the fixture, imported for this module's tests

LOG = "CREATE TABLE log (at bigint, note text)"  # keyless, append-only: a doubled insert would show as an extra row
APPLIED_BY = "ALTER TABLE audit ADD COLUMN by_process text DEFAULT current_setting('application_name')"


def cluster_config(tmp: Path, name: str, src: str, dst: str, nats: str, stream: str, **extra: object) -> Path:
    partitions = extra.get("partitions", 4)
    replicas = extra.get("replicas", 1)
    config = tmp / "tidesync.yaml"
    config.write_text(
        f"""\
state: "{src}?schema=ts_state"
lease: {{ttl_seconds: {extra.get("ttl", 5)}}}
cluster: {{nats: "{nats}", stream: {stream}, partitions: {partitions}, replicas: {replicas}}}
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}?options=-c%20wal_sender_timeout%3D3s", tables: [items, log],
              heartbeat_interval: 1, progress: false, work_dir: "{tmp}/spill", reconnect_timeout: 120}}
    sink: {{type: postgres, dsn: "{dst}?options=-c%20idle_in_transaction_session_timeout%3D2000"}}
    batch: {{max_events: 500, max_wait_ms: 10}}
    retry: {{initial_delay: 0.2, max_delay: 2}}
"""
    )
    return config


def leases(dsn: str) -> dict[str, str]:
    """Live leases: name -> holder (host:pid)."""
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('ts_state.leases')").fetchone() == (None,):
            return {}  # no process has opened the state store yet
        rows = conn.execute("SELECT name, owner FROM ts_state.leases WHERE expires_at > now()").fetchall()
    return {str(n): str(o).partition("#")[0] for n, o in rows}


def holders(dsn: str) -> Counter[str]:
    return Counter(v for k, v in leases(dsn).items() if k.startswith("apply:"))


def takes(logs: list[Path]) -> dict[tuple[str, int], set[str]]:
    """Every (lease, epoch) any process took, with the processes (host:pid) that took it, from the logs."""
    found: dict[tuple[str, int], set[str]] = {}
    for log in logs:
        for lease, epoch, who in re.findall(r"took lease (\S+) \(epoch (\d+)\) as (\S+);", log.read_text()):
            found.setdefault((lease, int(epoch)), set()).add(who)
    return found


def assert_one_holder_per_epoch(logs: list[Path]) -> dict[tuple[str, int], set[str]]:
    """An epoch changes with the owner: two processes taking one (lease, epoch) would have held it at once."""
    taken = takes(logs)
    doubled = {t: who for t, who in taken.items() if len(who) > 1}
    assert not doubled, f"a lease epoch was taken by two processes: {doubled}"
    return taken


def assert_all_applied_once(src: str, dst: str, logs: list[Path]) -> None:
    cols = "id, version, payload, flag"
    wait_until(
        lambda: pg_checksum(src, "items", cols) == pg_checksum(dst, "items", cols),
        timeout=120,
        interval=0.5,
        message="the destination to equal the source",
    )
    wait_until(lambda: _count(src, "log") == _count(dst, "log"), timeout=60, message="the log rows")
    assert_applied_in_order_once(dst)
    assert_one_holder_per_epoch(logs)


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_two_processes_split_the_partitions_and_one_takes_all_after_a_kill(
    tmp_path: Path, pg_database: str, dest_db: str
) -> None:
    src, dst = pg_database, dest_db
    sql(src, ITEMS, LOG)
    sql(dst, ITEMS, LOG, AUDIT, APPLIED_BY)
    name = "cl_" + dst.rsplit("_", 1)[1]
    stream = f"TS_{secrets.token_hex(4)}"
    config = cluster_config(tmp_path, name, src, dst, "nats://127.0.0.1:4222", stream)
    logs = {p: tmp_path / f"{p}.log" for p in ("a", "b")}
    procs = {p: start_engine(config, logs[p], env={"PGAPPNAME": p}) for p in logs}
    writer = Writer(src, per_second=300)
    stop_log = False
    try:
        writer.start()
        with psycopg.connect(src, autocommit=True) as conn:
            wait_until(lambda: holders(src).total() == 4, timeout=60, message="every partition taken")
            split = wait_until(
                lambda: sorted(holders(src).values()) == [2, 2] and holders(src), timeout=60, message="a 2/2 split"
            )
            print(f"partitions split: {dict(split)}")
            view = json.loads(_cli("status", str(config), "--json", "--cluster"))
            assert view["errors"] == [] and view["stream"]["messages"] > 0
            assert sorted(len(p["leases"]) for p in view["processes"]) == [2, 3]  # one of them holds the capture too
            assert {p["holder"] for p in view["partitions"]} == set(split)
            assert [c["holder"] for c in view["captures"]] == [leases(src)[f"pipeline:{name}"]]
            for i in range(200):
                conn.execute("INSERT INTO log VALUES (%s, 'x')", (i,))
            # kill -9 the capture's owner: the next event applied must come within TTL + 5 s
            host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
            owner = leases(src)[f"pipeline:{name}"]
            victim = next(p for p, proc in procs.items() if owner == f"{host}:{proc.pid}")
            survivor = "b" if victim == "a" else "a"
            kill_engine(procs[victim])
            killed_at = time.monotonic()
            conn.execute("INSERT INTO items VALUES (-1, 1, 'after the kill', NULL)")
            wait_until(lambda: _has_marker(dst), timeout=60, interval=0.05, message="the next event applied")
            failover = time.monotonic() - killed_at
            print(f"failover: {failover:.2f} s from kill -9 of the capture's owner to the next event applied (TTL 5 s)")
            assert failover <= 5 + 5
            for i in range(200, 400):
                conn.execute("INSERT INTO log VALUES (%s, 'x')", (i,))
            me = f"{host}:{procs[survivor].pid}"
            wait_until(lambda: holders(src) == Counter({me: 4}), timeout=60, message="the survivor to hold all")
            print(f"all partitions moved {time.monotonic() - killed_at:.1f} s after the kill")
        writer.stop.set()
        writer.join()
        stop_log = True
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)
        assert_all_applied_once(src, dst, list(logs.values()))
        running(procs[survivor], logs[survivor])
        stop_engine(procs[survivor], logs[survivor])
    finally:
        writer.stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                kill_engine(proc)
    assert stop_log
    assert {r for r in _applied_by(dst)} <= {"a", "b"}
    assert len(set(_applied_by(dst))) == 2, "one process applied everything: the partitions were not split"


def _has_marker(dst: str) -> bool:
    with psycopg.connect(dst) as conn:
        return conn.execute("SELECT 1 FROM items WHERE id = -1").fetchone() is not None


def _applied_by(dst: str) -> list[str]:
    with psycopg.connect(dst) as conn:
        return [str(r[0]) for r in conn.execute("SELECT DISTINCT by_process FROM audit").fetchall()]


PGBENCH = {
    "pgbench_accounts": "aid, bid, abalance, filler",
    "pgbench_branches": "bid, bbalance, filler",
    "pgbench_tellers": "tid, bid, tbalance, filler",
    "pgbench_history": "tid, bid, aid, delta, mtime, filler",  # keyless, append-only: a doubled insert shows
}


@pytest.mark.slow
@pytest.mark.serial  # three engines, three NATS nodes and pgbench load both cores: it would slow other tests
def test_three_processes_on_a_three_node_nats_cluster_survive_ten_kills_and_a_node_outage(
    tmp_path: Path, pg_database: str, dest_db: str, mariadb_database: str
) -> None:
    from tests.integration.e2e_support import mariadb_checksum
    from tests.integration.nats_cluster import NatsCluster

    src, dst, maria = pg_database, dest_db, mariadb_database
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", src], check=True, capture_output=True)
    nodes = NatsCluster(tmp_path)
    nodes.start()
    name = "cl3_" + dst.rsplit("_", 1)[1]
    tables = "[" + ", ".join(PGBENCH) + "]"
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: "{src}?schema=ts_state"
lease: {{ttl_seconds: 5}}
cluster: {{nats: "{nodes.urls}", stream: CL3, partitions: 4, replicas: 3}}
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}?options=-c%20wal_sender_timeout%3D3s", tables: {tables},
              heartbeat_interval: 1, progress: false, work_dir: "{tmp_path}/spill", reconnect_timeout: 120}}
    sinks:
      - {{name: pg, type: postgres, dsn: "{dst}?options=-c%20idle_in_transaction_session_timeout%3D2000",
         create_tables: true}}
      - {{name: maria, type: mariadb, dsn: "{maria}", create_tables: true}}
    batch: {{max_events: 2000, max_wait_ms: 20}}
    retry: {{initial_delay: 0.2, max_delay: 2}}
"""
    )
    logs = {p: tmp_path / f"{p}.log" for p in ("a", "b", "c")}
    procs = {p: start_engine(config, logs[p], env={"PGAPPNAME": p}) for p in logs}
    rng = random.Random()
    bench = None
    kills = []
    try:
        wait_until(lambda: _rows(dst, "pgbench_accounts") == 100_000, timeout=180, interval=1, message="snapshot")
        bench = subprocess.Popen(
            ["pgbench", "-c", "2", "-R", "150", "-T", "300", "-n", src],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        node_down_at = None
        for k in range(10):
            time.sleep(rng.uniform(5, 10))  # pacing the kills, not waiting for a condition
            victim = rng.choice(list(procs))
            kill_engine(procs[victim])
            kills.append(victim)
            procs[victim] = start_engine(config, logs[victim], env={"PGAPPNAME": victim})
            if k == 2:
                nodes.stop_node(1)  # one NATS node down for 20 s: the stream keeps a quorum of two
                node_down_at = time.monotonic()
            if node_down_at is not None and time.monotonic() - node_down_at >= 20:
                nodes.start_node(1)
                node_down_at = None
        if node_down_at is not None:
            time.sleep(max(0.0, 20 - (time.monotonic() - node_down_at)))
            nodes.start_node(1)
        print(f"10 kills ({Counter(kills)}) in {time.monotonic() - started:.0f} s")
        bench.terminate()
        bench.wait(30)
        wait_caught_up(src, [f"tidesync_{name}"], timeout=180)
        for table, columns in PGBENCH.items():
            want = pg_checksum(src, table, columns)
            wait_until(partial(_equal, pg_checksum, dst, table, columns, want), timeout=180, interval=1, message=table)
            wait_until(
                partial(_equal, mariadb_checksum, maria, table, columns, want),
                timeout=180,
                interval=1,
                message=f"{table} in MariaDB",
            )
        history = pg_checksum(src, "pgbench_history", PGBENCH["pgbench_history"])[0]
        assert history > 500, "pgbench_history really grew under load"
        for p, proc in procs.items():
            running(proc, logs[p])
            stop_engine(proc, logs[p])
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
        for proc in procs.values():
            if proc.poll() is None:
                kill_engine(proc)
        nodes.stop()
    taken = assert_one_holder_per_epoch(list(logs.values()))
    assert {lease for lease, _ in taken} >= {f"apply:{name}.pg@p{n}" for n in range(4)}
    assert max(epoch for (lease, epoch) in taken if lease == f"pipeline:{name}") > 1, "the capture never moved"


def _equal(checksum: Callable[[str, str, str], tuple[int, int]], dsn: str, table: str, cols: str, want: object) -> bool:
    return checksum(dsn, table, cols) == want


def _rows(dsn: str, table: str) -> int:
    try:
        return _count(dsn, table)
    except psycopg.Error:
        return 0


@pytest.mark.slow
def test_replay_rewinds_a_sink_group_and_re_applies_what_a_restored_destination_lacks(
    tmp_path: Path, pg_database: str, dest_db: str
) -> None:

    src, dst = pg_database, dest_db
    sql(src, ITEMS, LOG)
    sql(dst, ITEMS, LOG, AUDIT)
    name = "rp_" + dst.rsplit("_", 1)[1]
    config = cluster_config(tmp_path, name, src, dst, "nats://127.0.0.1:4222", f"TS_{secrets.token_hex(4)}")
    log = tmp_path / "engine.log"
    proc = start_engine(config, log)
    cols = "id, version, payload, flag"
    try:
        sql(src, "INSERT INTO items SELECT g, 1, 'p', 'ok' FROM generate_series(1, 300) g")
        sql(src, "UPDATE items SET version = 2, payload = 'q' WHERE id % 3 = 0")
        wait_until(lambda: pg_checksum(src, "items", cols) == pg_checksum(dst, "items", cols), timeout=60)
        applied = _count(dst, "audit")

        def checkpoints() -> dict[str, int]:
            """Each partition's checkpoint (a stream sequence) in the state store."""
            with psycopg.connect(src) as conn:
                rows = conn.execute(
                    "SELECT pipeline, position FROM ts_state.checkpoints WHERE pipeline LIKE %s", (f"{name}@p%",)
                ).fetchall()
            return {str(p): int(unpack_value(bytes(pos))[0]) for p, pos in rows}

        def caught_up(before: dict[str, int]) -> bool:
            now = checkpoints()
            return all(now.get(p, 0) >= seq for p, seq in before.items())

        before = checkpoints()
        # 1. the destination holds everything: re-applying from the start changes nothing (idempotent)
        rewound = json.loads(_cli("replay", str(config), name, "--from-sequence", "1", "--json"))
        assert [r["partition"] for r in rewound] == [0, 1, 2, 3]
        assert all(r["after"] == 0 for r in rewound if r["before"]), rewound
        wait_until(lambda: caught_up(before), timeout=60, message="the workers to apply again up to where they were")
        assert _count(dst, "audit") == applied, "a replay into a destination that holds everything applied again"
        # 2. the destination restored from an (empty) backup: its rows and its applied positions are gone
        sql(dst, "DELETE FROM items WHERE id <= 100", "DELETE FROM _tidesync_applied")
        when = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
        again = json.loads(_cli("replay", str(config), name, "--from-time", when, "--json"))
        # each partition back to just before its first message (the stream's sequences are shared by all)
        assert all(r["after"] is not None and r["after"] < min(4, r["before"]) for r in again if r["before"]), again
        wait_until(
            lambda: pg_checksum(src, "items", cols) == pg_checksum(dst, "items", cols),
            timeout=60,
            message=f"the replay to restore what the destination lacked (rewound: {again})",
        )
        running(proc, log)
        stop_engine(proc, log)
    finally:
        if proc.poll() is None:
            kill_engine(proc)
    # the worker let go of each partition for each replay, and took it back
    assert log.read_text().count("handed lease apply:") >= 8


def _cli(*args: str) -> str:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
