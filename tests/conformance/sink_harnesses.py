"""Sink harnesses beyond the reference one: the SQL sinks with their faults, and the webhook sink.

A *fault* (``make_faulty_sink``) makes the destination fail transiently on
demand: ``break_()`` until ``heal()``. The SQL sinks on a server reach it
through a :class:`~tidesync.testing.TcpProxy` that cuts connections; the
SQLite sink meets a database locked by another writer; the webhook sink's
receiver sits behind a proxy too. ``bad_row`` is a row the destination cannot
hold (the contract: PermanentError or PartialBatchError, never a foreign error).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec

from tests.integration.sql_sinks.conformance import (
    MariadbSinkHarness,
    PostgresSinkHarness,
    Rows,
    SqliteSinkHarness,
)
from tidesync.event import from_json
from tidesync.protocols import Sink
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig, SqliteSinkConfig
from tidesync.sinks.sql.mariadb import MariadbSink
from tidesync.sinks.sql.postgres import PostgresSink
from tidesync.sinks.sql.sqlite import SqliteSink
from tidesync.sinks.webhook import WebhookSink, WebhookSinkConfig
from tidesync.testing import MemorySink, TcpProxy

# Out of range for a 64-bit integer column on every SQL backend (and for SQLite's driver).
TOO_BIG = {"name": "too big", "qty": 2**70}


class ProxyFault:
    """Cuts every connection through the proxy, and refuses new ones, until healed."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    def break_(self) -> None:
        self.proxy.block()

    def heal(self) -> None:
        self.proxy.unblock()


class _Proxied:
    """Mixin: a proxy per faulty sink, stopped at cleanup."""

    def _proxy(self, port: int) -> TcpProxy:
        proxy = TcpProxy("127.0.0.1", port)
        proxy.start()
        self.__dict__.setdefault("_proxies", []).append(proxy)
        return proxy

    def _stop_proxies(self) -> None:
        for proxy in self.__dict__.pop("_proxies", []):
            proxy.stop()


class TableLock:
    """Another session holding an exclusive lock on the destination table: every write waits (a slow destination)."""

    def __init__(self, connect: Any, statement: str) -> None:
        self.connect = connect
        self.statement = statement
        self.conn: Any = None

    def hold(self) -> None:
        self.conn = self.connect()
        cur = self.conn.cursor()
        cur.execute(self.statement)

    def release(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
            self.conn = None


class PostgresSinkFaults(_Proxied, PostgresSinkHarness):
    bad_row = TOO_BIG
    exclusions: dict[str, str] = {}

    def make_slow(self) -> TableLock:
        import psycopg

        return TableLock(lambda: psycopg.connect(self.dsn), "LOCK TABLE items IN ACCESS EXCLUSIVE MODE")

    def make_faulty_sink(self) -> tuple[Sink, ProxyFault]:
        proxy = self._proxy(5432)
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/{self.db}"
        return PostgresSink(PostgresSinkConfig(dsn=dsn)), ProxyFault(proxy)

    def cleanup(self) -> None:
        self._stop_proxies()
        super().cleanup()


class MariadbSinkFaults(_Proxied, MariadbSinkHarness):
    bad_row = TOO_BIG
    exclusions: dict[str, str] = {}

    def make_slow(self) -> TableLock:
        import pymysql

        def connect() -> Any:
            conn = pymysql.connect(host="127.0.0.1", user="root", database=self.db, autocommit=False)
            return conn

        # Row locks on every row (the rows the burst updates), held by another transaction.
        return TableLock(connect, "SELECT * FROM items FOR UPDATE")

    def make_faulty_sink(self) -> tuple[Sink, ProxyFault]:
        proxy = self._proxy(3306)
        dsn = f"mysql://root@127.0.0.1:{proxy.port}/{self.db}"
        return MariadbSink(MariadbSinkConfig(dsn=dsn)), ProxyFault(proxy)

    def cleanup(self) -> None:
        self._stop_proxies()
        super().cleanup()


class SqliteLock:
    """Another writer holding the database's write lock (SQLite's transient fault)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def break_(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def heal(self) -> None:
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


class SqliteSinkFaults(SqliteSinkHarness):
    bad_row = TOO_BIG
    exclusions: dict[str, str] = {}

    def make_slow(self) -> SqliteLock:
        lock = SqliteLock(self.path)
        lock.hold, lock.release = lock.break_, lock.heal  # type: ignore[method-assign]
        return lock

    def make_faulty_sink(self) -> tuple[Sink, SqliteLock]:
        self.lock = SqliteLock(self.path)
        return SqliteSink(SqliteSinkConfig(path=str(self.path), lock_timeout=0.05)), self.lock

    def cleanup(self) -> None:
        if hasattr(self, "lock"):
            self.lock.heal()
        super().cleanup()


class MemorySinkHarness:
    """The reference implementation every sink must agree with.

    It holds any Python value and nothing stands between it and its tables,
    so it has no bad row and no transient fault (see ``exclusions``).
    """

    entity = "items"
    bad_row = None
    exclusions = {
        "bad_input": "holds any Python value in memory: there is no event it cannot write",
        "transient_fault": "in process, with no connection or lock between the sink and its tables to fail",
        "slow_destination": "in process, with no connection or lock between the sink and its tables to wait on",
    }

    def __init__(self, tmp: Path) -> None:
        self.sink = MemorySink()

    def make_sink(self) -> Sink:
        return self.sink

    def rows(self) -> Rows:
        return {k: dict(v) for k, v in self.sink.tables.get("items", {}).items()}

    def set_column(self, key: int, column: str, value: Any) -> None:
        self.sink.tables["items"][(key,)][column] = value

    def cleanup(self) -> None:
        pass


class Receiver:
    """A webhook receiver on loopback that de-duplicates by ``webhook-id`` and applies each event to ``items``.

    That is what the Standard Webhooks contract asks of a receiver; the sink's
    part is a stable id per event. ``accepted`` counts each id taken, so a
    test sees an event that landed twice.
    """

    def __init__(self) -> None:
        self.tables: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.accepted: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.open = threading.Event()  # cleared: the receiver holds every request (a slow destination)
        self.open.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.open.wait(30)
                receiver.take(self.headers["webhook-id"], msgspec.json.decode(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.02,), name="conformance-receiver", daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def take(self, msg_id: str, doc: dict[str, Any]) -> None:
        envelopes = doc["data"] if doc["type"] == "batch" else [doc]
        with self.lock:
            for env in envelopes:
                self.accepted[env["id"]] += 1
                if self.accepted[env["id"]] > 1:
                    continue  # a re-delivery: already applied
                event = from_json(msgspec.json.encode(env["data"]))
                if event.op == "delete":
                    self.tables.pop(event.key, None)
                    continue
                row = self.tables.setdefault(event.key, {})
                after = event.after or {}
                for f in event.fields_to_write():
                    if f in after:
                        row[f] = after[f]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class ReceiverGate:
    """Holds every request at the receiver until released: a slow destination."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def hold(self) -> None:
        self.receiver.open.clear()

    def release(self) -> None:
        self.receiver.open.set()


class WebhookSinkHarness(_Proxied):
    """The webhook sink POSTing signed envelopes to a :class:`Receiver` behind a TCP proxy.

    The sink reports per event, so a failed POST raises PartialBatchError
    whose failures are TransientErrors (the contract allows either form).
    """

    entity = "items"
    # The bad input is a value JSON cannot carry: the sink fails that event alone, before sending.
    bad_row = {"name": object(), "qty": 2}
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.receiver = Receiver()

    def _sink(self, port: int) -> Sink:
        config = {
            "url": f"http://127.0.0.1:{port}/hook",
            "secrets": ["whsec_Y29uZm9ybWFuY2Utc2luay1rZXktMDEyMzQ1Njc4OQ=="],
            "concurrency": 2,
            "timeout": 5,
            "retry": {"initial_delay": 0.001, "max_delay": 0.001, "jitter": "none"},
        }
        return WebhookSink(WebhookSinkConfig.model_validate(config))

    def make_sink(self) -> Sink:
        return self._sink(self.receiver.port)

    def make_slow(self) -> ReceiverGate:
        return ReceiverGate(self.receiver)

    def make_faulty_sink(self) -> tuple[Sink, ProxyFault]:
        proxy = self._proxy(self.receiver.port)
        return self._sink(proxy.port), ProxyFault(proxy)

    def rows(self) -> Rows:
        with self.receiver.lock:
            return {k: dict(v) for k, v in self.receiver.tables.items()}

    def set_column(self, key: int, column: str, value: Any) -> None:
        with self.receiver.lock:
            self.receiver.tables[(key,)][column] = value

    def cleanup(self) -> None:
        self._stop_proxies()
        self.receiver.stop()
