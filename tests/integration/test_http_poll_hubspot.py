"""The HubSpot polling source against a local server shaped like HubSpot's CRM search and OAuth endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.objects import Filter, FilterGroup, PublicObjectSearchRequest

from tests.integration.webhook_support import serve
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.protocols import Context
from tidesync.secrets import Secret
from tidesync.sources.http.auth import CredentialRejected, OAuth2Refresh
from tidesync.sources.http.config import HubSpotSourceConfig
from tidesync.sources.http.hubspot import HubSpotSource
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import FakeClock, MemorySink, eventually
from tidesync.testing.hubspot import FakeHubSpot

TOKEN = "pat-na1-fake"
NOW_MS = 0  # set per test (an hour before it starts), not at import: under xdist a test may run minutes later


@pytest.fixture(autouse=True)
def _now_ms() -> None:
    global NOW_MS
    NOW_MS = int(time.time() * 1000) - 3_600_000  # an hour ago: every record is older than "now - settle"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def source(url: str, **extra: Any) -> HubSpotSource:
    cfg = {"type": "hubspot", "token": TOKEN, "base_url": url, "objects": ["contacts"], "poll_interval": 0.05,
           "rate_limit": {"per_second": 2000}, **extra}  # fmt: skip
    return HubSpotSource(HubSpotSourceConfig.model_validate(cfg))


async def run_until(runner: PipelineRunner, predicate: Callable[[], Any], message: str, timeout: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: task.done() or predicate(), timeout=timeout, message=message)
        if task.done():
            await task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def searches(fake: FakeHubSpot) -> list[dict[str, Any]]:
    return [json.loads(s.body) for s in fake.seen if s.path.endswith("/search")]


def table(sink: MemorySink, entity: str = "hubspot.contact") -> dict[str, dict[str, Any]]:
    return {k[0]: v for k, v in sink.tables.get(entity, {}).items()}


DEFAULT = ("createdate", "hs_object_id", "hs_lastmodifieddate", "lastmodifieddate")  # what search returns unasked
CONTACT = ("email", "firstname", "lastmodifieddate", "hs_object_id")


def expected(fake: FakeHubSpot, object_type: str = "contacts", keys: tuple[str, ...] = DEFAULT) -> dict[str, Any]:
    return {rid: {k: v for k, v in r["properties"].items() if k in keys}
            for rid, r in fake.records.get(object_type, {}).items()}  # fmt: skip


async def test_only_changed_properties_are_emitted_and_re_reads_emit_nothing(store: StateStore) -> None:
    fake = FakeHubSpot()
    for i in range(1, 51):
        fake.upsert("contacts", i, NOW_MS + i * 10, email=f"{i}@x", firstname=f"f{i}")
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        src = source(api.url, lookback=7200, objects=[{"type": "contacts", "properties": ["email", "firstname"]}])
        runner = PipelineRunner("hs", src, sink, store, batch=BatchPolicy(100, 0.01))
        await run_until(runner, lambda: table(sink) == expected(fake, keys=CONTACT), "the first pass")
        assert [w.op for w in sink.writes] == ["insert"] * 50
        fake.upsert("contacts", 7, NOW_MS + 5000, email="new@x")
        fake.upsert("contacts", 9, NOW_MS + 5001, firstname="Nine")
        await run_until(runner, lambda: table(sink) == expected(fake, keys=CONTACT) and src.idle, "the changes")
        reads = src.records_read
        await run_until(runner, lambda: src.records_read > reads + 50 and src.idle, "another look-back pass")
    updates = [w for w in sink.writes if w.op == "update"]
    assert [(w.key, w.changed) for w in updates] == [
        (("7",), ("email", "lastmodifieddate")),
        (("9",), ("firstname", "lastmodifieddate")),
    ]  # every record was read again (look-back), and only these two changed, only in these fields
    assert updates[0].before["email"] == "7@x" and updates[0].after["email"] == "new@x"  # type: ignore[index]
    body = searches(fake)[0]
    assert body["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    assert body["properties"] == ["email", "firstname", "lastmodifieddate", "hs_object_id"]


@pytest.mark.parametrize(("ceiling", "page", "ties"), [(300, 100, 1000), (10_000, 100, 10_050)])
async def test_windows_narrow_under_the_result_ceiling_and_ties_are_paged_by_id(
    store: StateStore, ceiling: int, page: int, ties: int
) -> None:
    fake = FakeHubSpot(ceiling=ceiling)
    bulk = NOW_MS + 500_000  # one bulk update stamped these records with the same millisecond
    for i in range(1, ties + 1):
        fake.upsert("deals", i, bulk, dealname=f"d{i}")
    for i in range(ties + 1, ties + 701):
        fake.upsert("deals", i, NOW_MS + (i % 997) * 1000, dealname=f"d{i}")  # spread over 1000 seconds
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        src = source(api.url, objects=["deals"], page_size=page, max_results=ceiling, lookback=0)
        runner = PipelineRunner("hs-ceiling", src, sink, store, batch=BatchPolicy(5000, 0.01))
        await run_until(runner, lambda: len(sink.writes) >= ties + 700 and src.idle, "every deal read")
    assert table(sink, "hubspot.deal") == expected(fake, "deals")
    assert len(sink.writes) == ties + 700  # nothing read twice, nothing skipped
    bodies = searches(fake)
    assert all(int(b.get("after", 0)) < ceiling for b in bodies)  # never asked past the ceiling (that is a 400)
    by_id = [b for b in bodies if b["sorts"][0]["propertyName"] == "hs_object_id"]
    assert by_id and all(
        b["filterGroups"][0]["filters"][0]
        == {"propertyName": "hs_lastmodifieddate", "operator": "EQ", "value": str(bulk)}
        for b in by_id
    )
    assert len(by_id) <= ties // page + 2  # the tie took one query per page, each after the last id
    assert src.records_read <= (ties + 700) + 3 * ceiling  # splitting re-asked only first pages


async def test_our_requests_are_the_ones_the_hubspot_sdk_makes(store: StateStore) -> None:
    fake = FakeHubSpot()
    fake.upsert("contacts", 1, NOW_MS, email="a@x")
    async with serve(app=fake.app) as api:
        src = source(api.url, objects=[{"type": "contacts", "properties": ["email"]}])
        await src.open(Context("sdk", "source", store), None)
        await src.read(10, 0.5)
        ours = fake.seen[0]
        body = json.loads(ours.body)
        sdk = HubSpot(access_token=TOKEN, host=api.url)  # the SDK's Configuration(host=...)
        flt = [Filter(property_name=f["propertyName"], operator=f["operator"], value=f["value"])
               for f in body["filterGroups"][0]["filters"]]  # fmt: skip
        request = PublicObjectSearchRequest(filter_groups=[FilterGroup(filters=flt)], sorts=body["sorts"],
                                            properties=body["properties"], limit=body["limit"])  # fmt: skip
        answer = await asyncio.to_thread(sdk.crm.objects.search_api.do_search, "contacts", request)
        theirs = fake.seen[-1]
        assert answer.total == 1 and answer.results[0].properties["email"] == "a@x"  # the SDK reads our fake too
        assert (ours.method, ours.path, ours.query) == (theirs.method, theirs.path, theirs.query)
        assert json.loads(theirs.body) == body
        assert ours.headers["authorization"] == theirs.headers["authorization"] == f"Bearer {TOKEN}"
        assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
        await src.close()

        # the OAuth2 refresh, form field for form field
        oauth = OAuth2Refresh(f"{api.url}/oauth/v1/token", "client-1", Secret("client-secret-1"), Secret("refresh-1"))
        async with httpx.AsyncClient() as http:
            await oauth.authorize(http)
        ours = fake.seen[-1]
        await asyncio.to_thread(sdk.oauth.tokens_api.create, grant_type="refresh_token", client_id="client-1",
                                client_secret="client-secret-1", refresh_token="refresh-1")  # fmt: skip
        theirs = fake.seen[-1]
        assert (ours.method, ours.path) == (theirs.method, theirs.path) == ("POST", "/oauth/v1/token")
        assert sorted(parse_qsl(ours.body.decode())) == sorted(parse_qsl(theirs.body.decode()))
        assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/x-www-form-urlencoded"


async def test_oauth_tokens_are_refreshed_before_expiry_and_after_a_401(store: StateStore, tmp_path: Path) -> None:
    fake = FakeHubSpot(tokens=set())
    fake.expires_in = 1800
    fake.upsert("contacts", 1, NOW_MS, email="a@x")
    refresh_file = tmp_path / "refresh"
    refresh_file.write_text("refresh-1")
    async with serve(app=fake.app) as api:
        clock = FakeClock(start=time.time())
        src = source(api.url, token=None, oauth={"client_id": "client-1", "client_secret": "client-secret-1",
                     "refresh_token": f"${{file:{refresh_file}}}", "refresh_margin": 300})  # fmt: skip
        await src.open(Context("oauth", "source", store, clock=clock), None)
        await src.read(10, 0.1)
        assert fake.issued == 1
        clock.advance(1000)  # 800s before expiry: still good
        src.request_poll()
        await src.read(10, 0.1)
        assert fake.issued == 1
        clock.advance(600)  # 200s before expiry, inside the margin: refreshed first
        src.request_poll()
        await src.read(10, 0.1)
        assert fake.issued == 2
        fake.access.clear()  # the access token was revoked: a 401, one refresh, the same request again
        src.request_poll()
        await src.read(10, 0.1)
        assert fake.issued == 3
        fake.refresh_tokens = {"refresh-2"}  # the refresh token rotated: the file is rewritten
        refresh_file.write_text("refresh-2")
        fake.access.clear()
        src.request_poll()
        await src.read(10, 0.1)
        assert fake.issued == 4
        fake.refresh_tokens = set()  # revoked for good
        fake.access.clear()
        src.request_poll()
        with pytest.raises(CredentialRejected, match="OAuth2 token refresh") as info:
            await src.read(10, 0.1)
        assert "refresh-2" not in str(info.value) and "${file:" in str(info.value)
        await src.close()
    forms = [s.body.decode() for s in fake.seen if s.path == "/oauth/v1/token"]
    assert "refresh_token=refresh-1" in forms[0] and "refresh_token=refresh-2" in forms[3]


async def test_a_rotated_private_app_token_file_is_used_without_restart(store: StateStore, tmp_path: Path) -> None:
    fake = FakeHubSpot(tokens={"pat-one"})
    fake.upsert("contacts", 1, NOW_MS, email="a@x")
    token_file = tmp_path / "token"
    token_file.write_text("pat-one")
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        src = source(api.url, token=f"${{file:{token_file}}}")
        runner = PipelineRunner("rot", src, sink, store, batch=BatchPolicy(50, 0.01))
        await run_until(runner, lambda: "1" in table(sink), "read with the first token")
        fake.tokens = {"pat-two"}
        token_file.write_text("pat-two")
        fake.upsert("contacts", 2, int(time.time() * 1000), email="b@x")  # modified now
        await run_until(runner, lambda: "2" in table(sink), "read with the rotated token")
    assert {s.headers["authorization"] for s in fake.seen} == {"Bearer pat-one", "Bearer pat-two"}


def archived_lists(fake: FakeHubSpot) -> int:
    return sum(1 for s in fake.seen if s.method == "GET" and ("archived", "true") in s.query)


async def test_archived_records_are_deletes_once_and_not_again_after_a_restart(store: StateStore) -> None:
    fake = FakeHubSpot()
    for i in range(1, 8):
        fake.upsert("contacts", i, NOW_MS + i * 10, email=f"{i}@x")
    fake.archive("contacts", 7, NOW_MS + 100)  # archived before the source ever read it: nothing to delete
    async with serve(app=fake.app) as api:
        sink = MemorySink()
        src = source(api.url, lookback=7200, page_size=2, objects=[{"type": "contacts", "properties": ["email"]}])
        runner = PipelineRunner("hs-del", src, sink, store, batch=BatchPolicy(2, 0.01))  # less than one page
        await run_until(runner, lambda: len(table(sink)) == 6 and src.idle, "the first pass")
        shadows = dict(table(sink))
        for i in (2, 3, 5):  # archived after they were read: three deletes, in more than one read
            fake.archive("contacts", i)
        await run_until(runner, lambda: set(table(sink)) == {"1", "4", "6"}, "the deletes")
        lists = archived_lists(fake)
        await run_until(runner, lambda: archived_lists(fake) >= lists + 6 and src.idle, "more passes")
        deletes = [w for w in sink.writes if w.op == "delete"]
        assert sorted(w.key for w in deletes) == [("2",), ("3",), ("5",)]  # each once; 7 never
        assert all(w.before == shadows[w.key[0]] and w.after is None for w in deletes)
        checkpoint = await store.load_checkpoint("hs-del")
        assert checkpoint is not None and checkpoint[1] >= max(w.position[1] for w in deletes)

        # a restart from the checkpoint reads the archived list again (look-back): no delete again
        again = source(api.url, lookback=7200, page_size=2, objects=[{"type": "contacts", "properties": ["email"]}])
        runner = PipelineRunner("hs-del", again, sink, store, batch=BatchPolicy(2, 0.01))
        lists = archived_lists(fake)
        await run_until(runner, lambda: archived_lists(fake) >= lists + 6 and again.idle, "passes after a restart")
    assert sorted(w.key for w in sink.writes if w.op == "delete") == [("2",), ("3",), ("5",)]
    assert [w.op for w in sink.writes].count("insert") == 6  # nothing read again as new
