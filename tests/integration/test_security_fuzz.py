"""A fuzz of a real ``tidesync serve`` over HTTP: random requests at every route, signed and forged.

5,000 requests (``TIDESYNC_FUZZ_COUNT``) drawn by :mod:`tests.integration.fuzz_requests`
from a seeded RNG (printed; ``TIDESYNC_FUZZ_SEED=<seed>`` replays a run), eight in
flight, against the harness's default config: four webhook sources (Stripe, GitHub,
generic HMAC, Standard Webhooks) and the admin API behind a token. About a fifth
of the webhook requests are correctly signed, so the fuzz also reaches splitting,
journaling and mapping. Whatever arrives:

- no answer is a 5xx (the config sets no concurrency limit, so not even a 503),
  and the server's log shows no 500 it answered to a client already gone;
- no forgery gets a 2xx: a webhook route only for a correct signature of that
  source, an admin route only with the real token;
- no answer carries a secret or the token, and the server's log holds none;
- the server stays up and answers ``/healthz``; its pipelines are not failed;
- its RSS stays within 50 MiB of the value measured after a 500-request warm-up.

``bench/fuzz.py`` runs the same generator for 100,000 requests.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.fuzz_requests import FuzzRequest, attack, server_tracebacks
from tests.integration.security_support import served

RSS_LIMIT = 50 * 2**20


def test_thousands_of_random_requests_get_no_5xx_no_forgery_no_leak_and_bounded_memory(tmp_path: Path) -> None:
    seed = int(os.environ.get("TIDESYNC_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    count = int(os.environ.get("TIDESYNC_FUZZ_COUNT") or 5000)
    print(f"fuzz seed {seed} (replay: TIDESYNC_FUZZ_SEED={seed})")
    with served(tmp_path) as server:
        url = urlsplit(server.url)
        assert url.hostname is not None and url.port is not None
        report = asyncio.run(attack(url.hostname, url.port, server.secrets, random.Random(seed), count, server.rss))
        print(report.summary())
        alive = server.proc.poll() is None
        with server.client() as client:
            health = client.get("/healthz").status_code if alive else None
            pipelines = client.get("/api/pipelines", headers=server.auth).json() if alive else []
        log = server.output()
    tracebacks = "\n".join(f"{exc}\n    at {frame}" for exc, frame in server_tracebacks(log).items())
    context = f"seed {seed}: {report.summary()}\n{report.findings()}\nserver tracebacks:\n{tracebacks}"
    assert alive and health == 200, context
    assert report.sent == count and report.statuses[-1] == 0, context  # every request answered or refused in time
    assert not report.server_errors, context
    # A 500 the client never saw (it had sent a broken body and gone) is still the server failing on input.
    assert log.count("unexpected error serving") == 0, context
    assert not report.forgeries, context
    assert not report.leaks, context
    assert not [name for name, value in server.secrets.items() if value in log], context
    assert report.rss_growth <= RSS_LIMIT, context
    assert [p["name"] for p in pipelines if p["state"] == "failed"] == [], pipelines
    # The fuzz must reach past the signatures and the token, or it proves little.
    assert report.signed_2xx >= count // 50 and report.statuses[401] >= count // 10, context
    assert report.statuses[400] and report.statuses[404] and report.statuses[413], context


def test_the_judge_calls_a_2xx_without_signature_or_token_a_forgery() -> None:
    """What :meth:`FuzzRequest.may_succeed` allows: the fuzz's forgery count is only as good as this."""

    def req(method: str, target: bytes, signed_for: str | None = None, authorized: bool = False) -> FuzzRequest:
        return FuzzRequest(method, target, (), b"{}", signed_for, authorized, "hand")

    assert req("POST", b"/webhooks/stripe", "stripe").may_succeed()
    assert req("POST", b"/webhooks/%73tripe?x=1", "stripe").may_succeed()  # the server decodes the path
    assert not req("POST", b"/webhooks/stripe").may_succeed()
    assert not req("POST", b"/webhooks/stripe", authorized=True).may_succeed()  # the token signs no webhook
    assert not req("POST", b"/webhooks/github", "stripe").may_succeed()
    assert not req("GET", b"/webhooks/stripe", "stripe").may_succeed()
    assert not req("GET", b"/api/pipelines").may_succeed()
    assert not req("GET", b"/metrics").may_succeed()
    assert not req("GET", b"/dashboard/../api/pipelines").may_succeed()
    assert req("GET", b"/api/pipelines", authorized=True).may_succeed()
    assert req("GET", b"/dashboard").may_succeed() and req("HEAD", b"/healthz").may_succeed()
