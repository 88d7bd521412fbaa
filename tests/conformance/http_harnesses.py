"""The HTTP polling sources under the conformance suite, against the local fakes of their APIs.

Each fake (tidesync.testing.stripe, tidesync.testing.hubspot) is served over real HTTP
on loopback by :class:`ThreadedServer`, in a thread of its own, so a harness's
change methods stay plain calls on the fake.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from tests.conformance.poll_harness import EngineCommits
from tidesync.event import Position
from tidesync.protocols import Context
from tidesync.sources.http.config import HubSpotSourceConfig, StripeSourceConfig
from tidesync.sources.http.hubspot import HubSpotSource
from tidesync.sources.http.stripe import StripeSource
from tidesync.testing.hubspot import FakeHubSpot
from tidesync.testing.stripe import FakeStripe


class ThreadedServer:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port), in its own thread and event loop."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), name="conformance-fake", daemon=True
        )
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            self.thread.join(0.01)
        assert self.server.started, "the fake API did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class _StartedFeed(EngineCommits):
    """A fresh Stripe source starts its feed at the newest event there is when it first reads.

    The contract makes changes right after ``open``, so on a fresh start this
    reads once at open: the feed then starts before those changes, as it
    would in a pipeline running before them.
    """

    async def open(self, ctx: Context, after: Position | None) -> None:
        await super().open(ctx, after)
        if after is None:
            batch = await self.read(1, 0.0)
            assert not batch.events


class StripeSourceHarness:
    """The Stripe Events API as a change feed; records are ``customer`` objects ``cus_<id>``.

    Keys are Stripe ids (``key(i)``). Bad input: an event whose object has no
    id; the source reports it in ``batch.rejected`` and goes on.
    """

    entity = "stripe.customer"
    every_change = True
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeStripe()
        self.fake.create("customer", "cus_seed", name="before the feed", qty=0)
        self.server = ThreadedServer(self.fake.app)

    @staticmethod
    def key(i: int) -> tuple[Any, ...]:
        return (f"cus_{i}",)

    def make_source(self) -> Any:
        config = {"type": "stripe", "api_key": "sk_test_fake", "base_url": self.server.url, "poll_interval": 0.005,
                  "lookback": 0, "objects": ["customer"]}  # fmt: skip
        return _StartedFeed(StripeSource(StripeSourceConfig.model_validate(config)))

    def insert(self, ids: range) -> None:
        for i in ids:
            self.fake.create("customer", f"cus_{i}", name=f"item {i}", qty=0)

    def update(self, ids: range, qty: int) -> None:
        for i in ids:
            self.fake.update("customer", f"cus_{i}", qty=qty)

    def delete(self, ids: range) -> None:
        for i in ids:
            self.fake.delete("customer", f"cus_{i}")

    def feed_bad_input(self, key: int) -> None:
        self.fake._event("customer.created", {"object": "customer", "name": f"item {key} without an id"}, None)

    def cleanup(self) -> None:
        self.server.stop()


class HubSpotSourceHarness:
    """HubSpot CRM search over ``contacts`` (keys: record ids as text; properties come back as text).

    A polling source (``every_change = False``): a pass sees each record as
    it is, so changes between passes coalesce. Deletes come from the archived
    list; this harness's ``delete`` removes a record from the fake outright,
    so the cases here do not exercise them (test_http_poll_hubspot does).
    """

    entity = "hubspot.contact"
    every_change = False
    exclusions = {
        "bad_input": "the search API returns records HubSpot itself validated: there is no malformed record to "
        "feed short of a broken fake, and the records' properties are free text",
    }

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeHubSpot()
        self.server = ThreadedServer(self.fake.app)
        self.modified_ms = 0

    @staticmethod
    def key(i: int) -> tuple[Any, ...]:
        return (str(i),)

    @staticmethod
    def as_item(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": int(row["hs_object_id"]), "name": row["name"], "qty": int(row["qty"])}

    def make_source(self) -> Any:
        config = {"type": "hubspot", "token": "pat-na1-fake", "base_url": self.server.url, "poll_interval": 0.005,
                  "lookback": 0, "rate_limit": {"per_second": 10_000},
                  "objects": [{"type": "contacts", "properties": ["name", "qty"]}]}  # fmt: skip
        return EngineCommits(HubSpotSource(HubSpotSourceConfig.model_validate(config)))

    def _upsert(self, i: int, **props: Any) -> None:
        # HubSpot stamps a change with its own clock: now, and never twice the same millisecond here.
        self.modified_ms = max(self.modified_ms + 1, int(time.time() * 1000))
        self.fake.upsert("contacts", i, self.modified_ms, **props)

    def insert(self, ids: range) -> None:
        for i in ids:
            self._upsert(i, name=f"item {i}", qty=0)

    def update(self, ids: range, qty: int) -> None:
        for i in ids:
            self._upsert(i, qty=qty)

    def delete(self, ids: range) -> None:
        for i in ids:
            self.fake.records["contacts"].pop(str(i))

    def cleanup(self) -> None:
        self.server.stop()


class HubSpotHistorySourceHarness(HubSpotSourceHarness):
    """The HubSpot source with ``property_history: true``: an update edits ``note`` and then ``qty`` a
    millisecond apart, so a pass that sees both emits two events for the record (one per change time), the
    history read through batch read between the search page and the events."""

    def make_source(self) -> Any:
        config = {"type": "hubspot", "token": "pat-na1-fake", "base_url": self.server.url, "poll_interval": 0.005,
                  "lookback": 0, "rate_limit": {"per_second": 10_000}, "property_history": True,
                  "objects": [{"type": "contacts", "properties": ["name", "qty", "note"]}]}  # fmt: skip
        return EngineCommits(HubSpotSource(HubSpotSourceConfig.model_validate(config)))

    def update(self, ids: range, qty: int) -> None:
        for i in ids:
            self._upsert(i, note=f"qty was set to {qty}")
            self._upsert(i, qty=qty)
