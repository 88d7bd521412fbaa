"""Hybrid pipelines: Stripe webhooks (the real intake, over HTTP) with the Stripe Events API poller behind them."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import stripe

from tests.integration.webhook_support import JSON, runtime_for, serve
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.observe.metrics import REGISTRY
from tidesync.sinks.sql.sqlite import SqliteSink, SqliteSinkConfig
from tidesync.sources.hybrid import HybridConfig, HybridSource
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import eventually
from tidesync.testing.stripe import FakeStripe

SECRET = "whsec_hybrid_test"
KEY = "sk_test_hybrid"
FIELDS = ("email", "name", "plan")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def missed(pipeline: str, entity: str = "stripe.customer") -> float:
    return REGISTRY.get_sample_value("tidesync_missed_by_primary_total", {"pipeline": pipeline, "entity": entity}) or 0


def hybrid(api_url: str, name: str, **extra: Any) -> HybridSource:
    cfg = {
        "type": "hybrid",
        "primary": {"type": "webhook", "provider": "stripe", "name": name, "secrets": [SECRET], "poll_interval_ms": 50},
        "fallback": {"type": "stripe", "api_key": KEY, "base_url": api_url, "poll_interval": 0.2, "lookback": 5,
                     "objects": ["customer"], "rate_limit": {"per_second": 200}},
        "grace": 3,
        **extra,
    }  # fmt: skip
    return HybridSource(HybridConfig.model_validate(cfg))


def destination(path: Path) -> SqliteSink:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customer (id TEXT PRIMARY KEY, object TEXT, created INTEGER, deleted INTEGER,"
                   " email TEXT, name TEXT, plan TEXT)")  # fmt: skip
    return SqliteSink(SqliteSinkConfig(path=str(path), tables={"stripe.customer": "customer"}))


def rows(path: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return {r[0]: tuple(r[1:]) for r in db.execute(f"SELECT id, {', '.join(FIELDS)} FROM customer")}


def source_state(fake: FakeStripe) -> dict[str, tuple[Any, ...]]:
    return {k: tuple(v.get(f) for f in FIELDS) for k, v in fake.state("customer").items()}


class Sender:
    """Stripe's side of the webhooks: signs and POSTs each event, except the ones it drops."""

    def __init__(self, url: str, drop_rate: float, seed: int) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.drop_rate = drop_rate
        self.dropped: list[str] = []
        self.sent = 0
        self.client = httpx.AsyncClient(timeout=10)

    async def deliver(self, event: dict[str, Any]) -> None:
        if self.rng.random() < self.drop_rate:
            self.dropped.append(event["id"])  # never sent: the endpoint never hears of it
            return
        body = msgspec.json.encode(event)
        sig = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
        answer = await self.client.post(self.url, content=body, headers={**JSON, "stripe-signature": sig})
        assert answer.status_code == 200, answer.text
        self.sent += 1


async def make_changes(fake: FakeStripe, sender: Sender, n: int, seed: int) -> None:
    """``n`` creates/updates/deletes of 40 customers, delivered as they happen, in bursts."""
    rng = random.Random(seed)
    for i in range(n):
        cid = f"cus_{rng.randrange(40):03d}"
        existing = fake.objects.get("customer", {})
        if cid not in existing:
            event = fake.create("customer", cid, email=f"{i}@x", name=f"n{i}", plan="free")
        elif rng.random() < 0.05:
            event = fake.delete("customer", cid)
        else:
            field = rng.choice(FIELDS)
            event = fake.update("customer", cid, **{field: f"{field}-{i}"})
        await sender.deliver(event)
        if i % 25 == 24:
            await asyncio.sleep(0.05)  # bursts, so polls and deliveries interleave


async def test_webhooks_dropping_5_percent_plus_the_events_poller_converge_and_count_exactly_the_drops(
    store: StateStore, tmp_path: Path
) -> None:
    fake = FakeStripe(keys={KEY})
    db = tmp_path / "dest.db"
    async with serve(app=fake.app) as api:
        src = hybrid(api.url, "hybrid-drop")
        runtime = runtime_for(store, (src.primary, "billing"))  # the webhook route of the primary
        async with serve(runtime=runtime) as hooks:
            sender = Sender(f"{hooks.url}/webhooks/hybrid-drop", 0.05, seed=7)
            runner = PipelineRunner("billing", src, destination(db), store, batch=BatchPolicy(200, 0.02))
            before = missed("billing")
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            try:
                await eventually(lambda: runner.position is not None or task.done(), message="the pipeline started")
                await make_changes(fake, sender, 600, seed=11)
                await eventually(
                    lambda: task.done() or (rows(db) == source_state(fake) and src.missed >= len(sender.dropped)),
                    timeout=60, message="the destination equal to the source",
                )  # fmt: skip
                assert not task.done()
                # one more full poll and grace period: nothing more is counted, nothing changes
                polls = len(fake.seen)
                await eventually(lambda: len(fake.seen) > polls + 3 and src.held == 0, message="more polls merged")
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
                await sender.client.aclose()
    assert 20 <= len(sender.dropped) <= 45 and sender.sent + len(sender.dropped) == 600
    assert rows(db) == source_state(fake)
    assert src.missed == len(sender.dropped)
    assert missed("billing") - before == len(sender.dropped)
    assert src.duplicates >= sender.sent  # every delivered change also polled, and dropped as a copy


async def test_a_restart_mid_stream_resumes_both_sides_and_still_counts_each_drop_once(
    store: StateStore, tmp_path: Path
) -> None:
    fake = FakeStripe(keys={KEY})
    db = tmp_path / "dest.db"
    async with serve(app=fake.app) as api:
        src = hybrid(api.url, "hybrid-restart")
        runtime = runtime_for(store, (src.primary, "billing2"))
        async with serve(runtime=runtime) as hooks:
            sender = Sender(f"{hooks.url}/webhooks/hybrid-restart", 0.05, seed=21)
            sink = destination(db)
            try:
                runner = PipelineRunner("billing2", src, sink, store, batch=BatchPolicy(200, 0.02))
                stop = asyncio.Event()
                task = asyncio.create_task(runner.run(stop))
                await eventually(lambda: runner.position is not None or task.done(), message="the pipeline started")
                await make_changes(fake, sender, 250, seed=5)
                await eventually(lambda: src.missed >= 3 or task.done(), timeout=30, message="some drops counted")
                stop.set()  # a clean stop with fallback batches still held: they were never checkpointed
                await asyncio.wait_for(task, 15)
                # while stopped, webhooks still arrive (the intake journals them) and some are dropped
                await make_changes(fake, sender, 250, seed=6)
                runner = PipelineRunner("billing2", src, sink, store, batch=BatchPolicy(200, 0.02))
                stop = asyncio.Event()
                task = asyncio.create_task(runner.run(stop))
                await eventually(
                    lambda: task.done() or (rows(db) == source_state(fake) and src.missed >= len(sender.dropped)
                                            and src.held == 0),
                    timeout=60, message="the destination equal to the source",
                )  # fmt: skip
                polls = len(fake.seen)
                await eventually(lambda: len(fake.seen) > polls + 3 and src.held == 0, message="more polls merged")
                assert not task.done()
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
                await sender.client.aclose()
    assert rows(db) == source_state(fake)
    assert src.missed == len(sender.dropped) and len(sender.dropped) >= 10
