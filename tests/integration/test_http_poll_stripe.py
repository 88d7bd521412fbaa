"""The Stripe polling source and the shared API client, against a local server shaped like Stripe's API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.integration.webhook_support import serve
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.errors import SourceError, SourceTransientError
from tidesync.protocols import Context
from tidesync.retry import RetryPolicy
from tidesync.secrets import Secret
from tidesync.sources.http.auth import CredentialRejected
from tidesync.sources.http.config import RateLimit, StripeSourceConfig
from tidesync.sources.http.stripe import StripeSource
from tidesync.sources.http.stripe_api import StripeApi, stripe_client
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore
from tidesync.testing import FakeClock, MemorySink, eventually
from tidesync.testing.stripe import FakeStripe

KEY = "sk_test_fake"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def source(url: str, **extra: Any) -> StripeSource:
    cfg = {"type": "stripe", "api_key": KEY, "base_url": url, "poll_interval": 0.05, "lookback": 0,
           "rate_limit": {"per_second": 1000}, **extra}  # fmt: skip
    return StripeSource(StripeSourceConfig.model_validate(cfg))


async def run_until(runner: PipelineRunner, predicate: Callable[[], Any], message: str, timeout: float = 20) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: task.done() or predicate(), timeout=timeout, message=message)
        if task.done():
            await task  # raises what failed
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def customers(sink: MemorySink) -> dict[str, dict[str, Any]]:
    return {k[0]: v for k, v in sink.tables.get("stripe.customer", {}).items()}


def workload(fake: FakeStripe, n: int, records: int = 30) -> None:
    """Creates, updates and deletes of ``records`` customers, ``n`` events in all."""
    for i in range(n):
        cid = f"cus_{i % records:03d}"
        if cid not in fake.objects.get("customer", {}):
            fake.create("customer", cid, email=f"{i}@x", name=f"n{i}")
        elif i % 17 == 0:
            fake.delete("customer", cid)
        else:
            fake.update("customer", cid, email=f"{i}@x") if i % 2 else fake.update("customer", cid, name=f"n{i}")


async def test_the_event_feed_applies_every_change_once_in_order_through_ties_and_pages(store: StateStore) -> None:
    fake = FakeStripe()
    fake.time = int(time.time())  # every event in one second: order within it is Stripe's list order
    fake.create("customer", "cus_before", email="old@x")  # before the first start: not in the feed
    async with serve(app=fake.app) as api:
        src = source(api.url, page_size=7)
        sink = MemorySink()
        runner = PipelineRunner("feed", src, sink, store, batch=BatchPolicy(50, 0.02))
        await run_until(runner, lambda: runner.position is not None, "the cursor fixed")
        workload(fake, 300)
        made_since = {k: v for k, v in fake.state("customer").items() if k != "cus_before"}
        await run_until(runner, lambda: customers(sink) == made_since, "every change applied")
    assert "cus_before" not in customers(sink)
    assert len(sink.writes) == 300 and len({e.position for e in sink.writes}) == 300  # nothing doubled
    walked = [dict(s.query) for s in fake.seen if s.path == "/v1/events" and "ending_before" in dict(s.query)]
    assert len(walked) >= 300 // 7 and all(q["limit"] == "7" for q in walked)  # paged forward, 7 at a time
    # per record, the changes in the order Stripe made them, each naming exactly its changed fields
    ops = {"created": "insert", "updated": "update", "deleted": "delete"}
    want: dict[str, list[Any]] = {}
    for e in fake.events[1:]:
        prev = e["data"].get("previous_attributes")
        want.setdefault(e["data"]["object"]["id"], []).append(
            (ops[e["type"].split(".")[-1]], tuple(prev) if prev else None)
        )
    got: dict[str, list[Any]] = {}
    for w in sink.writes:
        got.setdefault(w.key[0], []).append((w.op, w.changed))
    assert got == want


async def test_a_snapshot_lists_objects_then_the_feed_continues_and_a_restart_resumes(store: StateStore) -> None:
    fake = FakeStripe()
    for i in range(230):
        fake.create("customer", f"cus_{i:03d}", email=f"{i}@x")
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        src = source(api.url, snapshot=["customer"])  # read one page as the engine would, checkpoint, stop
        await src.open(Context("snap", "source", store), None)
        first = await src.read(100, 1.0)
        assert [e.op for e in first.events] == ["snapshot"] * 100 and first.position is not None
        sink.apply(first.events)
        await store.commit("snap", StateChanges(checkpoint=first.position))
        await src.close()
        fake.update("customer", "cus_005", email="changed@x")  # during the snapshot: in the feed after it
        runner = PipelineRunner(
            "snap", source(api.url, snapshot=["customer"]), sink, store, batch=BatchPolicy(60, 0.01)
        )
        await run_until(runner, lambda: customers(sink) == fake.state("customer"), "snapshot and feed applied")
    pages = [dict(s.query) for s in fake.seen if s.path == "/v1/customers"]
    assert [("starting_after" in q) for q in pages] == [False, True, True]  # resumed: no page listed twice
    assert all(q["limit"] == "100" for q in pages)
    assert sum(1 for w in sink.writes if w.op == "snapshot") == 230
    assert customers(sink)["cus_005"]["email"] == "changed@x"


async def test_an_event_listed_late_is_found_by_the_lookback(store: StateStore) -> None:
    fake = FakeStripe()
    fake.time = int(time.time())
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        runner = PipelineRunner("late", source(api.url, lookback=30), sink, store, batch=BatchPolicy(50, 0.01))
        await run_until(runner, lambda: runner.position is not None, "the cursor fixed")
        late = fake.create("customer", "cus_late", email="l@x")
        fake.hidden.add(late["id"])  # Stripe has not listed it yet
        fake.create("customer", "cus_on_time", email="o@x")
        await run_until(runner, lambda: "cus_on_time" in customers(sink), "the listed event applied")
        assert "cus_late" not in customers(sink)
        fake.hidden.clear()  # listed now, behind the cursor
        await run_until(runner, lambda: "cus_late" in customers(sink), "the late event found")
    assert len(sink.writes) == 2


async def test_a_cursor_past_stripes_30_days_asks_for_a_re_snapshot(store: StateStore) -> None:
    fake = FakeStripe()
    fake.create("customer", "cus_1", email="a@x")
    async with serve(app=fake.app) as api:
        src = source(api.url)
        old = int(time.time()) - 31 * 86400
        await src.open(Context("old", "source", store), (1, 9, (1, float(old), "evt_gone", (), ())))
        with pytest.raises(SourceError, match="re-snapshot") as info:
            await src.read(10, 0.5)
        assert "30 days" in str(info.value)
        await src.close()
        # within the window by our clock, but Stripe no longer has the event: the same advice
        src = source(api.url)
        await src.open(Context("old", "source", store), (1, 9, (1, float(time.time()), "evt_gone", (), ())))
        with pytest.raises(SourceError, match="re-snapshot"):
            await src.read(10, 0.5)
        await src.close()


async def test_our_requests_are_the_ones_the_stripe_sdk_makes() -> None:
    fake = FakeStripe()
    first = fake.create("customer", "cus_1", email="a@x")
    async with serve(app=fake.app) as api:
        sdk = stripe.StripeClient(KEY, base_addresses={"api": api.url}, max_network_retries=0)
        ours = StripeApi(stripe_client("t", api.url, Secret(KEY)))
        pairs = [
            (lambda: sdk.v1.events.list(params={"ending_before": first["id"], "limit": 100}),
             lambda: ours.events_after(first["id"], 100)),
            (lambda: sdk.v1.events.list(params={"created": {"gte": 1700000000}, "limit": 100}),
             lambda: ours.events_created_since(1700000000)),
            (lambda: sdk.v1.events.list(params={"created": {"gte": 1700000000}, "limit": 100,
                                                "types": ["customer.created", "customer.updated"]}),
             lambda: ours.events_created_since(1700000000, types=["customer.created", "customer.updated"])),
            (lambda: sdk.v1.customers.list(params={"limit": 100, "starting_after": "cus_1",
                                                   "created": {"gte": 1700000000}}),
             lambda: ours.page("/v1/customers", {"limit": "100", "starting_after": "cus_1",
                                                 "created[gte]": "1700000000"})),
        ]  # fmt: skip
        for theirs, mine in pairs:
            await asyncio.to_thread(theirs)
            want = fake.seen[-1]
            await mine()
            got = fake.seen[-1]
            assert (got.method, got.path) == (want.method, want.path)
            assert sorted(got.query) == sorted(want.query)
            assert got.headers["authorization"] == want.headers["authorization"] == f"Bearer {KEY}"
        await ours.close()


async def test_429_with_retry_after_and_server_errors_are_waited_out_on_the_clock() -> None:
    fake = FakeStripe()
    fake.create("customer", "cus_1")
    async with serve(app=fake.app) as api:
        clock = FakeClock()
        client = stripe_client("t", api.url, Secret(KEY), rate_limit=RateLimit(per_second=100), clock=clock)
        # No jitter: a random backoff under 1/rate seconds would add a wait for the bucket's next token.
        client.retry = RetryPolicy(initial_delay=0.5, max_delay=30.0, jitter="none")
        async with client:
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(clock.time() + 7))
            fake.faults.queue.extend([(429, {"Retry-After": "2"}), (429, {"Retry-After": date}), (503, {}), (500, {})])
            (event,), _ = await StripeApi(client).page("/v1/events", {"limit": "1"})
            assert event["type"] == "customer.created"
            # both Retry-After forms are waited out (the date is 7s after the first request, 2s of which passed)
            assert clock.sleeps[:2] == [2.0, pytest.approx(5.0, abs=1.0)]
            assert clock.sleeps[2:] == [0.5, 1.0]  # the backoff of the 503 and of the 500
            assert client.requests == 5 and client.throttled == 2
            fake.faults.queue.extend([(429, {"Retry-After": "1"})] * 30)
            with pytest.raises(SourceTransientError, match="rate limited"):
                await StripeApi(client).page("/v1/events", {"limit": "1"})
            fake.faults.queue.clear()
            fake.faults.queue.extend([(502, {})] * 5)
            with pytest.raises(SourceTransientError, match="gave up after 5 attempts"):
                await StripeApi(client).page("/v1/events", {"limit": "1"})


async def test_a_rotated_key_file_takes_effect_without_restart_and_a_refused_key_is_named(
    store: StateStore, tmp_path: Path
) -> None:
    fake = FakeStripe(keys={"sk_test_one"})
    key_file = tmp_path / "stripe.key"
    key_file.write_text("sk_test_one\n")
    async with serve(app=fake.app) as api:
        src = source(api.url, api_key=f"${{file:{key_file}}}")
        sink = MemorySink()
        runner = PipelineRunner("rot", src, sink, store, batch=BatchPolicy(50, 0.01))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await eventually(lambda: runner.position is not None, message="the cursor fixed")
        fake.create("customer", "cus_1", email="a@x")
        await eventually(lambda: "cus_1" in customers(sink), message="applied with the first key")
        key_file.write_text("sk_test_two\n")  # rotated: the new key works, the old one is revoked
        fake.keys = {"sk_test_two"}
        fake.create("customer", "cus_2", email="b@x")
        await eventually(lambda: "cus_2" in customers(sink), message="applied with the rotated key")
        assert not task.done()
        fake.keys = {"sk_test_three"}  # revoked without a new key in the file
        fake.create("customer", "cus_3", email="c@x")
        await eventually(task.done, message="the pipeline stopping on the refused key")
        stop.set()
        with pytest.raises(CredentialRejected) as info:
            await task
    message = str(info.value)
    assert "Stripe API key ${file:" in message and "401" in message and "sk_test_two" not in message
    auths = {s.headers["authorization"] for s in fake.seen}
    assert auths == {"Bearer sk_test_one", "Bearer sk_test_two"}


async def test_an_edit_between_the_first_open_and_the_first_read_is_in_the_feed(store: StateStore) -> None:
    """A two-way sync opens its sources, pairs its sides, then reads: an edit made meanwhile must not be taken
    for history from before the start."""
    fake = FakeStripe()
    fake.create("customer", "cus_1", email="a@x", name="before")
    async with serve(app=fake.app) as api:
        src = source(api.url)
        await src.open(Context(pipeline="gap", name="source", state=store), None)
        try:
            fake.update("customer", "cus_1", name="during pairing")  # after the open, before any read
            seen: list[Any] = []

            async def read_it() -> bool:
                batch = await src.read(100, 0.05)
                seen.extend(e for e in batch.events if e.key == ("cus_1",))
                return bool(seen)

            deadline = time.monotonic() + 10
            while not await read_it():
                assert time.monotonic() < deadline, "the edit made before the first read never came"
            assert seen[0].op == "update" and seen[0].after["name"] == "during pairing"
        finally:
            await src.close()
