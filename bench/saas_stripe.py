"""Records per second into the Stripe fake through the Stripe sink, against a rate limit of 100 requests / 10 s.

Stripe has no batch writes: one record is one request, so the limit's ceiling
is 10 records/s. The fake (:class:`~tidesync.testing.stripe.FakeStripe`, over
real HTTP on loopback) enforces the limit as a sliding window and answers 429
with ``Retry-After`` beyond it. The sink is the configured one:

- ``paced`` (default): ``rate_limit: {per_second: 10, burst: 1}``, the client's
  token bucket at the documented limit;
- ``--unpaced``: no client-side pacing (a huge bucket), so only the 429s and
  their ``Retry-After`` slow the sink down.

Customers are created (the first pass) and then updated, in writes of
``--batch`` events as the engine hands them over, ``--concurrency`` keys at once.
Prints records/s, records per request (429s included in requests), the 429s
the fake answered, and the ratio to the ceiling (target >= 0.9).

    .venv/bin/python bench/saas_stripe.py [--records 300] [--batch 100] [--unpaced]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tidesync.api.runtime import ApiRuntime
from tidesync.api.server import ApiServer
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.stripe import StripeSink, StripeSinkConfig
from tidesync.state import open_state_store
from tidesync.testing.stripe import FakeStripe

KEY = "sk_test_bench"
LIMIT, WINDOW = 100, 10.0
CEILING = LIMIT / WINDOW  # records/s: one record per request


def events(n: int, keys: int) -> list[ChangeEvent]:
    """``keys`` customers created, then updated (one changed field each) until ``n`` events."""
    out = []
    for i in range(n):
        k = i % keys
        row = {"id": k, "email": f"c{k}@example.com", "name": f"C{k}", "plan": "free" if i < keys else f"p{i}"}
        if i < keys:
            out.append(ChangeEvent("public.customers", (k,), "insert", after=row, position=(i + 1,)))
        else:
            out.append(ChangeEvent("public.customers", (k,), "update", after=row, changed=("plan",), position=(i + 1,)))
    return out


async def run(records: int, batch: int, concurrency: int, paced: bool) -> None:
    fake = FakeStripe(keys={KEY})
    fake.rate_limit = (LIMIT, WINDOW)
    server = ApiServer(ApiRuntime(), "127.0.0.1:0", app=fake.app, grace=2.0)
    await server.start()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_state_store(f"sqlite:///{Path(tmp) / 'state.db'}")
        await store.open()
        rate = {"per_second": CEILING, "burst": 1} if paced else {"per_second": 10_000}
        config = StripeSinkConfig.model_validate({
            "type": "stripe", "api_key": KEY, "base_url": server.url, "concurrency": concurrency,
            "objects": {"public.customers": "customers"}, "rate_limit": rate,
            "http": {"max_throttled": 1000},
        })  # fmt: skip
        sink = StripeSink(config)
        await sink.open(Context(pipeline="bench", name="stripe", state=store))
        todo = events(records, keys=max(1, records // 3))
        start = time.perf_counter()
        for i in range(0, len(todo), batch):
            await sink.write(todo[i : i + batch])
        elapsed = time.perf_counter() - start
        requests = sink.requests
        await sink.close()
        await store.close()
    await server.stop()
    per_s = records / elapsed
    print(f"mode                {'paced at 10/s (burst 1)' if paced else 'unpaced (429 + Retry-After only)'}")
    print(f"records             {records} in {elapsed:.1f} s ({len(fake.created('customer'))} creates)")
    print(f"records/s           {per_s:.2f}   (ceiling {CEILING:g}: {LIMIT} requests / {WINDOW:g} s, 1 record each)")
    print(f"records per request {records / requests:.3f}   ({requests} requests, {fake.throttled} answered 429)")
    print(f"ratio to ceiling    {per_s / CEILING:.3f}   (target >= 0.9)")
    if not paced:
        print("(unpaced: an empty window lets the first 100 requests through at once, so a short run beats the")
        print(" steady ceiling; the paced mode shows the steady state)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--unpaced", action="store_true")
    args = ap.parse_args()
    asyncio.run(run(args.records, args.batch, args.concurrency, not args.unpaced))


if __name__ == "__main__":
    main()
