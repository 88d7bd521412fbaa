"""``tidesync replay`` taking a partition's lease: asked again on the clock until the worker lets go, or ``wait``."""

from __future__ import annotations

import pytest

from tidesync.engine.cluster_replay import _take
from tidesync.errors import LeaseLostError
from tidesync.state.store import Lease
from tidesync.testing import FakeClock


class Holder:
    """A lease store whose lease ``worker-a#1`` holds for ``refusals`` more asks."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.asks = 0

    async def lease_acquire(self, name: str, owner: str, ttl: float) -> Lease:
        self.asks += 1
        if self.asks <= self.refusals:
            return Lease(name, "worker-a#1", 3, ttl)
        return Lease(name, owner, 4, ttl)


async def test_the_lease_is_asked_for_every_fifth_of_a_second_until_the_worker_lets_go() -> None:
    clock, store = FakeClock(), Holder(refusals=3)
    epoch = await _take(store, "apply-0", "replay#9", 5.0, 60.0, clock)  # type: ignore[arg-type]
    assert epoch == 4 and store.asks == 4
    assert clock.sleeps == [0.2, 0.2, 0.2]


async def test_a_lease_still_held_after_wait_names_its_holder() -> None:
    clock, store = FakeClock(), Holder(refusals=10**6)
    with pytest.raises(LeaseLostError, match=r"apply-0 is still held by worker-a after 2s: is that process frozen"):
        await _take(store, "apply-0", "replay#9", 5.0, 2.0, clock)  # type: ignore[arg-type]
    assert sum(clock.sleeps) == pytest.approx(2.0)  # asked until the wait was up, not longer
    assert store.asks == len(clock.sleeps) + 1
