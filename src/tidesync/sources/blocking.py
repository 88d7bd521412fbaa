"""A blocking driver's reader thread and the bounded buffer between it and asyncio.

Some drivers have no asyncio API (psycopg2's replication cursor, mysql-replication's
binlog reader). Such a source reads in one thread of its own; a :class:`ReaderThread`
is what that thread and the event loop share:

- The buffer: chunks, in the order the thread :meth:`~ReaderThread.put` them. Its
  capacity is counted by ``weigh`` (1 per chunk, or the records in it); a ``put``
  into a full buffer waits until the asyncio side :meth:`~ReaderThread.take`\\ s
  some, or until :meth:`~ReaderThread.request_stop`.
- The end: the thread's body runs to its end or raises; the exception is kept
  (never lost, unless it came after a stop, which is how a stop breaks a blocked
  read) and :attr:`~ReaderThread.finished` turns true once every chunk before it
  was taken.
- The wake-up: the thread sets an asyncio event (thread-safely) only while the
  asyncio side is in :meth:`~ReaderThread.wait`, so a busy stream costs the loop
  no callbacks.

Errors stay the source's: the thread keeps the foreign exception and
:meth:`~ReaderThread.failure` hands it to the ``translate`` the source gave.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from tidesync.errors import SourceError

R = TypeVar("R")


class ReaderThread(Generic[R]):
    """One thread running a blocking reader's body; chunks of ``R`` come out in order.

    ``capacity`` is how much the buffer holds before :meth:`put` waits, in the
    units ``weigh`` gives each chunk. ``translate`` turns the exception the body
    ended with into the source's error.
    """

    def __init__(
        self,
        name: str,
        *,
        capacity: int,
        weigh: Callable[[list[R]], int],
        translate: Callable[[BaseException], SourceError],
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._weigh = weigh
        self._translate = translate
        self._chunks: deque[list[R]] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._done = False
        self.stopping = False  # read by the body between reads (an attribute: it is on the hot path)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._waiting = False

    # --- asyncio side -----------------------------------------------------

    async def start(self, body: Callable[[], None], timeout: float) -> bool:
        """Run ``body`` in the thread; True once it called :meth:`mark_started`.

        False when it ended before that (:meth:`failure` says why) or did not get
        there within ``timeout`` seconds; either way the caller stops the reader.
        """
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._thread = threading.Thread(target=self._run, args=(body,), name=self.name, daemon=True)
        self._thread.start()
        ok = await asyncio.to_thread(self._started.wait, timeout)
        return ok and self._error is None

    def take(self, limit: float = float("inf")) -> list[list[R]]:
        """Chunks, oldest first, until they weigh ``limit`` or more (all of them by default); frees room."""
        out: list[list[R]] = []
        taken = 0
        with self._cond:
            if limit == float("inf"):  # everything: one copy, no weighing (the Postgres stream's hot path)
                if not self._chunks:
                    return out
                out = list(self._chunks)
                self._chunks.clear()
                self._queued = 0
                self._cond.notify_all()
                return out
            while self._chunks and taken < limit:
                chunk = self._chunks.popleft()
                weight = self._weigh(chunk)
                self._queued -= weight
                taken += weight
                out.append(chunk)
            if out:
                self._cond.notify_all()
        return out

    async def wait(self, timeout: float) -> None:
        """Return when chunks or the end are there, or after ``timeout`` seconds."""
        assert self._event is not None
        self._waiting = True
        try:
            if self._chunks or self._done:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        finally:
            self._waiting = False
            self._event.clear()

    @property
    def has_data(self) -> bool:
        return bool(self._chunks)

    @property
    def finished(self) -> bool:
        """The thread ended and every chunk it put was taken."""
        return self._done and not self._chunks

    def failure(self) -> SourceError | None:
        """The translated exception the thread ended with, or None (none, or not yet)."""
        err = self._error
        if err is None:
            return None
        return err if isinstance(err, SourceError) else self._translate(err)

    def request_stop(self) -> None:
        """Ask the thread to end: :attr:`stopping` turns true and a waiting :meth:`put` returns."""
        self.stopping = True
        with self._cond:
            self._cond.notify_all()

    async def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)

    @property
    def thread_ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    # --- the thread -------------------------------------------------------

    def mark_started(self) -> None:
        """Called by the body once its connection is up: :meth:`start` returns."""
        self._started.set()

    def put(self, chunk: list[R], *, poll: float, while_full: Callable[[], None] | None = None) -> None:
        """Append ``chunk``, waiting first while the buffer is full (unless stopping).

        ``while_full`` runs, outside the lock, after every ``poll`` seconds the
        buffer stays full (a status update that keeps the server's connection alive).
        """
        weight = self._weigh(chunk)
        while True:
            with self._cond:
                if self._queued < self.capacity or self.stopping:
                    self._chunks.append(chunk)
                    self._queued += weight
                    break
                self._cond.wait(poll)
                full = self._queued >= self.capacity and not self.stopping
            if full and while_full is not None:
                while_full()
        self._notify()

    def _notify(self) -> None:
        if self._waiting and self._loop is not None and self._event is not None:
            with contextlib.suppress(RuntimeError):  # loop closed
                self._loop.call_soon_threadsafe(self._event.set)

    def _run(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # reported to the asyncio side, never lost
            if not self.stopping:  # after a stop: how the stop broke a blocked read
                self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()
            self._started.set()
            self._notify()
