"""Runs many pipelines (and two-way syncs) in one process until a signal (SIGINT/SIGTERM) or a stop event.

A pipeline or sync that fails does not stop the others; the exit code says
whether any failed (1) or all stopped cleanly (0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import Any

from tidesync.engine.balance import Balancer
from tidesync.engine.lease import LeasedWork, LeaseSettings, leased
from tidesync.engine.runner import PipelineRunner
from tidesync.state.store import StateStore

log = logging.getLogger("tidesync.engine")


class Engine:
    def __init__(
        self,
        state: StateStore,
        runners: Sequence[PipelineRunner],
        syncs: Sequence[Any] = (),
        lease: LeaseSettings | None = None,
        *,
        lease_names: dict[str, str] | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self.state = state
        self.lease = lease  # set: each pipeline and sync runs only while this process holds its lease
        self.lease_names = lease_names or {}  # a cluster's pieces: runner name -> lease name
        self.balancer = balancer  # a cluster: spreads the apply leases over the processes
        self.leased: list[LeasedWork] = []
        self.runners = list(runners)
        self.syncs = list(syncs)  # tidesync.sync.runner.SyncRunner: name, run(stop)
        self.stop = asyncio.Event()
        self.failed: dict[str, BaseException] = {}

    def runner(self, name: str) -> PipelineRunner:
        for r in self.runners:
            if r.name == name:
                return r
        raise KeyError(name)

    def request_stop(self) -> None:
        self.stop.set()

    async def run(self, *, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
            with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
                loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        await self.state.open()
        try:
            every = [*self.runners, *self.syncs]
            tasks = []
            if self.lease is not None:
                owner = self.balancer.owner if self.balancer is not None else None
                every = self.leased = leased(
                    self.state, every, self.lease, owner, names=self.lease_names, balancer=self.balancer
                )
            if self.balancer is not None:
                tasks.append(asyncio.create_task(self.balancer.run(self.stop), name="cluster-balance"))
            results = await asyncio.gather(*(r.run(self.stop) for r in every), return_exceptions=True)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for runner, result in zip(every, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    self.failed[runner.name] = result
        finally:
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
            await self.state.close()
        return 1 if self.failed else 0


def dump_tasks() -> None:
    """SIGUSR1: log what every task of the process is waiting on (a pipeline that does not stop, a stuck write)."""
    import io

    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    for task in tasks:
        out.write(f"--- task {task.get_name()}\n")
        task.print_stack(limit=12, file=out)
    log.warning("SIGUSR1: %d tasks:\n%s", len(tasks), out.getvalue())
