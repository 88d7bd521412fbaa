"""Two-way sync scenarios over in-memory tables, step by step: field-level copies, conditional writes that lose a
race, the review queue (updated, not piled up), resolutions with ``remember``, and echo recognition."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.sync import decisions
from tidesync.sync.mapping import FieldMap, SideSpec
from tidesync.sync.memory import FeedSource, MemoryEndpoint, MemoryTable
from tidesync.sync.processor import SyncProcessor
from tidesync.sync.resolve import ResolutionError, history, list_conflicts, request_resolution
from tidesync.sync.rules import Rule, Rules


@dataclass
class Pair:
    a: MemoryTable
    b: MemoryTable
    proc: SyncProcessor
    sources: dict[str, FeedSource]
    store: StateStore

    async def deliver(self, side: str) -> None:
        batch = await self.sources[side].read(1000, 0)
        if batch.events:
            await self.proc.process(side, batch)  # type: ignore[arg-type]

    async def settle(self) -> None:
        for _ in range(10):
            if not any(s.pending for s in self.sources.values()):
                return
            for side in ("a", "b"):
                await self.deliver(side)
        raise AssertionError("no quiet")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    ticks = itertools.count(1000)
    clock = lambda: float(next(ticks))  # noqa: E731  (every change commits one second after the last)
    a = MemoryTable("a", ["id"], clock=clock)
    b = MemoryTable("b", ["id"], clock=clock)
    names = {"id": "id", "x": "x", "y": "y"}
    fmap = FieldMap(SideSpec("a", "a", ("id",), names), SideSpec("b", "b", ("id",), names), shared_keys=True)
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    rules = Rules(default=Rule("lww"), fields={"y": Rule("manual")}, skew=0.0)
    proc = SyncProcessor(
        "p",
        fmap,
        {"a": MemoryEndpoint(a, origin="o_a"), "b": MemoryEndpoint(b, origin="o_b")},
        store,
        decisions.Policy(rules),
        origins={"a": "o_a", "b": "o_b"},
    )
    await proc.load()
    sources = {"a": FeedSource(a.feed), "b": FeedSource(b.feed)}
    for s in sources.values():
        await s.open(None, None)  # type: ignore[arg-type]
    p = Pair(a, b, proc, sources, store)
    a.insert({"id": 1, "x": 0, "y": 0})
    await p.settle()
    try:
        yield p
    finally:
        await store.close()


async def test_different_fields_edited_on_both_sides_both_survive(pair: Pair) -> None:
    pair.a.update((1,), {"x": 1})
    pair.b.update((1,), {"y": 2})
    await pair.settle()
    assert pair.a.rows == pair.b.rows == {(1,): {"id": 1, "x": 1, "y": 2}}
    assert await list_conflicts(pair.store) == []


async def test_a_write_that_lost_the_race_changes_nothing_and_the_rule_settles_it(pair: Pair) -> None:
    pair.a.update((1,), {"x": 5})
    pair.b.update((1,), {"x": 7})  # B edits after A, before the sync copies A's value
    await pair.deliver("a")  # the copy to B is conditional on x == 0: B holds 7, so nothing is written
    assert pair.b.rows[(1,)]["x"] == 7
    await pair.settle()  # B's own change arrives: a conflict, lww: B's edit is later
    assert pair.a.rows[(1,)]["x"] == pair.b.rows[(1,)]["x"] == 7
    entries = await history(pair.store, "p")
    assert [(h["field"], h["rule"], h["winner"]) for h in entries] == [("x", "lww", "b")]


async def test_a_pending_conflict_is_updated_not_piled_up_and_resolved_with_remember(pair: Pair) -> None:
    pair.a.update((1,), {"y": 1})
    pair.b.update((1,), {"y": 2})
    await pair.settle()
    [first] = await list_conflicts(pair.store)
    assert (first["field"], first["a"]["value"], first["b"]["value"], first["shadow"]["value"]) == ("y", 1, 2, 0)
    pair.a.update((1,), {"y": 3})  # a later edit of the parked field
    pair.b.update((1,), {"x": 9})  # other fields keep syncing
    await pair.settle()
    [again] = await list_conflicts(pair.store)
    assert (again["id"], again["a"]["value"], again["b"]["value"]) == (first["id"], 3, 2)
    assert pair.a.rows[(1,)]["x"] == 9

    with pytest.raises(ResolutionError, match="no pending conflict"):
        await request_resolution(pair.store, "p:99", take="a")
    with pytest.raises(ResolutionError, match="--remember needs --take"):
        await request_resolution(pair.store, first["id"], value=4, has_value=True, remember=True)
    res = await request_resolution(pair.store, first["id"], take="b", remember=True, by="ada")
    assert res.rule_line == "y: {prefer: b}"
    assert await pair.proc.apply_resolutions() == 1
    await pair.settle()
    assert pair.a.rows[(1,)]["y"] == pair.b.rows[(1,)]["y"] == 2
    assert await list_conflicts(pair.store) == []

    pair.a.update((1,), {"y": 5})
    pair.b.update((1,), {"y": 6})
    await pair.settle()  # the remembered rule: B's value, nothing parked
    assert pair.a.rows[(1,)]["y"] == 6 and await list_conflicts(pair.store) == []
    entries = [(h["field"], h["rule"], h["winner"], h["by"]) for h in await history(pair.store, "p") if h["winner"]]
    assert entries == [("y", "manual", "b", "ada"), ("y", "prefer:b", "b", "rule")]


async def test_echoes_are_recognised_and_nothing_ping_pongs(pair: Pair) -> None:
    for i in range(20):
        pair.a.update((1,), {"x": i})
        if i % 3 == 0:
            await pair.deliver("a")
        if i % 5 == 0:
            await pair.deliver("b")
    await pair.settle()
    writes = (pair.proc.endpoints["a"].writes, pair.proc.endpoints["b"].writes)  # type: ignore[attr-defined]
    feeds = (len(pair.a.feed.events), len(pair.b.feed.events))
    await pair.settle()
    assert pair.a.rows == pair.b.rows and pair.b.rows[(1,)]["x"] == 19
    assert (pair.proc.endpoints["a"].writes, pair.proc.endpoints["b"].writes) == writes  # type: ignore[attr-defined]
    assert (len(pair.a.feed.events), len(pair.b.feed.events)) == feeds
    assert pair.proc.stats.echoes >= 1  # every write the sync made to B came back carrying its origin
