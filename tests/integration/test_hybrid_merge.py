"""The hybrid source's merge rules, with scripted sub-sources: matching per mode, ordering, positions, commits."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from tidesync.event import Batch, ChangeEvent, Position, RecordVersion
from tidesync.observe.metrics import REGISTRY
from tidesync.protocols import Context
from tidesync.registry import REGISTRY as PLUGINS
from tidesync.registry import Plugin
from tidesync.sources.hybrid import HybridConfig, HybridSource
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import MemorySink

FEEDS: dict[str, list[Batch]] = {}
COMMITS: dict[str, list[Position]] = {}


class FeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["test_feed"] = "test_feed"
    feed: str


class FeedSource:
    """Hands out the batches a test puts in ``FEEDS[feed]``; its rows' cursor column is ``updated_at``."""

    def __init__(self, config: FeedConfig) -> None:
        self.feed = config.feed

    async def open(self, ctx: Context, after: Position | None) -> None:
        FEEDS.setdefault(self.feed, [])

    async def read(self, max_events: int, max_wait: float) -> Batch:
        if FEEDS[self.feed]:
            return FEEDS[self.feed].pop(0)
        await asyncio.sleep(min(max_wait, 0.005))
        return Batch([])

    async def commit(self, position: Position) -> None:
        COMMITS.setdefault(self.feed, []).append(position)

    async def close(self) -> None:
        pass

    def cursor_column(self, entity: str) -> str:
        return "updated_at"


@pytest.fixture(autouse=True)
def feed_plugin() -> Iterator[None]:
    PLUGINS.register(Plugin("source", "test_feed", FeedConfig, FeedSource), replace=True)
    FEEDS.clear()
    COMMITS.clear()
    yield
    PLUGINS.unregister("source", "test_feed")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def hybrid(match: str, **extra: Any) -> HybridSource:
    cfg = {"type": "hybrid", "primary": {"type": "test_feed", "feed": "p"},
           "fallback": {"type": "test_feed", "feed": "f"}, "match": match, "grace": 0, **extra}  # fmt: skip
    return HybridSource(HybridConfig.model_validate(cfg))


def push(feed: str, position: int, *events: ChangeEvent, versions: list[RecordVersion | None] | None = None) -> None:
    FEEDS.setdefault(feed, []).append(Batch(list(events), (position,), versions=versions or []))


async def take(src: HybridSource, until: int = 1) -> list[Batch]:
    """Read until ``until`` events came out (or a second passed)."""
    out: list[Batch] = []
    for _ in range(100):
        batch = await src.read(100, 0.01)
        if batch.position is not None:
            out.append(batch)
            await src.commit(batch.position)
        if sum(len(b) for b in out) >= until and not FEEDS.get("p") and not FEEDS.get("f"):
            break
    return out


def missed(pipeline: str, entity: str) -> float:
    return REGISTRY.get_sample_value("tidesync_missed_by_primary_total", {"pipeline": pipeline, "entity": entity}) or 0


def upd(key: str, after: dict[str, Any], changed: tuple[str, ...] | None = None, at: float = 0.0) -> ChangeEvent:
    return ChangeEvent("hubspot.contact", (key,), "update", after=after, changed=changed, committed_at=at)


async def test_values_mode_emits_only_fields_the_primary_never_delivered(store: StateStore) -> None:
    src = hybrid("values", ignore_fields=["hs_lastmodifieddate"])
    await src.open(Context("vals", "source", store), None)
    before = missed("vals", "hubspot.contact")
    # webhooks: one property per event (HubSpot propertyChange)
    push("p", 1, upd("1", {"email": "a@x"}, ("email",)), upd("2", {"email": "b@x"}, ("email",)))
    await take(src, 2)
    # the poller's whole records: 1 matches what was delivered; 2 has a phone the webhooks never brought;
    # 3 was never seen by either side before (the poller's initial load of it, not a miss)
    push("f", 1,
         ChangeEvent("hubspot.contact", ("1",), "insert", after={"email": "a@x", "hs_lastmodifieddate": "t1"}),
         ChangeEvent("hubspot.contact", ("2",), "insert", after={"email": "b@x", "phone": "555",
                                                                  "hs_lastmodifieddate": "t2"}),
         ChangeEvent("hubspot.contact", ("3",), "insert", after={"email": "c@x"}))  # fmt: skip
    batches = await take(src, 2)
    events = [e for b in batches for e in b.events]
    assert [(e.key, e.op, e.changed) for e in events] == [(("2",), "update", ("phone",)), (("3",), "insert", None)]
    assert src.missed == 1 and missed("vals", "hubspot.contact") - before == 1
    assert src.duplicates == 1
    await src.close()


async def test_version_mode_keeps_an_older_version_from_overwriting_a_newer_one(store: StateStore) -> None:
    src = hybrid("version")
    await src.open(Context("vers", "source", store), None)
    t = [dt.datetime(2024, 1, 1, 12, 0, i, tzinfo=dt.UTC) for i in range(4)]

    def row(v: int, **fields: Any) -> dict[str, Any]:
        return {"id": 1, "updated_at": t[v], **fields}

    # the row went v1 (a, 1) -> v2 (a, 2) -> v3 (c, 3); CDC delivered v1 and v3 but lost v2, and was
    # quicker than the poller, which saw v2 (between its polls) and v3
    push("p", 10, ChangeEvent("public.items", (1,), "insert", after=row(1, name="a", qty=1)),
         ChangeEvent("public.items", (1,), "update", after=row(3, name="c", qty=3),
                     changed=("name", "qty", "updated_at")))  # fmt: skip
    push("f", 20, ChangeEvent("public.items", (1,), "update", after=row(2, name="a", qty=2), changed=("qty",)),
         ChangeEvent("public.items", (1,), "update", after=row(3, name="c", qty=3),
                     changed=("name", "qty")))  # fmt: skip
    sink = MemorySink()
    batches = await take(src, 3)
    for b in batches:
        sink.apply(b.events)
    assert src.missed == 1 and src.duplicates == 1  # v2 only the poller saw; its v3 is CDC's v3
    # v2 came after v3 was applied: it may not roll the row back (its field is re-written with v3's value)
    assert sink.tables["public.items"][(1,)] == {"id": 1, "updated_at": t[3], "name": "c", "qty": 3}
    assert [e.op for b in batches for e in b.events] == ["insert", "update", "update"]
    await src.close()


async def test_a_primary_copy_later_than_grace_is_not_applied_twice_and_positions_stay_ordered(
    store: StateStore,
) -> None:
    src = hybrid("event_id")
    await src.open(Context("late", "source", store), None)
    e1 = upd("1", {"email": "a@x"}, ("email",), at=100.0)
    e2 = upd("1", {"email": "b@x"}, ("email",), at=200.0)
    push("f", 1, e1, e2, versions=[(100.0, "evt_1"), (200.0, "evt_2")])  # grace 0: released at once
    first = await take(src, 2)
    push("p", 7, e1, versions=[(100.0, "evt_1")])  # the webhook of evt_1 arrives, late
    push("p", 8, upd("1", {"email": "c@x"}, ("email",), at=300.0), versions=[(300.0, "evt_3")])
    second = await take(src, 1)
    events = [e for b in first + second for e in b.events]
    assert [e.after["email"] for e in events] == ["a@x", "b@x", "c@x"]  # type: ignore[index]
    assert src.missed == 2 and src.duplicates == 1
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 3
    last = (first + second)[-1].position
    assert last is not None and last[:2] == positions[-1] and last[2:] == ((8,), (1,))
    assert COMMITS["p"][-1] == (8,) and COMMITS["f"][-1] == (1,)  # each side told its own position
    await src.close()
    # a restart resumes both sides where the checkpoint says, with a new epoch: larger positions
    again = hybrid("event_id")
    await again.open(Context("late", "source", store), last)
    push("p", 9, upd("1", {"email": "d@x"}, ("email",), at=400.0), versions=[(400.0, "evt_4")])
    (batch,) = await take(again, 1)
    assert batch.events[0].position > positions[-1]
    await again.close()


async def test_a_read_returns_at_most_max_events_and_splits_a_sub_batch_read_ahead(store: StateStore) -> None:
    """A part that hands out more than asked (or a read asking for fewer than the one before): split, in order."""
    src = hybrid("event_id")
    await src.open(Context("bound", "source", store), None)
    evs = [upd(str(i), {"email": f"{i}@x"}, ("email",), at=float(i)) for i in range(1, 8)]
    push("p", 1, *evs[:5], versions=[(float(i), f"evt_{i}") for i in range(1, 6)])
    push("p", 2, *evs[5:], versions=[(float(i), f"evt_{i}") for i in range(6, 8)])
    batches: list[Batch] = []
    for _ in range(200):
        batch = await src.read(2, 0.01)
        if batch.position is not None:
            batches.append(batch)
        if sum(len(b) for b in batches) >= 7:
            break
    await src.close()
    assert [len(b) for b in batches] == [2, 2, 1, 2]  # never more than asked; a sub-batch is never mixed in part
    assert [e.key for b in batches for e in b.events] == [(str(i),) for i in range(1, 8)]
    positions = [b.position for b in batches]
    assert positions == sorted(positions) and len(set(positions)) == 4  # type: ignore[type-var]
    # the primary's position moves only with the batch that ends its sub-batch: a checkpoint before that
    # resumes the primary before the sub-batch, so nothing handed out after the checkpoint is skipped
    assert [p[2] for p in positions] == [None, None, (1,), (2,)]  # type: ignore[index]


def test_hybrid_config_errors_name_the_sub_source_key() -> None:
    from tidesync.config import load_config_text
    from tidesync.errors import ConfigError

    text = """
pipelines:
  - name: h
    source:
      type: hybrid
      primary: {type: webhook, provider: stripe, secrets: [whsec_x], stripe: {api_key: sk_test_x}}
      fallback: {type: stripe, api_key: sk_test_x}
    sink: {type: sqlite, path: /tmp/never.db}
"""
    with pytest.raises(ConfigError, match="backfill"):
        load_config_text(text)
    with pytest.raises(ConfigError, match="match: version needs a sql_poll fallback"):
        load_config_text(
            text.replace("stripe: {api_key: sk_test_x}", "").replace(
                "type: hybrid", "type: hybrid\n      match: version"
            )
        )
    with pytest.raises(ConfigError, match=r"pipelines\[0\]\.source\.fallback\.objects: "):
        load_config_text(
            text.replace("stripe: {api_key: sk_test_x}", "").replace("api_key: sk_test_x}", "api_key: x, objects: 3}")
        )
