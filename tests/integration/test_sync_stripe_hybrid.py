"""Stripe customers as a two-way sync side detected by webhooks, with the Events API poller as the safety net.

The side's source is ``type: hybrid``: a Stripe webhook primary (the real
intake, served by the HTTP server ``tidesync run`` starts: :func:`build_api`
on the engine) and the ``stripe`` polling source as its fallback. The API is
the local fake (:class:`tidesync.testing.stripe.FakeStripe`); a
:class:`Forwarder` plays Stripe's webhook sender: it signs and POSTs every
event the fake makes (a person's edits and the sync's own writes alike),
except those it is told to lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import stripe

from tests.integration.test_sync_hubspot import marks, settled
from tests.integration.test_sync_stripe import (
    COLUMNS,
    KEY,
    PG,
    add_customer,
    by_email,
    customers,
    event_polls,
    stripe_source,
)
from tests.integration.test_sync_support import Side, SyncHarness, pg_source, versions
from tests.integration.webhook_support import JSON, serve
from tidesync.api.server import ApiServer, build_api
from tidesync.api.wanted import api_wanted, webhook_sources
from tidesync.config import load_config
from tidesync.engine.build import build_engine
from tidesync.errors import ConfigError
from tidesync.sinks.stripe.endpoint import StripeEndpoint
from tidesync.sources.hybrid import HybridSource
from tidesync.sources.webhook import WebhookSource
from tidesync.sync.build import build_parts
from tidesync.testing import eventually
from tidesync.testing.stripe import FakeStripe

SECRET = "whsec_sync_hybrid"


@pytest.fixture
async def stripe_api() -> AsyncIterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    async with serve(app=fake.app) as api:
        yield fake, api.url


class Forwarder:
    """Stripe's webhook sender: every event the fake makes, signed and POSTed in order, unless ``lose(event)``."""

    def __init__(self, fake: FakeStripe, url: str, lose: Callable[[dict[str, Any]], bool] = lambda e: False) -> None:
        self.fake = fake
        self.url = url
        self.lose = lose
        self.done = 0  # events of fake.events handled (sent or lost)
        self.lost: list[str] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def caught_up(self) -> bool:
        return self.done == len(self.fake.events)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                while self.done < len(self.fake.events):
                    event = self.fake.events[self.done]
                    if self.lose(event):
                        self.lost.append(event["id"])
                    else:
                        body = msgspec.json.encode(event)
                        sig = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
                        answer = await client.post(self.url, content=body, headers={**JSON, "stripe-signature": sig})
                        assert answer.status_code == 200, answer.text
                    self.done += 1
                await asyncio.sleep(0.02)  # the sender's own pace: it looks for new events 50 times a second

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def config(name: str, a: Side, tmp: Path, url: str, poll: str, grace: str = "10s") -> str:
    primary = '{type: webhook, provider: stripe, secrets: ["${env:STRIPE_TEST_WHSEC}"], stripe: {backfill: false}}'
    fallback = stripe_source(url, poll)
    return f"""
state: sqlite:///{tmp / "state.db"}
syncs:
  - name: {name}
    a: {{source: {pg_source(a.dsn, "customers", tmp / "wa")}, table: customers, key: id}}
    b:
      source: {{type: hybrid, primary: {primary}, fallback: {fallback}, grace: {grace}}}
      key: id
    fields: {{email: email, name: name, phone: phone, note: description}}
    match: {{by: email}}
    rules: {{default: lww, skew: 0s}}
    batch: {{max_events: 200, max_wait_ms: 20}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""


def harness(
    db: str,
    tmp: Path,
    stripe_api: tuple[FakeStripe, str],
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    poll: str,
    grace: str = "10s",
) -> tuple[Side, SyncHarness]:
    """Postgres side ``a`` (the customers set up in both) and the sync's harness, its config written."""
    fake, url = stripe_api
    monkeypatch.setenv("STRIPE_TEST_KEY", KEY)
    monkeypatch.setenv("STRIPE_TEST_WHSEC", SECRET)
    a = Side("pg", db)
    setup(a, fake)
    h = SyncHarness(tmp, f"{prefix}{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h.name, a, tmp, url, poll=poll, grace=grace)
    return a, h


@contextlib.asynccontextmanager
async def running_with_api(h: SyncHarness) -> AsyncIterator[ApiServer]:
    """The engine and its HTTP server as ``tidesync run`` starts them (the server on a free port)."""
    loaded = load_config(h.write())
    engine = build_engine(loaded)
    assert loaded.model.api is None and api_wanted(loaded, engine)  # the sync's webhooks alone want the server
    api = build_api(loaded, engine)
    assert api is not None and f"{h.name}.b" in api.runtime.intakes
    api.port = 0
    async with api:
        h.engine = engine
        h.task = asyncio.create_task(engine.run(install_signals=False))
        runner = engine.syncs[0]
        await eventually(lambda: runner.state_name == "running" or h.task.done(), timeout=60, message="sync running")
        if h.task.done():
            h.task.result()
        try:
            yield api
        finally:
            await h.stop()


def hybrid_of(h: SyncHarness) -> HybridSource:
    source = h.runner.sources["b"]
    assert isinstance(source, HybridSource)
    return source


def setup(a: Side, fake: FakeStripe) -> None:
    a.sql(PG)
    a.sql("INSERT INTO customers (email, name, phone, note) SELECT 'c' || i || '@example.com', 'n' || i, "
          "'+1 ' || i, 'x' FROM generate_series(1, 4) i")  # fmt: skip
    for i in (1, 2):  # already in Stripe: paired by email
        add_customer(fake, f"c{i}@example.com", f"n{i}", f"+1 {i}", "x")
    add_customer(fake, "c5@example.com", "n5", "+1 5", "x")  # in Stripe only


async def test_stripe_edits_arrive_by_webhook_long_before_the_poll_and_postgres_edits_do_not_echo(
    pg_database: str, tmp_path: Path, stripe_api: tuple[FakeStripe, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = stripe_api[0]
    a, h = harness(pg_database, tmp_path, stripe_api, monkeypatch, "w", poll="60s")
    forwarder: Forwarder | None = None
    try:
        async with running_with_api(h) as api:
            forwarder = Forwarder(fake, f"{api.url}/webhooks/{h.name}.b")
            forwarder.start()
            await eventually(lambda: len(customers(fake)) == 5 and a.rows(COLUMNS, "customers") == customers(fake),
                             timeout=30, message="pairing: both sides hold the 5 customers")  # fmt: skip
            await eventually(lambda: forwarder.caught_up, message="the pairing's creates delivered")
            await h.quiet()
            await eventually(lambda: event_polls(fake) >= 2, message="the poller's first pass")
            ids = by_email(fake)
            polls = event_polls(fake)

            # An edit in Stripe: its webhook brings it, long before the poller's next pass (60 s away).
            started = time.monotonic()
            fake.update("customer", ids["c1@example.com"], name="by webhook", phone="+44 1")
            fake.update("customer", ids["c5@example.com"], description="noted in stripe")
            await eventually(
                lambda: a.sql("SELECT name, phone FROM customers WHERE email = 'c1@example.com'")
                == [("by webhook", "+44 1")]
                and a.sql("SELECT note FROM customers WHERE email = 'c5@example.com'") == [("noted in stripe",)],
                timeout=5, message="the webhook's edit in Postgres",
            )  # fmt: skip
            took = time.monotonic() - started
            assert took < 5, took
            assert event_polls(fake) == polls, "the edit was polled, not delivered"

            # Edits in Postgres reach Stripe; the webhooks of those writes come back and are known as echoes.
            a.sql("UPDATE customers SET name = 'from pg', note = 'pg note' WHERE email = 'c2@example.com'")
            a.sql("INSERT INTO customers (email, name, phone, note) VALUES ('new@example.com', 'new', NULL, 'y')")
            want = sorted(
                {
                    **{r[0]: r for r in a.rows(COLUMNS, "customers")},
                    "c2@example.com": ("c2@example.com", "from pg", "+1 2", "pg note"),
                    "new@example.com": ("new@example.com", "new", None, "y"),
                }.values(),
                key=repr,
            )
            await eventually(lambda: customers(fake) == want and a.rows(COLUMNS, "customers") == want, timeout=20,
                             message="Postgres' edits in Stripe")  # fmt: skip
            await eventually(lambda: forwarder.caught_up, message="the writes' webhooks delivered")
            await h.quiet(8)
            proc = h.runner.processor
            assert proc is not None
            before = (dict(proc.stats.writes), len(fake.writes), len(fake.events), versions(a, "customers"))
            echoes = proc.stats.echo_fields
            assert echoes > 0  # the webhooks of the sync's writes were known by the ledger of values written
            await eventually(lambda: forwarder.caught_up, message="nothing more to deliver")
            await h.quiet(12)  # a quiet stretch (~5 s): an echo taken for an edit would have been written back by now
            after = (dict(proc.stats.writes), len(fake.writes), len(fake.events), versions(a, "customers"))
            assert after == before, "the sync kept writing after the edits stopped (an echo loop)"
            assert customers(fake) == want and a.rows(COLUMNS, "customers") == want
            assert max(Counter(c["email"] for c in fake.created("customer")).values()) == 1
            assert hybrid_of(h).missed == 0  # every change came by webhook
            assert event_polls(fake) == polls, "a poll ran: what came, came by webhook"
    finally:
        if forwarder is not None:
            await forwarder.stop()
        await h.close()


async def test_a_stripe_edit_whose_webhook_never_comes_arrives_through_the_poll(
    pg_database: str, tmp_path: Path, stripe_api: tuple[FakeStripe, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = stripe_api[0]
    a, h = harness(pg_database, tmp_path, stripe_api, monkeypatch, "l", poll="0.3s", grace="1s")
    forwarder: Forwarder | None = None

    def lost(event: dict[str, Any]) -> bool:
        return str(event["data"]["object"].get("name", "")).startswith("lost")

    try:
        async with running_with_api(h) as api:
            forwarder = Forwarder(fake, f"{api.url}/webhooks/{h.name}.b", lose=lost)
            forwarder.start()
            await eventually(lambda: len(customers(fake)) == 5 and a.rows(COLUMNS, "customers") == customers(fake),
                             timeout=30, message="pairing: both sides hold the 5 customers")  # fmt: skip
            # the poller's feed starts at the newest event of its first pass: edits from then on are its to see
            await eventually(lambda: event_polls(fake) >= 2, message="the poller's first pass")
            ids = by_email(fake)
            fake.update("customer", ids["c1@example.com"], name="lost in transit")
            fake.update("customer", ids["c2@example.com"], phone="+49 2")  # delivered
            await eventually(lambda: forwarder.caught_up and len(forwarder.lost) == 1, message="one webhook lost")
            await eventually(
                lambda: a.sql("SELECT name FROM customers WHERE email = 'c1@example.com'") == [("lost in transit",)]
                and a.sql("SELECT phone FROM customers WHERE email = 'c2@example.com'") == [("+49 2",)],
                timeout=20, message="the lost edit polled into Postgres",
            )  # fmt: skip
            src = hybrid_of(h)
            await eventually(lambda: src.missed == 1, message="the lost one counted as missed by the webhooks")
            a.sql("UPDATE customers SET note = 'pg' WHERE email = 'c3@example.com'")
            await eventually(lambda: ("c3@example.com", "n3", "+1 3", "pg") in customers(fake), timeout=20,
                             message="Postgres' edit in Stripe")  # fmt: skip
            await settled(marks(h, a, "customers", lambda: len(fake.writes)), lambda: event_polls(fake))
            assert src.missed == 1  # the sync's writes and their echoes came by webhook too, none missed
            assert customers(fake) == a.rows(COLUMNS, "customers")
    finally:
        if forwarder is not None:
            await forwarder.stop()
        await h.close()


# --- configuration --------------------------------------------------------------------------------------------


def load(tmp_path: Path, b_source: str) -> Any:
    path = tmp_path / "sync.yaml"
    path.write_text(f"""
syncs:
  - name: billing
    a: {{source: {{type: sqlite, path: "{tmp_path / "a.db"}", tables: [accounts]}}, table: accounts, key: id}}
    b:
      source: {b_source}
      key: id
    fields: {{email: email, name: name}}
    match: {{by: email}}
""")
    return load_config(path)


STRIPE_HOOKS = '{type: webhook, provider: stripe, secrets: ["whsec_x"], stripe: {backfill: false}}'


def test_a_hybrid_stripe_side_is_an_app_side_and_its_webhooks_get_a_route(tmp_path: Path) -> None:
    loaded = load(tmp_path, f"{{type: hybrid, primary: {STRIPE_HOOKS}, "
                            "fallback: {type: stripe, api_key: sk_x, poll_interval: 30s}}")  # fmt: skip
    spec = loaded.syncs[0]
    assert spec.b_source.fallback_model.objects == ["customer"]  # the fallback emits what the side writes
    assert spec.b_source.resolved_match() == "event_id"
    parts = build_parts(spec)
    assert isinstance(parts.endpoints["b"], StripeEndpoint) and parts.fmap.sides["b"].entity == "stripe.customer"
    assert parts.origins["b"] is None
    engine = build_engine(loaded)
    found = webhook_sources(engine)
    assert [name for name, _ in found] == ["billing.b"] and isinstance(found[0][1], WebhookSource)
    assert api_wanted(loaded, engine)
    api = build_api(loaded, engine)
    assert api is not None and list(api.runtime.intakes) == ["billing.b"]  # POST /webhooks/billing.b


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (
            f"{{type: hybrid, primary: {STRIPE_HOOKS}, fallback: {{type: sql_poll, dsn: 'sqlite:///x.db', "
            "tables: [customers], cursor: updated_at}}",
            "fallback must be the stripe polling source",
        ),
        (
            f"{{type: hybrid, primary: {STRIPE_HOOKS}, fallback: {{type: hubspot, token: t, objects: [contacts]}}}}",
            "fallback must be the stripe polling source",
        ),
        (
            "{type: hybrid, primary: {type: webhook, provider: github, secrets: [s]}, "
            "fallback: {type: stripe, api_key: sk_x}}",
            "provider: stripe",
        ),
    ],
)
def test_a_hybrid_side_with_webhooks_of_an_app_needs_that_app_as_its_fallback(
    tmp_path: Path, source: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        load(tmp_path, source)
