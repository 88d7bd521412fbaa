"""The commit horizon of a polled database: a cursor value below which no change can still become visible.

A row's cursor is stamped when the row is written (``now()``, ``ON UPDATE
current_timestamp``), but it becomes visible to a reader only at commit. A
change that a reader cannot see yet belongs to a transaction that is open
now, or to one that starts later; so its cursor is at least the start of the
oldest transaction open now, or now. That moment, read from the database's
own clock, is the horizon (:func:`read_horizon`).

Postgres: ``min(pg_stat_activity.xact_start)`` over the client sessions of
the database (every open transaction counts: ``now()`` is the transaction's
start, so even one that has only read so far stamps that moment when it
writes). Sessions of other roles show no ``xact_start`` unless the polling
role is a superuser or a member of ``pg_read_all_stats``.

MariaDB/MySQL: ``min(information_schema.innodb_trx.trx_started)`` over
transactions that changed a row, wait for a lock or run a statement (one
that has only read and sits idle stamps a later time when it next writes),
and the start of the longest statement running (``PROCESSLIST.TIME``; a
statement waiting for a metadata lock has no InnoDB transaction yet but its
time is already fixed). Both need the PROCESS privilege to see other users.
``trx_started`` is whole seconds in the server's system time zone, so it is
read in a session switched to ``SYSTEM`` for the query.

Only a cursor the database stamps with its own clock, in a zone known here,
can be compared with the horizon: ``timestamptz`` on Postgres, ``TIMESTAMP``
on MariaDB/MySQL (sessions run in UTC). Other cursors (``DATETIME``,
``timestamp without time zone``, numbers, text) rely on the look-back alone.

:data:`MARGIN` covers what the horizon does not see exactly: whole seconds,
InnoDB's 0.1 s cache of ``innodb_trx``, and the moment between a statement's
start and its transaction's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from tidesync.sources.polling.dialect import TableMeta

MARGIN = 1.0  # seconds

_PG = sa.text(
    "SELECT extract(epoch FROM clock_timestamp()), extract(epoch FROM min(xact_start)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
    " AND backend_type = 'client backend'"
)
_MYSQL = sa.text(
    "SELECT UNIX_TIMESTAMP(NOW(6)),"
    " (SELECT UNIX_TIMESTAMP(MIN(trx_started)) FROM information_schema.innodb_trx"
    "   WHERE trx_mysql_thread_id <> CONNECTION_ID()"
    "   AND (trx_rows_modified > 0 OR trx_state = 'LOCK WAIT' OR trx_query IS NOT NULL)),"
    " (SELECT MAX(TIME) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND ID <> CONNECTION_ID())"
)


def watchable(meta: TableMeta, cursor: str, dialect: str) -> bool:
    """Whether the cursor column can be compared with the horizon (see the module docstring)."""
    col = next((c for c in meta.portable if c.name == cursor), None)
    if col is None:
        return False
    if dialect == "postgresql":
        return col.type == "timestamptz"
    if dialect in ("mysql", "mariadb"):
        return (col.native or "").upper().startswith("TIMESTAMP")
    return False


def read_horizon(conn: sa.Connection) -> float | None:
    """The horizon as epoch seconds, :data:`MARGIN` included (None for a dialect without one).

    Raises what the driver raises; a missing privilege is a ``ProgrammingError``/``OperationalError``.
    """
    name = conn.dialect.name
    if name == "postgresql":
        now, oldest = conn.execute(_PG).one()
        return horizon_of(now, oldest, None)
    if name in ("mysql", "mariadb"):
        conn.execute(sa.text("SET time_zone = 'SYSTEM'"))  # trx_started is in the server's system time zone
        try:
            now, oldest, running = conn.execute(_MYSQL).one()
        finally:
            conn.execute(sa.text("SET time_zone = '+00:00'"))
        return horizon_of(now, oldest, None if running is None else float(now) - (float(running) + 1.0))
    return None


def horizon_of(now: Any, oldest: Any, statement: float | None) -> float:
    """The earliest of now, the oldest open transaction's start and the oldest statement's start, less MARGIN."""
    moments = [float(now)] + [float(m) for m in (oldest, statement) if m is not None]
    return min(moments) - MARGIN


def as_cursor(epoch: float, dialect: str) -> dt.datetime:
    """``epoch`` as the driver reads a watchable cursor: aware UTC on Postgres, naive UTC on MariaDB/MySQL."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment if dialect == "postgresql" else moment.replace(tzinfo=None)


def held(mark: tuple[Any, ...] | None, horizon: Any) -> tuple[Any, ...] | None:
    """A high-water mark no higher than ``horizon`` (a cursor value); None stays None.

    Only the cursor part of a high-water mark is used (the floor of the next pass), so a mark held
    back keeps its key values.
    """
    if mark is None or horizon is None:
        return mark
    try:
        return mark if mark[0] <= horizon else (horizon, *mark[1:])
    except TypeError:  # a cursor value of another kind than the horizon: nothing to compare
        return mark
