"""Webhook intake over HTTP: answers, counters, durability before the 2xx, mapping into a pipeline, backfill."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.integration.webhook_support import JSON, asgi_client, runtime_for, serve, webhook_source
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.observe.metrics import REGISTRY
from tidesync.protocols import Context
from tidesync.sources.webhook.signatures import sign_github, sign_hubspot_v3, sign_stripe
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import MemorySink, eventually

SECRET = "whsec_intake_test"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def rejections(source: str, reason: str) -> float:
    return REGISTRY.get_sample_value("tidesync_webhook_rejections_total", {"source": source, "reason": reason}) or 0.0


def stripe_body(
    event_id: str, obj_id: str = "cus_1", created: int | None = None, prev: dict[str, Any] | None = None, **fields: Any
) -> bytes:
    """A customer.updated event; ``fields`` is the object, ``prev`` its previous attributes (default: all fields)."""
    obj = {"id": obj_id, "object": "customer", **fields}
    prev = prev if prev is not None else {k: f"old-{v}" for k, v in fields.items()}
    created = created if created is not None else int(time.time())
    return msgspec.json.encode(
        {"id": event_id, "object": "event", "type": "customer.updated", "created": created,
         "data": {"object": obj, "previous_attributes": prev}}
    )  # fmt: skip


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {**JSON, "stripe-signature": stripe.WebhookSignature.generate_signature_header(body.decode(), secret)}


async def test_every_answer_and_every_rejection_is_counted(store: StateStore) -> None:
    src = webhook_source(provider="stripe", name="billing-a", secrets=[SECRET])
    runtime = runtime_for(store, (src, "p"), max_body_bytes=2048)
    body = stripe_body("evt_1", email="a@x")
    before = {r: rejections("billing-a", r) for r in ("bad_signature", "missing_signature", "stale_timestamp",
                                                       "malformed", "content_type", "too_large")}  # fmt: skip
    unknown = rejections("_unknown", "unknown_source")
    async with asgi_client(runtime) as client:
        ok = await client.post("/webhooks/billing-a", content=body, headers=signed(body))
        assert (ok.status_code, ok.json()) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0})
        dup = await client.post("/webhooks/billing-a", content=body, headers=signed(body))
        assert (dup.status_code, dup.json()["duplicates"]) == (200, 1)
        tampered = await client.post("/webhooks/billing-a", content=body.replace(b"a@x", b"b@x"), headers=signed(body))
        assert tampered.status_code == 401 and "secret" not in tampered.text
        assert (await client.post("/webhooks/billing-a", content=body, headers=JSON)).status_code == 401
        old = {**JSON, "stripe-signature": sign_stripe(body, SECRET, int(time.time()) - 3600)}
        assert (await client.post("/webhooks/billing-a", content=body, headers=old)).status_code == 401
        for bad in (b"not json", b"[1, 2]", b'{"type": "customer.updated"}'):
            r = await client.post("/webhooks/billing-a", content=bad, headers=signed(bad))
            assert r.status_code == 400 and len(r.text) < 120, r.text
        text = {**signed(body), "content-type": "text/plain"}
        assert (await client.post("/webhooks/billing-a", content=body, headers=text)).status_code == 415
        big = stripe_body("evt_big", email="x" * 4000)
        assert (await client.post("/webhooks/billing-a", content=big, headers=signed(big))).status_code == 413
        assert (await client.post("/webhooks/nobody", content=body, headers=signed(body))).status_code == 404
        health = await client.get("/healthz")
        assert health.json() == {"status": "ok", "webhook_sources": ["billing-a"]}
    after = {r: rejections("billing-a", r) - before[r] for r in before}
    assert after == {"bad_signature": 1, "missing_signature": 1, "stale_timestamp": 1, "malformed": 3,
                     "content_type": 1, "too_large": 1}  # fmt: skip
    assert rejections("_unknown", "unknown_source") - unknown == 1
    # accepted means journaled, once
    assert [e.event_id for e in await store.journal_read("billing-a", 0, 10)] == ["evt_1"]


async def test_an_oversized_chunked_body_is_refused_while_it_is_still_arriving(store: StateStore) -> None:
    src = webhook_source(provider="stripe", name="big", secrets=[SECRET], max_body_bytes=10_000)
    async with serve(runtime=runtime_for(store, (src, "p"))) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /webhooks/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(12):  # 12 KB sent, and the body never ends: a server that buffers it all waits forever
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        writer.close()


async def test_hubspot_signs_the_public_url_which_behind_a_proxy_is_configured(store: StateStore) -> None:
    src = webhook_source(provider="hubspot", name="hs", secrets=["client-secret"])
    runtime = runtime_for(store, (src, "p"), public_url="https://hooks.example.com/")
    body = (
        b'[{"eventId":1,"subscriptionId":9,"objectId":5,"occurredAt":1700000000000,'
        b'"subscriptionType":"contact.creation"}]'
    )
    ts = int(time.time() * 1000)
    public = sign_hubspot_v3("POST", "https://hooks.example.com/webhooks/hs?portal=7", body, "client-secret", ts)
    inner = sign_hubspot_v3("POST", "http://hooks.test/webhooks/hs?portal=7", body, "client-secret", ts)
    async with asgi_client(runtime) as client:
        for sig, status in ((inner, 401), (public, 200)):
            headers = {**JSON, "x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": str(ts)}
            r = await client.post("/webhooks/hs?portal=7", content=body, headers=headers)
            assert r.status_code == status, r.text
    assert [e.event_id for e in await store.journal_read("hs", 0, 10)] == ["9:1"]


async def run_until(runner: PipelineRunner, predicate: Any, message: str) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(predicate, timeout=15, message=message)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_a_stripe_pipeline_applies_in_record_order_and_parks_what_it_cannot_map(store: StateStore) -> None:
    src = webhook_source(provider="stripe", name="billing-b", secrets=[SECRET], poll_interval_ms=50)
    runtime = runtime_for(store, (src, "billing"))
    stale_before = REGISTRY.get_sample_value("tidesync_webhook_stale_events_total", {"source": "billing-b"}) or 0
    # evt_1 renamed the customer, then evt_2 changed the email; evt_1 is delivered late
    newer = stripe_body("evt_2", created=2000, prev={"email": "old@x"}, email="new@x", name="Ann")
    older = stripe_body("evt_1", created=1000, prev={"name": "A"}, email="old@x", name="Ann")
    thin = b'{"id": "evt_thin", "object": "v2.core.event", "type": "v1.customer.updated"}'
    other = stripe_body("evt_3", obj_id="cus_2", created=1500, email="two@x")
    headers = {b: signed(b) for b in (newer, older, thin, other)}
    for h in headers.values():  # events from long ago: accept any age here
        t = int(h["stripe-signature"].split(",")[0][2:])
        assert abs(t - time.time()) < 60
    sink = MemorySink()
    runner = PipelineRunner("billing", src, sink, store, batch=BatchPolicy(100, 0.02))
    async with asgi_client(runtime) as client:
        for b in (newer, older, thin, other):
            assert (await client.post("/webhooks/billing-b", content=b, headers=headers[b])).status_code == 200
        await run_until(runner, lambda: len(sink.writes) >= 3 and runner.position == (4,), "the events applied")
    rows = sink.tables["stripe.customer"]
    # the late event re-wrote only its field, with the NEWEST value known (evt_2's object): no rollback
    assert rows[("cus_1",)] == {"email": "new@x", "name": "Ann"} and rows[("cus_2",)] == {"email": "two@x"}
    assert (sink.writes[1].changed, sink.writes[1].after) == (("name",), {"name": "Ann"})
    assert (REGISTRY.get_sample_value("tidesync_webhook_stale_events_total", {"source": "billing-b"}) or 0) == (
        stale_before + 1
    )
    (letter,) = await store.dlq_list()
    assert letter.error_class == "transform" and "thin (v2)" in letter.error
    assert letter.event.entity == "webhook.billing-b" and letter.event.key == ("evt_thin",)
    assert json.loads(letter.event.after["body"])["object"] == "v2.core.event"  # type: ignore[index]
    # checkpointed entries were trimmed, but their ids still de-duplicate
    assert await store.journal_read("billing-b", 0, 10) == []
    async with asgi_client(runtime) as client:
        again = await client.post("/webhooks/billing-b", content=older, headers=signed(older))
        assert again.json()["duplicates"] == 1
    # the applied version is stored with the checkpoint: a restart still drops the late event
    shadow = await store.shadow_get("webhook:billing-b", "stripe.customer", [("cus_1",)])
    assert shadow[("cus_1",)].position == (2000.0, "evt_2")


async def test_github_and_generic_deliveries_flow_into_a_pipeline(store: StateStore) -> None:
    gh = webhook_source(provider="github", name="gh", secrets=["gh-secret"], poll_interval_ms=20)
    gen = webhook_source(
        provider="generic", name="shop", secrets=["shop-secret"], poll_interval_ms=20,
        signature={"header": "X-Shop-Signature", "prefix": "sha256="},
        mapping={"event_id": "id", "entity": "shop.orders", "key": ["order.id"], "after": "order",
                 "op": "kind", "ops": {"new": "insert"}, "timestamp": "at", "timestamp_unit": "iso"},
    )  # fmt: skip
    runtime = runtime_for(store, (gh, "gh"), (gen, "shop"))
    issue = {"action": "opened", "issue": {"number": 3, "title": "t", "updated_at": "2024-01-01T00:00:00Z"},
             "repository": {"full_name": "acme/app"}}  # fmt: skip
    gh_body = msgspec.json.encode(issue)
    gh_headers = {**JSON, "x-hub-signature-256": sign_github(gh_body, "gh-secret"), "x-github-event": "issues",
                  "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}  # fmt: skip
    order = msgspec.json.encode(
        {"id": "o-1", "kind": "new", "order": {"id": 9, "total": "12.50"}, "at": "2024-01-01T00:00:01Z"}
    )
    from tidesync.sources.webhook.signatures import sign_hmac

    shop_headers = {**JSON, "x-shop-signature": sign_hmac(order, "shop-secret", "hex", "sha256=")}
    async with asgi_client(runtime) as client:
        assert (await client.post("/webhooks/gh", content=gh_body, headers=gh_headers)).status_code == 200
        ping = {**gh_headers, "x-github-event": "ping", "x-github-delivery": "p1"}
        assert (await client.post("/webhooks/gh", content=b"{}", headers={**ping, "x-hub-signature-256":
                                  sign_github(b"{}", "gh-secret")})).json()["ignored"] == 1  # fmt: skip
        assert (await client.post("/webhooks/shop", content=order, headers=shop_headers)).status_code == 200
    for source, pipeline, entity, key in (
        (gh, "gh", "github.issue", ("acme/app", 3)),
        (gen, "shop", "shop.orders", (9,)),
    ):
        sink = MemorySink()
        runner = PipelineRunner(pipeline, source, sink, store, batch=BatchPolicy(10, 0.01))
        await run_until(runner, lambda s=sink: s.writes, f"{pipeline} applied")
        assert sink.writes[0].entity == entity and sink.writes[0].key == key and sink.writes[0].op == "insert"
        assert sink.writes[0].committed_at > 1.7e9


# --- Stripe backfill against a local server that answers like the Events API ---------------------------


def events_api(events: list[dict[str, Any]], seen: list[dict[str, str]]) -> Starlette:
    """GET /v1/events: newest first, created[gt] filter, starting_after paging, limit, has_more."""

    async def list_events(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer sk_test_backfill":
            return JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=401)
        q = dict(request.query_params)
        seen.append(q)
        gt, limit = int(q.get("created[gt]", 0)), int(q.get("limit", 10))
        rows = sorted((e for e in events if e["created"] > gt), key=lambda e: (e["created"], e["id"]), reverse=True)
        if "starting_after" in q:
            ids = [e["id"] for e in rows]
            rows = rows[ids.index(q["starting_after"]) + 1 :]
        page = rows[:limit]
        return JSONResponse({"object": "list", "url": "/v1/events", "has_more": len(rows) > limit, "data": page})

    return Starlette(routes=[Route("/v1/events", list_events)])


async def test_after_downtime_missed_stripe_events_are_backfilled_from_the_events_api(store: StateStore) -> None:
    now = int(time.time())
    events = [
        msgspec.json.decode(stripe_body(f"evt_{i:03}", obj_id=f"cus_{i % 7}", created=now - 1000 + i, email=f"{i}@x"))
        for i in range(250)
    ]
    seen: list[dict[str, str]] = []
    async with serve(app=events_api(events, seen)) as api:
        src = webhook_source(
            provider="stripe", name="bf", secrets=[SECRET],
            stripe={"api_key": "sk_test_backfill", "base_url": api.url, "backfill": False, "overlap": 60},
        )  # fmt: skip
        runtime = runtime_for(store, (src, "bf"))
        # before the downtime, events up to #100 arrived by webhook and were applied
        async with asgi_client(runtime) as client:
            for e in events[:101]:
                b = msgspec.json.encode(e)
                assert (await client.post("/webhooks/bf", content=b, headers=signed(b))).status_code == 200
        sink = MemorySink()
        runner = PipelineRunner("bf", src, sink, store, batch=BatchPolicy(500, 0.01))
        await run_until(runner, lambda: runner.position == (101,), "the delivered events applied")
        # the endpoint was down for #101..#249; a restart asks Stripe for them
        await src.open(Context(pipeline="bf", name="source", state=store), (101,))
        added = await src.backfill_once()
        assert added == 149  # the overlap re-listed some that arrived: the journal dropped those
        assert seen[0]["created[gt]"] == str(now - 1000 + 100 - 60) and seen[0]["limit"] == "100"
        assert len(seen) >= 2 and "starting_after" in seen[1]  # paged
        await src.close()
        runner = PipelineRunner("bf", src, sink, store, batch=BatchPolicy(500, 0.01))
        await run_until(runner, lambda: len(sink.writes) >= 250, "the backfilled events applied")
    expected = {(f"cus_{i % 7}",): {"email": f"{i}@x"} for i in range(250)}
    assert sink.tables["stripe.customer"] == expected  # every record at its newest version


async def test_stopping_the_server_lets_deliveries_in_flight_finish_their_journal_commit(store: StateStore) -> None:
    src = webhook_source(provider="stripe", name="graceful", secrets=[SECRET])
    runtime = runtime_for(store, (src, "p"))
    assert runtime.journal is not None
    journal_append = runtime.journal.append
    started = asyncio.Event()

    async def slow_append(entries: Any) -> Any:
        started.set()
        await asyncio.sleep(0.3)  # a slow disk: the commit is still running when the stop comes
        return await journal_append(entries)

    runtime.journal.append = slow_append  # type: ignore[method-assign]
    bodies = [stripe_body(f"evt_g{i}", email=f"{i}@x") for i in range(5)]
    async with serve(runtime=runtime) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            posts = [
                asyncio.create_task(client.post("/webhooks/graceful", content=b, headers=signed(b))) for b in bodies
            ]
            await started.wait()
            await server.stop()
            answers = await asyncio.gather(*posts)
        assert [a.status_code for a in answers] == [200] * 5
        async with httpx.AsyncClient() as late:
            with pytest.raises(httpx.ConnectError):
                await late.post(f"{server.url}/webhooks/graceful", content=bodies[0])
    assert len(await store.journal_read("graceful", 0, 10)) == 5
