"""HubSpot contacts as a two-way sync side: the endpoint's outcomes, and Postgres <-> HubSpot through the engine.

The CRM API is the local fake (:class:`tidesync.testing.hubspot.FakeHubSpot`),
served on loopback in this process; the side's source is the ``hubspot``
polling source. A person's edits in HubSpot are made through the fake's
store, as the HubSpot UI makes them (each one a new modification time).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_sync_support import Side, SyncHarness, a_conflict_settled_by_the_cli, pg_source, versions
from tests.integration.webhook_support import serve
from tidesync.config import load_config
from tidesync.errors import ConfigError
from tidesync.sinks.hubspot.endpoint import HubSpotEndpoint
from tidesync.sources.http.config import HubSpotSourceConfig
from tidesync.sync.build import build_parts
from tidesync.sync.endpoint import DeleteOp, FieldWrite, InsertOp, UpdateOp
from tidesync.testing import eventually
from tidesync.testing.hubspot import FakeHubSpot

TOKEN = "pat-na1-fake"
PG = "CREATE TABLE people (id serial PRIMARY KEY, email text UNIQUE, first text, last text, score int)"
PROPS = ("email", "firstname", "lastname", "score")
WRITES = ("batch/update", "batch/upsert", "batch/create", "batch/archive")


@pytest.fixture
async def hubspot() -> AsyncIterator[tuple[FakeHubSpot, str]]:
    fake = FakeHubSpot()
    async with serve(app=fake.app) as api:
        yield fake, api.url


def add_contact(fake: FakeHubSpot, email: str, **props: Any) -> str:
    """A contact as HubSpot holds it after someone created it (the unique email indexed)."""
    status, answer = fake.crm.upsert(
        "contacts", {"inputs": [{"idProperty": "email", "id": email, "properties": {"email": email, **props}}]}
    )
    assert status == 200, answer
    return str(answer["results"][0]["id"])


Person = tuple[str, str, str, int]  # email, first name, last name, score


def pn(i: int) -> Person:
    """Person ``i`` of the numbered ones (p1@example.com, f1, l1, 1)."""
    return (f"p{i}@example.com", f"f{i}", f"l{i}", i)


def people(
    db: str, fake: FakeHubSpot, in_postgres: Sequence[Person], in_hubspot: Sequence[Person] = ()
) -> tuple[Side, dict[str, str]]:
    """Side A (Postgres ``people``) holding ``in_postgres``, and HubSpot holding ``in_hubspot`` as contacts
    (created by someone, before the sync starts): the side, and each contact's id by email."""
    a = Side("pg", db)
    a.sql(PG)
    for person in in_postgres:
        a.sql("INSERT INTO people (email, first, last, score) VALUES (%s, %s, %s, %s)", person)
    ids = {
        email: add_contact(fake, email, firstname=first, lastname=last, score=str(score))
        for email, first, last, score in in_hubspot
    }
    return a, ids


def person_edits(fake: FakeHubSpot, rid: str, **props: Any) -> None:
    status, answer = fake.crm.update("contacts", {"inputs": [{"id": rid, "properties": props}]})
    assert status == 200, answer


def contacts(fake: FakeHubSpot) -> list[tuple[Any, ...]]:
    """Every contact as Postgres holds a person: (email, first, last, score)."""
    rows = fake.snapshot("contacts", PROPS).values()
    return sorted(
        ((r["email"], r["firstname"] or None, r["lastname"] or None, int(r["score"]) if r["score"] else None)
         for r in rows),
        key=repr,
    )  # fmt: skip


def by_email(fake: FakeHubSpot) -> dict[str, str]:
    return {p["email"]: rid for rid, p in fake.snapshot("contacts", ("email",)).items()}


def writes(fake: FakeHubSpot) -> int:
    return sum(fake.requests[w] for w in WRITES)


def endpoint(url: str) -> HubSpotEndpoint:
    cfg = {"type": "hubspot", "token": TOKEN, "base_url": url, "rate_limit": {"per_second": 500},
           "objects": [{"type": "contacts", "properties": [*PROPS, "lifecyclestage", "hs_object_id"]}]}  # fmt: skip
    return HubSpotEndpoint(HubSpotSourceConfig.model_validate(cfg), ["hs_object_id"], id_property="email")


# --- the endpoint on its own --------------------------------------------------------------------


async def test_outcomes_per_property_and_every_call_safe_to_repeat(hubspot: tuple[FakeHubSpot, str]) -> None:
    fake, url = hubspot
    ada = add_contact(fake, "ada@example.com", firstname="Ada", lastname="L", score="10")
    bob = add_contact(fake, "bob@example.com", firstname="Bob", score="7")
    ep = endpoint(url)
    await ep.open()
    ops = [
        UpdateOp(
            (ada,),
            (
                FieldWrite("firstname", "Ada K", expected="Ada"),  # ok
                FieldWrite("lastname", "X", expected="someone else"),  # conflict: it holds L
                FieldWrite("score", 10.0, expected=3),  # already: 10 == 10.0
                FieldWrite("lifecyclestage", "not-an-option", expected=None),  # failed: not an option
            ),
        ),
        UpdateOp(("999999",), (FieldWrite("firstname", "z", expected=None),)),  # missing
        InsertOp({"email": "cy@example.com", "firstname": "Cy", "score": 3}),  # ok: upserted by email
        InsertOp({"email": "bob@example.com", "firstname": "Bobby"}),  # exists: the email is bob's
        InsertOp({"firstname": "No Email"}),  # ok: created
        DeleteOp((bob,), expected={"firstname": "Robert"}),  # conflict: edited
    ]
    before = writes(fake)
    res = await ep.apply(ops)
    assert [(r.status, dict(r.columns)) for r in res] == [
        ("ok", {"firstname": "ok", "lastname": "conflict", "score": "already", "lifecyclestage": "failed"}),
        ("missing", {"firstname": "missing"}),
        ("ok", {}),
        ("exists", {}),
        ("ok", {}),
        ("conflict", {}),
    ]
    assert "not one of its options" in res[0].error
    assert res[3].key == (bob,) and res[3].row is not None and res[3].row["firstname"] == "Bob"
    cy, noname = res[2].key, res[4].key
    assert cy is not None and noname is not None
    people = fake.snapshot("contacts", ("firstname", "lastname", "score", "email"))
    assert people[ada] == {"firstname": "Ada K", "lastname": "L", "score": "10", "email": "ada@example.com"}
    assert people[cy[0]]["firstname"] == "Cy" and people[noname[0]]["email"] in (None, "")
    assert writes(fake) - before == 3  # one update (only what changed), one upsert, one create

    # The same call again, as after a lost answer: nothing is written twice, nothing is created twice.
    again = await ep.apply(ops[:4])
    assert [(r.status, dict(r.columns)) for r in again] == [
        ("ok", {"firstname": "already", "lastname": "conflict", "score": "already", "lifecyclestage": "failed"}),
        ("missing", {"firstname": "missing"}),
        ("exists", {}),
        ("exists", {}),
    ]
    assert again[2].key == cy and writes(fake) - before == 3
    assert fake.crm.created[("contacts", "cy@example.com")] == 1

    (gone,) = await ep.apply([DeleteOp((bob,), expected={"firstname": "Bob", "score": 7})])  # 7 == "7"
    assert gone.status == "ok" and bob not in fake.snapshot("contacts")
    assert [r.status for r in await ep.apply([DeleteOp((bob,))])] == ["missing"]

    assert (await ep.fetch([(ada,), ("999999",)]))[(ada,)]["firstname"] == "Ada K"
    assert [k for k, _ in await ep.find({"email": "cy@example.com"})] == [cy]
    assert [k for k, _ in await ep.find({"firstname": "No Email"})] == [noname]  # by search
    assert [r["hs_object_id"] for r in await ep.scan(page_size=2)] == sorted([ada, cy[0], noname[0]], key=int)
    await ep.close()


# --- Postgres <-> HubSpot through the engine ------------------------------------------------------


def polls(fake: FakeHubSpot) -> int:
    return sum(1 for s in fake.seen if s.path.endswith("/search"))


async def more(count: Callable[[], int], n: int) -> None:
    """Until ``count`` (a side source's polls of its API) has grown by ``n``. Each poll also commits its
    position, so the sync's own ``quiet`` never sees it idle: quiet here means nothing written."""
    start = count()
    await eventually(lambda: count() >= start + n, timeout=30, message=f"{n} more polls")


async def settled(mark: Callable[[], Any], count: Callable[[], int]) -> Any:
    """Wait until ``mark()`` (what the sync and both sides have written) holds still for 8 polls in a row."""
    for _ in range(30):
        before = mark()
        await more(count, 8)
        if mark() == before:
            return before
    raise AssertionError("the sync kept writing")


def marks(h: SyncHarness, a: Side, table: str, written: Callable[[], int]) -> Callable[[], Any]:
    """Writes so far: the sync's endpoint calls, the API's write requests, Postgres' row versions."""

    def mark() -> Any:
        proc = h.runner.processor
        return (dict(proc.stats.writes) if proc else None, written(), versions(a, table))

    return mark


# HubSpot answers text, and an emptied property as empty text: the canonical form is Postgres'
PEOPLE_FIELDS = "{email: email, first: firstname, last: lastname, score: score}"
PEOPLE_B_TO_A = "{score: \"None if score == '' else int(score)\", first: \"None if first == '' else first\"}"


def config(
    h: SyncHarness,
    a: Side,
    tmp: Path,
    url: str,
    rules: str,
    table: str = "people",
    fields: str = PEOPLE_FIELDS,
    b_to_a: str = PEOPLE_B_TO_A,
    source_options: str = "",
) -> str:
    b = (
        f'{{type: hubspot, token: {TOKEN}, base_url: "{url}", objects: [contacts], poll_interval: 0.1s, '
        f"lookback: 2s, rate_limit: {{per_second: 500}}, progress: false{source_options}}}"
    )
    return f"""
state: sqlite:///{tmp / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, table, tmp / "wa")}, table: {table}, key: id}}
    b: {{source: {b}, table: contacts, key: hs_object_id}}
    fields: {fields}
    match: {{by: email}}
    rules: {rules}
    transforms:
      b_to_a: [{{compute: {b_to_a}}}]
    batch: {{max_events: 200, max_wait_ms: 20}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""


PEOPLE = "email, first, last, score"


async def test_postgres_and_hubspot_contacts_lose_no_edit_and_go_quiet(
    pg_database: str, tmp_path: Path, hubspot: tuple[FakeHubSpot, str]
) -> None:
    fake, url = hubspot
    # 1-3 in both with the same values (paired by email), 4-8 in Postgres only, 9-10 in HubSpot only
    a, _ = people(pg_database, fake, [pn(i) for i in range(1, 9)], [pn(i) for i in (1, 2, 3, 9, 10)])
    h = SyncHarness(tmp_path, f"h{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, url, "{default: lww, skew: 0s}")
    rng = random.Random(18)
    try:
        h.write()
        plan = await h.cli_json("sync", "plan", str(h.path), h.name)  # the dry run: reads both, writes nothing
        assert (plan["matched"], plan["create_on_b"], plan["create_on_a"], plan["collisions"]) == (3, 5, 2, [])
        assert writes(fake) == 0
        await h.start()
        await eventually(lambda: len(contacts(fake)) == 10 and a.rows(PEOPLE, "people") == contacts(fake),
                         timeout=30, message="pairing: both sides hold the 10 people")  # fmt: skip
        expected = {r[0]: list(r) for r in a.rows(PEOPLE, "people")}
        ids = by_email(fake)
        # Postgres owns first everywhere and score on p1-p5; HubSpot's people own last everywhere and score on
        # p6-p10: every (record, field) has one writer, so every last edit must end up on both sides.
        for i in range(40):
            email = f"p{rng.randint(1, 10)}@example.com"
            own_score = int(email[1:].split("@")[0]) <= 5
            if i % 2 == 0:
                if rng.random() < 0.5 or not own_score:
                    a.sql("UPDATE people SET first = %s WHERE email = %s", (f"app{i}", email))
                    expected[email][1] = f"app{i}"
                else:
                    a.sql("UPDATE people SET score = %s WHERE email = %s", (100 + i, email))
                    expected[email][3] = 100 + i
            elif rng.random() < 0.5 or own_score:
                person_edits(fake, ids[email], lastname=f"hs{i}")
                expected[email][2] = f"hs{i}"
            else:
                person_edits(fake, ids[email], score=str(200 + i))
                expected[email][3] = 200 + i
            if i == 30:  # emptied in Postgres: HubSpot holds empty text, and Postgres keeps its NULL
                a.sql("UPDATE people SET first = NULL WHERE email = 'p2@example.com'")
                expected["p2@example.com"][1] = None
            if i == 20:  # a new record on each side
                a.sql("INSERT INTO people (email, first, last, score) VALUES ('new-pg@example.com', 'n', 'p', 1)")
                add_contact(fake, "new-hs@example.com", firstname="n", lastname="h", score="2")
                expected["new-pg@example.com"] = ["new-pg@example.com", "n", "p", 1]
                expected["new-hs@example.com"] = ["new-hs@example.com", "n", "h", 2]
            await asyncio.sleep(0.1)  # edits spread over ~4 s, interleaved with the sync's writes
        want = sorted((tuple(v) for v in expected.values()), key=repr)
        await eventually(lambda: a.rows(PEOPLE, "people") == want and contacts(fake) == want, timeout=40,
                         message="both sides hold every last edit")  # fmt: skip
        assert max(fake.crm.created.values()) == 1  # no contact created twice

        mark = marks(h, a, "people", lambda: writes(fake))
        sent, made, before = await settled(mark, lambda: polls(fake))
        await more(lambda: polls(fake), 15)  # a quiet period: every change the sync made was read back meanwhile
        proc = h.runner.processor
        assert proc is not None
        assert proc.stats.writes == sent, "the sync kept writing after the edits stopped"
        assert writes(fake) == made, "HubSpot kept receiving writes after the edits stopped"
        assert versions(a, "people") == before, "Postgres kept changing after the edits stopped"
        assert proc.stats.echo_fields > 0  # HubSpot's echoes were known by the ledger of values written
        assert await h.cli_json("conflicts", "list", str(h.path)) == []

        a.sql("DELETE FROM people WHERE email = 'p1@example.com'")  # a delete archives the contact
        await eventually(lambda: "p1@example.com" not in by_email(fake), timeout=20, message="archived")
    finally:
        await h.close()


async def test_the_same_field_edited_on_both_sides_settles_by_its_rule(
    pg_database: str, tmp_path: Path, hubspot: tuple[FakeHubSpot, str]
) -> None:
    fake, url = hubspot
    both = [("e1@example.com", "f", "l", 1), ("e2@example.com", "f", "l", 2)]
    a, ids = people(pg_database, fake, both, both)
    e1, e2 = ids["e1@example.com"], ids["e2@example.com"]
    h = SyncHarness(tmp_path, f"r{uuid.uuid4().hex[:8]}", "")
    rules = "{default: lww, skew: 0.5s, fields: {last: {prefer: b}, score: {prefer: a}}}"
    h.config_text = config(h, a, tmp_path, url, rules)
    try:
        await h.start()
        await settled(marks(h, a, "people", lambda: writes(fake)), lambda: polls(fake))
        await h.stop()
        # Both sides edit all three fields of both records while the sync is stopped. HubSpot's edit of e1 is
        # 1.5 s newer than Postgres', its edit of e2 1 s older (the source's look-back still reads it).
        before = int(time.time() * 1000)
        a.sql("UPDATE people SET first = 'pg', last = 'pg', score = 10")
        after = int(time.time() * 1000)  # Postgres' commit time lies between the two, however slow the machine
        fake.upsert("contacts", int(e1), after + 1500, firstname="hs", lastname="hs", score="20")
        fake.upsert("contacts", int(e2), before - 1000, firstname="hs", lastname="hs", score="20")
        await h.start()
        want = [("e1@example.com", "hs", "hs", 10), ("e2@example.com", "pg", "hs", 10)]
        await eventually(lambda: a.rows(PEOPLE, "people") == want and contacts(fake) == want, timeout=30,
                         message="every field settled by its rule on both sides")  # fmt: skip
        history = await h.cli_json("sync", "history", str(h.path), h.name)
        wins = sorted((e["field"], e["rule"], e["winner"]) for e in history if e["winner"])
        assert wins == [
            ("first", "lww", "a"),  # e2: Postgres' edit is newer
            ("first", "lww", "b"),  # e1: HubSpot's edit is newer
            ("last", "prefer:b", "b"),
            ("last", "prefer:b", "b"),
            ("score", "prefer:a", "a"),
            ("score", "prefer:a", "a"),
        ], history
    finally:
        await h.close()


# tick: (record, field, HubSpot's edit time less Postgres' commit time in ms, what settles it) for the same field
# edited on both sides at once while the sync runs: HubSpot's edit dated just after Postgres' commit (0: within
# the 0.5 s skew), or 1.5 s before or after it (beyond). Each happens once, at its tick, and that field of that
# record is left alone afterwards, so its outcome is the rule's alone.
CONTESTS = {
    15: ("p1@example.com", "first", 0, "queue"),  # lww within the skew: the fallback, manual
    30: ("p2@example.com", "first", -1500, "a"),  # lww beyond the skew: Postgres' is later
    45: ("p4@example.com", "last", 0, "b"),  # prefer: b
    60: ("p5@example.com", "score", -1500, "queue"),  # manual, whatever the times
    75: ("p8@example.com", "first", 0, "queue"),
    90: ("p3@example.com", "first", 1500, "b"),  # lww beyond the skew: HubSpot's is later
    100: ("p10@example.com", "last", -1500, "b"),
    110: ("p11@example.com", "score", 0, "queue"),
}
RUN_SECONDS = 30.0
TICKS = 120  # one edit each, paced over RUN_SECONDS: 4 edits a second


@pytest.mark.slow
async def test_thirty_seconds_of_edits_on_both_sides_settle_by_each_fields_rule_and_go_quiet(
    pg_database: str, tmp_path: Path, hubspot: tuple[FakeHubSpot, str]
) -> None:
    """30 s of edits on both sides, at random records and fields, each field with its own rule: first lww
    (skew 0.5 s, fallback manual), last prefer: b, score manual. A (record, field) has one writer, but for the
    CONTESTS, edited on both sides at once. At the end every single-writer edit is on both sides, each contest
    is settled as its rule says (or waits in the review queue, neither side overwritten), and once the edits
    stop neither side is written again."""
    fake, url = hubspot
    a, ids = people(pg_database, fake, [pn(i) for i in range(1, 13)], [pn(i) for i in range(1, 13)])
    h = SyncHarness(tmp_path, f"t{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(
        h, a, tmp_path, url, "{default: lww, skew: 0.5s, fields: {last: {prefer: b}, score: manual}}"
    )
    column = {"first": 1, "last": 2, "score": 3}
    prop = {"first": "firstname", "last": "lastname", "score": "score"}

    def owner(email: str, f: str) -> str:  # Postgres writes first on p1-p6, last on p7-p12, score on odd ones
        n = int(email[1:].split("@")[0])
        return {"first": "a" if n <= 6 else "b", "last": "b" if n <= 6 else "a", "score": "a" if n % 2 else "b"}[f]

    def value(side: str, f: str, i: int) -> Any:
        return (1000 if side == "a" else 2000) + i if f == "score" else f"{side}{i}"

    rng = random.Random(30)
    try:
        await h.start()
        await settled(marks(h, a, "people", lambda: writes(fake)), lambda: polls(fake))
        start = {r[0]: list(r) for r in a.rows(PEOPLE, "people")}
        assert len(start) == 12 and contacts(fake) == sorted((tuple(r) for r in start.values()), key=repr)
        want_a = {k: list(v) for k, v in start.items()}
        want_b = {k: list(v) for k, v in start.items()}
        queued: list[tuple[str, str, str]] = []  # (field, A's value, B's value) as text
        left_alone: set[tuple[str, str]] = set()
        began = time.monotonic()
        for i in range(TICKS):
            if i in CONTESTS:
                email, f, b_later_ms, outcome = CONTESTS[i]
                av, bv = value("a", f, i), value("b", f, i)
                # back to back, nothing awaited between: the sync (in this event loop) sees neither first
                a.sql(f"UPDATE people SET {f} = %s WHERE email = %s", (av, email))
                fake.upsert("contacts", int(ids[email]), int(time.time() * 1000) + b_later_ms, **{prop[f]: str(bv)})
                want_a[email][column[f]] = av if outcome in ("a", "queue") else bv
                want_b[email][column[f]] = bv if outcome in ("b", "queue") else av
                if outcome == "queue":
                    queued.append((f, str(av), str(bv)))
                left_alone.add((email, f))
            else:
                while True:
                    email, f = f"p{rng.randint(1, 12)}@example.com", rng.choice(("first", "last", "score"))
                    if (email, f) not in left_alone:
                        break
                side = owner(email, f)
                v = value(side, f, i)
                if side == "a":
                    a.sql(f"UPDATE people SET {f} = %s WHERE email = %s", (v, email))
                else:
                    person_edits(fake, ids[email], **{prop[f]: str(v)})
                want_a[email][column[f]] = want_b[email][column[f]] = v
            # paced by the wall clock, so a slow turn of the sync does not shorten the run
            await asyncio.sleep(max(0.0, began + RUN_SECONDS * (i + 1) / TICKS - time.monotonic()))
        assert time.monotonic() - began >= RUN_SECONDS
        wa = sorted((tuple(v) for v in want_a.values()), key=repr)
        wb = sorted((tuple(v) for v in want_b.values()), key=repr)
        try:
            await eventually(lambda: a.rows(PEOPLE, "people") == wa and contacts(fake) == wb, timeout=40,
                             message="both sides hold every single-writer edit and each contest's outcome")  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n A {a.rows(PEOPLE, 'people')}\n want {wa}\n B {contacts(fake)}\n want {wb}"
            ) from None

        conflicts = await h.cli_json("conflicts", "list", str(h.path), "--sync", h.name)
        assert sorted((c["field"], str(c["a"]["value"]), str(c["b"]["value"])) for c in conflicts) == sorted(queued)
        history = await h.cli_json("sync", "history", str(h.path), h.name)
        decided = sorted((e["field"], e["rule"], e["winner"] or "queue") for e in history)
        rule = {"first": "lww", "last": "prefer:b", "score": "manual"}
        assert decided == sorted(
            (f, "lww -> manual" if (f, outcome) == ("first", "queue") else rule[f], outcome)
            for _, f, _, outcome in CONTESTS.values()
        ), history  # every other edit had one writer: no other conflict was seen

        mark = marks(h, a, "people", lambda: writes(fake))
        sent, made, before = await settled(mark, lambda: polls(fake))
        await more(lambda: polls(fake), 15)  # a quiet period: every change the sync made was read back meanwhile
        proc = h.runner.processor
        assert proc is not None
        assert proc.stats.writes == sent, "the sync kept writing after the edits stopped"
        assert writes(fake) == made, "HubSpot kept receiving writes after the edits stopped"
        assert versions(a, "people") == before, "Postgres kept changing after the edits stopped"
        assert a.rows(PEOPLE, "people") == wa and contacts(fake) == wb
        assert max(fake.crm.created.values(), default=0) <= 1
    finally:
        await h.close()


ITEMS = "CREATE TABLE items (id serial PRIMARY KEY, email text UNIQUE, name text, qty int, note text)"
ITEM_FIELDS = "{email: email, name: firstname, qty: score, note: lastname}"
ITEM_B_TO_A = "{qty: \"None if qty == '' else int(qty)\", note: \"None if note == '' else note\"}"
ITEM_PROPS = {"name": "firstname", "qty": "score", "note": "lastname"}


@pytest.mark.parametrize("hubspot_later_ms", [0, -1500], ids=["within-the-skew", "beyond-the-skew"])
async def test_a_manual_field_edited_on_both_sides_waits_for_the_cli(
    pg_database: str, tmp_path: Path, hubspot: tuple[FakeHubSpot, str], hubspot_later_ms: int
) -> None:
    """``name`` is ``manual`` (the rest lww with a 0.5 s skew): HubSpot's edit of it lands just after
    Postgres' (within the skew) or 1.5 s before it (beyond: lww would pick Postgres), and either way waits
    in the review queue until the CLI settles it on both sides; then nothing echoes."""
    fake, url = hubspot
    a = Side("pg", pg_database)
    a.sql(ITEMS)
    a.sql("INSERT INTO items (email, name, qty, note) VALUES ('i1@example.com', 'ada', 1, NULL), "
          "('i2@example.com', 'bob', 2, 'b')")  # fmt: skip
    rids = {1: add_contact(fake, "i1@example.com", firstname="ada", score="1"),
            2: add_contact(fake, "i2@example.com", firstname="bob", score="2", lastname="b")}  # fmt: skip
    ids = {v: k for k, v in rids.items()}
    h = SyncHarness(tmp_path, f"q{uuid.uuid4().hex[:8]}", "")
    rules = "{default: lww, skew: 0.5s, fields: {name: manual}}"
    h.config_text = config(h, a, tmp_path, url, rules, "items", ITEM_FIELDS, ITEM_B_TO_A)

    def edit(key: int, column: str, value: Any) -> None:  # a person's edit in HubSpot, dated as the case says
        fake.upsert(
            "contacts", int(rids[key]), int(time.time() * 1000) + hubspot_later_ms, **{ITEM_PROPS[column]: value}
        )

    def rows() -> list[tuple[Any, ...]]:  # HubSpot's contacts as Postgres' items rows
        got = fake.snapshot("contacts", tuple(ITEM_PROPS.values()))
        return sorted(
            ((ids[rid], p["firstname"] or None, int(p["score"]) if p["score"] else None, p["lastname"] or None)
             for rid, p in got.items()),
            key=repr,
        )  # fmt: skip

    async def settle() -> None:
        await settled(marks(h, a, "items", lambda: writes(fake)), lambda: polls(fake))

    try:
        await a_conflict_settled_by_the_cli(h, a, edit, rows, "id, name, qty, note", settle=settle)
        history = await h.cli_json("sync", "history", str(h.path), h.name)
        parked, resolved = history  # the rule parked it (lww would have decided beyond the skew); the CLI took B
        assert (parked["field"], parked["rule"], parked["winner"], parked["by"]) == ("name", "manual", "", "rule")
        assert (resolved["rule"], resolved["winner"], resolved["by"]) == ("manual", "b", "ada")
        apart = parked["b"]["at"] - parked["a"]["at"]  # the commit times the rule saw: the case is the one named
        assert abs(apart) < 0.5 if hubspot_later_ms == 0 else (-2 < apart < -1), apart
        sent, made, before = await settled(marks(h, a, "items", lambda: writes(fake)), lambda: polls(fake))
        await more(lambda: polls(fake), 15)  # the resolution's writes read back on both sides meanwhile
        proc = h.runner.processor
        assert proc is not None
        assert (proc.stats.writes, writes(fake), versions(a, "items")) == (sent, made, before), "an echo"
        assert a.rows("id, name, qty, note", "items") == rows() == [(1, "ada (person)", 1, None), (2, "bob", 2, "b2")]
    finally:
        await h.close()


async def test_a_contact_archived_in_hubspot_is_deleted_on_the_postgres_side(
    pg_database: str, tmp_path: Path, hubspot: tuple[FakeHubSpot, str]
) -> None:
    fake, url = hubspot
    both = [("d1@example.com", "f", "l", 1), ("d2@example.com", "g", "m", 2)]
    a, ids = people(pg_database, fake, both, [*both, ("d3@example.com", "h", "n", 3)])  # d3: in HubSpot only
    d1 = ids["d1@example.com"]
    h = SyncHarness(tmp_path, f"d{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, url, "{default: lww, skew: 0s}")
    try:
        await h.start()
        await eventually(lambda: len(a.rows(PEOPLE, "people")) == 3 and a.rows(PEOPLE, "people") == contacts(fake),
                         timeout=30, message="pairing: both sides hold the 3 people")  # fmt: skip
        await settled(marks(h, a, "people", lambda: writes(fake)), lambda: polls(fake))
        d3 = by_email(fake)["d3@example.com"]
        fake.archive("contacts", d1)  # a person deletes the contact in HubSpot
        fake.archive("contacts", d3)  # one Postgres got from HubSpot
        want = [("d2@example.com", "g", "m", 2)]
        await eventually(lambda: a.rows(PEOPLE, "people") == want, timeout=30,
                         message="the archived contacts deleted in Postgres")  # fmt: skip
        await settled(marks(h, a, "people", lambda: writes(fake)), lambda: polls(fake))
        assert a.rows(PEOPLE, "people") == want and contacts(fake) == want  # neither came back on either side
        assert fake.requests["batch/archive"] == 0  # the sync archived nothing itself

        # the other way: the sync's own archive is listed as archived too, and that delete ends there
        a.sql("DELETE FROM people WHERE email = 'd2@example.com'")
        await eventually(lambda: contacts(fake) == [], timeout=30, message="d2 archived in HubSpot")
        await settled(marks(h, a, "people", lambda: writes(fake)), lambda: polls(fake))
        assert a.rows(PEOPLE, "people") == [] and len(fake.archived["contacts"]) == 3
        assert fake.requests["batch/archive"] == 1
        assert await h.cli_json("conflicts", "list", str(h.path)) == []
    finally:
        await h.close()


def test_a_hubspot_side_is_configured_by_its_source(tmp_path: Path) -> None:
    def load(b: str, fields: str = "{email: email, first: firstname}") -> Any:
        path = tmp_path / "sync.yaml"
        path.write_text(f"""
syncs:
  - name: crm
    a: {{source: {{type: sqlite, path: "{tmp_path / "a.db"}", tables: [people]}}, table: people, key: id}}
    b: {b}
    fields: {fields}
    match: {{by: email}}
""")
        return load_config(path)

    source = "{type: hubspot, token: t, objects: [contacts, companies]}"
    spec = load(f"{{source: {source}, table: contacts, key: hs_object_id}}").syncs[0]
    contacts_obj = spec.b_source.objects[0]
    assert contacts_obj.properties == ["email", "firstname", "hs_object_id"]  # what the side maps, read
    assert spec.b_source.objects[1].properties is None
    ep = build_parts(spec).endpoints["b"]
    assert isinstance(ep, HubSpotEndpoint) and ep.object_type == "contacts" and ep.id_property == "email"
    for bad, why in [
        (f"{{source: {source}, table: contacts, key: email}}", "key: hs_object_id"),
        (f"{{source: {source}, table: contacts, key: hs_object_id, dsn: 'sqlite:///x.db'}}", "remove dsn"),
        (f"{{source: {source}, table: deals, key: hs_object_id}}", "not one of the source's objects"),
        (f"{{source: {source}, key: hs_object_id}}", "name the object this side writes"),
    ]:
        with pytest.raises(ConfigError, match=why):
            load(bad)
    with pytest.raises(ConfigError, match="makes its own record ids"):
        load(f"{{source: {source}, table: contacts, key: hs_object_id}}", "{id: hs_object_id, email: email}")
