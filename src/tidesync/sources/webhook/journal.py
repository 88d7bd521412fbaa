"""Group commit for the intake journal: concurrent requests share one state store transaction.

A request's entries are durable (committed) before :meth:`JournalWriter.append`
returns, so the 2xx still comes after the commit; what changes is that the
requests which arrive while one transaction runs are committed together in the
next one, so the cost of a transaction is paid once per group, not per request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from tidesync.state.store import IntakeJournal, JournalAppend


class JournalWriter:
    def __init__(self, state: IntakeJournal, *, max_entries: int = 2000) -> None:
        self.state = state
        self.max_entries = max_entries
        self._queue: deque[tuple[Sequence[JournalAppend], asyncio.Future[list[int | None]]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # for benchmarks: requests / transactions is the group size

    async def append(self, entries: Sequence[JournalAppend]) -> list[int | None]:
        """Journal ``entries``; per entry its sequence number or None (a duplicate). Raises StateStoreError."""
        if not entries:
            return []
        future: asyncio.Future[list[int | None]] = asyncio.get_running_loop().create_future()
        self._queue.append((entries, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="tidesync-journal-commit")
        # Shielded: a client that hangs up must not cancel a commit others wait for.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._queue:
            group: list[tuple[Sequence[JournalAppend], asyncio.Future[list[int | None]]]] = []
            count = 0
            while self._queue and (not group or count + len(self._queue[0][0]) <= self.max_entries):
                item = self._queue.popleft()
                group.append(item)
                count += len(item[0])
            flat = [e for entries, _ in group for e in entries]
            try:
                seqs = await self.state.journal_append(flat)
            except BaseException as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            self.transactions += 1
            i = 0
            for entries, future in group:
                if not future.done():
                    future.set_result(seqs[i : i + len(entries)])
                i += len(entries)

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
