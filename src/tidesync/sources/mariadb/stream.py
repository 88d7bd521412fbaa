"""The binlog connection: mysql-replication's BinLogStreamReader in one thread, behind a bounded buffer.

The thread reads events, decodes captured rows into :class:`~tidesync.event.ChangeEvent`
(row images by the decoder ``rows.py`` compiles per table map, records by ``records.py``;
packets, event headers and table maps by mysql-replication; uncovered types by
mysql-replication too), and hands records over in chunks: at a transaction end once the
server has sent nothing more yet (in a backlog: at the first transaction end past
``chunk_size`` records, see ``_more_to_read``), and every ``chunk_size`` rows inside a large
transaction.

Where the time goes (``bench/mariadb_source.py --changes 200000``: 1,000-row multi-row
statements; CPU seconds of the drain, runs of the old and new code interleaved on a busy
two-core machine): row images decoded by a Python reader per value took 4.2-5.8 s
(the source at 0.05-0.07 of ``mariadb-binlog --verbose``); with the compiled decoder and
per-event record making 1.65-2.06 s (0.15-0.20 in the runs with the least load), of which
the row images are still about 60% (dicts, ``Decimal`` and ``datetime`` objects), making
records 15%, mysql-replication's packet and event layer 15-20% (2,900 events), the
asyncio side 15%. One-row transactions cost more per change in mysql-replication: it
parses every table map in full (about half the thread's time there), which reading the
packets ourselves would avoid; handing a backlog over in chunks rather than per
transaction (``_more_to_read``) took the asyncio side there from 1.1-1.4 s to 0.1 s per
10,000 changes.

When ``max_records`` records wait unread the thread stops reading until the pipeline takes
some (backpressure; the server buffers the rest). The thread and its buffer are a
:class:`~tidesync.sources.blocking.ReaderThread`.

Records (``records.py``) come out in binlog order. A :class:`~records.Boundary` follows every
transaction (XID or COMMIT) and every statement logged on its own (DDL), whatever its database, and,
while idle, each server heartbeat that names a binlog end past the last boundary (after a rotation,
after events the stream does not read, or at the very start) gives one too: the server sends a
heartbeat only once its dump thread has sent everything, with its file and offset, so that offset
starts the next transaction. A batch run's end (``source.end_position``) relies on this: the stream
always reaches the binlog end of any moment. DDL query events only invalidate
the cache of which columns hold JSON (MariaDB's JSON is a LONGTEXT; only
``information_schema`` says so); the table maps carry the columns themselves.

Where it starts: a file and offset (both servers), or, when the checkpoint's file is gone, a
MariaDB GTID state (the decoder's MariaDB GTID mode; the server then names the file it
streams from in its first rotate event, and positions are file and offset again).

A lost stream connection (a server restart, a killed dump thread) ends the thread with a
transient error: the decoder's own reconnect is refused, as it would resume at the last
event it saw (inside a transaction) or, by GTID, at the state it started from; the source
is reopened after the last position the pipeline read instead.

Stopping: :meth:`BinlogReader.stop` sets a flag that the thread checks at every event,
server heartbeats included, and shuts the socket down so a blocked read returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader  # type: ignore[import-untyped]
from pymysqlreplication.event import (  # type: ignore[import-untyped]
    FormatDescriptionEvent,
    GtidEvent,
    HeartbeatLogEvent,
    MariadbBinLogCheckPointEvent,
    MariadbGtidEvent,
    MariadbGtidListEvent,
    QueryEvent,
    RotateEvent,
    StopEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (  # type: ignore[import-untyped]
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from tidesync.errors import SourceError
from tidesync.sources.blocking import ReaderThread
from tidesync.sources.mariadb import server
from tidesync.sources.mariadb.positions import Resume, boundary_position, file_seq, within
from tidesync.sources.mariadb.records import Boundary, Record, RecordMaker, Shape
from tidesync.sources.mariadb.tables import TableShape, entity_name

log = logging.getLogger("tidesync.sources.mariadb")

# Threads of readers being stopped: stop() shuts their socket, which the decoder reports as a lost
# connection ("Re-request the connection") before it finds it may not reconnect. Not worth a warning.
_STOPPING: set[int] = set()


class _QuietWhileStopping(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return threading.get_ident() not in _STOPPING


logging.getLogger("pymysqlreplication").addFilter(_QuietWhileStopping())


_EVENTS = [MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, TableMapEvent, WriteRowsEvent, UpdateRowsEvent,
           DeleteRowsEvent, RotateEvent, HeartbeatLogEvent,
           # not read, but handed to the loop so that it sees every event a rotation brings before the stream
           # goes idle (see _flush_before_waiting)
           FormatDescriptionEvent, MariadbGtidListEvent, MariadbBinLogCheckPointEvent, StopEvent]  # fmt: skip


def _start(ev: Any) -> int:
    """Where an event starts in its file: its end minus its whole size (``ev.packet`` is the decoder's wrapper,
    whose size counts the header and checksum; the event's own ``event_size`` does not)."""
    return int(ev.packet.log_pos) - int(ev.packet.event_size)


def _heartbeat_end(ev: Any) -> tuple[int, int] | None:
    """The binlog end a heartbeat names (file number, offset): where the server's dump thread waits for more."""
    try:
        where = file_seq(str(ev.ident).rstrip("\x00")), int(ev.packet.log_pos)
    except (ValueError, TypeError, AttributeError):
        return None
    return where if where[1] > 0 else None


class BinlogReader:
    """Reads the binlog from ``resume`` on, for the ``tables`` (database, table) pairs, in a thread."""

    def __init__(
        self,
        connect_args: dict[str, Any],
        *,
        server_id: int,
        resume: Resume,
        tables: list[tuple[str, str]],
        shapes: dict[str, TableShape],
        mariadb: bool,
        zero_dates: str,
        heartbeat: float = 1.0,
        max_records: int = 20_000,
        chunk_size: int = 500,
    ) -> None:
        self.args = dict(connect_args)
        self.server_id = server_id
        self.resume = resume
        self.tables = set(tables)
        self.mariadb = mariadb
        self.heartbeat = heartbeat
        self.max_records = max_records
        self.chunk_size = chunk_size
        self._stream: BinLogStreamReader | None = None
        self._reader: ReaderThread[Record] = ReaderThread(
            f"tidesync-binlog-{server_id}",
            capacity=max_records,
            weigh=len,
            translate=lambda exc: server.translate(exc, "reading the binlog"),
        )
        self._ctl: pymysql.connections.Connection[Any] | None = None
        self._streams = 0  # stream connections opened: the first only (see the module's docstring)
        self.maker = RecordMaker(self.tables, shapes, zero_dates, self._json_columns)

    # --- asyncio side -----------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        if not await self._reader.start(self._run, timeout):
            failed = self._reader.failure() or server.translate(
                TimeoutError("no answer"), f"the binlog stream did not start within {timeout:.0f}s"
            )
            await self.stop()
            raise failed

    def take(self, limit: int) -> list[Record]:
        """Up to about ``limit`` records (whole chunks; the caller keeps what it does not use)."""
        return [record for chunk in self._reader.take(limit) for record in chunk]

    async def wait(self, timeout: float) -> None:
        """Return when records or an error are there, or after ``timeout`` seconds."""
        await self._reader.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._reader.finished

    def error(self) -> SourceError:
        """Why the thread ended (call once :attr:`finished`)."""
        return self._reader.failure() or server.translate(EOFError("the binlog stream ended"), "reading the binlog")

    async def stop(self) -> None:
        reader = self._reader
        ident = reader.thread_ident
        if ident is not None:
            _STOPPING.add(ident)
        reader.request_stop()
        stream = self._stream
        conn = getattr(stream, "_stream_connection", None) if stream is not None else None
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns now
        await reader.join()
        _STOPPING.discard(ident or 0)

    # --- the thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            self._ctl = server.connect(self.args)
            by_gtid = self.resume.gtid is not None
            where: dict[str, Any] = (
                # The decoder's MariaDB mode starts by GTID state (slave_connect_state, strict mode).
                {"is_mariadb": True, "auto_position": self.resume.gtid}
                if by_gtid
                # file+offset needs the classic dump request, which MariaDB serves too, with its GTID events.
                else {"is_mariadb": False, "log_file": self.resume.file, "log_pos": self.resume.offset}
            )
            self._stream = BinLogStreamReader(
                connection_settings=self._settings(),
                server_id=self.server_id,
                blocking=True,
                resume_stream=True,
                only_events=_EVENTS,
                only_schemas=sorted({db for db, _ in self.tables}),
                only_tables=sorted({t for _, t in self.tables}),
                slave_heartbeat=self.heartbeat,
                enable_logging=False,
                pymysql_wrapper=self._connect,
                **where,
            )
            self._reader.mark_started()
            self._loop_events(self._stream)
        finally:
            for closing in (self._stream, self._ctl):
                if closing is not None:
                    with contextlib.suppress(Exception):
                        closing.close()

    def _settings(self) -> dict[str, Any]:
        a = self.args
        return {
            "host": a["host"],
            "port": a["port"],
            "user": a["user"],
            "password": a["password"],
            "charset": "utf8mb4",
        }

    def _connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        # The decoder reconnects by itself after a lost connection; after stop() (which shuts the socket)
        # it must not: the thread is ending.
        if self._reader.stopping:
            raise pymysql.err.InterfaceError(0, "the binlog reader is stopping")
        if "db" in kwargs:  # the decoder names its control connection's database by PyMySQL's deprecated key
            kwargs["database"] = kwargs.pop("db")
            return pymysql.connect(**kwargs)
        if self._streams:  # the stream was lost: not resumed here (see the module's docstring)
            raise pymysql.err.OperationalError(2013, "lost the binlog stream connection; the source reopens")
        self._streams += 1
        return pymysql.connect(**kwargs)

    def _loop_events(self, stream: BinLogStreamReader) -> None:
        chunk: list[Record] = []
        gtid = ""
        tx_offset = -1
        index = -1
        by_gtid = self.resume.gtid is not None
        seq = 0 if by_gtid else self.resume.seq
        after = self.resume.after
        skip_seq, skip_offset = (-1, -1) if by_gtid else (self.resume.seq, self.resume.offset)
        # by GTID from inside a transaction: the first transaction sent must be the checkpoint's
        check_first = by_gtid and after is not None and int(after[2]) >= 0
        # the GTID of the last transaction done (an idle boundary carries it), and the last boundary's place
        done = str(after[3]) if after is not None and int(after[2]) < 0 and len(after) > 3 else ""
        emitted: tuple[int, int] | None = None if by_gtid or after is None else (seq, self.resume.offset)
        pending: dict[str, TableShape] = {}  # new shapes, announced with the first row that has them
        maker = self.maker
        reader = self._reader
        for ev in stream:
            if reader.stopping:
                return
            if stream.log_file is None:  # by GTID, before the server's first rotate event names the file
                continue
            seq = file_seq(stream.log_file)
            if isinstance(ev, (MariadbGtidEvent, GtidEvent)):
                tx_offset = _start(ev)
                gtid = str(ev.gtid)
                index = -1
                if check_first:
                    check_first = False
                    assert after is not None
                    if gtid != after[3]:
                        raise SourceError(
                            f"resumed by GTID from {self.resume.gtid} to read transaction {after[3]} again, "
                            f"but the server sent {gtid} first: the checkpoint's transaction cannot be found; "
                            "re-snapshot (reset the pipeline's checkpoint)"
                        )
            elif isinstance(ev, (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)):
                shape = maker.shapes.get(entity_name(ev.schema, ev.table))
                if shape is None or (ev.schema, ev.table) not in self.tables:
                    continue
                records, index = maker.rows(shape, ev, seq, tx_offset, index, gtid)
                if after is not None and (
                    gtid == after[3] if by_gtid else (seq == skip_seq and tx_offset == skip_offset)
                ):
                    # handed out before the checkpoint this reader resumed after (a key change
                    # gives two events for one row: the checkpoint may fall between them)
                    records = [r for r in records if within(r.position) > within(after)]
                if records:
                    announced = pending.pop(shape.entity, None)
                    if announced is not None:  # before the first row of the new shape, at that row's position
                        chunk.append(Shape(announced, tuple(records[0].position[:4])))
                    chunk.extend(records)
                if len(chunk) >= self.chunk_size:
                    chunk = self._push(chunk)
                continue  # inside a transaction: its end or chunk_size rows hand the chunk over
            elif isinstance(ev, XidEvent):
                chunk.append(Boundary(boundary_position(seq, ev.packet.log_pos, gtid)))
                done, emitted = gtid, (seq, int(ev.packet.log_pos))
                tx_offset, gtid, index = -1, "", -1
            elif isinstance(ev, QueryEvent):
                text = ev.query.strip() if isinstance(ev.query, str) else ""
                if text.upper() == "BEGIN":
                    if tx_offset < 0:  # no GTID event before it (MySQL with gtid_mode=OFF)
                        tx_offset = _start(ev)
                    continue
                if text.upper() != "COMMIT":
                    maker.forget_json()
                    log.debug("DDL at binlog file #%s: %s", seq, text[:200])
                chunk.append(Boundary(boundary_position(seq, ev.packet.log_pos, gtid)))
                done, emitted = gtid, (seq, int(ev.packet.log_pos))
                tx_offset, gtid, index = -1, "", -1
            elif isinstance(ev, TableMapEvent):
                if (ev.schema, ev.table) in self.tables:
                    changed = maker.table_map(ev)
                    if changed is not None:
                        pending[changed.entity] = changed
            elif isinstance(ev, HeartbeatLogEvent):
                idle = _heartbeat_end(ev) if tx_offset < 0 else None
                if idle is not None and (emitted is None or idle > emitted):
                    chunk.append(Boundary(boundary_position(idle[0], idle[1], done)))
                    emitted = idle
                if chunk:
                    chunk = self._push(chunk)
                continue
            if chunk and (len(chunk) >= self.chunk_size or not self._more_to_read(stream)):
                chunk = self._push(chunk)

    def _more_to_read(self, stream: BinLogStreamReader) -> bool:
        """Whether the server has sent more than the stream has read (the next read will not wait).

        A transaction's records are handed over at its end only when nothing more is there yet: in a
        backlog, one-row transactions go to the pipeline in chunks of about ``chunk_size`` records, not
        one wake-up of its event loop each (the module docstring says what that cost). Every event type
        the server sends after a transaction before it waits (a rotation's included, see _EVENTS) comes
        to this loop, so a chunk kept here is handed over before the stream waits for new writes. Data
        the decoder buffered already but the socket no longer holds reads as nothing more: the chunk
        goes now, which is never wrong, only less batched.
        """
        sock = getattr(getattr(stream, "_stream_connection", None), "_sock", None)
        if sock is None:
            return False
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _json_columns(self, database: str, table: str) -> frozenset[str]:
        try:
            assert self._ctl is not None
            return server.json_columns(self._ctl, database, table)
        except (pymysql.err.MySQLError, AssertionError):
            with contextlib.suppress(Exception):
                if self._ctl is not None:
                    self._ctl.close()
            self._ctl = server.connect(self.args)  # idle too long and dropped by the server: once more
            return server.json_columns(self._ctl, database, table)

    def _push(self, chunk: list[Record]) -> list[Record]:
        if chunk:
            self._reader.put(chunk, poll=0.5)
        return []
