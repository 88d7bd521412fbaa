"""The webhook sink against a real receiver on loopback: signatures, outages, restarts, 410, order, limits."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import standardwebhooks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.integration.webhook_support import serve
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.errors import PartialBatchError, PermanentError, TransientError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.retry import RetryPolicy
from tidesync.sinks.blocked import BlockedError
from tidesync.sinks.webhook import WebhookSink, WebhookSinkConfig, enable_endpoint, endpoint_status
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import FakeClock, ListSource, eventually

SECRET = "whsec_" + base64.b64encode(b"sink-test-key-0123456789abcdef").decode()
Handler = Callable[[Request, bytes], Awaitable[Response]]


class Receiver:
    """Records every POST (headers, body, fake-or-real time) and answers through ``handler``."""

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock
        self.attempts: list[dict[str, Any]] = []
        self.handler: Handler | None = None
        self.verifier = standardwebhooks.Webhook(SECRET)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        at = self.clock.time() if self.clock is not None else time.time()
        record = {"id": headers.get("webhook-id"), "at": at, "body": body, "headers": headers, "status": 0}
        self.attempts.append(record)
        response = await self.handler(request, body) if self.handler else Response(status_code=204)
        record["status"] = response.status_code
        return response

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.endpoint, methods=["POST"])])

    def delivered(self) -> list[dict[str, Any]]:
        return [a for a in self.attempts if 200 <= a["status"] < 300]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def events(n: int, keys: int | None = None) -> list[ChangeEvent]:
    return [
        ChangeEvent("public.orders", ((i % keys) if keys else i,), "update", after={"id": i, "n": i},
                    changed=("n",), position=(i + 1,), committed_at=1_700_000_000.0 + i)
        for i in range(n)
    ]  # fmt: skip


def sink_for(url: str, **kw: Any) -> WebhookSink:
    return WebhookSink(WebhookSinkConfig.model_validate({"url": url, "secrets": [SECRET], **kw}))


async def opened(sink: WebhookSink, store: StateStore, clock: Any = None, pipeline: str = "p") -> WebhookSink:
    ctx = Context(pipeline=pipeline, name="sink", state=store)
    if clock is not None:
        ctx.clock = clock
    await sink.open(ctx)
    return sink


async def test_what_the_sink_sends_verifies_with_the_standardwebhooks_package(store: StateStore) -> None:
    receiver = Receiver()

    async def verify(request: Request, body: bytes) -> Response:
        receiver.verifier.verify(body, dict(request.headers))  # raises on a bad signature
        return Response(status_code=200)

    receiver.handler = verify
    async with serve(app=receiver.app()) as server:
        sink = await opened(sink_for(f"{server.url}/hook", concurrency=1), store)
        evs = events(5)
        await sink.write(evs)
        await sink.write(evs[:2])  # the same events again: the same ids
        batched = await opened(sink_for(f"{server.url}/hook", batch_size=3, concurrency=1), store, pipeline="q")
        await batched.write(evs)
        await sink.close()
        await batched.close()
    assert [a["status"] for a in receiver.attempts] == [200] * 9
    singles = receiver.attempts[:7]
    assert len({a["id"] for a in singles[:5]}) == 5 and [a["id"] for a in singles[5:]] == [a["id"] for a in singles[:2]]
    first = msgspec.json.decode(singles[0]["body"])
    assert first["id"] == singles[0]["id"] and first["type"] == "public.orders.update"
    assert first["timestamp"] == "2023-11-14T22:13:20Z"
    assert first["data"]["key"] == [0] and first["data"]["after"] == {"id": 0, "n": 0}
    batch = msgspec.json.decode(receiver.attempts[7]["body"])
    assert batch["type"] == "batch" and [e["data"]["key"] for e in batch["data"]] == [[0], [1], [2]]
    assert len(msgspec.json.decode(receiver.attempts[8]["body"])["data"]) == 2


async def test_an_outage_then_recovery_delivers_everything_once_on_the_configured_schedule(store: StateStore) -> None:
    clock = FakeClock()
    t0 = clock.time()
    receiver = Receiver(clock)

    async def flaky(request: Request, body: bytes) -> Response:
        if clock.time() < t0 + 20:  # down for the first 20 (fake) seconds
            return Response("upstream down", status_code=503)
        return Response(status_code=200)

    receiver.handler = flaky
    async with serve(app=receiver.app()) as server:
        sink = sink_for(
            f"{server.url}/hook", concurrency=1, retry={"initial_delay": 1, "multiplier": 2, "jitter": "none"}
        )
        source = ListSource(events(20))
        runner = PipelineRunner(
            "p", source, sink, store, clock=clock, batch=BatchPolicy(100, 0.01),
            retry=RetryPolicy(initial_delay=0.01, max_delay=0.01, jitter="none"),
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await eventually(lambda: len(receiver.delivered()) >= 20, timeout=20, message="every event delivered")
        await eventually(lambda: runner.position == (19,), message="the checkpoint")
        stop.set()
        await asyncio.wait_for(task, 10)
    delivered = [a["id"] for a in receiver.delivered()]
    assert len(delivered) == 20 and len(set(delivered)) == 20  # every event, none twice
    head = [a for a in receiver.attempts if a["id"] == receiver.attempts[0]["id"]]
    gaps = [round(b["at"] - a["at"], 3) for a, b in itertools.pairwise(head)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0]  # the configured schedule, exactly
    assert [a["status"] for a in head] == [503] * 5 + [200]
    # while down, only the head event probed: one attempt per retry round, not one per event
    assert sum(1 for a in receiver.attempts if a["status"] == 503) == 5
    assert await store.kv_scan("webhook_sink_retry") == {}  # nothing left scheduled


async def test_a_restart_continues_the_backoff_where_it_was(store: StateStore) -> None:
    clock = FakeClock()
    receiver = Receiver(clock)

    async def down(request: Request, body: bytes) -> Response:
        return Response(status_code=502)

    receiver.handler = down
    ev = events(1)
    cfg = {"retry": {"initial_delay": 10, "multiplier": 3, "jitter": "none"}}
    async with serve(app=receiver.app()) as server:
        sink = await opened(sink_for(f"{server.url}/hook", **cfg), store, clock)
        for _ in range(2):
            with pytest.raises(PartialBatchError) as info:
                await sink.write(ev)
            assert isinstance(info.value.failures[0], TransientError) and "502" in str(info.value.failures[0])
        await sink.close()
        # a new process: the schedule comes from the state store
        again = await opened(sink_for(f"{server.url}/hook", **cfg), store, clock)
        clock.sleeps.clear()
        with pytest.raises(PartialBatchError):
            await again.write(ev)
        await again.close()
    times = [a["at"] for a in receiver.attempts]
    assert [round(b - a, 3) for a, b in itertools.pairwise(times)] == [10.0, 30.0]
    assert clock.sleeps == [30.0]  # it waited the third delay (10 * 3), not the first again
    (stored,) = (await store.kv_scan("webhook_sink_retry")).values()
    assert stored["attempts"] == 3 and stored["next"] == times[2] + 90.0


async def test_410_gone_disables_the_endpoint_until_it_is_re_enabled(store: StateStore) -> None:
    clock = FakeClock()
    receiver = Receiver(clock)
    gone = True

    async def answer(request: Request, body: bytes) -> Response:
        return Response("bye", status_code=410) if gone else Response(status_code=200)

    receiver.handler = answer
    async with serve(app=receiver.app()) as server:
        sink = await opened(sink_for(f"{server.url}/hook"), store, clock)
        with pytest.raises(PartialBatchError) as info:
            await sink.write(events(3))
        errors = list(info.value.failures.values())
        assert len(errors) == 3 and all(isinstance(e, PermanentError) for e in errors)
        assert "410 Gone" in str(errors[0]) and "tidesync webhook enable" in str(errors[0])
        assert sink.disabled and not sink.alert
        attempts = len(receiver.attempts)
        with pytest.raises(PartialBatchError):  # fails fast: nothing is sent
            await sink.write(events(2))
        assert len(receiver.attempts) == attempts
        # a restart does not forget it
        fresh = await opened(sink_for(f"{server.url}/hook"), store, clock)
        assert fresh.disabled
        gone = False
        assert await enable_endpoint(store, "p") is True
        clock.advance(2)  # the running sink looks at the stored record again after a second
        await sink.write(events(2))
        assert not sink.disabled and receiver.attempts[-1]["status"] == 200
        # another URL in the config is another endpoint: enabled
        await sink.close()
        await fresh.close()


async def test_4xx_is_permanent_with_status_and_excerpt_and_later_events_of_the_key_are_blocked(
    store: StateStore,
) -> None:
    receiver = Receiver()

    async def reject_n3(request: Request, body: bytes) -> Response:
        if msgspec.json.decode(body)["data"]["after"]["n"] == 3:
            return Response('{"error": "field n must not be 3"}', status_code=422)
        return Response(status_code=200)

    receiver.handler = reject_n3
    async with serve(app=receiver.app()) as server:
        sink = await opened(sink_for(f"{server.url}/hook", concurrency=2), store)
        evs = events(10, keys=4)  # key k: n = k, k+4, k+8
        with pytest.raises(PartialBatchError) as info:
            await sink.write(evs)
        await sink.close()
    failures = info.value.failures
    assert sorted(failures) == [3, 7]  # n=3 rejected; n=7 (same key, later) never sent
    assert isinstance(failures[3], PermanentError) and "422" in str(failures[3]) and "must not be 3" in str(failures[3])
    assert isinstance(failures[7], BlockedError) and failures[7].error_class == "blocked"
    sent = [msgspec.json.decode(a["body"])["data"]["after"]["n"] for a in receiver.attempts]
    assert 7 not in sent and sorted(sent) == [0, 1, 2, 3, 4, 5, 6, 8, 9]


async def test_concurrency_limit_and_per_key_order(store: StateStore) -> None:
    receiver = Receiver()
    in_flight: dict[Any, int] = {}
    peak = {"all": 0, "same_key": 0}
    order: dict[Any, list[int]] = {}

    async def slow(request: Request, body: bytes) -> Response:
        data = msgspec.json.decode(body)["data"]
        key = tuple(data["key"])
        in_flight[key] = in_flight.get(key, 0) + 1
        peak["all"] = max(peak["all"], sum(in_flight.values()))
        peak["same_key"] = max(peak["same_key"], in_flight[key])
        order.setdefault(key, []).append(data["after"]["n"])
        await asyncio.sleep(0.005)
        in_flight[key] -= 1
        return Response(status_code=200)

    receiver.handler = slow
    async with serve(app=receiver.app()) as server:
        sink = await opened(sink_for(f"{server.url}/hook", concurrency=4), store)
        await sink.write(events(60, keys=6))
        await sink.close()
    assert peak["same_key"] == 1 and 1 < peak["all"] <= 4
    assert all(ns == sorted(ns) for ns in order.values()) and sum(len(v) for v in order.values()) == 60


async def test_retry_after_is_honoured_and_continuous_failure_disables_and_alerts(store: StateStore) -> None:
    clock = FakeClock()
    receiver = Receiver(clock)

    async def busy(request: Request, body: bytes) -> Response:
        return Response(status_code=429, headers={"retry-after": "120"})

    receiver.handler = busy
    async with serve(app=receiver.app()) as server:
        sink = await opened(
            sink_for(f"{server.url}/hook", disable_after=300, retry={"initial_delay": 1, "jitter": "none"}),
            store,
            clock,
        )
        for _ in range(4):
            with pytest.raises(PartialBatchError):
                await sink.write(events(1))
        await sink.close()
    times = [a["at"] for a in receiver.attempts]
    assert [round(b - a) for a, b in itertools.pairwise(times)] == [120, 120, 120]
    assert sink.disabled and sink.alert  # failing for 360 s > 300 s
    status = await endpoint_status(store, "p")
    assert status is not None and status["alert"] and "failing for" in status["disabled"]
