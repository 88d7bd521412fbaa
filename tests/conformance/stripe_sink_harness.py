"""The Stripe sink in the sink conformance suite: rows become customers of the Stripe fake.

The fake is reached in process (httpx's ASGI transport), so no server runs.
Rows of ``items`` map to customers: ``name`` is the customer's name, ``qty``
is not a customer parameter and goes to ``metadata[qty]`` (as text, read back
as an integer), the key is ``metadata[tidesync_key]``. Deleted customers are
gone from :meth:`rows`. The bad row carries an email Stripe refuses (400), the
transient fault is an outage (503 on every request), the slow destination a
Stripe that executes writes but holds its answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.integration.sql_sinks.conformance import Rows
from tidesync.protocols import Sink
from tidesync.retry import RetryPolicy
from tidesync.secrets import Secret
from tidesync.sinks.stripe import StripeSink, StripeSinkConfig
from tidesync.sources.http.auth import BearerKey
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.ratelimit import TokenBucket
from tidesync.testing.stripe import FakeStripe

KEY = "sk_test_conformance"


class Outage:
    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake

    def break_(self) -> None:
        self.fake.outage = 503

    def heal(self) -> None:
        self.fake.outage = None


class HeldAnswers:
    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake

    def hold(self) -> None:
        self.fake.hold()

    def release(self) -> None:
        self.fake.release()


class StripeSinkHarness:
    entity = "items"
    bad_row = {"name": "bad", "qty": 2, "email": "not-an-email"}  # Stripe answers 400 email_invalid
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeStripe(keys={KEY})

    def make_sink(self) -> Sink:
        client = ApiClient(
            "stripe conformance", "http://stripe.test", BearerKey(Secret(KEY)), TokenBucket(100_000),
            retry=RetryPolicy(initial_delay=0.001, max_delay=0.01), max_attempts=2,
            transport=httpx.ASGITransport(app=self.fake.app),
        )  # fmt: skip
        config = StripeSinkConfig.model_validate(
            {"type": "stripe", "api_key": KEY, "base_url": "http://stripe.test", "objects": {"items": "customers"}}
        )
        return StripeSink(config, client=client)

    def make_faulty_sink(self) -> tuple[Sink, Outage]:
        return self.make_sink(), Outage(self.fake)

    def make_slow(self) -> HeldAnswers:
        return HeldAnswers(self.fake)

    def _by_key(self) -> dict[int, dict[str, Any]]:
        return {int(c["metadata"]["tidesync_key"]): c for c in self.fake.objects.get("customer", {}).values()}

    def rows(self) -> Rows:
        out: Rows = {}
        for key, c in self._by_key().items():
            row: dict[str, Any] = {"id": key, "name": c["name"]}
            if "qty" in c["metadata"]:
                row["qty"] = int(c["metadata"]["qty"])
            out[(key,)] = row
        return out

    def set_column(self, key: int, column: str, value: Any) -> None:
        c = self._by_key()[key]
        if column == "name":
            c["name"] = value
        else:
            c["metadata"][column] = str(value)

    def cleanup(self) -> None:
        self.fake.release()
