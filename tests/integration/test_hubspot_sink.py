"""The HubSpot sink against the local HubSpot fake over real HTTP: values, partial failures, rate limits,
associations, and Postgres CDC → HubSpot end to end through `tidesync run` with 5xx and a kill -9."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest

from tests.integration.e2e_support import kill_engine, running, start_engine, stop_engine
from tests.integration.webhook_support import serve
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.errors import PartialBatchError, PermanentError, StateStoreError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.retry import RetryPolicy
from tidesync.sinks.hubspot import HubSpotSink, HubSpotSinkConfig
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore
from tidesync.testing import ListSource, eventually, wait_until
from tidesync.testing.hubspot import FakeHubSpot, serve_in_thread

TOKEN = "pat-na1-fake"
CUSTOMERS, COMPANIES = "public.customers", "public.companies"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


def config(url: str, **extra: Any) -> HubSpotSinkConfig:
    return HubSpotSinkConfig.model_validate({
        "type": "hubspot", "token": TOKEN, "base_url": url,
        "objects": {
            CUSTOMERS: {"type": "contacts", "id_property": "email", "exclude": ["id"],
                        "associations": {"company_id": COMPANIES}},
            COMPANIES: {"type": "companies", "exclude": ["id"]},
        },
        "rate_limit": {"per_second": 1000}, **extra,
    })  # fmt: skip


async def opened(url: str, store: StateStore, **extra: Any) -> HubSpotSink:
    sink = HubSpotSink(config(url, **extra))
    await sink.open(Context("hs", "sink", store))
    return sink


def customer(i: int, op: str = "insert", **row: Any) -> ChangeEvent:
    after = {"id": i, "email": f"c{i}@x.test", "firstname": f"F{i}", "lifecyclestage": "lead", "company_id": None,
             **row}  # fmt: skip
    return ChangeEvent(CUSTOMERS, (i,), op, after=after, changed=tuple(row) if op == "update" else None)


def company(i: int, op: str = "insert", **row: Any) -> ChangeEvent:
    after = {"id": i, "name": f"Co{i}", "numberofemployees": i * 10, **row}
    return ChangeEvent(COMPANIES, (i,), op, after=after, changed=tuple(row) if op == "update" else None)


def contacts(fake: FakeHubSpot) -> dict[str, dict[str, Any]]:
    return {p["email"]: p for p in fake.snapshot("contacts").values()}


async def test_records_are_upserted_updated_by_id_archived_and_associated(store: StateStore) -> None:
    fake = FakeHubSpot()
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        bday = dt.date(1990, 5, 17)
        await sink.write([company(1), company(2), customer(1, company_id=1), customer(2, birthdate=bday)])
        by_email = contacts(fake)
        assert by_email["c2@x.test"]["birthdate"] == "642902400000"  # 1990-05-17T00:00Z, in ms
        assert by_email["c1@x.test"]["lifecyclestage"] == "lead"
        c1 = next(r for r, p in fake.snapshot("contacts").items() if p["email"] == "c1@x.test")
        co = {p["tidesync_key"]: r for r, p in fake.snapshot("companies").items()}
        assert fake.crm.associated("contacts", c1, "companies") == [co["1"]]
        # the same key twice in one write: two waves, in order; the email changes by record id
        await sink.write([customer(1, "update", firstname="One"), customer(1, "update", email="one@x.test",
                                                                                 company_id=2)])  # fmt: skip
        assert fake.snapshot("contacts")[c1]["email"] == "one@x.test"
        assert fake.snapshot("contacts")[c1]["firstname"] == "One"
        assert fake.crm.associated("contacts", c1, "companies") == [co["2"]]  # the old association removed
        updates = [s for s in fake.seen if s.path.endswith("/batch/update")]
        assert len(updates) == 2  # waves: one per occurrence of the key
        await sink.write([ChangeEvent(CUSTOMERS, (1,), "delete", before={"id": 1})])
        assert c1 not in fake.snapshot("contacts")
        await sink.close()
        # the ID map survived the sink: a new sink archives by the stored id
        sink = await opened(api.url, store)
        await sink.write([ChangeEvent(COMPANIES, (2,), "delete", before={"id": 2})])
        assert sorted(p["tidesync_key"] for p in fake.snapshot("companies").values()) == ["1"]
        await sink.close()
    assert all(n == 1 for n in fake.crm.created.values())


async def test_a_value_outside_an_enumeration_dead_letters_that_event_alone(store: StateStore) -> None:
    fake = FakeHubSpot()
    events = [customer(1), customer(2, lifecyclestage="platinum"), customer(3),
              customer(2, "update", firstname="later")]  # fmt: skip
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        with pytest.raises(PartialBatchError) as caught:
            await sink.write(events)
        assert sorted(caught.value.failures) == [1, 3]  # the bad event, and the later event of its key
        assert "platinum" in str(caught.value.failures[1]) and "lifecyclestage" in str(caught.value.failures[1])
        assert caught.value.failures[3].error_class == "blocked"
        assert sorted(contacts(fake)) == ["c1@x.test", "c3@x.test"]
        await sink.close()
        # through the engine: the event lands in the dead-letter queue, the rest is written
        fake2 = FakeHubSpot()
        async with serve(app=fake2.app) as api2:
            runner = PipelineRunner("hs-enum", ListSource([customer(4), customer(5, lifecyclestage="gold"),
                                                           customer(6)]),
                                    HubSpotSink(config(api2.url)), store, batch=BatchPolicy(100, 0.01),
                                    retry=RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=3))  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            try:
                await eventually(lambda: len(fake2.snapshot("contacts")) == 2, timeout=20, message="2 contacts")
                await eventually(lambda: store.dlq_count("hs-enum"), timeout=20, message="a dead letter")
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
            letters = await store.dlq_list()
            assert [(d.event.key, d.error_class) for d in letters if d.pipeline == "hs-enum"] == [((5,), "permanent")]
            assert "gold" in letters[-1].error


async def test_a_207_answer_fails_only_the_inputs_hubspot_refused(store: StateStore) -> None:
    fake = FakeHubSpot()
    fake.crm.refuse[("contacts", "c3@x.test")] = "Email address c3@x.test is invalid"
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        with pytest.raises(PartialBatchError) as caught:
            await sink.write([customer(i) for i in range(1, 6)])
        assert list(caught.value.failures) == [2]
        err = caught.value.failures[2]
        assert isinstance(err, PermanentError) and "Email address c3@x.test is invalid" in str(err)
        assert sorted(contacts(fake)) == ["c1@x.test", "c2@x.test", "c4@x.test", "c5@x.test"]
        upserts = [s for s in fake.seen if s.path.endswith("/batch/upsert")]
        assert len(upserts) == 1  # one request, split by the answer, not re-sent
        await sink.close()


async def test_429_retry_after_holds_every_request(store: StateStore) -> None:
    fake = FakeHubSpot()
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        await sink.write([customer(1)])  # reads the property model
        fake.faults.queue.append((429, {"Retry-After": "1"}))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await sink.write([customer(i) for i in range(2, 250)])
        waited = loop.time() - started
        await sink.close()
    assert waited >= 1.0  # held for Retry-After, then asked again
    assert len(contacts(fake)) == 249
    sizes = [len(json.loads(s.body)["inputs"]) for s in fake.seen if s.path.endswith("/batch/upsert")]
    assert sizes[1:] == [100, 100, 100, 48]  # the refused request was sent again; at most 100 inputs each


async def test_a_rolling_rate_limit_is_kept_from_the_answer_headers(store: StateStore) -> None:
    fake = FakeHubSpot(rate_limit=(10, 1.0))
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store, batch_size=5)
        await sink.write([customer(i) for i in range(1, 101)])
        await sink.close()
    assert len(contacts(fake)) == 100
    assert fake.limited == 0  # the headers said when the budget was spent: no request was refused
    assert sink.pacing is not None and sink.pacing.holds >= 1


async def test_batches_over_100_are_refused_and_unknown_properties_refresh_the_model(store: StateStore) -> None:
    fake = FakeHubSpot()
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        await sink.write([customer(1)])
        # a property created in HubSpot after the model was read: read again, then written
        fake.crm.define("contacts", {**fake.crm.properties["contacts"]["firstname"], "name": "nickname"})
        await sink.write([customer(2, nickname="Two")])
        assert contacts(fake)["c2@x.test"]["nickname"] == "Two"
        # a column with no property: systemic (every event would fail), named in the error
        with pytest.raises(SystemicError, match="shoe_size"):
            await sink.write([customer(3, shoe_size=44)])
        await sink.close()
        async with httpx.AsyncClient(base_url=api.url) as http:
            body = {"inputs": [{"id": f"x{i}@x", "idProperty": "email", "properties": {}} for i in range(101)]}
            r = await http.post("/crm/v3/objects/contacts/batch/upsert", json=body,
                                headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
            assert r.status_code == 400 and "exceeds" in r.json()["message"]


# --- end to end: Postgres CDC → HubSpot through `tidesync run`, 5% 5xx, kill -9 ------------------------------------

SCHEMA = """
CREATE TABLE companies (id bigint PRIMARY KEY, name text NOT NULL, numberofemployees int);
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, firstname text, lifecyclestage text,
                        company_id bigint REFERENCES companies (id));
"""
STAGES = ["subscriber", "lead", "opportunity", "customer"]


class Changes(threading.Thread):
    """Inserts, updates (names, stages, emails, company moves) and deletes, ten per transaction."""

    def __init__(self, dsn: str, total: int, first_customer: int, companies: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.total = dsn, total
        self.next_id, self.companies = first_customer, companies
        self.live: list[int] = list(range(1, first_customer))
        self.ops = 0
        self.error: BaseException | None = None
        self.rng = random.Random(18)

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while self.ops < self.total:
                    with conn.transaction():
                        for _ in range(10):
                            self.one(conn)
                    self.ops += 10
        except BaseException as exc:  # reported by the test
            self.error = exc

    def one(self, conn: psycopg.Connection[Any]) -> None:
        r, rng = self.rng.random(), self.rng
        if r < 0.12 or not self.live:
            i = self.next_id
            self.next_id += 1
            conn.execute("INSERT INTO customers VALUES (%s, %s, %s, %s, %s)",
                         (i, f"c{i}@x.test", f"F{i}", rng.choice(STAGES), rng.randint(1, self.companies)))  # fmt: skip
            self.live.append(i)
        elif r < 0.15:
            i = self.live.pop(rng.randrange(len(self.live)))
            conn.execute("DELETE FROM customers WHERE id = %s", (i,))
        elif r < 0.18:
            i = rng.choice(self.live)
            conn.execute("UPDATE customers SET email = %s WHERE id = %s", (f"c{i}.{self.ops}@x.test", i))
        elif r < 0.35:
            target = rng.choice([None, rng.randint(1, self.companies)])
            conn.execute("UPDATE customers SET company_id = %s WHERE id = %s", (target, rng.choice(self.live)))
        elif r < 0.42:
            conn.execute("UPDATE companies SET name = %s, numberofemployees = numberofemployees + 1 WHERE id = %s",
                         (f"Co{self.ops}", rng.randint(1, self.companies)))  # fmt: skip
        else:
            conn.execute("UPDATE customers SET firstname = %s, lifecyclestage = %s WHERE id = %s",
                         (f"N{self.ops}", rng.choice(STAGES), rng.choice(self.live)))  # fmt: skip


def source_mapped(dsn: str) -> tuple[dict[str, Any], dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        companies = {str(i): {"name": n, "numberofemployees": str(e)}
                     for i, n, e in conn.execute("SELECT id, name, numberofemployees FROM companies")}  # fmt: skip
        rows = conn.execute("SELECT email, firstname, lifecyclestage, company_id FROM customers")
        people = {e: {"firstname": f, "lifecyclestage": s, "company": None if c is None else str(c)}
                  for e, f, s, c in rows}  # fmt: skip
    return companies, people


def hubspot_state(fake: FakeHubSpot) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = fake.snapshot("companies")
    key_of = {rid: p.get("tidesync_key") for rid, p in raw.items()}
    companies = {p.get("tidesync_key"): {"name": p.get("name"), "numberofemployees": p.get("numberofemployees")}
                 for p in raw.values()}  # fmt: skip
    people: dict[str, Any] = {}
    for rid, p in fake.snapshot("contacts").items():
        linked = [key_of.get(c) for c in fake.crm.associated("contacts", rid, "companies")]
        people[p.get("email") or ""] = {"firstname": p.get("firstname"), "lifecyclestage": p.get("lifecyclestage"),
                                        "company": linked[0] if len(linked) == 1 else linked or None}  # fmt: skip
    return companies, people


def test_postgres_to_hubspot_with_5xx_and_a_kill_converges_without_duplicates(tmp_path: Path, pg_database: str) -> None:
    companies, customers = 40, 300
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(SCHEMA)
        for i in range(1, companies + 1):
            conn.execute("INSERT INTO companies VALUES (%s, %s, %s)", (i, f"Co{i}", i))
        for i in range(1, customers + 1):
            conn.execute("INSERT INTO customers VALUES (%s, %s, %s, 'lead', %s)",
                         (i, f"c{i}@x.test", f"F{i}", i % companies + 1))  # fmt: skip
    fake = FakeHubSpot(error_rate=0.05, seed=18)
    with serve_in_thread(fake.app) as url:
        config = tmp_path / "tidesync.yaml"
        config.write_text(f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: crm_{pg_database.rsplit("_", 1)[1]}
    source: {{type: postgres, dsn: "{pg_database}", tables: [public.companies, public.customers], progress: false,
              heartbeat_interval: 1, work_dir: "{tmp_path}/spill"}}
    sink:
      type: hubspot
      token: "${{env:HUBSPOT_TOKEN}}"
      base_url: "{url}"
      rate_limit: {{per_second: 1000}}
      http: {{max_attempts: 10}}
      objects:
        public.customers: {{type: contacts, id_property: email, exclude: [id],
                            associations: {{company_id: public.companies}}}}
        public.companies: {{type: companies}}   # its key column, id, is not sent: HubSpot has no such property
    batch: {{max_events: 500, max_wait_ms: 20}}
    retry: {{initial_delay: 0.1, max_delay: 1}}
""")
        log = tmp_path / "engine.log"
        env = {"HUBSPOT_TOKEN": TOKEN}
        proc = start_engine(config, log, env=env)
        writer = Changes(pg_database, 1660, customers + 1, companies)
        try:
            wait_until(lambda: running(proc, log) and len(fake.snapshot("contacts")) >= customers, timeout=60,
                       message="the snapshot in HubSpot")  # fmt: skip
            writer.start()
            wait_until(lambda: writer.ops >= 700 or writer.error, timeout=60, message="half the changes")
            kill_engine(proc)  # kill -9 in the middle of the stream
            proc = start_engine(config, log, env=env)
            writer.join(60)
            assert writer.error is None and writer.ops >= 1660
            expected = source_mapped(pg_database)
            wait_until(lambda: running(proc, log) and hubspot_state(fake) == expected, timeout=90,
                       message="HubSpot to equal the source")  # fmt: skip
        finally:
            stop_engine(proc, log)
    assert fake.injected > 0  # the 5xx were met (and retried)
    sent = fake.requests
    assert sent["batch/update"] and sent["batch/archive"] and sent["associate"] and sent["unassociate"]
    assert len(fake.snapshot("contacts")) == len(expected[1])  # no live duplicate: HubSpot equals the source
    assert fake.crm.created
    assert not [k for k, n in fake.crm.created.items() if n > 1]  # no record created twice, kill or not


async def test_a_400_naming_a_property_reads_the_model_again(store: StateStore) -> None:
    fake = FakeHubSpot()
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        await sink.write([customer(1)])  # the model is read: "opportunity" is an option
        stage = fake.crm.properties["contacts"]["lifecyclestage"]
        stage["options"] = [o for o in stage["options"] if o["value"] != "opportunity"]  # removed in HubSpot
        with pytest.raises(PartialBatchError) as caught:
            await sink.write([customer(2, lifecyclestage="opportunity"), customer(3)])
        assert list(caught.value.failures) == [0] and "opportunity" in str(caught.value.failures[0])
        assert sorted(contacts(fake)) == ["c1@x.test", "c3@x.test"]  # re-sent without the refused input
        del fake.crm.properties["contacts"]["firstname"]  # a property deleted in HubSpot
        with pytest.raises(SystemicError, match="firstname"):
            await sink.write([customer(4)])
        reads = [s for s in fake.seen if s.path == "/crm/v3/properties/contacts"]
        assert len(reads) == 3  # once at first, once after each 400
        await sink.close()


async def test_an_associated_record_missing_from_the_id_map_is_found_by_its_source_key(store: StateStore) -> None:
    fake = FakeHubSpot()
    _, made = fake.crm.upsert("companies", {"inputs": [{"id": "7", "idProperty": "tidesync_key",
                                                        "properties": {"name": "Seven"}}]})  # fmt: skip
    company_id = made["results"][0]["id"]  # written before this sink's ID map existed
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        with pytest.raises(PartialBatchError) as caught:
            await sink.write([customer(1, company_id=7), customer(2, company_id=8)])
        await sink.close()
    assert list(caught.value.failures) == [1] and "company_id=8" in str(caught.value.failures[1])
    c1 = next(r for r, p in fake.snapshot("contacts").items() if p["email"] == "c1@x.test")
    assert fake.crm.associated("contacts", c1, "companies") == [company_id]


async def test_a_refused_token_or_an_unknown_object_type_blocks_instead_of_dead_lettering(store: StateStore) -> None:
    fake = FakeHubSpot(tokens={"another-token"})
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        with pytest.raises(SystemicError, match="refused the token"):
            await sink.write([customer(1)])
        await sink.close()
        fake.tokens.add(TOKEN)
        sink = await opened(api.url, store, objects={COMPANIES: {"type": "2-404", "exclude": ["id"]}})
        with pytest.raises(SystemicError, match=r"properties of HubSpot 2-404.*Unable to infer object type"):
            await sink.write([company(1)])
        await sink.close()
    assert fake.snapshot("contacts") == {}


async def test_a_delete_the_id_map_does_not_know_is_found_by_its_id_property(store: StateStore) -> None:
    fake = FakeHubSpot()
    fake.crm.upsert("contacts", {"inputs": [{"id": f"c{i}@x.test", "idProperty": "email", "properties": {}}
                                            for i in (1, 2)]})  # fmt: skip
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        await sink.write([
            ChangeEvent(CUSTOMERS, (1,), "delete", before={"id": 1, "email": "c1@x.test"}),  # REPLICA IDENTITY FULL
            ChangeEvent(CUSTOMERS, (2,), "delete", before={"id": 2}),  # the key only: cannot be found, left alone
            ChangeEvent(CUSTOMERS, (3,), "delete", before={"id": 3, "email": "c3@x.test"}),  # never in HubSpot
        ])  # fmt: skip
        await sink.close()
    assert sorted(contacts(fake)) == ["c2@x.test"]


async def test_events_before_an_applied_delete_read_again_do_not_create_the_record_anew(store: StateStore) -> None:
    """After a crash the events of a key before its delete are read again (the applied position was not stored
    yet): the delete's tombstone skips them, so the archived contact is not created a second time."""
    fake = FakeHubSpot()
    insert = customer(7).replace(position=(1,))
    update = customer(7, "update", email="c7.new@x.test").replace(position=(2,))
    delete = ChangeEvent(CUSTOMERS, (7,), "delete", before={"id": 7}, position=(3,))
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        await sink.write([insert])
        await sink.write([update])
        await sink.write([delete])
        await sink.close()
        # as if the applied position had not reached them: the next process reads all three again
        await store.commit("hs", StateChanges(kv_delete=[("hubspot_ids:hs:sink", "~applied")]))
        again = await opened(api.url, store)
        await again.write([insert, update, delete])
        await again.close()
        later = await opened(api.url, store)
        await later.write([customer(7).replace(position=(4,))])  # inserted again after the delete: a new contact
        await later.close()
    assert fake.crm.created[("contacts", "c7@x.test")] == 2  # once at first, once for the new insert; none between
    assert sorted(contacts(fake)) == ["c7@x.test"]


class CrashAfterArchive:
    """A state store that dies once HubSpot has answered an archive: nothing later is stored (a kill -9 there)."""

    def __init__(self, store: StateStore, fake: FakeHubSpot) -> None:
        self.store, self.fake = store, fake

    async def commit(self, pipeline: str, changes: StateChanges) -> list[int]:
        if self.fake.requests["batch/archive"]:
            raise StateStoreError("the process was killed")
        return await self.store.commit(pipeline, changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_crash_between_the_archive_and_storing_it_does_not_create_the_record_anew(store: StateStore) -> None:
    """Killed after HubSpot archived a contact but before the tombstone was stored, the next process reads the
    key's events again: the ``archiving`` mark stored before the request skips the older ones (an update would
    find the record gone and create it anew) and sends the delete again, which archives nothing more."""
    fake = FakeHubSpot()
    insert = customer(7).replace(position=(1,))
    update = customer(7, "update", firstname="G").replace(position=(2,))
    delete = ChangeEvent(CUSTOMERS, (7,), "delete", before={"id": 7}, position=(3,))
    async with serve(app=fake.app) as api:
        sink = await opened(api.url, store)
        await sink.write([insert])
        await sink.close()
        dying = HubSpotSink(config(api.url))
        await dying.open(Context("hs", "sink", cast(StateStore, CrashAfterArchive(store, fake))))
        with pytest.raises(PartialBatchError):  # the tombstone could not be stored
            await dying.write([update, delete])
        await dying.close()
        assert contacts(fake) == {}  # HubSpot archived it
        again = await opened(api.url, store)
        await again.write([update, delete])  # read again after the restart: no error, nothing created
        await again.close()
    assert fake.crm.created[("contacts", "c7@x.test")] == 1
    assert contacts(fake) == {}
    assert fake.requests["batch/upsert"] == 1
