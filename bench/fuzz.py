"""Fuzz a real ``tidesync serve`` with 100,000 random requests: rate, 5xx, forgeries, leaks, RSS growth.

The same generator as ``tests/integration/test_security_fuzz.py``
(``tests/integration/fuzz_requests.py``): random methods, real / near-miss /
admin / webhook / garbage / very long / percent-encoded / traversal paths,
garbled and valid-looking-but-wrong signatures, odd timestamps, huge headers,
random bearer tokens (sometimes the real one), hostile bodies, and about a fifth
of the webhook requests correctly signed. The server is ``tidesync serve`` on
the harness's default config (``tests/integration/security_support.py``), in a
subprocess; requests go over raw HTTP/1.1, one connection each.

    .venv/bin/python bench/fuzz.py                         # 100,000 requests, 8 in flight
    .venv/bin/python bench/fuzz.py --count 20000 --seed 7 --concurrency 16

Limits (issue 14): no 5xx answered (no concurrency limit is configured, so no
503 either) and no 500 in the server's log, no forgery accepted, no secret in an
answer or the log, the server alive at the end, RSS within 50 MiB of its value
after a 2,000-request warm-up. Each figure is printed beside its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package holds the generator

from tests.integration.fuzz_requests import attack, server_tracebacks
from tests.integration.security_support import served

RSS_LIMIT_MIB = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="tidesync-fuzz-") as tmp, served(Path(tmp)) as server:
        url = urlsplit(server.url)
        assert url.hostname is not None and url.port is not None
        t0 = time.perf_counter()
        report = asyncio.run(
            attack(url.hostname, url.port, server.secrets, random.Random(seed), args.count, server.rss,
                   concurrency=args.concurrency, warmup=min(2000, args.count // 10), sample_every=1000)
        )  # fmt: skip
        alive = server.proc.poll() is None
        with server.client() as client:
            health = client.get("/healthz").status_code if alive else None
        log = server.output()
        wall = time.perf_counter() - t0
    logged_500 = log.count("unexpected error serving")
    log_leaks = [name for name, value in server.secrets.items() if value in log]
    growth = report.rss_growth / 2**20
    print(f"fuzz of tidesync serve: {report.sent:,} requests, {args.concurrency} in flight, seed {args.seed or seed}")
    print(f"  rate:               {report.sent / report.elapsed:,.0f} requests/s ({wall:.1f} s with start and stop)")
    print(f"  statuses:           {dict(sorted(report.statuses.items()))}")
    print(f"  signed, accepted:   {report.signed_2xx:,}")
    print(f"  5xx answered:       {len(report.server_errors)}   limit 0")
    print(f"  500s in the log:    {logged_500}   limit 0 (answered to clients already gone)")
    print(f"  forgeries accepted: {len(report.forgeries)}   limit 0")
    print(f"  secrets leaked:     {len(report.leaks)} in answers, {log_leaks or 'none'} in the log   limit 0")
    print(f"  no answer in time:  {report.statuses[-1]}")
    print(f"  RSS growth:         {growth:.1f} MiB ({report.rss_start / 2**20:.1f} -> max {report.rss_max / 2**20:.1f})"
          f"   limit {RSS_LIMIT_MIB:.0f} MiB   ratio {growth / RSS_LIMIT_MIB:.2f}")  # fmt: skip
    print(f"  server alive:       {alive and health == 200}")
    if report.server_errors or report.forgeries or report.leaks:
        print(report.findings())
    for exc, frame in server_tracebacks(log).items():
        print(f"  server traceback:   {exc}\n                      at {frame}")
    ok = (
        alive and health == 200 and not report.server_errors and not logged_500 and not report.forgeries
        and not report.leaks and not log_leaks and growth <= RSS_LIMIT_MIB and report.statuses[-1] == 0
    )  # fmt: skip
    print("  result:", "within every limit" if ok else "OUTSIDE a limit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
