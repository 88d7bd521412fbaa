"""Every source: a batch in flight at a kill is read again after the restart; a transient error in the middle
of a read loses and repeats nothing once the source is reopened; bad input is reported, not fatal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harnesses import SOURCES
from tests.conformance.test_source_contract import change, key
from tidesync.errors import SourceTransientError
from tidesync.event import Batch, ChangeEvent, Position
from tidesync.protocols import Context


async def _read_to_position(source: Any, max_events: int, at_least: int = 1) -> tuple[list[ChangeEvent], Any]:
    """Read until at least ``at_least`` events and a batch carrying a position (a checkpoint candidate)."""
    events: list[ChangeEvent] = []
    for _ in range(300):
        batch = await source.read(max_events, 0.02)
        events.extend(batch.events)
        if len(events) >= at_least and batch.position is not None:
            return events, batch.position
    raise AssertionError(f"no checkpoint after {len(events)} events")


def _able(case: str) -> list[str]:
    """The sources this case applies to (an exclusion names the case and says why; see harnesses.py)."""
    return sorted(name for name, h in SOURCES.items() if case not in h.exclusions)


@pytest.fixture
def harness_of(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    made: list[Any] = []

    def make(name: str) -> Any:
        made.append(SOURCES[name](tmp_path))
        return made[-1]

    yield make
    for h in made:
        h.cleanup()


@pytest.mark.parametrize("name", _able("read_bound"))
async def test_a_read_returns_at_most_max_events(name: str, harness_of: Any, source_ctx: Context) -> None:
    h = harness_of(name)
    src = h.make_source()
    await src.open(source_ctx, None)
    for start in range(1, 13, 4):
        await change(h.insert(range(start, start + 4)))
    sizes: list[int] = []
    for _ in range(300):
        sizes.append(len((await src.read(3, 0.02)).events))
        if sum(sizes) >= 12:
            break
    await src.close()
    assert sum(sizes) == 12 and max(sizes) <= 3, sizes


async def test_a_batch_in_flight_at_a_kill_is_read_again_and_nothing_before_the_checkpoint(
    source_harness: Any, source_ctx: Context
) -> None:
    h = source_harness
    src = h.make_source()
    await src.open(source_ctx, None)
    await change(h.insert(range(1, 11)))
    done, checkpoint = await _read_to_position(src, 100, at_least=10)
    await src.commit(checkpoint)
    await change(h.insert(range(11, 21)))
    in_flight, _ = await _read_to_position(src, 100)  # read, handed on, never committed: then the process dies
    await src.close()

    again = h.make_source()
    await again.open(source_ctx, checkpoint)
    want = {key(h, i) for i in range(11, 21)}
    replayed: list[ChangeEvent] = []
    for _ in range(200):
        replayed.extend((await again.read(100, 0.02)).events)
        if {e.key for e in replayed} >= want:
            break
    await again.close()
    assert {e.key for e in done} == {key(h, i) for i in range(1, 11)}
    assert {e.key for e in in_flight} <= {e.key for e in replayed}  # the batch in flight, again
    assert {e.key for e in replayed} == want  # and nothing handled before the checkpoint
    assert all(e.position > checkpoint for e in replayed)


class _FailingRead:
    """A transient error in the middle of a read, for a harness with no fault of its own (``break_``/``heal``).

    From ``break_()`` until ``heal()`` a read does its work (the source reads,
    and may move its own cursors, acks or shadows) and then fails with
    SourceTransientError, as a connection lost before the batch came back
    does: the batch never reaches the engine.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.broken = False

    def break_(self) -> None:
        self.broken = True

    def heal(self) -> None:
        self.broken = False

    async def open(self, ctx: Context, after: Position | None) -> None:
        await self.source.open(ctx, after)

    async def read(self, max_events: int, max_wait: float) -> Batch[Any]:
        batch: Batch[Any] = await self.source.read(max_events, max_wait)
        if self.broken and (batch.events or batch.position is not None):
            raise SourceTransientError("the connection was lost before the batch came back")
        return batch

    async def commit(self, position: Position) -> None:
        await self.source.commit(position)

    async def close(self) -> None:
        await self.source.close()


@pytest.mark.parametrize("name", _able("transient_read"))
async def test_a_transient_error_mid_read_loses_and_repeats_nothing_once_reopened(
    name: str, harness_of: Any, source_ctx: Context
) -> None:
    """As the engine's reader does: on SourceTransientError close, reopen after the last position read, go on.

    A harness with ``break_``/``heal`` breaks its source for real (a killed
    connection); the others get :class:`_FailingRead`. Rows 21-30 are written
    while the source is broken. Only the first checkpoint is committed: the
    reopen resumes after a position the state store has not seen.
    """
    h = harness_of(name)
    src = h.make_source() if hasattr(h, "break_") else _FailingRead(h.make_source())
    fault = h if hasattr(h, "break_") else src
    await src.open(source_ctx, None)
    await change(h.insert(range(1, 21)))
    want = {key(h, i) for i in range(1, 31)}
    handed: list[ChangeEvent] = []  # events of batches up to the last one with a position
    tail: list[ChangeEvent] = []  # events after it: a reopen reads them again
    last: Position | None = None  # where a reopen resumes after
    committed = broken = False
    failures = 0
    for _ in range(500):
        try:
            batch = await src.read(5, 0.02)
        except SourceTransientError:
            failures += 1
            await src.close()
            fault.heal()
            tail = []
            await src.open(source_ctx, last)
            continue
        tail.extend(batch.events)
        if batch.position is not None:
            handed.extend(tail)
            tail, last = [], batch.position
            if not committed:
                await src.commit(last)  # the engine has checkpointed some of what it read
                committed = True
        if not broken and committed and len(handed) >= 5:
            fault.break_()  # mid-stream: some rows handed out, more waiting, more to come
            broken = True
            await change(h.insert(range(21, 31)))
        if broken and not tail and {e.key for e in handed} >= want:
            break
    await src.close()
    if fault is src:
        assert failures >= 1, "the failing read never surfaced"
    # else a real fault: a source may reconnect by itself inside read() (postgres does); the checks hold either way
    counts = Counter(e.key for e in handed)
    assert set(counts) == want, sorted(want - set(counts))  # nothing lost
    assert [k for k, n in counts.items() if n > 1] == []  # nothing repeated
    positions = [e.position for e in handed]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def _feeds_bad_input() -> list[str]:
    return sorted(name for name, h in SOURCES.items() if hasattr(h, "feed_bad_input"))


@pytest.mark.parametrize("name", _feeds_bad_input())
async def test_bad_input_is_reported_and_the_source_goes_on(name: str, harness_of: Any, source_ctx: Context) -> None:
    h = harness_of(name)
    src = h.make_source()
    await src.open(source_ctx, None)
    await change(h.insert(range(1, 4)))
    await change(h.feed_bad_input(4))
    await change(h.insert(range(5, 7)))
    events: list[ChangeEvent] = []
    rejected: list[tuple[ChangeEvent, str]] = []
    for _ in range(200):
        batch = await src.read(100, 0.02)
        events.extend(batch.events)
        rejected.extend(batch.rejected)
        if len(events) >= 5 and rejected:
            break
    await src.close()
    assert [e.key for e in events] == [key(h, i) for i in (1, 2, 3, 5, 6)]
    assert len(rejected) == 1 and rejected[0][1]  # the bad record, with a reason, for the dead-letter queue
    assert rejected[0][0].position < events[3].position  # reported in its place in the stream


def test_every_exclusion_is_documented() -> None:
    """An exclusion names a contract case and says why it cannot apply; the report lists them."""
    for name, h in SOURCES.items():
        for case, why in h.exclusions.items():
            assert case in {"bad_input", "read_bound", "transient_read"} and len(why) > 40, (name, case)
        assert "bad_input" in h.exclusions or hasattr(h, "feed_bad_input"), name
