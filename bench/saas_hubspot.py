"""HubSpot sink throughput under HubSpot's rate limit: records per second into the HubSpot fake.

The fake (``tidesync.testing.hubspot.FakeHubSpot``, served by uvicorn from a
thread) enforces a rolling limit of ``--limit`` requests per ``--interval``
seconds (default 100 per 10 s, a private app's limit), answering 429 with
``Retry-After`` beyond it and ``X-HubSpot-RateLimit-*`` headers on every
answer. The sink, with its defaults (batch_size 100; a token bucket of 10
requests per second, burst 10; holds from the rate-limit headers), writes
contact inserts in writes of ``--write`` events, as the engine would hand it
batches, for ``--seconds`` (default 30 s: three rate-limit intervals, so the
run stays under a minute; the figure is steady-state because the limit is
rolling, and the first interval's burst is not counted in the sink's favour
since the bucket never bursts above 10).

The ceiling the limit allows is ``limit / interval * 100`` records per second
(1,000/s by default). Printed: records/s, records per request (request count
includes the property-model read and any refused by 429), 429s met, and the
ratio to the ceiling. Target (issue 18): at least 0.9.

    .venv/bin/python bench/saas_hubspot.py
    .venv/bin/python bench/saas_hubspot.py --engine     # through the pipeline runner (checkpoints and all)
    .venv/bin/python bench/saas_hubspot.py --seconds 60 --write 2000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time

from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.hubspot import HubSpotSink, HubSpotSinkConfig
from tidesync.state import open_state_store
from tidesync.testing import ListSource
from tidesync.testing.hubspot import FakeHubSpot, serve_in_thread

TARGET = 0.9
TOKEN = "pat-na1-fake"


def customer(i: int) -> ChangeEvent:
    after = {"id": i, "email": f"c{i}@bench.test", "firstname": f"F{i}", "lifecyclestage": "lead"}
    return ChangeEvent("public.customers", (i,), "insert", after=after)


async def run(url: str, fake: FakeHubSpot, seconds: float, per_write: int, engine: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_state_store(f"sqlite:///{tmp}/state.db")
        await store.open()
        config = HubSpotSinkConfig.model_validate({
            "type": "hubspot", "token": TOKEN, "base_url": url,
            "objects": {"public.customers": {"type": "contacts", "id_property": "email", "exclude": ["id"]}},
        })  # fmt: skip
        sink = HubSpotSink(config)
        started = time.monotonic()
        if engine:  # the whole pipeline: an endless in-memory source, batches of --write, checkpoints
            runner = PipelineRunner("bench", ListSource(customer(i) for i in itertools.count()), sink, store,
                                    batch=BatchPolicy(per_write, 0.05))  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            await asyncio.sleep(seconds)
            stop.set()
            await task
            elapsed = time.monotonic() - started
            n = len(fake.records.get("contacts", {}))
        else:
            await sink.open(Context("bench", "sink", store))
            n = 0
            while time.monotonic() - started < seconds:
                await sink.write([customer(i) for i in range(n, n + per_write)])
                n += per_write
            elapsed = time.monotonic() - started
        requests = sink.requests
        holds = sink.pacing.holds if sink.pacing is not None else 0
        await sink.close()
        await store.close()
    return {"records": n, "elapsed": elapsed, "requests": requests, "holds": holds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to write (default 30)")
    parser.add_argument("--write", type=int, default=1000, help="events per sink write (default 1000)")
    parser.add_argument("--limit", type=int, default=100, help="requests the fake allows per interval")
    parser.add_argument("--interval", type=float, default=10.0, help="the fake's rolling interval in seconds")
    parser.add_argument("--engine", action="store_true", help="through the pipeline runner, not sink.write alone")
    args = parser.parse_args()
    fake = FakeHubSpot(rate_limit=(args.limit, args.interval), keep_bodies=False)
    with serve_in_thread(fake.app) as url:
        r = asyncio.run(run(url, fake, args.seconds, args.write, args.engine))
    rate = r["records"] / r["elapsed"]
    ceiling = args.limit / args.interval * 100
    stored = len(fake.records.get("contacts", {}))
    how = "through the pipeline runner" if args.engine else "sink.write"
    print(f"hubspot sink ({how}) -> fake, limit {args.limit} requests / {args.interval:g} s, batch size 100, "
          f"{r['elapsed']:.1f} s")  # fmt: skip
    print(f"  records written:      {r['records']:,} (in the fake: {stored:,})")
    print(f"  requests:             {r['requests']:,}   records per request {r['records'] / r['requests']:.1f}")
    print(f"  refused (429):        {fake.limited}   holds from rate-limit headers: {r['holds']}")
    print(f"  rate:                 {rate:,.0f} records/s   ceiling {ceiling:,.0f}/s   ratio {rate / ceiling:.3f}")
    ok = rate / ceiling >= TARGET and stored == r["records"]
    print("  result:", f"meets the target (>= {TARGET})" if ok else f"BELOW the target ({TARGET})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
