"""The ``webhook`` source under the conformance suite: signed deliveries fed through its intake.

Changes reach the source the way they do in production, minus the HTTP
server: a signed request goes to :meth:`WebhookIntake.receive`, which journals
it in the pipeline's state store, and the source reads the journal. The
harness's change methods are coroutines here (the intake is async); the
contract tests await whatever a change method returns.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from pathlib import Path
from typing import Any

import msgspec

from tidesync.event import Batch, Position
from tidesync.protocols import Context
from tidesync.sources.webhook import WebhookSource, WebhookSourceConfig
from tidesync.sources.webhook.intake import WebhookIntake
from tidesync.sources.webhook.journal import JournalWriter
from tidesync.sources.webhook.provider import RawRequest

SECRET = "conformance-webhook-secret"
CONFIG = {
    "type": "webhook",
    "provider": "generic",
    "name": "conformance",
    "secrets": [SECRET],
    "poll_interval_ms": 5,
    "signature": {"scheme": "hmac-sha256", "header": "X-Signature", "encoding": "hex"},
    "mapping": {
        "event_id": "id",
        "entity": "items",
        "key": ["data.id"],
        "op": "action",
        "ops": {"created": "insert", "updated": "update", "deleted": "delete"},
        "after": "data",
        "changed": "changed",
    },
}


class _Fed:
    """The source, with the harness's intake journaling into the state store the source is opened with."""

    def __init__(self, harness: WebhookSourceHarness) -> None:
        self.harness = harness
        self.source = WebhookSource(WebhookSourceConfig.model_validate(CONFIG))

    async def open(self, ctx: Context, after: Position | None) -> None:
        self.harness.intake.journal = JournalWriter(ctx.state)
        await self.source.open(ctx, after)

    async def read(self, max_events: int, max_wait: float) -> Batch:
        return await self.source.read(max_events, max_wait)

    async def commit(self, position: Position) -> None:
        await self.source.commit(position)

    async def close(self) -> None:
        await self.source.close()
        if self.harness.intake.journal is not None:
            await self.harness.intake.journal.close()


class WebhookSourceHarness:
    """A generic-provider webhook source (HMAC-signed JSON, one event per delivery).

    Bad input: a signed, well-formed delivery whose record has no key. The
    intake accepts it (the body is JSON with an event id); mapping fails, and
    the source reports it in ``batch.rejected`` (a dead letter) and goes on.
    """

    entity = "items"
    every_change = True
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.intake = WebhookIntake(WebhookSourceConfig.model_validate(CONFIG), "conformance")
        self._ids = itertools.count(1)

    def make_source(self) -> Any:
        return _Fed(self)

    async def _send(self, action: str, data: dict[str, Any], changed: list[str] | None = None) -> None:
        body = msgspec.json.encode({"id": f"evt_{next(self._ids)}", "action": action, "data": data, "changed": changed})
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "x-signature": signature}
        reply = await self.intake.receive(RawRequest("POST", "http://hooks.test/webhooks/conformance", headers, body))
        assert reply.status == 200, reply

    async def insert(self, ids: range) -> None:
        for i in ids:
            await self._send("created", {"id": i, "name": f"item {i}", "qty": 0})

    async def update(self, ids: range, qty: int) -> None:
        for i in ids:
            await self._send("updated", {"id": i, "qty": qty}, ["qty"])

    async def delete(self, ids: range) -> None:
        for i in ids:
            await self._send("deleted", {"id": i})

    async def feed_bad_input(self, key: int) -> None:
        await self._send("created", {"name": f"item {key} without its key"})

    def cleanup(self) -> None:
        pass
