"""Active/passive: each pipeline and sync runs in one process at a time, under a lease in the state store.

Processes that share a config (and its state store) each wrap every piece of
work (a pipeline runner, a two-way sync) in a :class:`LeasedWork`:

::

    standby ──(lease taken)──▶ active ──(stop)──▶ release, exit
       ▲                         │
       └──(lease lost: renewal found another owner, or it ran out here)──┘

- **Take**: a standby process tries to take the lease every ``poll_every``
  seconds; the store gives it when it is free, expired or released. The
  store's clock decides expiry (:class:`tidesync.state.store.Leases`).
- **Renew**: the holder renews every third of the TTL. Locally it counts the
  lease valid until the start of its last successful renewal plus the TTL: a
  renewal starts before the store's ``now``, so the local deadline never ends
  after the store's.
- **Fence**: while active, every state store commit of the work's names checks
  the lease's epoch inside its transaction (:meth:`Leases.fence_commits`). A
  holder frozen past its TTL (SIGSTOP, a long GC pause, a frozen VM) that wakes
  up after another process took over fails its next commit with
  :class:`LeaseLostError` and applies nothing. A pipeline also checks the local
  deadline before each sink write (``PipelineRunner.write_guard``), so a woken
  holder does not even write the batch it held; a SQL sink would skip it anyway
  (its applied position moved on), other sinks would see it again.
- **Lost**: the work is stopped, loudly (an error line naming the new holder),
  and the process goes back to standby for it.
- **Stop**: the work drains and checkpoints under the lease, then the lease is
  released (expired at once), so a standby takes over without waiting the TTL.

A standby process leaves a note in the store (kv namespace ``lease_standby``)
every TTL, so ``tidesync status`` can show it; notes older than three TTLs are
ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import ConfigError, LeaseLostError, StateStoreError
from tidesync.state.store import Fence, Lease, StateStore

if TYPE_CHECKING:
    from tidesync.engine.balance import Balancer

__all__ = ["STANDBY_NAMESPACE", "LeaseSettings", "LeasedWork", "holder", "leased", "process_owner"]

log = logging.getLogger("tidesync.lease")
STANDBY_NAMESPACE = "lease_standby"


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """``ttl``: seconds a lease lasts without renewal; how long a standby waits for a dead holder."""

    ttl: float = 5.0

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    @property
    def poll_every(self) -> float:
        return min(1.0, self.ttl / 5)


class Work(Protocol):
    """A pipeline runner or a sync runner: a name and a run that ends when ``stop`` is set."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


def process_owner() -> str:
    """This process's owner id: ``host:pid`` and a random tag, so a reused pid is another owner."""
    return f"{socket.gethostname()}:{os.getpid()}#{secrets.token_hex(3)}"


def holder(owner: str) -> str:
    """What status shows of an owner id: ``host:pid``."""
    return owner.partition("#")[0]


def leased(
    store: StateStore,
    works: Sequence[Any],
    settings: LeaseSettings,
    owner: str | None = None,
    *,
    names: Mapping[str, str] | None = None,
    balancer: Balancer | None = None,
) -> list[Any]:
    """Each of ``works`` wrapped in a :class:`LeasedWork` (same ``name``), all under one owner id.

    ``names``: a work's lease name, when not ``pipeline:NAME`` / ``sync:NAME`` (a cluster's pieces);
    ``balancer`` takes and hands over the leases whose name starts with ``apply:``.
    Raises :class:`ConfigError` when a work cannot be leased yet.
    """
    me = owner or process_owner()
    wrapped: list[Any] = []
    for work in works:
        if getattr(getattr(work, "source", None), "hub", None) is not None:
            raise ConfigError(
                f"`lease:` does not support fan-out pipelines (`sinks:`) yet: {work.name} is one of its sinks"
            )
        sides = getattr(work, "sources", None)  # a two-way sync: its sides commit under NAME.SIDE
        kind = "pipeline" if sides is None else "sync"
        fenced = [work.name, *(f"{work.name}.{side}" for side in (sides or {}))]
        name = (names or {}).get(work.name) or f"{kind}:{work.name}"
        balanced = balancer if balancer is not None and name.startswith("apply:") else None
        wrapped.append(LeasedWork(store, name, work, fenced, settings, me, balancer=balanced))
    return wrapped


class LeasedWork:
    """Runs ``work`` only while this process holds lease ``lease_name``; see the module docstring."""

    def __init__(
        self,
        store: StateStore,
        lease_name: str,
        work: Work,
        fenced: Sequence[str],
        settings: LeaseSettings,
        owner: str,
        clock: Clock = SYSTEM_CLOCK,
        balancer: Balancer | None = None,
    ) -> None:
        self.store = store
        self.balancer = balancer  # a cluster's apply partition: taken and handed over as it says
        self.lease_name = lease_name
        self.work = work
        self.name = work.name
        self.fenced = list(fenced)
        self.settings = settings
        self.owner = owner
        self.clock = clock
        self.state = "standby"  # or "active"
        self.lease: Lease | None = None
        self.valid_until = 0.0  # monotonic; the lease is not trusted here after this
        self.lost_reason: str | None = None
        self._lost_logged = False
        self.takeovers = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Standby until the lease is ours, then run the work; again after losing it; return once ``stop`` is set."""
        while not stop.is_set():
            lease = await self._take(stop)
            if lease is None:
                return
            if not await self._run_active(lease, stop):
                return

    # --- standby -----------------------------------------------------------------

    async def _take(self, stop: asyncio.Event) -> Lease | None:
        """Wait (as standby) until the lease is ours; None when stopped first."""
        self.state = "standby"
        noted = -1e18
        reported: str | None = None
        while not stop.is_set():
            started = self.clock.monotonic()
            if self.balancer is not None and not self.balancer.may_take(self.lease_name):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_every)
                continue
            try:
                lease = await self.store.lease_acquire(self.lease_name, self.owner, self.settings.ttl)
            except StateStoreError as exc:
                log.warning("%s: cannot take lease %s: %s", self.name, self.lease_name, exc)
            else:
                if lease.owner == self.owner:
                    self.valid_until = started + self.settings.ttl
                    with contextlib.suppress(StateStoreError):
                        await self.store.kv_delete(STANDBY_NAMESPACE, self._note_key)
                    return lease
                if reported != lease.owner:
                    reported = lease.owner
                    log.info(
                        "%s: standby; %s holds lease %s (epoch %d)",
                        self.name,
                        holder(lease.owner),
                        self.lease_name,
                        lease.epoch,
                    )
                if started - noted >= self.settings.ttl:
                    noted = started
                    note = {"owner": holder(self.owner), "seen_at": self.clock.time()}
                    with contextlib.suppress(StateStoreError):
                        await self.store.kv_put(STANDBY_NAMESPACE, self._note_key, note)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.poll_every)
        return None

    @property
    def _note_key(self) -> str:
        return f"{self.name}/{holder(self.owner)}"

    # --- active ------------------------------------------------------------------

    async def _run_active(self, lease: Lease, stop: asyncio.Event) -> bool:
        """Run the work under ``lease``; True when the lease was lost (go back to standby)."""
        self.lease, self.state, self.lost_reason = lease, "active", None
        self.takeovers += 1
        log.info(
            "%s: took lease %s (epoch %d) as %s; running it here",
            self.name,
            self.lease_name,
            lease.epoch,
            holder(self.owner),
        )
        fence = Fence(self.lease_name, lease.epoch)
        for name in self.fenced:
            self.store.fence_commits(name, fence)
        guarded = hasattr(self.work, "write_guard")  # a pipeline runner: checked before each sink write
        if guarded:
            setattr(self.work, "write_guard", self.check)  # noqa: B010 (Work does not declare it)
        work_stop = asyncio.Event()
        lost = asyncio.Event()
        handoff = asyncio.Event()  # the balancer gives this partition to another process
        self._lost_logged = False
        if self.balancer is not None:
            self.balancer.mine.add(self.lease_name)
        keeper = asyncio.create_task(self._keep(lease, lost, handoff), name=f"{self.name}:lease")
        relay = asyncio.create_task(_first_of(stop, lost, handoff, then=work_stop), name=f"{self.name}:lease-stop")
        try:
            await self.work.run(work_stop)
        except LeaseLostError as exc:
            self._lose(self.lost_reason or str(exc), lost)
        except asyncio.CancelledError:
            await self._release(lease)
            raise
        except BaseException as exc:
            if not lost.is_set():  # a failure of its own, not a consequence of losing the lease
                await self._release(lease)
                raise
            log.warning("%s: stopped with %s after losing lease %s", self.name, exc, self.lease_name)
        finally:
            for task in (keeper, relay):
                task.cancel()
            for task in (keeper, relay):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for name in self.fenced:
                self.store.fence_commits(name, None)
            if guarded:
                setattr(self.work, "write_guard", None)  # noqa: B010
            self.lease = None
            if self.balancer is not None:
                self.balancer.mine.discard(self.lease_name)
        if lost.is_set():
            log.warning("%s: stopped after losing lease %s; back to standby", self.name, self.lease_name)
            return True
        await self._release(lease)
        if handoff.is_set() and not stop.is_set():
            log.info("%s: handed lease %s over (rebalancing, or a replay); standby for it", self.name, self.lease_name)
            return True
        return False

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when the lease may have run out (the local deadline passed)."""
        late = self.clock.monotonic() - self.valid_until
        if late >= 0:
            self.lost_reason = f"lease {self.lease_name} not renewed for {self.settings.ttl + late:.1f}s"
            self._log_lost()
            raise LeaseLostError(f"{self.name}: {self.lost_reason}; not writing")

    async def _keep(self, lease: Lease, lost: asyncio.Event, handoff: asyncio.Event) -> None:
        """Renew every third of the TTL; set ``lost`` when another owner has it or it ran out here, ``handoff``
        when the balancer wants it handed over."""
        while True:
            await self.clock.sleep(self.settings.renew_every)
            started = self.clock.monotonic()
            try:
                now = await self.store.lease_acquire(self.lease_name, self.owner, self.settings.ttl)
            except StateStoreError as exc:
                log.warning("%s: cannot renew lease %s: %s", self.name, self.lease_name, exc)
                if self.clock.monotonic() >= self.valid_until:
                    self._lose(f"lease {self.lease_name} could not be renewed before it ran out", lost)
                    return
                continue
            if now.owner != self.owner or now.epoch != lease.epoch:
                self._lose(f"{holder(now.owner)} holds lease {self.lease_name} now (epoch {now.epoch})", lost)
                return
            self.valid_until = started + self.settings.ttl
            if self.balancer is not None and self.balancer.should_give(self.lease_name):
                handoff.set()

    def _lose(self, reason: str, lost: asyncio.Event) -> None:
        self.lost_reason = reason
        self._log_lost()
        lost.set()

    def _log_lost(self) -> None:
        """Say so the moment the loss is seen, not once the work has stopped (that can take a while)."""
        if not self._lost_logged:
            self._lost_logged = True
            log.error(
                "%s: LEASE LOST (%s): stopping here, its work belongs to another process; back to standby after",
                self.name,
                self.lost_reason,
            )

    async def _release(self, lease: Lease) -> None:
        try:
            await self.store.lease_release(self.lease_name, self.owner, lease.epoch)
        except StateStoreError as exc:  # it expires by itself
            log.warning("%s: cannot release lease %s: %s", self.name, self.lease_name, exc)


async def _first_of(*events: asyncio.Event, then: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        then.set()
    finally:
        for w in waits:
            w.cancel()
