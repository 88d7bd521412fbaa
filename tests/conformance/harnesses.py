"""Connectors under the conformance suite: how to make each one and how to see its effects.

A source harness makes changes upstream and builds a source over them; a sink
harness builds a sink over a fresh destination holding the table ``items``
(``id`` integer primary key, ``name`` text, ``qty`` integer) and reads it back.
Adding a connector to the suite means adding a harness here and its name to
SOURCES or SINKS; a registered connector that cannot have one is named in
UNCOVERED with the reason.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

from tidesync.protocols import Sink, Source
from tidesync.registry import Kind
from tidesync.sources.sqlite import SqliteSource, SqliteSourceConfig

Rows = dict[tuple[Any, ...], dict[str, Any]]

NO_BAD_ROWS = (
    "captures committed rows of a typed table: the database refuses a malformed row before the source "
    "could see it, and there is no other input to feed"
)


class SourceHarness(Protocol):
    """Makes changes upstream and builds a source over them.

    Change methods may be coroutines (the tests await what they return).
    Capabilities the contract cases check:

    - ``every_change``: each change is read as its own event. False for a
      polling source, which sees a row as it is when a pass reads it: changes
      between two passes coalesce, a row inserted and deleted between them is
      never seen. The cases then check the net state the events lead to.
    - ``feed_bad_input(key)`` (optional): hands the source one malformed
      record; the source must report it (``batch.rejected``) and go on.
    - ``break_()``/``heal()`` (optional): a real transient fault of the
      source's connection (the transient-read case uses it; a harness without
      one gets a read that fails after doing its work).
    - ``exclusions``: contract case name -> why it cannot apply to this connector.
    """

    entity: str
    every_change: bool
    exclusions: dict[str, str]

    def make_source(self) -> Source: ...

    def insert(self, ids: range) -> Any: ...

    def update(self, ids: range, qty: int) -> Any: ...

    def delete(self, ids: range) -> Any: ...

    def cleanup(self) -> None: ...


class Fault(Protocol):
    """A destination failing transiently: from ``break_()`` until ``heal()``."""

    def break_(self) -> None: ...

    def heal(self) -> None: ...


class SinkHarness(Protocol):
    """Builds a sink over a fresh destination and reads it back.

    Capabilities the contract cases check: ``bad_row`` (a row the destination
    cannot hold, or None), ``make_faulty_sink()`` (a sink whose destination
    fails on demand), and ``exclusions`` (case name -> why it cannot apply).
    """

    entity: str
    bad_row: dict[str, Any] | None
    exclusions: dict[str, str]

    def make_sink(self) -> Sink: ...

    def make_faulty_sink(self) -> tuple[Sink, Fault]: ...

    def rows(self) -> Rows: ...

    def set_column(self, key: int, column: str, value: Any) -> None:
        """An edit made directly in the destination, behind tidesync's back."""

    def cleanup(self) -> None: ...


class SqliteSourceHarness:
    """Trigger capture from a SQLite file."""

    entity = "items"
    every_change = True
    exclusions = {"bad_input": NO_BAD_ROWS}

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "conformance-source.db"
        with sqlite3.connect(self.path) as conn:
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")

    def make_source(self) -> Source:
        return SqliteSource(
            SqliteSourceConfig(path=str(self.path), tables=["items"], snapshot="never", poll_interval_ms=2)
        )

    def _exec(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.executemany(sql, rows)

    def insert(self, ids: range) -> None:
        self._exec("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 0) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._exec("UPDATE items SET qty = ? WHERE id = ?", [(qty, i) for i in ids])

    def delete(self, ids: range) -> None:
        self._exec("DELETE FROM items WHERE id = ?", [(i,) for i in ids])

    def cleanup(self) -> None:
        pass


class PostgresSourceHarness:
    """Logical replication from a fresh database; each harness gets its own slot (pipeline name)."""

    entity = "public.items"
    every_change = True
    exclusions = {"bad_input": NO_BAD_ROWS}

    def __init__(self, tmp: Path) -> None:
        import uuid

        import psycopg

        self.tmp = tmp
        self.db = f"ts_conf_{uuid.uuid4().hex[:10]}"
        self.admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.dsn = self.admin.rsplit("/", 1)[0] + "/" + self.db
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)")

    def make_source(self) -> Source:
        from tidesync.sources.postgres import PostgresSource, PostgresSourceConfig

        return PostgresSource(
            PostgresSourceConfig(
                dsn=self.dsn,
                tables=["items"],
                snapshot="never",
                progress=False,
                heartbeat_interval=0,
                slot=self.db,
                publication=self.db,
                work_dir=str(self.tmp / "spill"),
            )
        )

    def _exec(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        import psycopg

        with psycopg.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.executemany(sql, rows)

    def insert(self, ids: range) -> None:
        self._exec("INSERT INTO items VALUES (%s, %s, %s)", [(i, f"item {i}", 0) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._exec("UPDATE items SET qty = %s WHERE id = %s", [(qty, i) for i in ids])

    def break_(self) -> None:
        """Kill the walsender streaming to the source (its slot is this harness's own)."""
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (self.db,),
            )

    def heal(self) -> None:
        """Nothing to mend: the server takes the next replication connection."""

    def delete(self, ids: range) -> None:
        self._exec("DELETE FROM items WHERE id = %s", [(i,) for i in ids])

    def cleanup(self) -> None:
        from tests.conftest import drop_pg_database

        drop_pg_database(self.db)


def _sources() -> dict[str, type]:
    from tests.conformance import sheets_harness
    from tests.conformance.http_harnesses import HubSpotHistorySourceHarness, HubSpotSourceHarness, StripeSourceHarness
    from tests.conformance.mariadb_binlog_harness import MariadbBinlogSourceHarness
    from tests.conformance.mqtt_harness import MqttSourceHarness
    from tests.conformance.nats_harness import NatsSourceHarness
    from tests.conformance.poll_harness import HybridSourceHarness, SqlPollSourceHarness
    from tests.conformance.rabbitmq_harness import RabbitMQSourceHarness
    from tests.conformance.redis_harness import RedisSourceHarness
    from tests.conformance.webhook_source_harness import WebhookSourceHarness

    return {
        "sqlite": SqliteSourceHarness,
        "postgres": PostgresSourceHarness,
        "sql_poll": SqlPollSourceHarness,
        "webhook": WebhookSourceHarness,
        "stripe": StripeSourceHarness,
        "hubspot": HubSpotSourceHarness,
        "hubspot_history": HubSpotHistorySourceHarness,  # the same source with property_history: true
        "hybrid": HybridSourceHarness,
        "nats": NatsSourceHarness,
        "redis": RedisSourceHarness,
        "rabbitmq": RabbitMQSourceHarness,
        "mqtt": MqttSourceHarness,
        **sheets_harness.SOURCES,  # csv, xlsx
        "mariadb": MariadbBinlogSourceHarness,
    }


def _sinks() -> dict[str, type]:
    from tests.conformance import sheets_harness
    from tests.conformance import sink_harnesses as h
    from tests.conformance.hubspot_sink_harness import HubSpotSinkHarness
    from tests.conformance.mqtt_harness import MqttSinkHarness
    from tests.conformance.nats_harness import NatsSinkHarness
    from tests.conformance.rabbitmq_harness import RabbitMQSinkHarness
    from tests.conformance.redis_harness import RedisSinkHarness
    from tests.conformance.stripe_sink_harness import StripeSinkHarness

    return {
        "memory": h.MemorySinkHarness,
        "postgres": h.PostgresSinkFaults,
        "mariadb": h.MariadbSinkFaults,
        "sqlite": h.SqliteSinkFaults,
        "webhook": h.WebhookSinkHarness,
        "nats": NatsSinkHarness,
        "redis": RedisSinkHarness,
        "rabbitmq": RabbitMQSinkHarness,
        "mqtt": MqttSinkHarness,
        "stripe": StripeSinkHarness,
        "hubspot": HubSpotSinkHarness,
        **sheets_harness.SINKS,  # csv, xlsx
    }


SOURCES: dict[str, type] = _sources()
SINKS: dict[str, type] = _sinks()

# Registered connectors with no harness, and why (test_coverage.py holds every registered type to a harness, an
# alias of a type with one, or a reason here).
_KEEPS_NOTHING = (
    "discards every event and keeps nothing: each sink case reads back the rows the destination holds, and "
    "this sink has none (its only behaviour, counting events, is what the engine tests use it for)"
)
UNCOVERED: dict[tuple[Kind, str], str] = {("sink", "discard"): _KEEPS_NOTHING, ("sink", "null"): _KEEPS_NOTHING}
