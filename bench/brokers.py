"""Benchmark of the broker sinks (NATS JetStream, Redis Streams, RabbitMQ, MQTT): draining a backlog, and round trips.

    .venv/bin/python bench/brokers.py [--brokers nats,redis,rabbitmq,mqtt] [--changes 200000]
                                      [--rate 2000] [--seconds 10] [--skip-drain] [--skip-round-trip]

1. Drain, per broker. A Postgres backlog of ``--changes`` changes is written with
   bench/pg_source.py's fill (its table and SQL, imported: transactions of 100
   changes, 60 inserts, 30 updates, 10 deletes, 6 columns) after one slot per
   broker was created, so every broker drains the same backlog. Its end (the
   end of the last transaction's commit record, which the durable checkpoint
   reaches) is learned by decoding it once from a slot of its own with
   pg_source.py's decode-only loop. Then, per broker, a YAML config (Postgres
   source, that broker's sink with ``format: tidesync`` and every other key at
   its default, a SQLite state store) is run as ``python -m tidesync.cli run``,
   a subprocess, with pg_source.py's ``run_engine``: the time runs from the
   launch (interpreter start, imports and connects included) until the
   checkpoint committed in the state store covers the backlog. Changes/s.

   Reference, in the same run: a plain client loop with the library the sink
   uses (bench/broker_refs.py: nats-py JetStream publish, acks awaited in
   windows of ``max_in_flight`` = 1000; redis-py XADD in pipelines of 1000;
   aio-pika persistent publishes with confirms, windows of 1000; aiomqtt QoS 1
   publishes, windows of 1000) publishing as many messages: the tidesync JSON
   of representative events (the backlog's mix of inserts, updates and deletes
   with the same column values), serialized before the clock starts, with the
   ids the sinks attach. Its time runs from connect to the last ack. Printed:
   both rates and tidesync/reference. Targets (issue 16): >= 0.7 for JetStream
   and Redis Streams; none for RabbitMQ and MQTT.

2. Round trip, per broker: ``--rate`` changes/s (pgbench, inserts of 10 rows
   per transaction) offered for ``--seconds`` into a table of the source
   database; process 1 (``tidesync run``: Postgres source -> the broker sink)
   and process 2 (``tidesync run``: the broker source -> Postgres sink into
   another database) carry them. Latency per row = the destination
   transaction's commit time minus the source transaction's commit time, both
   read with ``pg_xact_commit_timestamp(xmin)`` (the server runs with
   ``track_commit_timestamp = on``; both databases are on one server, so one
   clock): commit to commit, exactly, with no instrumentation in the engine.
   The processes are started and a warm-up row is written every second until
   one reaches the destination (connects, slot, stream, group, queue and MQTT
   session are made by then; a row published before the reader subscribed is
   lost with MQTT); only the rows the load writes after them count. Prints
   p50/p99 per broker, and how many rows arrived within 60 s of the load's
   end. No target is set for it.

Everything created (databases, slots, NATS streams, Redis keys, RabbitMQ
exchanges and queues, MQTT sessions, temp dirs) is removed at the end, also on
failure. Needs Postgres (``TIDESYNC_BENCH_PG`` overrides the admin DSN), NATS,
Redis, RabbitMQ (guest) and Mosquitto on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import broker_refs as refs
import pg_source as pg
import psycopg

from tidesync.event import ChangeEvent, to_json
from tidesync.sinks.webhook.envelope import idempotency_id

BROKERS = ("nats", "redis", "rabbitmq", "mqtt")
TARGETS = {"nats": 0.7, "redis": 0.7}


def names(prefix: str) -> dict[str, str]:
    """Every broker object a run creates is named from ``prefix`` (cleanup finds them by these names)."""
    up = prefix.upper()
    return {
        "nats_drain": f"{up}_DRAIN",
        "nats_ref": f"{up}_REF",
        "nats_rt": f"{up}_RT",
        "mqtt_client": f"{prefix}-apply",
    }


def sink_config(broker: str, prefix: str, kind: str) -> dict[str, Any]:
    """The broker sink for ``kind`` (``drain`` or ``rt``): ``format: tidesync``, other keys at their defaults."""
    n = names(prefix)
    if broker == "nats":
        return {"type": "nats", "stream": n[f"nats_{kind}"], "subject": f"{prefix}.{kind}.{{entity}}"}
    if broker == "redis":
        return {"type": "redis", "stream": f"{prefix}.{kind}.{{entity}}", "key_prefix": prefix}
    if broker == "rabbitmq":
        return {"type": "rabbitmq", "exchange": f"{prefix}-{kind}"}
    return {"type": "mqtt", "topic": f"{prefix}/{kind}/{{entity}}"}


def source_config(broker: str, prefix: str, table: str) -> dict[str, Any]:
    """The broker source reading what :func:`sink_config` (``rt``) writes for ``public.<table>``."""
    n = names(prefix)
    if broker == "nats":
        return {"type": "nats", "stream": n["nats_rt"], "consumer": f"{prefix}-apply", "subjects": [f"{prefix}.rt.>"]}
    if broker == "redis":
        return {"type": "redis", "streams": [f"{prefix}.rt.public.{table}"], "group": "apply", "start": "0"}
    if broker == "rabbitmq":
        return {
            "type": "rabbitmq",
            "queue": f"{prefix}-rt",
            "bind": {"exchange": f"{prefix}-rt", "routing_keys": ["#"]},
        }
    return {
        "type": "mqtt",
        "topics": [f"{prefix}/rt/#"],
        "client_id": n["mqtt_client"],
        "session_expiry": 300,
    }


def write_config(path: Path, pipeline: str, source: dict[str, Any], sink: dict[str, Any]) -> Path:
    import yaml

    path.mkdir(parents=True, exist_ok=True)
    doc = {"state": f"sqlite:///{path / 'state.db'}", "pipelines": [{"name": pipeline, "source": source, "sink": sink}]}
    (path / "tidesync.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return path / "tidesync.yaml"


def pg_source_config(dsn: str, tables: list[str], slot: str, work: Path, **extra: Any) -> dict[str, Any]:
    return {
        "type": "postgres",
        "dsn": dsn,
        "tables": tables,
        "slot": slot,
        "snapshot": "never",
        "work_dir": str(work),
        **extra,
    }


# ---------------------------------------------------------------- the reference's messages


def representative(n: int, pipeline: str) -> tuple[list[bytes], list[str]]:
    """``n`` tidesync JSON payloads of events like the backlog's (60/30/10 % insert/update/delete) and their ids."""
    payloads, ids = [], []
    now = time.time()
    stamp = dt.datetime.now(dt.UTC)
    for i in range(n):
        tx, k = divmod(i, 100)
        g = tx * 60 + k + 1
        row = {"id": g, "a": g % 1000, "b": uuid.uuid4().hex, "c": Decimal(g) / 7, "d": stamp, "e": g % 2 == 0}
        position = (0x16000000 + tx * 20_000, k)
        if k < 60:
            event = ChangeEvent("public.bench", (g,), "insert", None, row, None, position, now, None, 1000 + tx)
        elif k < 90:
            row |= {"a": row["a"] + 1, "b": f"updated {g}", "e": not row["e"]}
            event = ChangeEvent("public.bench", (g,), "update", None, row, ("a", "b", "e"), position, now, None, tx)
        else:
            event = ChangeEvent("public.bench", (g,), "delete", {"id": g}, None, None, position, now, None, tx)
        payloads.append(to_json(event))
        ids.append(idempotency_id(pipeline, "sink", event))
    return payloads, ids


async def reference(broker: str, prefix: str, payloads: list[bytes], ids: list[str]) -> float:
    n = names(prefix)
    if broker == "nats":
        return await refs.publish_nats(n["nats_ref"], f"{prefix}.ref.public.bench", payloads, ids)
    if broker == "redis":
        return await refs.publish_redis(f"{prefix}.ref", payloads)
    if broker == "rabbitmq":
        return await refs.publish_rabbitmq(f"{prefix}-ref", f"{prefix}-ref", payloads, ids)
    return await refs.publish_mqtt(f"{prefix}/ref", payloads, ids)


async def bind_drain_queue(prefix: str) -> None:
    """The rabbitmq sink publishes ``mandatory``: a queue is bound to its exchange first, as a user would."""
    import aio_pika

    conn = await aio_pika.connect(refs.AMQP_URL)
    try:
        channel = await conn.channel()
        ex = await channel.declare_exchange(f"{prefix}-drain", aio_pika.ExchangeType.TOPIC, durable=True)
        q = await channel.declare_queue(f"{prefix}-drain", durable=True)
        await q.bind(ex, "#")
    finally:
        await conn.close()


# ---------------------------------------------------------------- 1. drain


def drain(args: argparse.Namespace, dsn: str, prefix: str, slots: dict[str, str], work: Path) -> None:
    end_lsn = pg.fill(dsn, args.changes)
    took, count, last = asyncio.run(pg.drain_tidesync(dsn, prefix, args.changes, 1000, work / "decode"))
    if last is None:
        raise RuntimeError(f"decoding the backlog gave no transaction end ({count} events)")
    pg.run_sql(pg.ADMIN, f"SELECT pg_drop_replication_slot('{slots.pop('decode')}')")
    print(f"end of the backlog found by decoding it ({count:,} events in {took:.2f}s); WAL insert point {end_lsn}")
    built = time.perf_counter()
    payloads, ids = representative(args.changes, prefix)
    size = statistics.mean(len(p) for p in payloads[:1000])
    print(f"reference messages: {len(payloads):,} serialized in {time.perf_counter() - built:.1f}s, {size:.0f} B each")
    for broker in args.brokers:
        if broker == "rabbitmq":
            asyncio.run(bind_drain_queue(prefix))
        pipeline = f"{prefix}_{broker}"
        d = work / f"drain_{broker}"
        source = pg_source_config(dsn, ["bench"], slots[broker], d, publication="bench_pub")
        config = write_config(d, pipeline, source, sink_config(broker, prefix, "drain"))
        got = asyncio.run(pg.run_engine(config, pipeline, last, timeout=max(300.0, args.changes / 500)))
        pg.run_sql(pg.ADMIN, f"SELECT pg_drop_replication_slot('{slots.pop(broker)}')")  # stop holding WAL
        label = f"{broker:8} tidesync run (Postgres -> {broker} sink, durable checkpoint):"
        if isinstance(got, str):
            print(f"{label} failed: {got}")
            continue
        seconds, first, applied = got
        ours = args.changes / seconds
        ref_seconds = asyncio.run(reference(broker, prefix, payloads, ids))
        theirs = len(payloads) / ref_seconds
        ratio = ours / theirs
        target = TARGETS.get(broker)
        verdict = "" if target is None else f" (target >= {target}: {'met' if ratio >= target else 'NOT met'})"
        print(
            f"{label} {args.changes:,} changes in {seconds:.2f}s = {ours:,.0f}/s "
            f"(first checkpoint {first:.2f}s after launch, {args.changes / max(seconds - first, 1e-9):,.0f}/s from it; "
            f"{applied:,} events applied)\n"
            f"{'':9}reference ({REF_LABEL[broker]}): "
            f"{len(payloads):,} messages in {ref_seconds:.2f}s = {theirs:,.0f}/s\n"
            f"{'':9}ratio {ratio:.2f}{verdict}"
        )


REF_LABEL = {
    "nats": "nats-py JetStream publish, acks awaited in windows of 1000",
    "redis": "redis-py XADD MAXLEN ~ 1000000, pipelines of 1000",
    "rabbitmq": "aio-pika persistent publish with confirms, windows of 1000",
    "mqtt": "aiomqtt MQTT 5 QoS 1 publish, windows of 1000",
}


# ---------------------------------------------------------------- 2. round trip


def launch(config: Path) -> subprocess.Popen[bytes]:
    log = (config.parent / "run.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "tidesync.cli", "run", str(config)], stdout=log, stderr=log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # drain and stop, as an operator would
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(config: Path) -> str:
    lines = (config.parent / "run.log").read_text(errors="replace").strip().splitlines()
    return " | ".join(lines[-3:])


def commit_times(dsn: str, table: str, after_id: int) -> dict[int, float]:
    rows = pg.run_sql(
        dsn, f"SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 FROM {table} WHERE id > {after_id}"
    )
    return {int(i): float(t) for i, t in rows}


def wait_rows(dsn: str, table: str, after_id: int, count: int, procs: list[tuple[str, Any]], timeout: float) -> int:
    """Waits until the destination holds ``count`` rows with id > ``after_id``; returns how many it holds."""
    deadline = time.monotonic() + timeout
    while True:
        have = int(pg.run_sql(dsn, f"SELECT count(*) FROM {table} WHERE id > {after_id}")[0][0])
        if have >= count or time.monotonic() > deadline:
            return have
        for name, (proc, config) in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log_tail(config)}")
        time.sleep(0.1)


def round_trip(args: argparse.Namespace, broker: str, src: str, dst: str, prefix: str, work: Path) -> str:
    table = f"lat_{broker}"
    ddl = f"CREATE TABLE {table} (id bigserial PRIMARY KEY, a int, b text)"
    pg.run_sql(src, ddl)
    pg.run_sql(dst, ddl)
    d = work / f"rt_{broker}"
    capture = write_config(
        d / "capture",
        f"{prefix}_{broker}_cap",
        pg_source_config(src, [table], f"{prefix}_{broker}_rt", d / "capture"),
        sink_config(broker, prefix, "rt"),
    )
    apply = write_config(
        d / "apply", f"{prefix}_{broker}_apply", source_config(broker, prefix, table), {"type": "postgres", "dsn": dst}
    )
    procs = {"apply": (launch(apply), apply)}  # the reading side first: its queue or session exists before publishing
    procs["capture"] = (launch(capture), capture)
    try:
        # one row through first: connects, slot, stream, group, queue and session are made before the clock
        started = time.monotonic()
        while not pg.run_sql(pg.ADMIN, f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{prefix}_{broker}_rt'"):
            if time.monotonic() - started > 60:
                raise RuntimeError(f"the capture process made no slot in 60s: {log_tail(capture)}")
            time.sleep(0.1)
        # a row published before the reader subscribed is gone (MQTT without a session yet): send
        # one a second until one arrives; the load's rows are those after the last one sent
        first = warm = 0
        while warm == 0 or wait_rows(dst, table, first - 1, 1, list(procs.items()), 1) < 1:
            if time.monotonic() - started > 120:
                raise RuntimeError(f"no warm-up row arrived in 120s: {log_tail(capture)} / {log_tail(apply)}")
            warm = int(pg.run_sql(src, f"INSERT INTO {table} (a, b) VALUES (0, 'warm-up') RETURNING id")[0][0])
            first = first or warm
        script = d / "load.sql"
        script.write_text(f"INSERT INTO {table} (a, b) SELECT g, 'row ' || g FROM generate_series(1, 10) g;\n")
        t0 = time.perf_counter()
        load = ["pgbench", "-n", "-c", "2", "-j", "1", "-R", str(args.rate // 10), "-T", str(args.seconds)]
        subprocess.run(
            [*load, "-f", str(script), src],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        offered = time.perf_counter() - t0
        sent = commit_times(src, table, warm)
        have = wait_rows(dst, table, warm, len(sent), list(procs.items()), 60)
        arrived = commit_times(dst, table, warm)
    finally:
        for proc, _ in procs.values():
            stop(proc)
        slot = f"{prefix}_{broker}_rt"
        pg.run_sql(
            pg.ADMIN, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        )
    lat = sorted((arrived[i] - sent[i]) * 1000 for i in sent if i in arrived)
    if not lat:
        return f"{broker:8} round trip: no rows arrived"
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return (
        f"{broker:8} round trip at {len(sent) / offered:,.0f} changes/s: p50 {statistics.median(lat):.1f} ms, "
        f"p99 {p99:.1f} ms, max {lat[-1]:.1f} ms ({len(lat):,} of {len(sent):,} rows arrived"
        + ("" if have >= len(sent) else ", the rest NOT within 60 s of the load's end")
        + ")"
    )


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", type=lambda v: [b.strip() for b in v.split(",") if b.strip()], default=BROKERS)
    parser.add_argument("--changes", type=int, default=200_000, help="changes in the backlog (multiple of 100)")
    parser.add_argument("--rate", type=int, default=2000, help="changes/s offered in the round trip")
    parser.add_argument("--seconds", type=int, default=10, help="seconds the round-trip load lasts")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--skip-round-trip", action="store_true")
    args = parser.parse_args()
    unknown = set(args.brokers) - set(BROKERS)
    if unknown:
        parser.error(f"--brokers: unknown {sorted(unknown)}; known: {', '.join(BROKERS)}")

    prefix = f"tsb{uuid.uuid4().hex[:8]}"
    db, dst_db = f"bench_{prefix}", f"bench_{prefix}_dst"
    pg.run_sql(pg.ADMIN, f'CREATE DATABASE "{db}"', f'CREATE DATABASE "{dst_db}"')
    dsn, dst = pg.dsn_for(db), pg.dsn_for(dst_db)
    slots = {b: f"{prefix}_{b}" for b in args.brokers} | {"decode": f"tidesync_{prefix}"}
    try:
        with tempfile.TemporaryDirectory(prefix="tidesync-bench-") as tmp:
            work = Path(tmp)
            if not args.skip_drain:
                (work / "decode").mkdir()
                pg.run_sql(
                    dsn,
                    pg.TABLE,
                    "INSERT INTO bench SELECT g, g % 1000, md5(g::text), g / 7.0, now(), true"
                    " FROM generate_series(1, 60) g",
                    "CREATE PUBLICATION bench_pub FOR TABLE bench",
                    *(f"SELECT pg_create_logical_replication_slot('{s}', 'pgoutput')" for s in slots.values()),
                )
                drain(args, dsn, prefix, slots, work)
            if not args.skip_round_trip:
                print(
                    f"round trip, {args.rate:,} changes/s offered for {args.seconds}s: Postgres -> broker sink "
                    "(process 1) -> broker source -> Postgres sink (process 2), source commit -> destination commit"
                )
                for broker in args.brokers:
                    try:
                        print(round_trip(args, broker, dsn, dst, prefix, work), flush=True)
                    except (RuntimeError, subprocess.CalledProcessError, psycopg.Error) as exc:
                        print(f"{broker:8} round trip failed: {exc}", flush=True)
    finally:
        n = names(prefix)
        problems = asyncio.run(
            refs.cleanup(
                prefix, nats_streams=[n["nats_drain"], n["nats_ref"], n["nats_rt"]], mqtt_clients=[n["mqtt_client"]]
            )
        )
        with psycopg.connect(pg.ADMIN, autocommit=True) as conn:
            for (slot,) in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (db,)
            ).fetchall():
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{dst_db}" WITH (FORCE)')
        for p in problems:
            print(f"cleanup: {p}")


if __name__ == "__main__":
    main()
