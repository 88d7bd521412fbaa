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

The thread and its buffer are a :class:`~tidesync.sources.blocking.ReaderThread`.
Errors from the connection are kept and reported by :meth:`ReplicationStream.error`
after the data received before them has been drained, translated by ``errors.py``
(the same rules as every other Postgres error of the source).
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras

from tidesync.errors import SourceError, SourceTransientError
from tidesync.sources.blocking import ReaderThread
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
        self._flush_target = 0
        self._flushed = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._reader: ReaderThread[bytes] = ReaderThread(
            f"tidesync-pg-{slot}",
            capacity=self.max_chunks,
            weigh=_one,
            translate=lambda exc: translate(exc, f"replication from slot {slot!r} failed"),
        )

    # --- asyncio side -----------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Connect and start streaming; raises the translated error when that fails."""
        if not await self._reader.start(self._run, timeout):
            failed = self._reader.failure() or SourceTransientError(
                f"replication for slot {self.slot!r} did not start within {timeout:.0f}s"
            )
            await self.stop()
            raise failed

    def drain(self) -> list[list[bytes]]:
        """Every chunk received so far (possibly none); frees room for the thread."""
        return self._reader.take()

    async def wait(self, timeout: float) -> None:
        """Return when data or an error is there, or after ``timeout`` seconds."""
        await self._reader.wait(timeout)

    def error(self) -> SourceError | None:
        """The connection's error once every chunk before it was drained, else None."""
        return self._reader.failure() if self._reader.finished else None

    @property
    def has_data(self) -> bool:
        return self._reader.has_data

    @property
    def finished(self) -> bool:
        return self._reader.finished

    def confirm(self, lsn: int) -> None:
        """Everything before ``lsn`` is durably handled: the thread sends it as the flush position."""
        if lsn > self._flush_target:
            self._flush_target = lsn
            self._poke()

    async def stop(self) -> None:
        self._reader.request_stop()
        self._poke()
        await self._reader.join()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # --- the thread -------------------------------------------------------

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
            self._reader.mark_started()
            self._loop_messages(conn, cur)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _loop_messages(self, conn: Any, cur: Any) -> None:
        read = cur.read_message
        chunk: list[bytes] = []
        append = chunk.append
        size = self.chunk_size
        fd = conn.fileno()
        wake = self._wake_r
        last_status = time.monotonic()
        reader = self._reader
        while not reader.stopping:
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
        # while the pipeline catches up, status updates keep the server's connection alive
        self._reader.put(chunk, poll=self.status_interval, while_full=lambda: self._feedback(cur))


def _one(chunk: list[bytes]) -> int:
    return 1  # the buffer holds ``max_chunks`` chunks, however full each is
