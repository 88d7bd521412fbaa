"""The webhook sink with ``format: cloudevents`` / ``debezium``: the body is the formatted event, headers unchanged."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import standardwebhooks
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.integration.webhook_support import serve
from tidesync.errors import PartialBatchError
from tidesync.event import ChangeEvent, to_jsonable
from tidesync.formats import decoder
from tidesync.protocols import Context
from tidesync.sinks.webhook import WebhookSink, WebhookSinkConfig
from tidesync.sinks.webhook.envelope import idempotency_id
from tidesync.state import open_state_store
from tidesync.state.store import StateStore

SECRET = "whsec_" + base64.b64encode(b"format-test-key-0123456789abcd").decode()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def events(n: int) -> list[ChangeEvent]:
    return [
        ChangeEvent("public.orders", (i,), "update", before={"id": i, "n": 0}, after={"id": i, "n": i},
                    changed=("n",), position=(100 + i, 0), committed_at=1_700_000_000.5 + i, txid=9)
        for i in range(n)
    ]  # fmt: skip


class Receiver:
    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.verifier = standardwebhooks.Webhook(SECRET)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        self.verifier.verify(body, headers)  # raises on a bad signature: the test sees a 500
        self.posts.append((headers, body))
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.endpoint, methods=["POST"])])


async def sent(store: StateStore, url: str, evs: list[ChangeEvent], **config: object) -> None:
    sink = WebhookSink(WebhookSinkConfig.model_validate({"url": url, "secrets": [SECRET], "concurrency": 1, **config}))
    await sink.open(Context(pipeline="crm", name="hook", state=store))
    try:
        await sink.write(evs)
    finally:
        await sink.close()


async def test_cloudevents_bodies_are_structured_cloudevents_signed_as_standard_webhooks(store: StateStore) -> None:
    receiver = Receiver()
    evs = events(3)
    async with serve(app=receiver.app()) as server:
        await sent(store, f"{server.url}/hook", evs, format="cloudevents")
        await sent(store, f"{server.url}/hook", evs, format="cloudevents", batch_size=3)
    assert len(receiver.posts) == 4
    for (headers, body), e in zip(receiver.posts[:3], evs, strict=True):
        assert headers["content-type"] == "application/cloudevents+json"
        ce = from_http_event(HTTPMessage(headers=headers, body=body))  # the SDK reads (and validates) it
        assert ce.get_id() == headers["webhook-id"] == idempotency_id("crm", "hook", e)
        assert ce.get_type() == "io.tidesync.update" and ce.get_source() == "tidesync/crm"
        assert ce.get_subject() == f"public.orders/{e.key[0]}" and ce.get_data() == to_jsonable(e)
        back = decoder("cloudevents")(body)
        assert (back.entity, back.key, back.op, back.position, back.after) == (
            e.entity,
            e.key,
            e.op,
            e.position,
            e.after,
        )
    headers, body = receiver.posts[3]
    assert headers["content-type"] == "application/cloudevents-batch+json"
    batch = msgspec.json.decode(body)
    assert [c["id"] for c in batch] == [idempotency_id("crm", "hook", e) for e in evs]
    assert [decoder("cloudevents")(msgspec.json.encode(c)).key for c in batch] == [(0,), (1,), (2,)]


async def test_debezium_bodies_decode_to_the_same_events(store: StateStore) -> None:
    receiver = Receiver()
    evs = events(2)
    async with serve(app=receiver.app()) as server:
        await sent(store, f"{server.url}/hook", evs, format="debezium")
    assert [decoder("debezium")(body) for _, body in receiver.posts] == evs
    assert all(h["content-type"] == "application/json" for h, _ in receiver.posts)
    assert msgspec.json.decode(receiver.posts[0][1])["op"] == "u"


async def test_the_default_stays_the_envelope_and_an_event_no_format_carries_fails_alone(store: StateStore) -> None:
    receiver = Receiver()
    deep: object = 1
    for _ in range(5000):  # deeper than any JSON encoder recurses
        deep = [deep]
    bad = ChangeEvent("public.orders", (9,), "insert", after={"v": deep}, position=(1, 0))
    async with serve(app=receiver.app()) as server:
        await sent(store, f"{server.url}/hook", events(1))
        with pytest.raises(PartialBatchError) as info:
            await sent(store, f"{server.url}/hook", [bad, *events(1)], format="cloudevents")
    assert list(info.value.failures) == [0] and info.value.failures[0].error_class == "format"
    envelope = msgspec.json.decode(receiver.posts[0][1])
    assert envelope["type"] == "public.orders.update" and envelope["data"]["key"] == [0]
    assert len(receiver.posts) == 2 and msgspec.json.decode(receiver.posts[1][1])["specversion"] == "1.0"


def test_an_unknown_format_is_refused_at_config_load() -> None:
    with pytest.raises(ValidationError, match="'tidesync', 'debezium' or 'cloudevents'"):
        WebhookSinkConfig.model_validate({"url": "http://x/h", "secrets": [SECRET], "format": "avro"})
    assert WebhookSinkConfig.model_validate({"url": "http://x/h", "secrets": [SECRET]}).format == "tidesync"
