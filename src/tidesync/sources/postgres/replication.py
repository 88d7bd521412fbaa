"""The replication connection: psycopg2's LogicalReplicationConnection in one thread, behind a bounded buffer.

The thread does only what must happen there: read messages, hand their raw
bytes over in chunks of up to ``chunk_size``, and send status updates. All
decoding happens on the asyncio side (``read``), in batches.

Feedback. The flush position sent to the server only moves when the source's
``commit`` says a position is durably handled (``confirm``). The thread sends
a status update at least every ``status_interval`` seconds — also while it
waits for room in a full buffer — so the server never times the connection
out and answers keepalives promptly.

psycopg2 moves the flush position on its own in one case: when everything
received has been confirmed, it confirms the WAL end of a later keepalive.
The server sends that position only after every transaction that committed
before it has been sent, and this thread replies often enough that the server
never sends a keepalive in the middle of a transaction (it does so only after
``wal_sender_timeout / 2`` without a reply), so this skips only WAL that
carried nothing for this slot. That is what keeps an idle slot from holding
WAL; heartbeats do the same for servers that need a transaction to move.

Errors from the connection are kept and reported by :meth:`ReplicationStream.error`
after the data received before them has been drained, translated by ``errors.py``
(the same rules as every other Postgres error of the source).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras

from tidesync.errors import SourceError, SourceTransientError
from tidesync.sources.postgres.catalog import session_dsn
from tidesync.sources.postgres.errors import translate
from tidesync.sources.postgres.pgoutput import str_to_lsn


def replication_connect(dsn: str) -> Any:
    try:
        return psycopg2.connect(session_dsn(dsn), connection_factory=psycopg2.extras.LogicalReplicationConnection)
    except psycopg2.Error as exc:
        raise translate(exc, "cannot open a replication connection") from exc


@dataclass(frozen=True, slots=True)
class NewSlot:
    consistent_point: int
    snapshot_name: str | None


class SlotCreation:
    """Creates a logical slot over a replication connection, exporting its snapshot when asked.

    The exported snapshot lives until this connection runs another command or
    closes: import it (``SET TRANSACTION SNAPSHOT``) before calling :meth:`close`.
    Blocking: run it in a thread.
    """

    def __init__(self, dsn: str) -> None:
        self.conn = replication_connect(dsn)

    def create(self, slot: str, *, export: bool) -> NewSlot:
        cur = self.conn.cursor()
        mode = "EXPORT_SNAPSHOT" if export else "NOEXPORT_SNAPSHOT"
        try:
            cur.execute(f"CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput {mode}")
            _name, consistent_point, snapshot_name, _plugin = cur.fetchone()
        except psycopg2.Error as exc:
            raise translate(exc, f"cannot create replication slot {slot!r}") from exc
        return NewSlot(str_to_lsn(consistent_point), snapshot_name if export else None)

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.conn.close()


class ReplicationStream:
    """START_REPLICATION in a thread; raw pgoutput messages come out in chunks, in order."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        options: dict[str, str],
        *,
        start_lsn: int = 0,
        max_messages: int = 100_000,
        chunk_size: int = 2_000,
        status_interval: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.slot = slot
        self.options = options
        self.start_lsn = start_lsn
        self.chunk_size = chunk_size
        self.max_chunks = max(2, max_messages // chunk_size)
        self.status_interval = status_interval
        self.received_lsn = 0  # WAL end the server last reported
        self.backend_pid: int | None = None
        self._chunks: deque[list[bytes]] = deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._done = False
        self._stop = False
        self._flush_target = 0
        self._flushed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._waiting = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # --- asyncio side -----------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Connect and start streaming; raises the translated error when that fails."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"tidesync-pg-{self.slot}", daemon=True)
        self._thread.start()
        ok = await asyncio.to_thread(self._started.wait, timeout)
        if self._error is not None:
            await self.stop()
            raise self._translated()
        if not ok:
            await self.stop()
            raise SourceTransientError(f"replication for slot {self.slot!r} did not start within {timeout:.0f}s")

    def drain(self) -> list[list[bytes]]:
        """Every chunk received so far (possibly none); frees room for the thread."""
        with self._cond:
            if not self._chunks:
                return []
            out = list(self._chunks)
            self._chunks.clear()
            self._cond.notify_all()
        return out

    async def wait(self, timeout: float) -> None:
        """Return when data or an error is there, or after ``timeout`` seconds."""
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

    def error(self) -> SourceError | None:
        """The connection's error once every chunk before it was drained, else None."""
        if self._done and not self._chunks and self._error is not None:
            return self._translated()
        return None

    @property
    def has_data(self) -> bool:
        return bool(self._chunks)

    @property
    def finished(self) -> bool:
        return self._done and not self._chunks

    def confirm(self, lsn: int) -> None:
        """Everything before ``lsn`` is durably handled: the thread sends it as the flush position."""
        if lsn > self._flush_target:
            self._flush_target = lsn
            self._poke()

    async def stop(self) -> None:
        self._stop = True
        self._poke()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()

    def _translated(self) -> SourceError:
        err = self._error
        if isinstance(err, SourceError):
            return err
        assert err is not None
        return translate(err, f"replication from slot {self.slot!r} failed")

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # --- the thread -------------------------------------------------------

    def _notify(self) -> None:
        if self._waiting and self._loop is not None and self._event is not None:
            with contextlib.suppress(RuntimeError):  # loop closed
                self._loop.call_soon_threadsafe(self._event.set)

    def _run(self) -> None:
        conn = None
        try:
            conn = replication_connect(self.dsn)
            cur = conn.cursor()
            cur.start_replication(
                slot_name=self.slot,
                decode=False,
                start_lsn=self.start_lsn,
                options=self.options,
                status_interval=max(1.0, self.status_interval),  # psycopg2's own timer; ours may be faster
            )
            self.backend_pid = conn.get_backend_pid()
            self._started.set()
            self._loop_messages(conn, cur)
        except BaseException as exc:  # reported to the asyncio side, never lost
            self._error = exc
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            with self._cond:
                self._done = True
                self._cond.notify_all()
            self._started.set()
            self._notify()

    def _loop_messages(self, conn: Any, cur: Any) -> None:
        read = cur.read_message
        chunk: list[bytes] = []
        append = chunk.append
        size = self.chunk_size
        fd = conn.fileno()
        wake = self._wake_r
        last_status = time.monotonic()
        while not self._stop:
            msg = read()
            if msg is not None:
                append(msg.payload)
                if len(chunk) < size:
                    continue
            if chunk:
                self._push(chunk, cur)
                chunk = []
                append = chunk.append
            now = time.monotonic()
            if self._flush_target > self._flushed or now - last_status >= self.status_interval:
                self._feedback(cur)
                last_status = now
            if msg is not None:
                continue
            self.received_lsn = cur.wal_end
            ready, _, _ = select.select([fd, wake], [], [], self.status_interval)
            if wake in ready:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(4096)
        if self._flush_target > self._flushed:
            self._feedback(cur)  # the last committed position, before the connection closes

    def _feedback(self, cur: Any) -> None:
        target = self._flush_target
        cur.send_feedback(write_lsn=target, flush_lsn=target, apply_lsn=target, force=True)
        self._flushed = target

    def _push(self, chunk: list[bytes], cur: Any) -> None:
        while True:
            with self._cond:
                if len(self._chunks) < self.max_chunks or self._stop:
                    self._chunks.append(chunk)
                    break
                self._cond.wait(self.status_interval)
                full = len(self._chunks) >= self.max_chunks and not self._stop
            if full:
                self._feedback(cur)  # stay in touch while the pipeline catches up
        self._notify()
