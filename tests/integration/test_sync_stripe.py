"""Stripe customers as a two-way sync side: the endpoint's outcomes, Postgres <-> Stripe through the engine,
and kill -9 between a Stripe create and the sync's checkpoint.

The API is the local fake (:class:`tidesync.testing.stripe.FakeStripe`), served
on loopback in this process; the side's source is the ``stripe`` polling
source (the Events API). A person's edits in Stripe are made through the
fake, as the Dashboard makes them (each one an event).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.e2e_support import kill_engine, running, start_engine, stop_engine
from tests.integration.test_sync_hubspot import marks, more, settled
from tests.integration.test_sync_support import Side, SyncHarness, pg_source, versions
from tests.integration.webhook_support import serve
from tidesync.config import load_config
from tidesync.errors import ConfigError
from tidesync.sinks.stripe.endpoint import StripeEndpoint
from tidesync.sources.http.config import StripeSourceConfig
from tidesync.sync.build import build_parts
from tidesync.sync.endpoint import DeleteOp, FieldWrite, InsertOp, UpdateOp
from tidesync.testing import eventually
from tidesync.testing.stripe import FakeStripe

KEY = "sk_test_fake"
PG = "CREATE TABLE customers (id serial PRIMARY KEY, email text UNIQUE, name text, phone text, note text)"
COLUMNS = "email, name, phone, note"


@pytest.fixture
async def stripe() -> AsyncIterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    async with serve(app=fake.app) as api:
        yield fake, api.url


def add_customer(fake: FakeStripe, email: str, name: str, phone: str | None = None, note: str | None = None) -> str:
    """A customer someone created in Stripe (with its customer.created event)."""
    cid = f"cus_{uuid.uuid4().hex[:12]}"
    fake.create("customer", cid, email=email, name=name, phone=phone, description=note, metadata={})
    return cid


def customers(fake: FakeStripe) -> list[tuple[Any, ...]]:
    return sorted(
        ((c["email"], c["name"], c.get("phone"), c.get("description")) for c in fake.state("customer").values()),
        key=repr,
    )


def by_email(fake: FakeStripe) -> dict[str, str]:
    return {c["email"]: cid for cid, c in fake.state("customer").items()}


def endpoint(url: str, **extra: Any) -> StripeEndpoint:
    cfg = {"type": "stripe", "api_key": KEY, "base_url": url, "rate_limit": {"per_second": 500}, **extra}
    return StripeEndpoint(StripeSourceConfig.model_validate(cfg), ["id"])


# --- the endpoint on its own --------------------------------------------------------------------


async def test_outcomes_per_field_and_a_create_retried_after_a_lost_answer(stripe: tuple[FakeStripe, str]) -> None:
    fake, url = stripe
    fake.create("customer", "cus_a", email="ada@example.com", name="Ada", phone=None, balance=5,
                metadata={"tier": "gold", "old": "x"})  # fmt: skip
    fake.create("customer", "cus_b", email="bob@example.com", name="Bob", metadata={})
    ep = endpoint(url, http={"timeout": 1, "max_attempts": 3})
    await ep.open()
    ops = [
        UpdateOp(
            ("cus_a",),
            (
                FieldWrite("name", "Ada K", expected="Ada"),  # ok
                FieldWrite("phone", "+1 555", expected="+1 000"),  # conflict: it holds none
                FieldWrite("balance", 5, expected="4"),  # already: 5 == "5"
                FieldWrite("metadata", {"tier": "platinum"}, expected={"tier": "gold", "old": "x"}),  # ok, whole
            ),
        ),
        UpdateOp(("cus_b",), (FieldWrite("email", "not-an-email", expected="bob@example.com"),)),  # failed: 400
        UpdateOp(("cus_gone",), (FieldWrite("name", "z", expected=None),)),  # missing
        DeleteOp(("cus_b",), expected={"name": "Robert"}),  # conflict: edited
        InsertOp({"email": "cy@example.com", "name": "Cy", "phone": None}),  # ok
    ]
    res = await ep.apply(ops)
    assert [(r.status, dict(r.columns)) for r in res] == [
        ("ok", {"name": "ok", "phone": "conflict", "balance": "already", "metadata": "ok"}),
        ("ok", {"email": "failed"}),
        ("missing", {"name": "missing"}),
        ("conflict", {}),
        ("ok", {}),
    ]
    assert "email_invalid" in res[1].error
    ada = fake.state("customer")["cus_a"]
    assert (ada["name"], ada["phone"], ada["metadata"]) == ("Ada K", None, {"tier": "platinum"})  # "old" unset
    cy = res[4].key
    assert cy is not None and fake.state("customer")[cy[0]]["name"] == "Cy"

    again = await ep.apply(ops[:4])  # the updates and the delete repeated, as after a lost answer: nothing new
    assert [(r.status, dict(r.columns)) for r in again] == [
        ("ok", {"name": "already", "phone": "conflict", "balance": "already", "metadata": "already"}),
        ("ok", {"email": "failed"}),
        ("missing", {"name": "missing"}),
        ("conflict", {}),
    ]
    # A create whose answer is lost: the client asks again with the same Idempotency-Key, Stripe replays.
    fake.hold()
    (made,) = await ep.apply([InsertOp({"email": "dee@example.com", "name": "Dee"})])
    fake.release()
    assert made.status == "ok" and fake.held == 1
    assert Counter(c["email"] for c in fake.created("customer"))["dee@example.com"] == 1
    assert any(w.replayed and w.path == "/v1/customers" for w in fake.writes)
    # What the sync does before repeating a create whose outcome it never learnt: it finds the customer.
    assert [k for k, _ in await ep.find({"email": "dee@example.com", "name": "Dee"})] == [made.key]
    assert [k for k, _ in await ep.find({"name": "Cy"})] == [cy]  # no email: by listing

    (gone,) = await ep.apply([DeleteOp(("cus_b",), expected={"name": "Bob"})])
    assert gone.status == "ok" and "cus_b" not in fake.state("customer")
    assert [r.status for r in await ep.apply([DeleteOp(("cus_b",))])] == ["missing"]
    assert set(await ep.fetch([("cus_a",), ("cus_b",)])) == {("cus_a",)}
    assert [r["id"] for r in await ep.scan()] == sorted(["cus_a", cy[0], str(made.key[0])])  # type: ignore[index]
    await ep.close()


# --- Postgres <-> Stripe through the engine -------------------------------------------------------


def stripe_source(url: str, poll: str = "0.1s") -> str:
    """The Stripe polling source of a side (a YAML flow mapping) on the fake at ``url``."""
    return (
        f'{{type: stripe, api_key: "${{env:STRIPE_TEST_KEY}}", base_url: "{url}", poll_interval: {poll}, '
        "lookback: 3s, rate_limit: {per_second: 500}, progress: false, http: {max_attempts: 3, timeout: 30}}"
    )


def config(name: str, a: Side, tmp: Path, url: str) -> str:
    b = stripe_source(url)
    return f"""
state: sqlite:///{tmp / "state.db"}
syncs:
  - name: {name}
    a: {{source: {pg_source(a.dsn, "customers", tmp / "wa")}, table: customers, key: id}}
    b: {{source: {b}, table: customers, key: id}}
    fields: {{email: email, name: name, phone: phone, note: description}}
    match: {{by: email}}
    rules: {{default: lww, skew: 0s}}
    batch: {{max_events: 200, max_wait_ms: 20}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""


def event_polls(fake: FakeStripe) -> int:
    return sum(1 for s in fake.seen if s.path == "/v1/events")


async def test_postgres_and_stripe_customers_lose_no_edit_and_go_quiet(
    pg_database: str, tmp_path: Path, stripe: tuple[FakeStripe, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = stripe
    monkeypatch.setenv("STRIPE_TEST_KEY", KEY)
    a = Side("pg", pg_database)
    a.sql(PG)
    a.sql("INSERT INTO customers (email, name, phone, note) SELECT 'c' || i || '@example.com', 'n' || i, "
          "'+1 ' || i, 'x' FROM generate_series(1, 6) i")  # fmt: skip
    for i in (1, 2, 3):  # already in Stripe, the same values: paired by email
        add_customer(fake, f"c{i}@example.com", f"n{i}", f"+1 {i}", "x")
    for i in (7, 8):  # in Stripe only
        add_customer(fake, f"c{i}@example.com", f"n{i}", f"+1 {i}", "x")
    h = SyncHarness(tmp_path, f"s{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h.name, a, tmp_path, url)
    rng = random.Random(18)

    def polled() -> int:
        return event_polls(fake)

    try:
        await h.start()
        await eventually(lambda: len(customers(fake)) == 8 and a.rows(COLUMNS, "customers") == customers(fake),
                         timeout=30, message="pairing: both sides hold the 8 customers")  # fmt: skip
        assert sorted(Counter(c["email"] for c in fake.created("customer")).values()) == [1] * 3  # c4-c6 only
        expected = {r[0]: list(r) for r in a.rows(COLUMNS, "customers")}
        ids = by_email(fake)
        # Postgres owns name; Stripe's people own phone; note is Postgres' on c1-c4, Stripe's on c5-c8.
        for i in range(30):
            email = f"c{rng.randint(1, 8)}@example.com"
            pg_note = int(email[1:].split("@")[0]) <= 4
            if i % 2 == 0:
                column, index = ("name", 1) if rng.random() < 0.5 or not pg_note else ("note", 3)
                a.sql(f"UPDATE customers SET {column} = %s WHERE email = %s", (f"app{i}", email))
                expected[email][index] = f"app{i}"
            elif rng.random() < 0.5 or pg_note:
                fake.update("customer", ids[email], phone=f"+33 {i}")
                expected[email][2] = f"+33 {i}"
            else:
                fake.update("customer", ids[email], description=f"stripe{i}")
                expected[email][3] = f"stripe{i}"
            await asyncio.sleep(0.1)  # edits spread over ~3 s, interleaved with the sync's writes
        a.sql("INSERT INTO customers (email, name, phone, note) VALUES ('new-pg@example.com', 'np', NULL, 'x')")
        add_customer(fake, "new-stripe@example.com", "ns", "+1 9", "y")
        expected["new-pg@example.com"] = ["new-pg@example.com", "np", None, "x"]
        expected["new-stripe@example.com"] = ["new-stripe@example.com", "ns", "+1 9", "y"]
        want = sorted((tuple(v) for v in expected.values()), key=repr)
        await eventually(lambda: a.rows(COLUMNS, "customers") == want and customers(fake) == want, timeout=40,
                         message="both sides hold every last edit")  # fmt: skip
        assert max(Counter(c["email"] for c in fake.created("customer")).values()) == 1  # none created twice

        sent, made, before = await settled(marks(h, a, "customers", lambda: len(fake.writes)), polled)
        await more(polled, 15)  # a quiet period: every change the sync made was read back meanwhile
        proc = h.runner.processor
        assert proc is not None
        assert proc.stats.writes == sent, "the sync kept writing after the edits stopped"
        assert len(fake.writes) == made, "Stripe kept receiving writes after the edits stopped"
        assert versions(a, "customers") == before, "Postgres kept changing after the edits stopped"
        assert proc.stats.echo_fields > 0  # Stripe's echoes were known by the ledger of values written

        a.sql("DELETE FROM customers WHERE email = 'c1@example.com'")  # deleted in Stripe too
        fake.delete("customer", ids["c8@example.com"])  # and the other way
        await eventually(
            lambda: (
                "c1@example.com" not in by_email(fake)
                and [
                    r[0]
                    for r in a.sql("SELECT email FROM customers WHERE email IN ('c1@example.com', 'c8@example.com')")
                ]
                == []
            ),
            timeout=20,
            message="deletes both ways",
        )
    finally:
        await h.close()


async def test_kill_9_between_a_stripe_create_and_the_checkpoint_makes_no_second_customer(
    pg_database: str, tmp_path: Path, stripe: tuple[FakeStripe, str]
) -> None:
    fake, url = stripe
    a = Side("pg", pg_database)
    a.sql(PG)
    h = SyncHarness(tmp_path, f"k{uuid.uuid4().hex[:8]}", "")  # for its cleanup; the engine runs in a subprocess
    h.config_text = config(h.name, a, tmp_path, url)
    path = h.write()
    log = tmp_path / "engine.log"
    env = {"STRIPE_TEST_KEY": KEY}
    proc = start_engine(path, log, env=env)
    try:
        await eventually(lambda: running(proc, log) and event_polls(fake) >= 3, timeout=30, message="the sync up")
        fake.hold_after = fake.executed + 4  # four creates answer; the fifth is made, its answer never comes
        a.sql("INSERT INTO customers (email, name) SELECT 'k' || g || '@example.com', 'K' || g "
              "FROM generate_series(1, 12) g")  # fmt: skip
        await eventually(lambda: running(proc, log) and fake.held >= 1, timeout=30, message="a create held")
        await asyncio.to_thread(kill_engine, proc)
        made_before = len(fake.created("customer"))
        fake.release()
        proc = start_engine(path, log, env=env)
        await eventually(lambda: running(proc, log) and len(fake.state("customer")) == 12, timeout=40,
                         message="all 12 customers in Stripe")  # fmt: skip
        await more(lambda: event_polls(fake), 10)
    finally:
        if proc.poll() is None:
            await asyncio.to_thread(stop_engine, proc, log)
        await h.close()
    assert made_before == 5  # four answered, one made and never answered before the kill
    assert Counter(c["email"] for c in fake.created("customer")) == {f"k{g}@example.com": 1 for g in range(1, 13)}
    assert "had landed before; adopting key" in log.read_text()  # the sync found the one made before the kill
    assert sorted(r[0] for r in a.sql("SELECT email FROM customers")) == sorted(
        f"k{g}@example.com" for g in range(1, 13)
    )


def test_a_stripe_side_is_configured_by_its_source(tmp_path: Path) -> None:
    def load(b: str, fields: str = "{email: email, name: name}") -> Any:
        path = tmp_path / "sync.yaml"
        path.write_text(f"""
syncs:
  - name: billing
    a: {{source: {{type: sqlite, path: "{tmp_path / "a.db"}", tables: [people]}}, table: people, key: id}}
    b: {b}
    fields: {fields}
    match: {{by: email}}
""")
        return load_config(path)

    source = f"{{type: stripe, api_key: {KEY}}}"
    spec = load(f"{{source: {source}, key: id}}").syncs[0]
    assert spec.b_source.objects == ["customer"]  # the source emits what the side writes
    parts = build_parts(spec)
    assert isinstance(parts.endpoints["b"], StripeEndpoint) and parts.fmap.sides["b"].entity == "stripe.customer"
    for bad, why in [
        (f"{{source: {source}, key: email}}", "key: id"),
        (f"{{source: {source}, table: products, key: id}}", "writes customers"),
        (f"{{source: {source}, key: id, id_property: email}}", "only a hubspot side"),
    ]:
        with pytest.raises(ConfigError, match=why):
            load(bad)
