"""The state store suite, run over both backends (SQLite in tmp_path; Postgres in a fresh schema).

Backend-specific behaviour (URL parsing, a corrupt or locked file, an
unreachable server, reconnecting) is at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any
from unittest.mock import ANY

import psycopg
import pytest

from tidesync.errors import ConfigError, StateStoreError
from tidesync.event import ChangeEvent
from tidesync.state import (
    DEFAULT_STATE_URL,
    DeadLetterFilter,
    JournalAppend,
    NewDeadLetter,
    PipelineStatus,
    ShadowRow,
    StateChanges,
    StateStore,
    open_state_store,
)
from tidesync.state.postgres import PostgresStateStore
from tidesync.state.sqlite import SqliteStateStore

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A URL for an empty state store of each backend; the Postgres schema is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
        return
    schema = f"ts_state_{uuid.uuid4().hex[:12]}"
    yield f"{PG_ADMIN}?schema={schema}&application_name={schema}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def open_store(state_url: str) -> AsyncIterator[Callable[[], Awaitable[StateStore]]]:
    """Opens stores on ``state_url`` (several for "two processes" tests) and closes them all afterwards."""
    stores: list[StateStore] = []

    async def make() -> StateStore:
        store = open_state_store(state_url)
        stores.append(store)
        await store.open()
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def state_store(open_store: Callable[[], Awaitable[StateStore]]) -> StateStore:
    return await open_store()


# --- helpers -----------------------------------------------------------------------------

ROW = {
    "amount": Decimal("12345.6789"),
    "at": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "day": dt.date(2024, 2, 29),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "blob": b"\x00\xffbytes",
    "doc": {"tags": ["a", "b"], "nested": {"n": 1, "f": 1.5, "none": None}},
    "big": 2**62,
    "flag": True,
    "name": "Zoë",
    "missing": None,
}


def assert_same(a: Any, b: Any) -> None:
    """Equal, and of exactly the same types all the way down."""
    assert type(a) is type(b), f"{a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def event(key: Any = (1,), entity: str = "public.customers", **kw: Any) -> ChangeEvent:
    return ChangeEvent(entity=entity, key=key, op="update", after={"id": key[0], **kw}, position=(10, key[0]))


def dead(pipeline: str = "p", sink: str = "s", ev: ChangeEvent | None = None, **kw: Any) -> NewDeadLetter:
    args: dict[str, Any] = {"error_class": "permanent", "error": "rejected", "first_failed_at": 100.0}
    args.update(kw)
    args.setdefault("last_failed_at", args["first_failed_at"])
    return NewDeadLetter(pipeline=pipeline, sink=sink, event=ev or event(), **args)


# --- lifecycle -----------------------------------------------------------------------------


async def test_open_and_close_are_idempotent_and_a_closed_store_says_so(state_url: str) -> None:
    store = open_state_store(state_url)
    assert isinstance(store, StateStore)
    with pytest.raises(StateStoreError, match="not open"):
        await store.load_checkpoint("p")
    await store.open()
    await store.open()
    await store.commit("p", StateChanges(checkpoint=(1,)))
    await store.close()
    await store.close()
    with pytest.raises(StateStoreError, match="not open"):
        await store.load_checkpoint("p")
    await store.open()  # reopening finds what was committed
    assert await store.load_checkpoint("p") == (1,)
    await store.close()


# --- checkpoints ---------------------------------------------------------------------------


async def test_checkpoint_round_trip_keeps_types_and_reset_removes_it(state_store: StateStore) -> None:
    assert await state_store.load_checkpoint("p") is None
    pos = (2**40 + 7, "0/16B3748", 3, -1, Decimal("1.5"), b"\x01")
    assert await state_store.commit("p", StateChanges(checkpoint=pos)) == []
    assert_same(await state_store.load_checkpoint("p"), pos)
    await state_store.commit("p", StateChanges(checkpoint=(2,)))
    await state_store.commit("other", StateChanges(checkpoint=("x",)))
    assert_same(await state_store.load_checkpoint("p"), (2,))
    await state_store.commit("p", StateChanges())  # an empty change set leaves it alone
    assert_same(await state_store.load_checkpoint("p"), (2,))
    await state_store.reset_checkpoint("p")
    assert await state_store.load_checkpoint("p") is None
    assert_same(await state_store.load_checkpoint("other"), ("x",))


# --- shadow rows ---------------------------------------------------------------------------


async def test_shadow_rows_round_trip_exact_types(state_store: StateStore) -> None:
    key = (7, "eu", uuid.UUID(int=5))
    put = ShadowRow("sync1", "crm.contact", key, ROW, position=(99, "a"), committed_at=1700000000.25, origin="crm")
    await state_store.commit("sync1", StateChanges(shadow_put=[put]))
    got = await state_store.shadow_get("sync1", "crm.contact", [key, (8, "eu", uuid.UUID(int=5))])
    assert list(got) == [key]
    row = got[key]
    assert (row.scope, row.entity, row.committed_at, row.origin) == ("sync1", "crm.contact", 1700000000.25, "crm")
    assert_same(row.key, key)
    assert_same(row.row, ROW)
    assert_same(row.position, (99, "a"))


async def test_shadow_put_upserts_delete_removes_and_scopes_are_separate(state_store: StateStore) -> None:
    def shadow(scope: str, entity: str, k: int, v: str) -> ShadowRow:
        return ShadowRow(scope, entity, (k,), {"v": v})

    await state_store.commit(
        "a",
        StateChanges(
            shadow_put=[
                shadow("a", "e1", 1, "one"),
                shadow("a", "e1", 2, "two"),
                shadow("a", "e2", 1, "x"),
                shadow("b", "e1", 1, "other scope"),
            ]
        ),
    )
    await state_store.commit("a", StateChanges(shadow_put=[ShadowRow("a", "e1", (1,), {"v": "uno"}, origin="o")]))
    rows = await state_store.shadow_scan("a", "e1")
    assert [(r.key, r.row, r.origin, r.position) for r in rows] == [
        ((1,), {"v": "uno"}, "o", None),
        ((2,), {"v": "two"}, None, None),
    ]
    assert [(r.entity, r.key) for r in await state_store.shadow_scan("a")] == [("e1", (1,)), ("e1", (2,)), ("e2", (1,))]
    assert [r.row for r in await state_store.shadow_scan("b")] == [{"v": "other scope"}]

    await state_store.commit("a", StateChanges(shadow_delete=[("a", "e1", (1,)), ("a", "e1", (404,))]))
    assert [r.key for r in await state_store.shadow_scan("a", "e1")] == [(2,)]
    assert (await state_store.shadow_get("b", "e1", [(1,)]))[(1,)].row == {"v": "other scope"}
    assert await state_store.shadow_get("a", "e1", []) == {}


async def test_shadow_get_of_a_thousand_keys_takes_a_few_queries(
    state_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [(i, f"k{i}") for i in range(1000)]
    rows = [ShadowRow("p", "e", k, {"n": k[0]}) for k in keys]
    await state_store.commit("p", StateChanges(shadow_put=rows))
    wanted = [*keys, *((i, "absent") for i in range(10))]

    statements = await _count_statements(state_store, monkeypatch)
    got = await state_store.shadow_get("p", "e", wanted)
    assert len(got) == 1000
    assert all(got[k].row == {"n": k[0]} for k in keys)
    assert 1 <= len(statements) <= 4, statements  # 1 on SQLite 3.32+ and Postgres

    if isinstance(state_store, SqliteStateStore):
        state_store._chunk = 300  # a build with a low parameter limit: several queries in one read transaction
        assert await state_store.shadow_get("p", "e", wanted) == got


async def _count_statements(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every SQL statement the store sends from now on (white box: the backends' drivers)."""
    seen: list[str] = []
    if isinstance(store, SqliteStateStore):
        conn = store._conn
        assert conn is not None
        await store._call(lambda: conn.set_trace_callback(seen.append), "test")
    else:
        original = psycopg.AsyncCursor.execute

        async def counting(self: Any, query: Any, *args: Any, **kw: Any) -> Any:
            seen.append(str(query))
            return await original(self, query, *args, **kw)

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting)
    return seen


# --- dead letters ---------------------------------------------------------------------------


async def test_dead_letters_get_increasing_ids_and_keep_the_event(state_store: StateStore) -> None:
    ev = ChangeEvent(
        "public.orders",
        (5, "x"),
        "update",
        before={"total": Decimal("1.10")},
        after={"total": Decimal("2.20"), "at": ROW["at"]},
        changed=("total",),
        position=(123, 4),
        committed_at=1700000001.5,
        origin="billing",
        txid=77,
    )
    first = dead(ev=ev, error="boom: constraint", attempts=3, first_failed_at=10.0, last_failed_at=20.0)
    ids = await state_store.commit("p", StateChanges(dead_letters=[first, dead(), dead()]))
    assert len(ids) == 3
    assert ids == sorted(ids) and len(set(ids)) == 3
    entry = await state_store.dlq_get(ids[0])
    assert entry is not None
    assert (entry.id, entry.pipeline, entry.sink, entry.error_class, entry.error) == (
        ids[0],
        "p",
        "s",
        "permanent",
        "boom: constraint",
    )
    assert (entry.attempts, entry.first_failed_at, entry.last_failed_at) == (3, 10.0, 20.0)
    assert entry.event == ev
    assert_same(entry.event.after, ev.after)
    assert_same(entry.event.key, ev.key)
    assert (entry.entity, entry.key) == ("public.orders", (5, "x"))
    assert await state_store.dlq_get(ids[-1] + 1000) is None

    # Removing the newest entry does not make its id come back.
    assert await state_store.dlq_remove([ids[2]]) == 1
    (later,) = await state_store.commit("p", StateChanges(dead_letters=[dead()]))
    assert later > ids[2]


async def test_dlq_list_filters(state_store: StateStore) -> None:
    a = event((1,), "e1")
    b = event((2,), "e2")
    ids = await state_store.commit(
        "p1",
        StateChanges(
            dead_letters=[
                dead("p1", "s1", a, error="Timeout talking to server", error_class="transient", first_failed_at=100),
                dead("p1", "s2", b, error="value too long", first_failed_at=200),
                dead("p2", "s1", a, error="timeout again", error_class="transient", first_failed_at=300),
                dead("p2", "s1", b, error="blocked behind 1", error_class="blocked", first_failed_at=400),
            ]
        ),
    )
    i1, i2, i3, i4 = ids

    async def listed(**kw: Any) -> list[int]:
        return [d.id for d in await state_store.dlq_list(DeadLetterFilter(**kw))]

    assert [d.id for d in await state_store.dlq_list()] == ids  # oldest first
    assert await listed() == ids
    assert await listed(pipeline="p2") == [i3, i4]
    assert await listed(sink="s1") == [i1, i3, i4]
    assert await listed(entity="e2") == [i2, i4]
    assert await listed(error_class="transient") == [i1, i3]
    assert await listed(error_contains="timeout") == [i3]  # case-sensitive substring
    assert await listed(error_contains="too lo") == [i2]
    assert await listed(error_contains="%") == []  # no wildcard meaning
    assert await listed(older_than=300) == [i1, i2]
    assert await listed(newer_than=300) == [i3, i4]
    assert await listed(newer_than=200, older_than=400) == [i2, i3]
    assert await listed(ids=(i4, i1, 999_999)) == [i1, i4]
    assert await listed(ids=()) == []
    assert await listed(limit=2) == [i1, i2]
    assert await listed(pipeline="p2", entity="e1", sink="s1", error_class="transient") == [i3]
    assert await listed(sink="s1", limit=1, newer_than=150) == [i3]


async def test_dlq_parked_keys_touch_remove_and_count(state_store: StateStore) -> None:
    ids = await state_store.commit(
        "p",
        StateChanges(
            dead_letters=[
                dead("p", "s", event((1, "a"), "e1")),
                dead("p", "s", event((1, "a"), "e1").replace(position=(11, 1))),
                dead("p", "s", event((2, "b"), "e2")),
                dead("p", "other", event((3, "c"), "e1")),
                dead("q", "s", event((4, "d"), "e1")),
            ]
        ),
    )
    parked = await state_store.dlq_parked_keys("p", "s")
    assert parked == {("e1", (1, "a")): (11, 1), ("e2", (2, "b")): (10, 2)}  # the newest position of each key
    assert all(type(k) is tuple for _, k in parked)
    assert await state_store.dlq_parked_keys("p", "nothing") == {}

    await state_store.dlq_touch(ids[0], "still failing", "transient", 555.5)
    await state_store.dlq_touch(ids[0], "failing again", "transient", 666.5)
    await state_store.dlq_touch(999_999, "gone", "transient", 1.0)  # ignored
    touched = await state_store.dlq_get(ids[0])
    assert touched is not None
    assert (touched.attempts, touched.error, touched.error_class) == (3, "failing again", "transient")
    assert (touched.first_failed_at, touched.last_failed_at) == (100.0, 666.5)

    assert await state_store.dlq_count() == 5
    assert await state_store.dlq_count("p") == 4
    assert await state_store.dlq_count("q") == 1
    assert await state_store.dlq_count("none") == 0

    assert await state_store.dlq_remove([ids[0], ids[1], 999_999]) == 2
    assert await state_store.dlq_remove([ids[0]]) == 0
    assert await state_store.dlq_remove([]) == 0
    assert await state_store.dlq_parked_keys("p", "s") == {("e2", (2, "b")): (10, 2)}
    # dlq_remove in a commit, together with a checkpoint
    await state_store.commit("p", StateChanges(checkpoint=(9,), dlq_remove=[ids[2], ids[4]]))
    assert [d.id for d in await state_store.dlq_list()] == [ids[3]]
    assert await state_store.dlq_count() == 1


# --- kv -------------------------------------------------------------------------------------


async def test_kv_put_get_delete_and_prefix_scan(state_store: StateStore) -> None:
    await state_store.kv_put("ns", "cursor:orders", {"after": ROW["at"], "ids": [1, 2], "t": (1, "a")})
    await state_store.kv_put("ns", "cursor:users", 42)
    await state_store.kv_put("ns", "Cursor:caps", "upper")
    await state_store.kv_put("ns", "cursor_x", "underscore")
    await state_store.kv_put("ns", "c%", "percent")
    await state_store.kv_put("other", "cursor:orders", "other namespace")
    assert_same(await state_store.kv_get("ns", "cursor:orders"), {"after": ROW["at"], "ids": [1, 2], "t": (1, "a")})
    assert await state_store.kv_get("ns", "absent") is None

    await state_store.kv_put("ns", "cursor:users", Decimal("43"))  # replaces
    assert_same(await state_store.kv_get("ns", "cursor:users"), Decimal("43"))
    assert list(await state_store.kv_scan("ns", "cursor:")) == ["cursor:orders", "cursor:users"]
    assert list(await state_store.kv_scan("ns", "c%")) == ["c%"]
    assert sorted(await state_store.kv_scan("ns")) == ["Cursor:caps", "c%", "cursor:orders", "cursor:users", "cursor_x"]
    assert await state_store.kv_scan("ns", "zzz") == {}

    await state_store.kv_delete("ns", "cursor:orders")
    await state_store.kv_delete("ns", "never there")
    assert await state_store.kv_get("ns", "cursor:orders") is None
    assert await state_store.kv_get("other", "cursor:orders") == "other namespace"

    await state_store.commit("p", StateChanges(kv_put={("ns", "a"): [1], ("ns", "b"): None}, kv_delete=[("ns", "c%")]))
    assert await state_store.kv_scan("ns", "") == {
        "Cursor:caps": "upper",
        "a": [1],
        "b": None,
        "cursor:users": Decimal("43"),
        "cursor_x": "underscore",
    }


# --- status ------------------------------------------------------------------------------------


async def test_status_is_replaced_except_the_counter_which_adds_up(state_store: StateStore) -> None:
    assert await state_store.status_get("p") is None
    await state_store.commit("p", StateChanges(events_applied=5))  # creates the row
    created = await state_store.status_get("p")
    assert created == PipelineStatus("p", events_applied=5)

    running = PipelineStatus(
        "p",
        state="running",
        position=(42, "x"),
        events_applied=1_000_000,  # ignored: the store keeps the counter
        lag_seconds=0.25,
        last_committed_at=1700000000.5,
        last_error="earlier hiccup",
        next_attempt_at=1700000010.0,
        updated_at=1700000001.0,
        extra={"sinks": {"s": "ok"}, "at": ROW["at"]},
    )
    await state_store.commit("p", StateChanges(checkpoint=(42, "x"), status=running, events_applied=10))
    got = await state_store.status_get("p")
    assert got is not None
    assert got.events_applied == 15
    assert (got.state, got.lag_seconds, got.last_committed_at, got.last_error) == (
        "running",
        0.25,
        1700000000.5,
        "earlier hiccup",
    )
    assert (got.next_attempt_at, got.updated_at) == (1700000010.0, 1700000001.0)
    assert_same(got.position, (42, "x"))
    assert_same(got.extra, running.extra)

    await state_store.commit("p", StateChanges(events_applied=7))  # counter only: the rest stays
    got = await state_store.status_get("p")
    assert got is not None and (got.events_applied, got.state) == (22, "running")

    await state_store.commit("p", StateChanges(status=PipelineStatus("p", state="stopped")))
    got = await state_store.status_get("p")
    assert got == PipelineStatus("p", state="stopped", events_applied=22)

    await state_store.commit("b-pipe", StateChanges(status=PipelineStatus("b-pipe", state="failed")))
    await state_store.commit("Z", StateChanges(events_applied=1))
    assert [s.pipeline for s in await state_store.status_list()] == sorted(["p", "b-pipe", "Z"])


# --- intake journal ----------------------------------------------------------------------------


def delivery(event_id: str, source: str = "hooks", body: bytes = b"{}", at: float = 100.0) -> JournalAppend:
    return JournalAppend(source, event_id, body, {"x-event": "issues"}, at)


async def test_journal_appends_in_order_and_drops_duplicates_in_the_same_transaction(state_store: StateStore) -> None:
    seqs = await state_store.journal_append([delivery("a", body=b"\x00raw"), delivery("b"), delivery("a")])
    assert seqs[0] is not None and seqs[1] is not None and seqs[2] is None
    assert seqs[0] < seqs[1]
    # a later call with an old id, and another source with the same id
    again = await state_store.journal_append([delivery("b"), delivery("a", source="other"), delivery("c")])
    assert again[0] is None and again[1] is not None and again[2] is not None and again[2] > seqs[1]

    entries = await state_store.journal_read("hooks", 0, 100)
    assert [(e.event_id, e.seq) for e in entries] == [("a", seqs[0]), ("b", seqs[1]), ("c", again[2])]
    assert entries[0].body == b"\x00raw" and entries[0].meta == {"x-event": "issues"}
    assert entries[0].received_at == 100.0 and entries[0].source == "hooks"
    assert [e.event_id for e in await state_store.journal_read("hooks", seqs[0], 1)] == ["b"]
    assert [e.event_id for e in await state_store.journal_read("hooks", 0, 100, through=seqs[1])] == ["a", "b"]
    assert [e.event_id for e in await state_store.journal_read("other", 0, 100)] == ["a"]
    assert await state_store.journal_read("nobody", 0, 100) == []


async def test_journal_trim_drops_payloads_but_remembers_ids_for_the_retention(state_store: StateStore) -> None:
    first = await state_store.journal_append([delivery(f"e{i}", at=100.0 + i) for i in range(5)])
    assert all(s is not None for s in first)
    through = first[2]
    assert through is not None
    assert await state_store.journal_trim("hooks", through, forget_before=0.0) == 3
    assert [e.event_id for e in await state_store.journal_read("hooks", 0, 100)] == ["e3", "e4"]
    # trimmed ids inside the retention still count as seen
    assert await state_store.journal_append([delivery("e0"), delivery("e2")]) == [None, None]
    # forget those received before 102: e0 and e1 may come again, e2 (received at 102) may not
    assert await state_store.journal_trim("hooks", through, forget_before=102.0) == 0
    again = await state_store.journal_append([delivery("e0"), delivery("e1"), delivery("e2"), delivery("e4")])
    assert again[0] is not None and again[1] is not None and again[2] is None and again[3] is None
    assert again[0] > first[4]  # type: ignore[operator]
    # untrimmed entries are never forgotten, whatever their age
    assert await state_store.journal_trim("hooks", 0, forget_before=10_000.0) == 0
    assert [e.event_id for e in await state_store.journal_read("hooks", 0, 100)] == ["e3", "e4", "e0", "e1"]


async def test_concurrent_journal_appends_never_show_a_gap_to_a_reader(state_store: StateStore) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        after = 0
        while not done.is_set() or (await state_store.journal_read("hooks", after, 1)):
            for e in await state_store.journal_read("hooks", after, 50):
                seen.append(e.seq)
                after = e.seq
            await asyncio.sleep(0)

    async def writer(w: int) -> None:
        for i in range(20):
            await state_store.journal_append([delivery(f"{w}-{i}-{j}") for j in range(3)])

    task = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(5)))
    done.set()
    await task
    stored = [e.seq for e in await state_store.journal_read("hooks", 0, 1000)]
    assert len(stored) == 300 and seen == stored


# --- atomicity and concurrency ---------------------------------------------------------------


def _changes_failing_at(part: str, remove: list[int]) -> StateChanges:
    """Every part of a commit filled in, with a value that cannot be stored in ``part``, written late."""
    unstorable = object()
    return StateChanges(
        checkpoint=(100,),
        shadow_put=[ShadowRow("p", "e", (i,), {"v": i}) for i in range(50)],
        shadow_delete=[("p", "e", (-1,))],
        dead_letters=[dead(), dead()],
        dlq_remove=remove,
        kv_put={("ns", "good"): 1, ("ns", "bad"): unstorable if part == "kv" else 2},
        kv_delete=[("ns", "keep")],
        status=PipelineStatus("p", state="running", extra={"x": unstorable} if part == "status" else {}),
        events_applied=50,
    )


@pytest.mark.parametrize("part", ["kv", "status"])
async def test_a_commit_that_fails_halfway_leaves_nothing_behind(state_store: StateStore, part: str) -> None:
    before_ids = await state_store.commit(
        "p",
        StateChanges(
            checkpoint=(1,),
            shadow_put=[ShadowRow("p", "e", (-1,), {"v": "old"})],
            dead_letters=[dead(error="old")],
            kv_put={("ns", "keep"): "kept"},
            status=PipelineStatus("p", state="starting"),
            events_applied=1,
        ),
    )
    with pytest.raises(StateStoreError, match="cannot store"):
        await state_store.commit("p", _changes_failing_at(part, before_ids))

    assert await state_store.load_checkpoint("p") == (1,)
    assert [r.key for r in await state_store.shadow_scan("p")] == [(-1,)]
    assert [d.id for d in await state_store.dlq_list()] == before_ids
    assert await state_store.kv_scan("ns") == {"keep": "kept"}
    assert await state_store.status_get("p") == PipelineStatus("p", state="starting", events_applied=1)

    # The store still works, and the same changes without the bad value commit whole.
    new_ids = await state_store.commit("p", _changes_failing_at("none", before_ids))
    assert len(new_ids) == 2 and min(new_ids) > max(before_ids)
    assert [d.id for d in await state_store.dlq_list()] == new_ids
    assert await state_store.load_checkpoint("p") == (100,)
    assert [r.key for r in await state_store.shadow_scan("p")] == sorted((i,) for i in range(50))
    assert await state_store.kv_scan("ns") == {"bad": 2, "good": 1}
    status = await state_store.status_get("p")
    assert status is not None and (status.state, status.events_applied) == ("running", 51)


async def test_concurrent_coroutines_are_serialised(state_store: StateStore) -> None:
    async def worker(i: int) -> list[int]:
        ids = await state_store.commit(
            "p",
            StateChanges(
                checkpoint=(i,),
                dead_letters=[dead(ev=event((i,)))],
                kv_put={("ns", f"k{i:03}"): i},
                shadow_put=[ShadowRow("p", "e", (i,), {"i": i})],
                events_applied=1,
            ),
        )
        assert await state_store.kv_get("ns", f"k{i:03}") == i
        return ids

    results = await asyncio.gather(*(worker(i) for i in range(60)))
    ids = [i for r in results for i in r]
    assert len(set(ids)) == 60
    status = await state_store.status_get("p")
    assert status is not None and status.events_applied == 60
    assert len(await state_store.kv_scan("ns")) == 60
    assert len(await state_store.shadow_get("p", "e", [(i,) for i in range(60)])) == 60
    assert await state_store.dlq_count() == 60


async def test_a_cancelled_commit_is_all_or_nothing_and_the_store_goes_on(state_store: StateStore) -> None:
    rows = [ShadowRow("p", "e", (i,), {"v": i}) for i in range(3000)]
    task = asyncio.create_task(state_store.commit("p", StateChanges(checkpoint=(1,), shadow_put=rows)))
    await asyncio.sleep(0)  # let it start, then cancel it in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await state_store.commit("p", StateChanges(events_applied=1))
    checkpoint = await state_store.load_checkpoint("p")
    stored = len(await state_store.shadow_scan("p", "e"))
    assert (checkpoint, stored) in {(None, 0), ((1,), 3000)}


async def test_two_stores_on_the_same_state_see_each_others_commits(
    open_store: Callable[[], Awaitable[StateStore]],
) -> None:
    one, two = await asyncio.gather(open_store(), open_store())  # two workers creating the schema at once
    (dl_id,) = await one.commit("p", StateChanges(checkpoint=(1, "a"), dead_letters=[dead()], events_applied=3))
    assert await two.load_checkpoint("p") == (1, "a")
    assert [d.id for d in await two.dlq_list()] == [dl_id]
    await two.commit("p", StateChanges(checkpoint=(2, "b"), dlq_remove=[dl_id], events_applied=4))
    assert await one.load_checkpoint("p") == (2, "b")
    assert await one.dlq_count() == 0
    status = await one.status_get("p")
    assert status is not None and status.events_applied == 7


# --- removing a pipeline -------------------------------------------------------------------------


async def _state_of(store: StateStore, name: str) -> dict[str, Any]:
    return {
        "checkpoint": await store.load_checkpoint(name),
        "status": await store.status_get(name),
        "dlq": await store.dlq_count(name),
        "shadow": await store.shadow_scan(name),
        "journal": await store.journal_read(name, 0, 10),
        "kv": [
            await store.kv_get("dlq_generation", name),
            await store.kv_get("postgres-source", f"{name}/source"),
            await store.kv_get("webhook_sink_retry", f"{name}:sink:msg_1"),
            await store.kv_scan(f"dlq_applied:{name}:sink"),
        ],
    }


async def _fill(store: StateStore, name: str) -> None:
    await store.commit(
        name,
        StateChanges(
            checkpoint=(7, name),
            shadow_put=[ShadowRow(name, "public.customers", (1,), {"a": 1})],
            dead_letters=[dead(pipeline=name), dead(pipeline=name, ev=event((2,)))],
            kv_put={
                ("dlq_generation", name): 3,  # keyed by the name
                ("postgres-source", f"{name}/source"): {"run": 1},  # name and "/"
                ("webhook_sink_retry", f"{name}:sink:msg_1"): {"attempts": 2},  # name and ":"
                (f"dlq_applied:{name}:sink", '["e",[1]]'): {"entry": 1},  # the namespace names it
            },
            status=PipelineStatus(name, state="stopped", updated_at=1.0),
            events_applied=4,
        ),
    )
    assert await store.journal_append([delivery("e1", source=name), delivery("e2", source=name)]) == [ANY, ANY]


async def test_remove_pipeline_deletes_its_state_and_nothing_of_other_pipelines(state_store: StateStore) -> None:
    for name in ("shop", "shop2", "shopping"):  # names sharing a prefix keep their own state
        await _fill(state_store, name)
    await state_store.commit("shop", StateChanges(shadow_put=[ShadowRow("webhook:shop", "e", (1,), {"v": 1})]))
    await state_store.kv_put("webhook_backfill", "shop", 1700000000.0)
    await state_store.kv_put("sync-meta", "shop2/paired", True)
    before_others = {n: await _state_of(state_store, n) for n in ("shop2", "shopping")}

    removed = await state_store.remove_pipeline("shop", ["webhook:shop"])

    assert removed == {
        "checkpoint": 1,
        "status": 1,
        "dead letters": 2,
        "shadow rows": 2,
        "kv entries": 5,
        "journal rows": 2,
    }
    assert await _state_of(state_store, "shop") == {
        "checkpoint": None,
        "status": None,
        "dlq": 0,
        "shadow": [],
        "journal": [],
        "kv": [None, None, None, {}],
    }
    assert await state_store.shadow_scan("webhook:shop") == []
    assert await state_store.kv_get("webhook_backfill", "shop") is None
    others = {n: await _state_of(state_store, n) for n in ("shop2", "shopping")}
    assert others == before_others
    assert others["shop2"]["kv"][0] == 3 and others["shopping"]["dlq"] == 2
    assert await state_store.kv_get("sync-meta", "shop2/paired") is True
    assert await state_store.dlq_count() == 4

    # Idempotent, and the journal takes the removed ids again (they are forgotten, not remembered).
    assert set((await state_store.remove_pipeline("shop", ["webhook:shop"])).values()) == {0}
    assert await state_store.journal_append([delivery("e1", source="shop")]) == [ANY]


# --- SQLite specifics ------------------------------------------------------------------------


def test_state_urls_are_parsed(tmp_path: Any) -> None:
    rel = open_state_store("sqlite:///relative/dir/state.db")
    assert isinstance(rel, SqliteStateStore) and rel.path == "relative/dir/state.db" and rel.busy_timeout == 5.0
    absolute = open_state_store(f"sqlite:///{tmp_path}/s.db?timeout=0.25")
    assert isinstance(absolute, SqliteStateStore)
    assert (absolute.path, absolute.busy_timeout) == (f"{tmp_path}/s.db", 0.25)
    bare = open_state_store("some/file.db")
    assert isinstance(bare, SqliteStateStore) and bare.path == "some/file.db"

    pg = open_state_store("postgresql://u:s3cret@db.example:6543/app?schema=mine&sslmode=disable")
    assert isinstance(pg, PostgresStateStore) and pg.schema == "mine"
    assert "s3cret" not in pg.url and "schema" not in pg.url and "sslmode=disable" in pg.url
    default = open_state_store("postgres://u@h/app")
    assert isinstance(default, PostgresStateStore) and default.schema == "tidesync"

    for bad, message in [
        ("mysql://x/y", "unsupported state store URL"),
        ("sqlite:///s.db?timeout=soon", "bad timeout"),
        ("sqlite:///s.db?mode=ro", "unknown parameter 'mode'"),
        ("sqlite://host/s.db", "bad SQLite state URL"),
        ("postgresql://u@h/db?schema=drop;table", "bad schema"),
        ("", "empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            open_state_store(bad)


async def test_default_url_creates_its_folder(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_state_store(DEFAULT_STATE_URL)
    await store.open()
    try:
        await store.commit("p", StateChanges(checkpoint=(1,)))
    finally:
        await store.close()
    assert (tmp_path / ".tidesync" / "state.db").is_file()
    with sqlite3.connect(tmp_path / ".tidesync" / "state.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT value FROM tidesync_meta WHERE name = 'schema_version'").fetchone() == ("3",)
    raw.close()


async def test_a_version_1_state_file_gets_the_journal_on_open(tmp_path: Any) -> None:
    path = tmp_path / "state.db"
    store = open_state_store(str(path))
    await store.open()
    await store.commit("p", StateChanges(checkpoint=(7,)))
    await store.close()
    with sqlite3.connect(path) as raw:  # what version 1 left behind
        raw.execute("DROP TABLE journal")
        raw.execute("UPDATE tidesync_meta SET value = '1' WHERE name = 'schema_version'")
    raw.close()
    await store.open()
    try:
        assert await store.load_checkpoint("p") == (7,)
        assert await store.journal_append([delivery("a")]) != [None]
    finally:
        await store.close()


async def test_a_file_that_is_not_a_database_is_named_in_the_error(tmp_path: Any) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    store = open_state_store(str(path))
    with pytest.raises(StateStoreError, match="not a tidesync state database") as info:
        await store.open()
    assert str(path) in str(info.value)
    await store.close()


async def test_another_applications_database_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    raw.close()
    store = open_state_store(f"sqlite:///{path}")
    with pytest.raises(StateStoreError, match=r"not a tidesync state database \(it holds tables customers\)"):
        await store.open()


async def test_a_state_file_from_a_newer_version_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "state.db"
    store = open_state_store(str(path))
    await store.open()
    await store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE tidesync_meta SET value = '99' WHERE name = 'schema_version'")
    raw.close()
    with pytest.raises(StateStoreError, match="newer tidesync"):
        await store.open()


async def test_a_file_locked_by_another_process_fails_clearly_without_blocking_the_loop(tmp_path: Any) -> None:
    path = tmp_path / "state.db"
    store = open_state_store(f"sqlite:///{path}?timeout=0.3")
    await store.open()
    raw = sqlite3.connect(path, isolation_level=None)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    try:
        raw.execute("BEGIN EXCLUSIVE")  # another process in a long write transaction
        ticks = 0
        with pytest.raises(StateStoreError, match="is locked by another process") as info:
            await store.commit("p", StateChanges(checkpoint=(1,)))
        assert str(path) in str(info.value)
        assert ticks >= 5  # the loop ran on while the store waited for the lock
        raw.execute("ROLLBACK")
        await store.commit("p", StateChanges(checkpoint=(2,)))
        assert await store.load_checkpoint("p") == (2,)
    finally:
        ticking.cancel()
        raw.close()
        await store.close()


# --- Postgres specifics -----------------------------------------------------------------------


async def test_an_unreachable_postgres_names_host_and_port_but_not_the_password() -> None:
    store = open_state_store("postgresql://tidesync:hunter2secret@127.0.0.1:1/state?schema=x")
    with pytest.raises(StateStoreError) as info:
        await store.open()
    message = str(info.value)
    assert "127.0.0.1:1" in message and "cannot connect" in message
    assert "hunter2secret" not in message
    await store.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"ts_state_{uuid.uuid4().hex[:12]}"
    yield f"{PG_ADMIN}?schema={schema}&application_name={schema}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _kill_connections(application_name: str) -> int:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_postgres_tables_live_in_the_configured_schema_and_a_lost_connection_is_reopened(pg_url: str) -> None:
    schema = pg_url.rpartition("application_name=")[2]
    store = open_state_store(pg_url)
    await store.open()
    try:
        with psycopg.connect(PG_ADMIN) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
                )
            }
        assert {"checkpoints", "shadow", "dead_letters", "kv", "status", "meta"} <= tables

        await store.commit("p", StateChanges(checkpoint=(1,)))
        assert _kill_connections(schema) == 1
        # The next calls reconnect: a read, then a write.
        assert await store.load_checkpoint("p") == (1,)
        assert _kill_connections(schema) == 1
        await store.commit("p", StateChanges(checkpoint=(2,), events_applied=1))
        assert await store.load_checkpoint("p") == (2,)
    finally:
        await store.close()


async def test_postgres_errors_are_translated(pg_url: str) -> None:
    store = open_state_store(pg_url)
    await store.open()
    try:
        # Postgres text cannot hold NUL: the server rejects it, and the error says where it came from.
        with pytest.raises(StateStoreError, match=r"127\.0\.0\.1:5432.*committing failed"):
            await store.commit("p", StateChanges(checkpoint=(1,), kv_put={("ns", "bad\x00key"): 1}))
        assert await store.load_checkpoint("p") is None
        await store.commit("p", StateChanges(checkpoint=(2,)))
        assert await store.load_checkpoint("p") == (2,)
    finally:
        await store.close()
