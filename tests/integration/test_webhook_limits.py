"""Webhook intake that no payload can wedge, and ordering for generic webhooks, over the real HTTP intake.

- a body past the depth / width / value limits is answered 400 and nothing is journaled;
- an entry that got into the journal anyway (journaled before the limits existed, or by another
  writer) and cannot be encoded ends as one dead letter with its reason; the pipeline runs on;
- a generic source with ``ordering: true`` drops an older version that arrives second;
- ``tidesync validate`` refuses generic ordering without a version path;
- while the sink is down, the intake still answers 2xx and everything arrives once it is back.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.integration.webhook_support import JSON, runtime_for, serve, webhook_source
from tidesync.engine.lifecycle import State
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.errors import TransientError
from tidesync.event import ChangeEvent
from tidesync.observe.metrics import REGISTRY
from tidesync.retry import RetryPolicy
from tidesync.sources.webhook import WebhookSource
from tidesync.sources.webhook.signatures import sign_hmac
from tidesync.state import open_state_store
from tidesync.state.store import JournalAppend, StateStore
from tidesync.testing import MemorySink, eventually

SECRET = "shop-secret"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def shop(name: str, **extra: Any) -> WebhookSource:
    """A generic source: body ``{"id": <event id>, "order": {"id": ..., ...}, "rev": ..., "at": ...}``."""
    mapping = {"event_id": "id", "entity": "shop.orders", "key": ["order.id"], "after": "order"}
    mapping.update(extra.pop("mapping", {}))
    return webhook_source(
        provider="generic", name=name, secrets=[SECRET], poll_interval_ms=20,
        signature={"header": "X-Shop-Signature", "prefix": "sha256="}, mapping=mapping, **extra,
    )  # fmt: skip


def headers(body: bytes) -> dict[str, str]:
    return {**JSON, "x-shop-signature": sign_hmac(body, SECRET, "hex", "sha256=")}


def nested(levels: int, leaf: bytes = b"1") -> bytes:
    """JSON text of ``levels`` objects nested in each other (built as text: no recursion anywhere)."""
    return b'{"a":' * levels + leaf + b"}" * levels


def order_body(event_id: str, order_id: int, value: bytes = b'"x"', **top: Any) -> bytes:
    """An order event; ``value`` is the raw JSON of the order's ``note`` (so it nests as deep as wanted)."""
    rest = b"".join(b"," + msgspec.json.encode(k) + b":" + msgspec.json.encode(v) for k, v in top.items())
    return (
        b'{"id":' + msgspec.json.encode(event_id) + b',"order":{"id":%d,"note":' % order_id + value + b"}" + rest + b"}"
    )


def rejections(source: str, reason: str) -> float:
    return REGISTRY.get_sample_value("tidesync_webhook_rejections_total", {"source": source, "reason": reason}) or 0.0


def stale(source: str) -> float:
    return REGISTRY.get_sample_value("tidesync_webhook_stale_events_total", {"source": source}) or 0.0


async def post_all(url: str, bodies: Sequence[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return [await client.post(f"/webhooks/{path}", content=b, headers=headers(b)) for path, b in bodies]  # type: ignore[misc]


class Running:
    """A pipeline running in the background until the ``async with`` block ends."""

    def __init__(self, runner: PipelineRunner) -> None:
        self.runner = runner
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PipelineRunner:
        self.task = asyncio.create_task(self.runner.run(self.stop))
        return self.runner

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)


# --- limits at intake ---------------------------------------------------------------------------


async def test_a_body_past_a_shape_limit_gets_400_and_nothing_is_journaled(store: StateStore) -> None:
    deep_src, narrow_src = shop("deep"), shop("narrow", max_width=100, max_values=500)
    runtime = runtime_for(store, (deep_src, "deep"), (narrow_src, "narrow"))
    before = {r: rejections("deep", r) for r in ("too_deep", "malformed")}
    narrow_before = {r: rejections("narrow", r) for r in ("too_wide", "too_many_values")}
    wide_list = b"[" + b",".join([b"1"] * 101) + b"]"
    many = b"[" + b",".join([b"[1,2,3,4,5,6,7,8,9]"] * 50) + b"]"  # 50 + 450 values: past 500
    async with serve(runtime=runtime) as server:
        answers = await post_all(
            server.url,
            [
                ("deep", order_body("e-900", 1, nested(900))),  # under 10 KB, and 900 levels deep
                ("deep", order_body("e-65", 2, nested(63))),  # body, order, then 63 levels: 65 in all
                ("deep", order_body("e-2000", 3, nested(2000))),  # deeper than the JSON parser itself goes
                ("deep", order_body("e-64", 4, nested(62))),  # exactly the limit: accepted
                ("narrow", order_body("w-1", 5, wide_list)),
                ("narrow", order_body("w-2", 6, many)),
                ("narrow", order_body("w-3", 7, wide_list[:-5] + b"]")),  # 99 items: accepted
            ],
        )
    statuses = [a.status_code for a in answers]
    assert statuses == [400, 400, 400, 200, 400, 400, 200], [a.text for a in answers]
    assert answers[0].json() == {"error": "body nested deeper than 64 levels"}
    assert answers[1].json() == {"error": "body nested deeper than 64 levels"}
    assert answers[2].json() == {"error": "body nested too deep"}
    assert answers[4].json() == {"error": "body has more than 100 items in one array"}
    assert answers[5].json() == {"error": "body has more than 500 values"}
    assert rejections("deep", "too_deep") - before["too_deep"] == 2
    assert rejections("deep", "malformed") - before["malformed"] == 1
    assert {r: rejections("narrow", r) - narrow_before[r] for r in narrow_before} == {
        "too_wide": 1,
        "too_many_values": 1,
    }
    # nothing past a limit was journaled: only the two bodies within the limits are there
    assert [e.event_id for e in await store.journal_read("deep", 0, 10)] == ["e-64"]
    assert [e.event_id for e in await store.journal_read("narrow", 0, 10)] == ["w-3"]


# --- what gets into the journal anyway ----------------------------------------------------------


async def test_an_entry_too_deep_to_encode_is_dead_lettered_and_later_events_are_applied(store: StateStore) -> None:
    # ordering on: the guard would also keep each record as a shadow row (one more place it is encoded)
    src = shop("legacy", ordering=True, mapping={"version": "rev"})
    runtime = runtime_for(store, (src, "legacy"))
    # Journaled without passing the intake's limits (an older version, a backfill, another writer).
    deep = order_body("old-deep", 1, nested(1000), rev=1)
    await store.journal_append([JournalAppend("legacy", "old-deep", deep, {}, 1.0)])
    # A provider that fails in an unexpected way on one entry (recursion in a mapping) is parked too.
    provider = src.intake_for("legacy").provider
    real_map = provider.map

    def fragile_map(entry: Any) -> Any:
        if entry.event_id == "fragile":
            raise RecursionError("maximum recursion depth exceeded")
        return real_map(entry)

    provider.map = fragile_map  # type: ignore[method-assign]
    sink = MemorySink()
    runner = PipelineRunner("legacy", src, sink, store, batch=BatchPolicy(100, 0.02))
    async with Running(runner), serve(runtime=runtime) as server:
        answers = await post_all(
            server.url,
            [
                ("legacy", order_body("fragile", 2, rev=1)),
                ("legacy", order_body("ok-1", 3, b'"first"', rev=1)),
                ("legacy", order_body("ok-2", 1, b'"after the deep one"', rev=2)),
            ],
        )
        assert [a.status_code for a in answers] == [200] * 3
        await eventually(lambda: runner.position == (4,), timeout=15, message="every entry handled")
        assert runner.lifecycle.state == State.RUNNING
    letters = sorted(await store.dlq_list(), key=lambda d: d.event.key)
    assert [(d.event.key, d.error_class) for d in letters] == [
        (("fragile",), "transform"),
        (("old-deep",), "transform"),
    ]
    assert letters[0].error == "webhook mapping failed: RecursionError"
    assert letters[1].error == "webhook mapping: value nested deeper than 200 levels"
    assert letters[1].event.after is not None and letters[1].event.after["body"] == deep.decode()  # kept to inspect
    # the events after the bad ones were applied, the key of the deep one included
    assert sink.tables["shop.orders"] == {
        (3,): {"id": 3, "note": "first"},
        (1,): {"id": 1, "note": "after the deep one"},
    }
    status = await store.status_get("legacy")
    assert status is not None and status.state != "failed" and status.position == (4,)


# --- ordering for generic webhooks --------------------------------------------------------------


async def test_generic_ordering_drops_an_older_version_that_arrives_second(store: StateStore) -> None:
    src = shop("ordered", ordering=True, mapping={"version": "rev"})
    by_time = shop("ordered-ts", ordering=True, mapping={"timestamp": "at", "timestamp_unit": "iso"})
    unordered = shop("unordered", mapping={"version": "rev"})  # a version, but ordering off: last write wins
    runtime = runtime_for(store, (src, "ordered"), (by_time, "ordered-ts"), (unordered, "unordered"))
    stale_before = {name: stale(name) for name in ("ordered", "ordered-ts", "unordered")}
    newer, older = order_body("e-2", 7, b'"new"', rev=2), order_body("e-1", 7, b'"old"', rev=1)
    newer_iso = order_body("t-2", 8, b'"new"', at="2024-05-01T10:00:02Z")
    older_iso = order_body("t-1", 8, b'"old"', at="2024-05-01T10:00:01Z")
    async with serve(runtime=runtime) as server:
        answers = await post_all(
            server.url,
            [("ordered", newer), ("ordered", older), ("ordered-ts", newer_iso), ("ordered-ts", older_iso),
             ("unordered", newer), ("unordered", older)],
        )  # fmt: skip
        assert [a.status_code for a in answers] == [200] * 6
    # journal sequence numbers are shared by the sources of one store: the last one of each is its end
    last = {name: ((await store.journal_read(name, 0, 10))[-1].seq,) for name in stale_before}
    sinks: dict[str, MemorySink] = {}
    for source, name in ((src, "ordered"), (by_time, "ordered-ts"), (unordered, "unordered")):
        sink = sinks[name] = MemorySink()
        async with Running(PipelineRunner(name, source, sink, store, batch=BatchPolicy(100, 0.02))) as runner:
            await eventually(lambda r=runner, n=last[name]: r.position == n, timeout=15, message=f"{name} applied")
    assert sinks["ordered"].tables["shop.orders"] == {(7,): {"id": 7, "note": "new"}}
    assert sinks["ordered-ts"].tables["shop.orders"] == {(8,): {"id": 8, "note": "new"}}
    assert sinks["unordered"].tables["shop.orders"] == {(7,): {"id": 7, "note": "old"}}  # what ordering prevents
    assert {name: stale(name) - n for name, n in stale_before.items()} == {
        "ordered": 1,
        "ordered-ts": 1,
        "unordered": 0,
    }
    # The newest version is stored with the checkpoint: after a restart an even older event is still dropped.
    again = shop("ordered", ordering=True, mapping={"version": "rev"})
    runtime = runtime_for(store, (again, "ordered"))
    async with serve(runtime=runtime) as server:
        (answer,) = await post_all(server.url, [("ordered", order_body("e-0", 7, b'"oldest"', rev="0"))])
        assert answer.status_code == 200
    async with Running(PipelineRunner("ordered", again, sinks["ordered"], store, batch=BatchPolicy(100, 0.02))) as r:
        end = ((await store.journal_read("ordered", 0, 10))[-1].seq,)
        await eventually(lambda: r.position == end, timeout=15, message="the oldest event handled")
    assert sinks["ordered"].tables["shop.orders"] == {(7,): {"id": 7, "note": "new"}}
    assert stale("ordered") - stale_before["ordered"] == 2


def test_validate_refuses_generic_ordering_without_a_version_path(tmp_path: Path) -> None:
    config = tmp_path / "hooks.yaml"
    source = (
        "    source:\n      type: webhook\n      provider: generic\n      secrets: s\n      ordering: true\n"
        "      signature: {header: X-Sig}\n      mapping: {entity: shop.orders, event_id: id, key: [order.id]%s}\n"
    )
    text = f'state: sqlite:///{tmp_path}/state.db\npipelines:\n  - name: hooks\n{source}    sink: {{type: "null"}}\n'

    def validate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tidesync.cli", "validate", str(config)], capture_output=True, text=True, timeout=60
        )

    config.write_text(text % "")
    refused = validate()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "hooks.yaml:4: pipelines[0].source" in refused.stderr
    assert "ordering: true on a generic webhook source needs mapping.version or mapping.timestamp" in refused.stderr
    for path in (", version: order.rev", ", timestamp: at"):
        config.write_text(text % path)
        accepted = validate()
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr


# --- the journal holds what arrives while the sink is down ---------------------------------------


class SwitchSink(MemorySink):
    """A destination that refuses every write (a transient error) while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.refused = 0

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if self.down and events:
            self.refused += 1
            raise TransientError("destination unavailable")
        await super().write(events, replay=replay)


async def test_intake_answers_2xx_while_the_sink_is_down_and_delivers_once_it_is_back(store: StateStore) -> None:
    src = shop("outage")
    runtime = runtime_for(store, (src, "outage"))
    sink = SwitchSink()
    retry = RetryPolicy(initial_delay=0.01, max_delay=0.05)
    runner = PipelineRunner("outage", src, sink, store, batch=BatchPolicy(5, 0.01), retry=retry)
    first = [("outage", order_body(f"o-{i}", i, b'"%d"' % i)) for i in range(10)]
    later = [("outage", order_body(f"o-{i}", i, b'"%d"' % i)) for i in range(10, 40)]
    async with Running(runner), serve(runtime=runtime) as server:
        assert [a.status_code for a in await post_all(server.url, first)] == [200] * 10
        await eventually(lambda: runner.lifecycle.state == State.RETRYING, timeout=15, message="the sink failing")
        # the pipeline is blocked on its first batch; the intake keeps accepting into the journal
        answers = await post_all(server.url, later)
        assert [a.status_code for a in answers] == [200] * 30
        assert sink.refused >= 1 and sink.writes == [] and runner.lifecycle.state == State.RETRYING
        assert len(await store.journal_read("outage", 0, 100)) == 40
        sink.down = False
        await eventually(lambda: runner.position == (40,), timeout=15, message="everything delivered")
    assert sink.tables["shop.orders"] == {(i,): {"id": i, "note": str(i)} for i in range(40)}
    assert len(sink.writes) == 40 and await store.dlq_list() == []
