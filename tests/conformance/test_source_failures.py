"""Every source: a batch in flight at a kill is read again after the restart; bad input is reported, not fatal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harnesses import SOURCES
from tests.conformance.test_source_contract import change, key
from tidesync.event import ChangeEvent
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
            assert case in {"bad_input", "read_bound"} and len(why) > 40, (name, case)
        assert "bad_input" in h.exclusions or hasattr(h, "feed_bad_input"), name
