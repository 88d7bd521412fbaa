"""SaaS sinks under a rate limit: records per second into the HubSpot and Stripe fakes (issue 18).

Both fakes (``tidesync.testing.hubspot.FakeHubSpot``, ``tidesync.testing.stripe.FakeStripe``)
are served over real HTTP on loopback by uvicorn from a thread, and enforce a
rolling limit of ``--limit`` requests per ``--interval`` seconds (default 100 per
10 s), answering 429 with ``Retry-After`` beyond it. Each sink writes with the
API's real batch size, so the ceiling the limit allows is ``limit / interval``
times the records one request carries:

- ``hubspot``: batch upserts of 100 contacts (ceiling 1,000 records/s by
  default). The sink runs with its defaults (batch_size 100; a token bucket of
  10 requests per second, burst 10; holds from the ``X-HubSpot-RateLimit-*``
  headers) and writes contact inserts in writes of ``--write`` events, as the
  engine would hand it batches, for ``--seconds`` (default 30 s: three
  intervals; the limit is rolling, so the figure is steady state). ``--engine``
  runs it behind the pipeline runner (checkpoints and all).
- ``stripe``: no batch writes, one record per request (ceiling 10 records/s).
  ``--records`` customer changes (a third created, then updated) in writes of
  ``--batch`` events, ``--concurrency`` keys at once; paced by
  ``rate_limit: {per_second: limit / interval, burst: 1}``, or with
  ``--unpaced`` by the 429s and their ``Retry-After`` alone.

Printed per sink: records/s, records per request (requests include any refused
with 429, and HubSpot's property-model read), the 429s met, and the ratio to the
ceiling; the target is at least 0.9. Exits 1 when a sink chosen misses it.

    .venv/bin/python bench/saas.py                      # both sinks
    .venv/bin/python bench/saas.py --sink hubspot --engine --seconds 60 --write 2000
    .venv/bin/python bench/saas.py --sink stripe --records 300 --unpaced
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.hubspot import HubSpotSink, HubSpotSinkConfig
from tidesync.sinks.stripe import StripeSink, StripeSinkConfig
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import ListSource
from tidesync.testing.hubspot import FakeHubSpot, serve_in_thread
from tidesync.testing.stripe import FakeStripe

TARGET = 0.9
HUBSPOT_TOKEN = "pat-na1-fake"
STRIPE_KEY = "sk_test_bench"
HUBSPOT_BATCH = 100  # inputs per HubSpot batch call


async def _store(tmp: str) -> StateStore:
    store = open_state_store(f"sqlite:///{Path(tmp) / 'state.db'}")
    await store.open()
    return store


# --- HubSpot ------------------------------------------------------------------------------------------


def contact(i: int) -> ChangeEvent:
    after = {"id": i, "email": f"c{i}@bench.test", "firstname": f"F{i}", "lifecyclestage": "lead"}
    return ChangeEvent("public.customers", (i,), "insert", after=after)


async def hubspot(url: str, fake: FakeHubSpot, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await _store(tmp)
        config = HubSpotSinkConfig.model_validate({
            "type": "hubspot", "token": HUBSPOT_TOKEN, "base_url": url,
            "objects": {"public.customers": {"type": "contacts", "id_property": "email", "exclude": ["id"]}},
        })  # fmt: skip
        sink = HubSpotSink(config)
        started = time.monotonic()
        if args.engine:  # an endless in-memory source, batches of --write, checkpoints
            runner = PipelineRunner("bench", ListSource(contact(i) for i in itertools.count()), sink, store,
                                    batch=BatchPolicy(args.write, 0.05))  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            await asyncio.sleep(args.seconds)
            stop.set()
            await task
            elapsed = time.monotonic() - started
            n = len(fake.records.get("contacts", {}))
        else:
            await sink.open(Context("bench", "sink", store))
            n = 0
            while time.monotonic() - started < args.seconds:
                await sink.write([contact(i) for i in range(n, n + args.write)])
                n += args.write
            elapsed = time.monotonic() - started
        requests, holds = sink.requests, sink.pacing.holds if sink.pacing is not None else 0
        await sink.close()
        await store.close()
    stored = len(fake.records.get("contacts", {}))
    how = "through the pipeline runner" if args.engine else "sink.write"
    note = f"in the fake: {stored:,}; holds from rate-limit headers: {holds}"
    return {"name": f"hubspot sink ({how}), batch size {HUBSPOT_BATCH}", "records": n, "elapsed": elapsed,
            "requests": requests, "refused": fake.limited, "per_request": HUBSPOT_BATCH, "note": note,
            "complete": stored == n}  # fmt: skip


# --- Stripe -------------------------------------------------------------------------------------------


def customer_changes(n: int, keys: int) -> list[ChangeEvent]:
    """``keys`` customers created, then updated (one changed field each) until ``n`` events."""
    out = []
    for i in range(n):
        k = i % keys
        row = {"id": k, "email": f"c{k}@example.com", "name": f"C{k}", "plan": "free" if i < keys else f"p{i}"}
        op, changed = ("insert", None) if i < keys else ("update", ("plan",))
        out.append(ChangeEvent("public.customers", (k,), op, after=row, changed=changed, position=(i + 1,)))
    return out


async def stripe(url: str, fake: FakeStripe, args: argparse.Namespace) -> dict[str, Any]:
    per_second = args.limit / args.interval
    with tempfile.TemporaryDirectory() as tmp:
        store = await _store(tmp)
        rate = {"per_second": per_second, "burst": 1} if not args.unpaced else {"per_second": 10_000}
        config = StripeSinkConfig.model_validate({
            "type": "stripe", "api_key": STRIPE_KEY, "base_url": url, "concurrency": args.concurrency,
            "objects": {"public.customers": "customers"}, "rate_limit": rate, "http": {"max_throttled": 1000},
        })  # fmt: skip
        sink = StripeSink(config)
        await sink.open(Context(pipeline="bench", name="stripe", state=store))
        todo = customer_changes(args.records, keys=max(1, args.records // 3))
        started = time.monotonic()
        for i in range(0, len(todo), args.batch):
            await sink.write(todo[i : i + args.batch])
        elapsed = time.monotonic() - started
        requests = sink.requests
        await sink.close()
        await store.close()
    keys = max(1, args.records // 3)
    mode = "unpaced (429 + Retry-After only)" if args.unpaced else f"paced at {per_second:g}/s (burst 1)"
    note = f"{len(fake.created('customer'))} creates"
    if args.unpaced:
        note += "; unpaced, an empty window lets a whole interval's requests through at once: a short run beats it"
    return {"name": f"stripe sink, {mode}, 1 record per request", "records": args.records, "elapsed": elapsed,
            "requests": requests, "refused": fake.throttled, "per_request": 1, "note": note,
            "complete": len(fake.created("customer")) == keys}  # fmt: skip


# --- both -------------------------------------------------------------------------------------------


def report(r: dict[str, Any], args: argparse.Namespace) -> bool:
    rate = r["records"] / r["elapsed"]
    ceiling = args.limit / args.interval * r["per_request"]
    print(f"{r['name']} -> fake, limit {args.limit} requests / {args.interval:g} s, {r['elapsed']:.1f} s")
    print(f"  records written:      {r['records']:,} ({r['note']})")
    print(f"  requests:             {r['requests']:,}   records per request {r['records'] / r['requests']:.2f}")
    print(f"  refused (429):        {r['refused']}")
    print(f"  rate:                 {rate:,.2f} records/s   ceiling {ceiling:,.0f}/s   ratio {rate / ceiling:.3f}")
    ok = bool(rate / ceiling >= TARGET and r["complete"])
    print("  result:", f"meets the target (>= {TARGET})" if ok else f"BELOW the target ({TARGET})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sink", choices=["hubspot", "stripe", "both"], default="both", help="default both")
    parser.add_argument("--limit", type=int, default=100, help="requests the fakes allow per interval (100)")
    parser.add_argument("--interval", type=float, default=10.0, help="the fakes' rolling interval in seconds (10)")
    hs = parser.add_argument_group("hubspot")
    hs.add_argument("--seconds", type=float, default=30.0, help="how long to write (default 30)")
    hs.add_argument("--write", type=int, default=1000, help="events per sink write (default 1000)")
    hs.add_argument("--engine", action="store_true", help="through the pipeline runner, not sink.write alone")
    st = parser.add_argument_group("stripe")
    st.add_argument("--records", type=int, default=300, help="customer changes to write (default 300)")
    st.add_argument("--batch", type=int, default=100, help="events per sink write (default 100)")
    st.add_argument("--concurrency", type=int, default=4, help="keys written at once (default 4)")
    st.add_argument("--unpaced", action="store_true", help="no client-side pacing: 429s and Retry-After only")
    args = parser.parse_args()
    ok = True
    if args.sink in ("hubspot", "both"):
        fake = FakeHubSpot(rate_limit=(args.limit, args.interval), keep_bodies=False)
        with serve_in_thread(fake.app) as url:
            ok &= report(asyncio.run(hubspot(url, fake, args)), args)
    if args.sink in ("stripe", "both"):
        fake_stripe = FakeStripe(keys={STRIPE_KEY})
        fake_stripe.rate_limit = (args.limit, args.interval)
        with serve_in_thread(fake_stripe.app) as url:
            ok &= report(asyncio.run(stripe(url, fake_stripe, args)), args)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
