"""Fan-out (``sinks: [...]``): one source read once, several sinks, each with its own position.

In-process runs over a real SQLite state store: the hub and its lane
pipelines as ``tidesync run`` builds them, with in-memory sources and sinks
whose speed the test controls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tidesync.config import load_config
from tidesync.engine.fanout import FanoutHub
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.errors import ConfigError
from tidesync.event import INSERT, Batch, ChangeEvent
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore
from tidesync.testing import ListSource, MemorySink, eventually

N = 100


def events(n: int = N) -> list[ChangeEvent]:
    return [ChangeEvent("items", (i,), INSERT, None, {"id": i, "v": i}, committed_at=1.0) for i in range(n)]


class Counting(MemorySink):
    """A memory sink that keeps every event it was handed (duplicates included).

    ``gate`` closed: writes wait. ``left``: how many more writes may pass (None: any).
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[ChangeEvent] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.left: int | None = None

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        await self.gate.wait()
        if self.left is not None:
            while self.left <= 0:
                self.gate.clear()
                await self.gate.wait()
            self.left -= 1
        self.received.extend(events)
        self.apply(events, replay=True)


class StatefulSource(ListSource):
    """A list source whose batches carry source state: the last position read, as a broker's window would."""

    async def read(self, max_events: int, max_wait: float) -> Batch[Any]:
        batch = await super().read(max_events, max_wait)
        if batch.position is None:
            return batch
        state = StateChanges(kv_put={("src", "orders/read"): list(batch.position)})
        return Batch(batch.events, batch.position, state=state)


class Run:
    def __init__(self, store: StateStore, source: Any, sinks: dict[str, Counting], buffer: int = 2) -> None:
        names = [f"orders.{n}" for n in sinks]
        self.hub = FanoutHub("orders", source, store, names, buffer=buffer, max_events=10, max_wait=0.01)
        self.runners = [
            PipelineRunner(
                f"orders.{n}", self.hub.lane(f"orders.{n}"), sink, store, batch=BatchPolicy(10, 0.01), queue_batches=1
            )
            for n, sink in sinks.items()
        ]
        self.hub.expect([r.name for r in self.runners])
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(r.run(self.stop)) for r in self.runners]

    async def end(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await s.open()
    yield s
    await s.close()


def keys(sink: Counting) -> list[int]:
    return [e.key[0] for e in sink.received]


async def test_each_sink_gets_every_event_once_and_the_source_is_acked_at_the_slowest(store: StateStore) -> None:
    source = ListSource(events())
    fast, slow = Counting(), Counting()
    run = Run(store, source, {"fast": fast, "slow": slow})
    slow.gate.clear()
    await eventually(lambda: len(fast.received) >= 30, message="the fast sink writes while the slow one waits")
    assert source.committed == []  # the slow sink has written nothing: the source keeps everything
    assert await store.load_checkpoint("orders") is None
    slow.gate.set()
    await eventually(lambda: len(slow.received) == N and len(fast.received) == N, message="both sinks done")
    await eventually(lambda: source.committed and source.committed[-1] == (N - 1,), message="the source acked")
    await run.end()
    assert keys(fast) == keys(slow) == list(range(N))  # each event once, in order, on each sink
    assert await store.load_checkpoint("orders") == (N - 1,)
    assert await store.load_checkpoint("orders.fast") == await store.load_checkpoint("orders.slow") == (N - 1,)
    assert source.opened == 1  # one read of the source for both sinks
    assert all(a <= b for a, b in zip(source.committed, source.committed[1:], strict=False))


async def test_a_stuck_sink_holds_the_others_back_by_a_bounded_buffer(store: StateStore) -> None:
    source = ListSource(events(1000))
    ok, stuck = Counting(), Counting()
    stuck.gate.clear()
    run = Run(store, source, {"ok": ok, "stuck": stuck}, buffer=2)
    await eventually(lambda: len(ok.received) > 0, message="the healthy sink writes")
    await asyncio.sleep(0.5)  # let the healthy sink run as far as the stuck one lets it
    ahead = len(ok.received)
    # The stuck lane holds: 2 batches in its queue, 1 in its pipeline's queue, 1 read, 1 in its write; the hub one
    # more it waits to hand over. Batches are 10 events.
    assert 0 < ahead <= 10 * (2 + 1 + 1 + 1 + 1 + 1), ahead
    await asyncio.sleep(0.3)
    assert len(ok.received) == ahead  # it stays there
    stuck.gate.set()
    await eventually(lambda: len(ok.received) == 1000 and len(stuck.received) == 1000, message="both done")
    await run.end()
    assert keys(ok) == keys(stuck) == list(range(1000))


async def test_a_restart_skips_what_each_sink_already_has(store: StateStore) -> None:
    ahead, behind = Counting(), Counting()
    behind.left = 1  # one batch (10 events), then it waits
    first = Run(store, ListSource(events()), {"ahead": ahead, "behind": behind})
    await eventually(lambda: len(ahead.received) >= 30 and len(behind.received) == 10, message="one sink ahead")
    await eventually(lambda: store.load_checkpoint("orders.behind"), message="the slow one checkpointed its batch")
    first.stop.set()
    behind.left = None  # its write in flight lands and is checkpointed; then it stops
    behind.gate.set()
    await asyncio.gather(*first.tasks)
    cp_ahead = await store.load_checkpoint("orders.ahead")
    cp_behind = await store.load_checkpoint("orders.behind")
    assert cp_ahead is not None and cp_behind is not None and cp_behind < cp_ahead
    assert await store.load_checkpoint("orders") == cp_behind  # the source's checkpoint is the slowest sink's

    ahead2, behind2 = Counting(), Counting()
    source = ListSource(events())
    second = Run(store, source, {"ahead": ahead2, "behind": behind2})
    await eventually(lambda: len(ahead2.received) + len(behind2.received) == 2 * N - cp_ahead[0] - cp_behind[0] - 2)
    await asyncio.sleep(0.1)
    await second.end()
    # The source read again after the slowest sink; each sink got only what it did not have.
    assert keys(ahead2) == list(range(cp_ahead[0] + 1, N))
    assert keys(behind2) == list(range(cp_behind[0] + 1, N))
    assert sorted(keys(ahead) + keys(ahead2)) == list(range(N))
    assert sorted(keys(behind) + keys(behind2)) == list(range(N))


async def test_the_source_state_waits_for_the_slowest_sink(store: StateStore) -> None:
    fast, slow = Counting(), Counting()
    slow.gate.clear()
    run = Run(store, StatefulSource(events()), {"fast": fast, "slow": slow})
    await eventually(lambda: len(fast.received) >= 30, message="the fast sink writes")
    assert await store.kv_get("src", "orders/read") is None  # no source state past what the slow sink wrote
    slow.gate.set()
    await eventually(lambda: len(slow.received) == N, message="the slow sink catches up")
    await eventually(lambda: store.kv_get("src", "orders/read"), message="the source state committed")
    await run.end()
    assert await store.kv_get("src", "orders/read") == [N - 1]


async def test_a_lane_pipeline_that_stops_holds_the_checkpoint_but_not_the_others(store: StateStore) -> None:
    source = ListSource(events())
    ok, gone = Counting(), Counting()
    gone.gate.clear()
    run = Run(store, source, {"ok": ok, "gone": gone})
    await eventually(lambda: len(ok.received) > 0, message="the healthy sink writes")
    gone_runner = run.runners[1]
    run.tasks[1].cancel()  # its pipeline ends (as a failed one does): its lane detaches
    await asyncio.gather(run.tasks[1], return_exceptions=True)
    assert gone_runner.name == "orders.gone"
    await eventually(lambda: len(ok.received) == N, message="the healthy sink goes on alone")
    assert await store.load_checkpoint("orders") is None  # held where the stopped sink is
    run.stop.set()
    await run.tasks[0]


def test_config_sinks_make_one_pipeline_per_sink(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"""
state: sqlite:///{tmp_path / "s.db"}
pipelines:
  - name: orders
    source: {{type: sqlite, path: {tmp_path / "src.db"}, tables: [items]}}
    sinks:
      - {{name: copy, type: sqlite, path: {tmp_path / "a.db"}}}
      - {{type: "null"}}
""")
    loaded = load_config(path)
    assert [p.name for p in loaded.pipelines] == ["orders.copy", "orders.null"]
    assert {p.fanout for p in loaded.pipelines} == {"orders"}
    assert [p.sink_path for p in loaded.pipelines] == [("pipelines", 0, "sinks", 0), ("pipelines", 0, "sinks", 1)]


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        ("sink: {type: 'null'}\n    sinks: [{type: 'null'}]", "either `sink`"),
        ("sinks: [{type: 'null'}, {type: 'null'}]", "two sinks named 'null'"),
        ("sinks: [{type: 'null', name: 'a b'}]", "letters, digits"),
        ("sinks: [{name: x, type: sqlite}]", "pipelines[0].sinks[0]"),
    ],
)
def test_config_sinks_errors_say_what_to_fix(tmp_path: Path, sinks: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"""
pipelines:
  - name: orders
    source: {{type: sqlite, path: {tmp_path / "src.db"}, tables: [items]}}
    {sinks}
""")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value)


async def test_a_failing_source_is_reopened_once_for_all_sinks(store: StateStore) -> None:
    """A failing source is reopened by the hub, after the last position it read, once for every sink."""
    from tidesync.testing import ScriptedSource, Step

    script: list[Any] = [*events(20)[:10], Step(fail="server closed the connection"), *events(20)[10:]]
    source = ScriptedSource(script)
    a, b = Counting(), Counting()
    run = Run(store, source, {"a": a, "b": b})
    await eventually(lambda: len(a.received) == 20 and len(b.received) == 20, message="both past the failure")
    await run.end()
    assert source.opened == 2  # reopened once, by the hub, for both
    assert keys(a) == keys(b) == list(range(20))


async def test_each_sinks_pipeline_reads_the_slot_of_the_shared_source(store: StateStore) -> None:
    """The slot readings (retained WAL, and its alert) ask a pipeline's source for ``slot`` and ``lag``: a lane
    answers with the shared source's, so a sink that stays behind shows the WAL it holds."""

    class SlotSource(ListSource):
        slot = "tidesync_orders"

        async def lag(self) -> str:
            return "reading of " + self.slot

    hub = FanoutHub("orders", SlotSource(events()), store, ["orders.a", "orders.b"])
    lane = hub.lane("orders.b")
    assert lane.slot == "tidesync_orders"
    assert await lane.lag() == "reading of tidesync_orders"
    assert not hasattr(FanoutHub("x", ListSource([]), store, ["x.a"]).lane("x.a"), "slot")
