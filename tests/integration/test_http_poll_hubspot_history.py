"""The HubSpot polling source with ``property_history``: an update split by the time each property changed.

The CRM API is the local fake, whose batch read answers ``propertiesWithHistory``
as HubSpot documents it (its fidelity: tests/integration/test_hubspot_fake_sdk.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.integration.test_http_poll_hubspot import run_until, source, store, table
from tests.integration.webhook_support import serve
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.state.store import StateStore
from tidesync.testing import MemorySink
from tidesync.testing.hubspot import FakeHubSpot

__all__ = ["store"]  # the fixture
PROPS = ["email", "firstname", "lastname"]
OBJECTS = [{"type": "contacts", "properties": PROPS}]


def history_reads(fake: FakeHubSpot) -> list[dict[str, Any]]:
    return [json.loads(s.body) for s in fake.seen if s.path.endswith("/batch/read")]


def current(fake: FakeHubSpot) -> dict[str, dict[str, Any]]:
    keys = (*PROPS, "lastmodifieddate", "hs_object_id")
    return {rid: {k: v for k, v in r["properties"].items() if k in keys} for rid, r in fake.records["contacts"].items()}


@pytest.mark.parametrize(("history", "max_events"), [(True, 100), (True, 1), (False, 100)])
async def test_properties_edited_at_different_times_are_events_in_time_order(
    store: StateStore, history: bool, max_events: int
) -> None:
    now = int(time.time() * 1000) - 3_600_000  # every edit older than "now - settle"
    fake = FakeHubSpot()
    for i in (1, 2, 3):
        fake.upsert("contacts", i, now + i, email=f"{i}@x", firstname=f"f{i}", lastname=f"l{i}")
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        src = source(api.url, lookback=7200, objects=OBJECTS, property_history=history)
        # max_events 1: a record's two events go in two batches (the record stays held between them)
        runner = PipelineRunner("hs-hist", src, sink, store, batch=BatchPolicy(max_events, 0.01))
        await run_until(runner, lambda: table(sink) == current(fake) and src.idle, "the first pass")
        assert history_reads(fake) == []  # inserts are one event each: no history needed
        t1, t2, t3 = now + 5000, now + 7000, now + 9000
        fake.upsert("contacts", 1, t1, firstname="Ann")  # a person edits firstname, then lastname later
        fake.upsert("contacts", 1, t3, lastname="Lee")
        fake.upsert("contacts", 2, t2, email="two@x", firstname="Two")  # two properties in one edit
        await run_until(runner, lambda: table(sink) == current(fake) and src.idle, "the edits")
        reads = src.records_read
        await run_until(runner, lambda: src.records_read >= reads + 6 and src.idle, "another look-back pass")
    updates = [(w.key[0], w.changed, round(w.committed_at * 1000)) for w in sink.writes if w.op == "update"]
    if history:
        assert updates == [
            ("2", ("email", "firstname", "lastmodifieddate"), t2),  # search order: record 2 was modified first
            ("1", ("firstname",), t1),  # each property at its own time, oldest first
            ("1", ("lastname", "lastmodifieddate"), t3),  # the record's modification time rides with the last
        ]
        first, last = (w for w in sink.writes if w.op == "update" and w.key == ("1",))
        assert first.before is not None and first.after is not None and last.after is not None
        assert (first.before["firstname"], first.after["firstname"], first.after["lastname"]) == ("f1", "Ann", "l1")
        assert last.before == first.after and last.after == current(fake)["1"]
        # one history read for the pass's updates (one batch holds both; a batch of one event, one each), of the
        # changed properties only; the look-back pass read them all again, found nothing changed, and asked nothing
        per_read = [["1", "2"]] if max_events > 1 else [["2"], ["1"]]
        assert [sorted(i["id"] for i in r["inputs"]) for r in history_reads(fake)] == per_read
        asked = sorted({n for r in history_reads(fake) for n in r["propertiesWithHistory"]})
        assert asked == ["email", "firstname", "lastname"]
        assert src.histories_read == 2
    else:  # one event per record, at the record's time
        assert updates == [
            ("2", ("email", "firstname", "lastmodifieddate"), t2),
            ("1", ("firstname", "lastname", "lastmodifieddate"), t3),
        ]
        assert history_reads(fake) == []


async def test_more_updates_than_one_history_read_takes_are_read_fifty_at_a_time(store: StateStore) -> None:
    now = int(time.time() * 1000) - 3_600_000
    fake = FakeHubSpot()
    for i in range(1, 121):
        fake.upsert("contacts", i, now + i, email=f"{i}@x", firstname="f", lastname="l")
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        src = source(api.url, lookback=7200, objects=OBJECTS, property_history=True, page_size=200)
        runner = PipelineRunner("hs-hist50", src, sink, store, batch=BatchPolicy(1000, 0.01))
        await run_until(runner, lambda: table(sink) == current(fake) and src.idle, "the first pass")
        for i in range(1, 121):
            fake.upsert("contacts", i, now + 10_000 + i, firstname=f"F{i}")
            fake.upsert("contacts", i, now + 20_000 + i, lastname=f"L{i}")
        await run_until(runner, lambda: table(sink) == current(fake) and src.idle, "the edits")
    sizes = [len(r["inputs"]) for r in history_reads(fake)]
    assert sizes == [50, 50, 20]  # one search page of 120 updates: three history reads, none over the limit
    updates = [w for w in sink.writes if w.op == "update"]
    assert len(updates) == 240 and all(
        w.changed == (("firstname",) if n % 2 == 0 else ("lastname", "lastmodifieddate")) for n, w in enumerate(updates)
    )
