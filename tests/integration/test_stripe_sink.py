"""The Stripe sink against the Stripe fake on loopback: one way from Postgres, crashes, 400s and 429s.

In process: a 400 fails only its event (and the later events of its key), a
429's Retry-After is waited out, and a create interrupted by a crash is never
made twice, even when the row comes back at another position. Through
``tidesync run``: Postgres CDC -> customers, products and prices (a changed
amount makes a new price and archives the old one, a bad email goes to the
dead-letter queue alone), and kill -9 while Stripe holds answers to calls it
already executed, then a restart: still one customer per row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.e2e_support import kill_engine, start_engine, stop_engine
from tests.integration.webhook_support import serve
from tidesync.errors import PartialBatchError, PermanentError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.blocked import BlockedError
from tidesync.sinks.stripe import StripeSink, StripeSinkConfig
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import eventually
from tidesync.testing.stripe import FakeStripe

KEY = "sk_test_fake"
OBJECTS = {"public.customers": "customers", "public.products": "products", "public.prices": "prices"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def sink_for(url: str, **extra: Any) -> StripeSink:
    cfg = {"type": "stripe", "api_key": KEY, "base_url": url, "objects": OBJECTS,
           "rate_limit": {"per_second": 500}, **extra}  # fmt: skip
    return StripeSink(StripeSinkConfig.model_validate(cfg))


def customer(i: int, pos: int, op: str = "insert", **row: Any) -> ChangeEvent:
    after = {"id": i, "email": f"c{i}@example.com", "name": f"C{i}", **row}
    return ChangeEvent("public.customers", (i,), op, after=after, changed=tuple(row) if op == "update" else None,
                       position=(pos,), committed_at=1.0)  # fmt: skip


def live(fake: FakeStripe, object_type: str = "customer") -> dict[str, dict[str, Any]]:
    """Objects by their source key (metadata tidesync_key)."""
    return {o["metadata"].get("tidesync_key"): o for o in fake.state(object_type).values()}


async def test_a_400_fails_only_its_event_and_the_later_events_of_its_key(store: StateStore) -> None:
    fake = FakeStripe()
    async with serve(app=fake.app) as api:
        sink = sink_for(api.url)
        await sink.open(Context(pipeline="p400", name="sink", state=store))
        batch = [customer(1, 1), customer(2, 2, email="not-an-email"), customer(3, 3),
                 customer(2, 4, "update", name="later"), customer(1, 5, "update", name="C1 renamed")]  # fmt: skip
        with pytest.raises(PartialBatchError) as failed:
            await sink.write(batch)
        await sink.close()
    assert sorted(failed.value.failures) == [1, 3]
    assert isinstance(failed.value.failures[1], PermanentError) and "email_invalid" in str(failed.value.failures[1])
    assert isinstance(failed.value.failures[3], BlockedError)
    assert {k: o["name"] for k, o in live(fake).items()} == {"1": "C1 renamed", "3": "C3"}


async def test_a_price_waits_for_its_product_written_earlier_in_the_same_write(store: StateStore) -> None:
    fake = FakeStripe()

    def product(i: int, pos: int) -> ChangeEvent:
        return ChangeEvent("public.products", (i,), "insert", after={"id": i, "name": f"P{i}"}, position=(pos,))

    def price(i: int, product_id: int, pos: int) -> ChangeEvent:
        after = {"id": i, "product_id": product_id, "unit_amount": 100 * i, "currency": "eur"}
        return ChangeEvent("public.prices", (i,), "insert", after=after, position=(pos,))

    async with serve(app=fake.app) as api:
        sink = sink_for(api.url, concurrency=8)
        await sink.open(Context(pipeline="pdep", name="sink", state=store))
        # each price's key lands in its own lane; the products come first in source order
        await sink.write([product(1, 1), product(2, 2), price(10, 1, 3), price(11, 2, 4), price(12, 1, 5)])
        await sink.close()
    products = {o["id"]: o["metadata"]["tidesync_key"] for o in fake.state("product").values()}
    assert sorted((p["unit_amount"], products[p["product"]]) for p in fake.state("price").values()) == [
        (1000, "1"), (1100, "2"), (1200, "1")]  # fmt: skip


async def test_a_refused_key_is_systemic_for_every_event_and_nothing_is_sent_after_it(store: StateStore) -> None:
    fake = FakeStripe(keys={"sk_test_other"})
    async with serve(app=fake.app) as api:
        sink = sink_for(api.url, concurrency=1)
        await sink.open(Context(pipeline="p401", name="sink", state=store))
        with pytest.raises(PartialBatchError) as failed:
            await sink.write([customer(1, 1), customer(2, 2), customer(3, 3)])
        await sink.close()
    assert sorted(failed.value.failures) == [0, 1, 2]
    assert all(isinstance(e, SystemicError) for e in failed.value.failures.values())
    assert len(fake.seen) == 1 and fake.created("customer") == []  # one refusal, then nothing more sent


async def test_a_429_retry_after_is_waited_out_and_nothing_is_doubled(store: StateStore) -> None:
    fake = FakeStripe()
    async with serve(app=fake.app) as api:
        sink = sink_for(api.url, concurrency=1)  # one request at a time: the next one is the one refused
        await sink.open(Context(pipeline="p429", name="sink", state=store))
        fake.faults.queue.append((429, {"Retry-After": "1"}))
        await sink.write([customer(1, 1), customer(2, 2)])
        assert sink.client is not None and sink.client.throttled == 1
        await sink.close()
    gap = fake.seen_at[1] - fake.seen_at[0]
    assert gap >= 0.95, f"asked again {gap:.3f}s after a 429 with Retry-After: 1"
    assert len(fake.seen) == 3 and sorted(live(fake)) == ["1", "2"] and len(fake.created("customer")) == 2


async def test_a_create_cut_off_by_a_crash_is_not_made_twice_even_at_another_position(store: StateStore) -> None:
    fake = FakeStripe()
    fake.hold_after = 0  # executes, then never answers: the caller dies waiting
    async with serve(app=fake.app) as api:
        first = sink_for(api.url)
        await first.open(Context(pipeline="pcrash", name="sink", state=store))
        task = asyncio.create_task(first.write([customer(1, 1, name="before")]))
        await eventually(lambda: fake.held == 1, message="the create executed and held")
        task.cancel()  # the crash: the answer (and the new id) never arrives
        with contextlib.suppress(asyncio.CancelledError):
            await task
        fake.release()
        await first.close()
        again = sink_for(api.url)  # a new process: nothing in memory
        await again.open(Context(pipeline="pcrash", name="sink", state=store))
        # a resumed snapshot reads the row again, at a new position and with a newer value
        await again.write([customer(1, 77, op="snapshot", name="after")])
        await again.close()
    assert fake.created_per("customer") == {"1": 1}
    assert [o["name"] for o in fake.state("customer").values()] == ["after"]
    assert [w.replayed for w in fake.writes if w.path == "/v1/customers"] == [False, True]


# --- through `tidesync run`, from Postgres ---------------------------------------------------

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}", tables: [public.customers, public.products, public.prices],
              progress: false, heartbeat_interval: 1, work_dir: "{tmp}/work"}}
    sink: {{type: stripe, api_key: "${{env:STRIPE_TEST_KEY}}", base_url: "{url}", concurrency: 4,
            rate_limit: {{per_second: 200}}, http: {{max_attempts: 3, timeout: 30}},
            objects: {{public.customers: customers, public.products: products, public.prices: prices}}}}
    batch: {{max_events: 50, max_wait_ms: 20}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""
TABLES = """
CREATE TABLE customers (id int PRIMARY KEY, email text, name text, address jsonb, metadata jsonb, plan text);
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, description text);
CREATE TABLE prices (id int PRIMARY KEY, product_id int NOT NULL, unit_amount int NOT NULL, currency text NOT NULL,
                     nickname text);
"""


class Engine:
    """`tidesync run` over Postgres with the Stripe sink pointed at a fake served by this test process."""

    def __init__(self, tmp: Path, src: str, url: str, name: str) -> None:
        self.config = tmp / "stripe.yaml"
        self.config.write_text(CONFIG.format(tmp=tmp, src=src, url=url, name=name))
        self.log = tmp / "engine.log"
        self.state_url = f"sqlite:///{tmp}/state.db"
        self.proc: Any = None

    def start(self) -> None:
        self.proc = start_engine(self.config, self.log, env={"STRIPE_TEST_KEY": KEY})

    async def stop(self) -> None:
        """SIGTERM and wait, in a thread: this loop serves the fake the engine may still be talking to."""
        try:
            await asyncio.to_thread(stop_engine, self.proc, self.log)
        finally:
            if self.proc.poll() is None:
                await asyncio.to_thread(kill_engine, self.proc)

    async def kill(self) -> None:
        await asyncio.to_thread(kill_engine, self.proc)

    def alive(self) -> bool:
        code = self.proc.poll()
        assert code is None, f"engine exited {code}:\n{self.log.read_text()[-4000:]}"
        return True


async def sql(dsn: str, statements: str, *params: Any) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(statements, params or None)


async def test_postgres_to_stripe_customers_products_and_prices_one_way(tmp_path: Path, pg_database: str) -> None:
    fake = FakeStripe()
    await sql(pg_database, TABLES)
    await sql(pg_database, """
        INSERT INTO customers VALUES
          (1, 'ada@example.com', 'Ada', '{"city": "Lyon", "country": "FR"}', '{"tier": "gold"}', 'pro'),
          (2, 'bob@example.com', 'Bob', NULL, NULL, 'free');
        INSERT INTO products VALUES (10, 'Gold', 'the gold plan'), (11, 'Silver', NULL);
        INSERT INTO prices VALUES (100, 10, 1500, 'eur', 'gold monthly'), (101, 11, 900, 'eur', NULL);
    """)  # fmt: skip
    async with serve(app=fake.app) as api:
        engine = Engine(tmp_path, pg_database, api.url, "to_stripe")
        engine.start()
        try:
            await eventually(lambda: engine.alive() and len(fake.state("price")) == 2, timeout=30,
                             message="the snapshot in Stripe")  # fmt: skip
            await sql(pg_database, """
                UPDATE customers SET name = 'Ada L.', address = '{"city": "Paris", "country": "FR"}' WHERE id = 1;
                UPDATE customers SET metadata = '{"tier": "platinum"}', plan = 'team' WHERE id = 1;
                INSERT INTO customers VALUES (3, 'not-an-email', 'Bad', NULL, NULL, NULL);
                INSERT INTO customers VALUES (4, 'cy@example.com', 'Cy', NULL, NULL, 'free');
                DELETE FROM customers WHERE id = 2;
                UPDATE prices SET unit_amount = 1800 WHERE id = 100;
                UPDATE prices SET nickname = 'silver' WHERE id = 101;
                DELETE FROM prices WHERE id = 101;
                DELETE FROM products WHERE id = 11;
                INSERT INTO products VALUES (12, 'Trial', NULL);
                DELETE FROM products WHERE id = 12;
            """)  # fmt: skip

            def settled() -> bool:
                return (engine.alive() and sorted(live(fake)) == ["1", "4"] and len(fake.created("price")) == 3
                        and len(fake.created("product")) == 3 and "12" not in live(fake, "product")
                        and live(fake, "product")["11"]["active"] is False)  # fmt: skip

            await eventually(settled, timeout=30, message="the changes in Stripe")
        finally:
            await engine.stop()
    ada = live(fake)["1"]
    assert (ada["name"], ada["email"], ada["address"]["city"], ada["address"]["country"]) == (
        "Ada L.", "ada@example.com", "Paris", "FR")  # fmt: skip
    assert ada["metadata"] == {"tier": "platinum", "plan": "team", "tidesync_key": "1"}
    assert live(fake)["4"]["metadata"] == {"plan": "free", "tidesync_key": "4"}
    assert fake.created_per("customer") == {"1": 1, "2": 1, "4": 1}  # none twice; 3 was refused
    gold = live(fake, "product")["10"]
    by_amount = {p["unit_amount"]: p for p in fake.state("price").values()}
    assert set(by_amount) == {1500, 1800, 900}
    assert by_amount[1500]["active"] is False and by_amount[1800]["active"] is True  # replaced, old archived
    assert by_amount[1800]["product"] == by_amount[1500]["product"] == gold["id"]
    assert by_amount[1800]["nickname"] == "gold monthly" and by_amount[1800]["currency"] == "eur"
    assert by_amount[900]["active"] is False and by_amount[900]["nickname"] == "silver"  # deleted: archived
    assert any(e["type"] == "customer.deleted" for e in fake.events)
    async with open_store(engine.state_url) as store:
        letters = await store.dlq_list()
    assert [(d.entity, d.key) for d in letters] == [("public.customers", (3,))]
    assert "email_invalid" in letters[0].error


@contextlib.asynccontextmanager
async def open_store(url: str) -> AsyncIterator[StateStore]:
    s = open_state_store(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_kill_9_after_stripe_executed_calls_it_never_answered_then_restart_no_second_customer(
    tmp_path: Path, pg_database: str
) -> None:
    fake = FakeStripe()
    await sql(pg_database, TABLES)
    async with serve(app=fake.app) as api:
        engine = Engine(tmp_path, pg_database, api.url, "stripe_crash")
        engine.start()
        try:
            fake.hold_after = 5  # the first 5 writes answer; later ones execute, then hang
            await sql(pg_database, "INSERT INTO customers (id, email, name) SELECT g, 'c' || g || '@example.com',"
                                   " 'C' || g FROM generate_series(1, 30) g")  # fmt: skip
            await eventually(lambda: engine.alive() and fake.held >= 2, timeout=30, message="calls held")
            await engine.kill()
            executed_before = fake.executed
            fake.release()
            engine.start()
            await eventually(lambda: engine.alive() and len(live(fake)) == 30, timeout=40, message="all 30 customers")
        finally:
            await engine.stop()
    assert executed_before >= 7  # 5 answered, at least 2 executed and never answered
    assert fake.created_per("customer") == {str(i): 1 for i in range(1, 31)}
    assert any(w.replayed for w in fake.writes)  # a call made before the kill was asked again, and replayed
