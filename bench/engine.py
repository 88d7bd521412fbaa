"""Engine overhead: 1,000,000 events from an in-memory source through rename+cast into a no-op sink.

Prints events/second and µs/event for the whole engine (read, transform,
queue, deliver, checkpoint per batch in a real SQLite state store), beside the
same rename+cast done by a bare loop over the same events in this process (the
floor for that work in Python), and resident memory sampled through the run
(it must stay flat: the source is a generator, nothing accumulates).

    .venv/bin/python bench/engine.py [--events 1000000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from collections.abc import Iterator

import psutil

from tidesync.engine import BatchPolicy, PipelineRunner
from tidesync.event import ChangeEvent
from tidesync.sinks.null import NullSink, NullSinkConfig
from tidesync.state import open_state_store
from tidesync.testing import ListSource
from tidesync.transform import compile_transforms, parse_steps

TARGET = 200_000  # events/s, from the foundation issue
STEPS = [{"rename": {"email": "email_address"}}, {"cast": {"score": "string"}}]


def events(n: int) -> Iterator[ChangeEvent]:
    for i in range(n):
        yield ChangeEvent(
            "public.customers",
            (i,),
            "insert" if i % 3 else "update",
            after={
                "id": i,
                "name": "customer",
                "email": "c@example.com",
                "score": i % 1000,
                "tier": "pro",
                "active": True,
            },
            changed=None if i % 3 else ("score",),
            position=(i,),
            committed_at=1.0,
        )


def bare_loop(n: int, batch: int) -> float:
    """The same rename+cast with no engine: a dict comprehension per event and a new event."""
    start = time.perf_counter()
    buf: list[ChangeEvent] = []
    for ev in events(n):
        row = ev.after
        assert row is not None
        new = {("email_address" if k == "email" else k): v for k, v in row.items()}
        new["score"] = str(new["score"])
        buf.append(ev.replace(after=new))
        if len(buf) >= batch:
            buf = []
    return time.perf_counter() - start


def generation_only(n: int) -> float:
    start = time.perf_counter()
    for _ in events(n):
        pass
    return time.perf_counter() - start


async def engine_run(n: int, batch: int, state_dir: str) -> tuple[float, list[float]]:
    store = open_state_store(f"sqlite:///{state_dir}/state.db")
    await store.open()
    source = ListSource(events(n), stamp=False)
    transform = compile_transforms(parse_steps(STEPS))
    runner = PipelineRunner(
        "bench", source, NullSink(NullSinkConfig()), store, transform=transform, batch=BatchPolicy(batch, 0.01)
    )
    proc = psutil.Process(os.getpid())
    rss: list[float] = []
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))
    next_mark = n // 10
    while runner.stats.events_written < n:
        await asyncio.sleep(0.05)
        if runner.stats.events_written >= next_mark:
            rss.append(proc.memory_info().rss / 2**20)
            next_mark += n // 10
        if task.done():
            task.result()
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    await store.close()
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    n = args.events
    gc.collect()
    gen = generation_only(n)
    bare = bare_loop(n, args.batch)
    with tempfile.TemporaryDirectory() as d:
        elapsed, rss = asyncio.run(engine_run(n, args.batch, d))
    rate = n / elapsed
    print(f"events: {n:,} in batches of {args.batch}; rename 1 field + cast 1 field; 6-field rows")
    print(f"source generation alone:      {gen:6.2f} s  ({gen / n * 1e6:5.2f} µs/event)")
    print(f"bare rename+cast loop:        {bare:6.2f} s  ({bare / n * 1e6:5.2f} µs/event)")
    print(f"tidesync engine, end to end:  {elapsed:6.2f} s  ({elapsed / n * 1e6:5.2f} µs/event) = {rate:,.0f} events/s")
    overhead = (elapsed - gen) / n * 1e6
    print(f"engine cost beyond generating the events: {overhead:.2f} µs/event")
    print(
        f"target ≥ {TARGET:,} events/s: {rate / TARGET:.2f}x target; engine/bare-loop time ratio {elapsed / bare:.2f}"
    )
    print("resident memory at each 10% of the run (MiB): " + ", ".join(f"{m:.0f}" for m in rss))
    if rss:
        print(f"memory growth first→last sample: {rss[-1] - rss[0]:+.1f} MiB")


if __name__ == "__main__":
    main()
