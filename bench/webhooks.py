"""Webhook intake throughput: signed deliveries accepted (journaled in the SQLite state store) per second.

The server is one process running the intake exactly as ``tidesync run`` does
(FastAPI + uvicorn in the process's event loop, the journal in an SQLite state
store, group commit). The load generator is another process: asyncio,
``--connections`` keep-alive connections, each sending pre-signed Standard
Webhooks deliveries (unique ids, so every one is journaled) one after the
other and timing each until its 2xx. Signing happens before the clock starts,
so the generator spends its time sending.

    .venv/bin/python bench/webhooks.py                       # 10 s, 32 connections
    .venv/bin/python bench/webhooks.py --seconds 20 --connections 64 --pipeline

``--pipeline`` also runs a pipeline that drains the journal into the null
sink while the load runs (intake and apply in one process, as in production).

Target (issue 6): at least 2,000 accepted per second on one server process of
this 2-core machine, p99 time to 2xx under 50 ms. The figures are printed
beside the target as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = "whsec_" + base64.b64encode(b"bench-key-0123456789abcdef-0123").decode()
TARGET_RATE = 2000.0
TARGET_P99_MS = 50.0


# --- server process ------------------------------------------------------------------------------


def serve(port: int, state_path: str, pipeline: bool, ready: Any, stop: Any, out: Any) -> None:
    async def main() -> None:
        from tidesync.api.runtime import ApiRuntime
        from tidesync.api.server import ApiServer
        from tidesync.engine.runner import BatchPolicy, PipelineRunner
        from tidesync.sinks.null import NullSink, NullSinkConfig
        from tidesync.sources.webhook import WebhookSource, WebhookSourceConfig
        from tidesync.state import open_state_store

        config = WebhookSourceConfig.model_validate(
            {"type": "webhook", "provider": "generic", "name": "bench", "secrets": [SECRET],
             "signature": {"scheme": "standard-webhooks"},
             "mapping": {"event_id_header": "webhook-id", "entity": "bench.orders", "key": ["id"]}}
        )  # fmt: skip
        source = WebhookSource(config)
        runtime = ApiRuntime()
        runtime.add_intake(source.intake_for("bench"))
        server = ApiServer(runtime, f"127.0.0.1:{port}", state_url=f"sqlite:///{state_path}")
        await server.start()
        engine_stop = asyncio.Event()
        task = None
        if pipeline:
            store = open_state_store(f"sqlite:///{state_path}")
            await store.open()
            runner = PipelineRunner("bench", source, NullSink(NullSinkConfig()), store, batch=BatchPolicy(1000, 0.01))
            task = asyncio.create_task(runner.run(engine_stop))
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        engine_stop.set()
        if task is not None:
            await task
            await store.close()
        journal = runtime.journal
        out.put({"transactions": journal.transactions if journal else 0})
        await server.stop()

    asyncio.run(main())


# --- load generator process -------------------------------------------------------------------------


def requests_for(worker: int, count: int, port: int) -> list[bytes]:
    from tidesync.sources.webhook.signatures import sign_standard

    out = []
    ts = int(time.time())
    for i in range(count):
        msg_id = f"msg_{worker}_{i}"
        body = b'{"id": "%s", "total": "12.50", "currency": "eur", "status": "paid", "note": "%s"}' % (
            msg_id.encode(),
            b"x" * 120,
        )
        head = (
            f"POST /webhooks/bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nwebhook-id: {msg_id}\r\nwebhook-timestamp: {ts}\r\n"
            f"webhook-signature: {sign_standard(msg_id, ts, body, [SECRET])}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


async def connection(port: int, reqs: list[bytes], deadline: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for req in reqs:
            if time.perf_counter() >= deadline:
                return
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            status = int(head[9:12])
            if status != 200:
                errors.append(status)
            else:
                latencies.append(time.perf_counter() - t0)
    finally:
        writer.close()


def load(port: int, connections: int, seconds: float, per_conn: int, start: Any, out: Any) -> None:
    prepared = [requests_for(c, per_conn, port) for c in range(connections)]
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        start.wait()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(connection(port, prepared[c], deadline, latencies, errors) for c in range(connections)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    out.put({"latencies": latencies, "errors": errors, "elapsed": elapsed})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def journaled(state_path: str) -> int:
    import sqlite3

    with sqlite3.connect(state_path) as conn:
        return int(conn.execute("SELECT count(*) FROM journal WHERE source = 'bench'").fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pipeline", action="store_true", help="also apply the journal through a pipeline")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tidesync-bench-") as tmp:
        state_path = str(Path(tmp) / "state.db")
        ready, stop, start = ctx.Event(), ctx.Event(), ctx.Event()
        server_out, load_out = ctx.Queue(), ctx.Queue()
        per_conn = int(args.seconds * 6000 / args.connections) + 100  # more than can be sent in time
        server = ctx.Process(target=serve, args=(port, state_path, args.pipeline, ready, stop, server_out))
        server.start()
        loader = ctx.Process(target=load, args=(port, args.connections, args.seconds, per_conn, start, load_out))
        loader.start()
        if not ready.wait(60):
            print("server did not start", file=sys.stderr)
            return 1
        time.sleep(1.0)  # the load generator signs its requests before the clock starts
        start.set()
        result = load_out.get(timeout=args.seconds + 600)
        loader.join()
        stop.set()
        server_info = server_out.get(timeout=60)
        server.join()
        stored = journaled(state_path)
    lat = result["latencies"]
    rate = len(lat) / result["elapsed"]
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    print(f"webhook intake, {args.connections} connections, {result['elapsed']:.1f} s, "
          f"{'with' if args.pipeline else 'without'} a pipeline applying, cpu count {os.cpu_count()}")  # fmt: skip
    print(f"  accepted (2xx):   {len(lat):,}   errors: {len(result['errors'])}   journaled: {stored:,}")
    print(f"  rate:             {rate:,.0f}/s   target {TARGET_RATE:,.0f}/s   ratio {rate / TARGET_RATE:.2f}")
    print(f"  p99 time to 2xx:  {p99:.1f} ms   target < {TARGET_P99_MS:.0f} ms   ratio {p99 / TARGET_P99_MS:.2f}")
    print(f"  p50 time to 2xx:  {p50:.1f} ms")
    txs = server_info["transactions"]
    if txs:
        print(f"  journal commits:  {txs:,} ({len(lat) / txs:.1f} requests per commit)")
    ok = rate >= TARGET_RATE and p99 < TARGET_P99_MS and stored >= len(lat)
    print("  result:", "meets the target" if ok else "BELOW the target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
