"""Spreading apply leases over the processes of a cluster: who may take a free partition, who hands one over.

Every process on a ``cluster:`` config runs one :class:`Balancer`. Each tick
(the lease poll interval) it

1. notes itself as a live member (kv namespace ``cluster_members``, key: its
   owner id, value: ``{"holder", "seen_at"}``); a member not seen for a TTL is
   gone, as its leases are (a clean stop deletes its note at once);
2. reads every live apply lease (``apply:...``) and counts them per owner;
3. derives, for ``T`` leases and ``M`` live members, the fair shares
   ``hi = ceil(T / M)`` and ``lo = floor(T / M)``.

Rules, the same in every process, so they agree without talking:

- **Take** a free partition only while holding fewer than ``hi``, and, while
  some member seen in the last three ticks holds fewer than ``lo`` (a
  newcomer), only when this process is one of those. (A member killed a
  moment ago, still counted, holds nothing: it must not keep the others from
  taking its partitions, hence "seen in the last three ticks".)
- **Let go** of a partition ``tidesync replay`` holds (kv ``cluster_hold``),
  and take none that is held, whatever the shares say.
- **Hand over** (drain, checkpoint, release: the next holder starts at once)
  the partitions held beyond ``hi``; and one partition when holding ``hi``
  while a member holds fewer than ``lo``, by the first such process in owner
  order only, so two do not let go for one newcomer.

Handed-over partitions are the last ones in name order, so repeated ticks pick
the same ones. A stale view (a tick is up to one poll old) can make a process
take one too many or hand one over late; the next ticks correct it, and a
lease never has two holders whatever the balancer decides: that is the
lease's job, not this one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import StateStoreError
from tidesync.state.store import Leases, StateStore

__all__ = ["APPLY_PREFIX", "MEMBERS_NAMESPACE", "Balancer"]

log = logging.getLogger("tidesync.cluster")
MEMBERS_NAMESPACE = "cluster_members"
HOLD_NAMESPACE = "cluster_hold"  # lease -> {"by": owner}: `tidesync replay` holds it (cluster_replay.py)
APPLY_PREFIX = "apply:"


class Balancer:
    def __init__(
        self, store: StateStore, owner: str, total: int, ttl: float, every: float, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.every = every  # seconds between ticks
        self.recent: set[str] = {owner}  # members seen in the last three ticks
        self.clock = clock
        self.mine: set[str] = set()  # apply leases this process holds (kept by LeasedWork)
        self.members: list[str] = [owner]  # live members' owner ids, sorted
        self.held: Counter[str] = Counter()  # live apply leases per owner
        self.total = total  # apply leases in the config
        self.ready = False  # a first view was read: until then nothing is taken
        self.holds: set[str] = set()  # leases a `tidesync replay` asked the workers to let go of

    def _shares(self) -> tuple[int, int]:
        m = max(1, len(self.members))
        return math.ceil(self.total / m), self.total // m

    def _starving(self) -> list[str]:
        lo = self._shares()[1]
        return [m for m in self.members if self.held[m] < lo and m in self.recent]

    def may_take(self, lease_name: str = "") -> bool:
        if not self.ready or lease_name in self.holds:
            return False
        hi, _ = self._shares()
        if len(self.mine) >= hi:
            return False
        starving = self._starving()
        return not starving or self.owner in starving

    def should_give(self, lease_name: str) -> bool:
        """True when ``lease_name`` (held here) is one this process should hand over now."""
        if not self.ready or lease_name not in self.mine:
            return False
        if lease_name in self.holds:
            return True
        hi, lo = self._shares()
        ordered = sorted(self.mine)
        if len(ordered) > hi:
            return lease_name in ordered[hi:]
        starving = self._starving()
        if len(ordered) == hi and hi > lo and starving:
            first = next((m for m in self.members if self.held[m] >= hi), None)
            return first == self.owner and lease_name == ordered[-1]
        return False

    async def tick(self) -> None:
        now = self.clock.time()
        await self.store.kv_put(MEMBERS_NAMESPACE, self.owner, {"holder": self.owner, "seen_at": now})
        notes = await self.store.kv_scan(MEMBERS_NAMESPACE)
        ages = {k: now - float(v.get("seen_at", 0)) for k, v in notes.items() if isinstance(v, dict)}
        fresh = [k for k, age in ages.items() if age < self.ttl]
        self.recent = {k for k, age in ages.items() if age < 3 * self.every} | {self.owner}
        held: Counter[str] = Counter()
        if isinstance(self.store, Leases):
            for lease in await self.store.lease_list():
                if lease.name.startswith(APPLY_PREFIX) and lease.remaining > 0:
                    held[lease.owner] += 1
        self.members = sorted(set(fresh) | {self.owner})
        self.held = held
        self.holds = set(await self.store.kv_scan(HOLD_NAMESPACE))
        self.ready = True

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop``; then forget this member (the others rebalance at once)."""
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except StateStoreError as exc:
                    log.warning("cluster balance: cannot read the members and leases: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.every)
        finally:
            with contextlib.suppress(StateStoreError):
                await self.store.kv_delete(MEMBERS_NAMESPACE, self.owner)
