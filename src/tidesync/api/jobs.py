"""Long operations the admin API starts (reconcile, re-snapshot): background tasks with a status to poll.

A job runs as a task in the server's event loop and is remembered, with its
result or its (redacted) error, among the latest ``keep`` jobs. Jobs do not
survive a restart; what they changed does (repairs and dead letters are in
the state store, a backfill's progress in the source's own state).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tidesync.api.models import JobInfo, clean
from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import TidesyncError
from tidesync.secrets import REDACTOR

log = logging.getLogger("tidesync.api")


@dataclass
class Job:
    id: int
    kind: str
    pipeline: str
    started_at: float
    state: str = "running"
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def info(self) -> JobInfo:
        return JobInfo.model_validate(
            {
                "id": self.id,
                "kind": self.kind,
                "pipeline": self.pipeline,
                "state": self.state,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "result": clean(self.result) if self.result is not None else None,
                "error": self.error,
            }
        )


class Jobs:
    def __init__(self, keep: int = 50, clock: Clock = SYSTEM_CLOCK) -> None:
        self.keep = keep
        self.clock = clock
        self._jobs: OrderedDict[int, Job] = OrderedDict()
        self._ids = itertools.count(1)

    def start(self, kind: str, pipeline: str, work: Callable[[], Awaitable[dict[str, Any]]]) -> Job:
        job = Job(next(self._ids), kind, pipeline, self.clock.time())

        async def run() -> None:
            try:
                job.result = await work()
                job.state = "done"
            except Exception as exc:
                job.state = "failed"
                text = str(exc) if isinstance(exc, TidesyncError) else f"{type(exc).__name__}: {exc}"
                job.error = REDACTOR.redact(text)
                log.error("%s of %s failed: %s", kind, pipeline, job.error)
            finally:
                job.finished_at = self.clock.time()

        job.task = asyncio.create_task(run(), name=f"tidesync-job-{job.id}")
        self._jobs[job.id] = job
        while len(self._jobs) > self.keep:
            oldest = next(iter(self._jobs.values()))
            if oldest.state == "running":
                break  # never forget a job still running
            self._jobs.popitem(last=False)
        return job

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(reversed(self._jobs.values()))

    async def cancel_all(self) -> None:
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
