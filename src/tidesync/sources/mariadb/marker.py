"""The sync's own writes in a MariaDB binlog: the session's ``skip_replication`` flag, written and read back.

A two-way sync whose MariaDB side reads the binlog (``type: mariadb``) must
tell its own writes from everyone else's when they come back as changes. Its
endpoint's sessions run ``SET SESSION skip_replication = 1``; MariaDB then
sets the flag ``LOG_EVENT_SKIP_REPLICATION_F`` (0x8000) in the header of every
binlog event of those transactions (the GTID, rows and XID events alike), and
the source gives each row change read from a flagged event the origin
:data:`ORIGIN`. The sync then treats the side as one with origins, as a
Postgres side (``sync.echo``): only a change carrying the origin is compared
with its ledger of announced writes, so an echo is certain, never a
coincidence of values, and a person's edit to the value the sync just wrote
is never taken for its echo.

Why this flag, and not the alternatives:

- a session ``server_id`` (GTID ``0-<id>-<seq>``) would say the same, but it
  changes the GTIDs everyone else sees, needs SUPER, and mixes server ids into
  the one domain a GTID resume relies on (``positions.resume_by_gtid``);
- a comment on the statements reaches the binlog only in annotate-rows events,
  which the file-and-offset dump request the source uses does not ask for;
- the ledger by value alone (what a polled MariaDB side and a MySQL side use)
  works, but cannot tell a person's edit to the same value from the echo.

``skip_replication`` is MariaDB's own mark for "written by something that
replicates outside the server". It changes nothing for the server's replicas
unless one runs with ``replicate_events_marked_for_skip`` other than its
default ``REPLICATE`` (such a replica would not receive the sync's writes).
Setting it needs no privilege on MariaDB 10.11 (SUPER on versions before
10.5.2) and cannot be done inside a transaction: the endpoint sets it once per
connection, when it connects. MySQL has no such flag: a ``type: mysql`` side's
echoes are known by the ledger of values (``sync.echo``).

The mark only means something when the writes go to the server whose binlog
the source reads: :func:`binlog_origin` gives the origin only when the side's
``dsn`` names the source's host and port (else the ledger alone decides).
"""

from __future__ import annotations

from typing import Any

from tidesync.errors import ConfigError
from tidesync.sinks.sql.mariadb import parse_dsn

SKIP_REPLICATION_F = 0x8000  # binlog event header flag set by a session with skip_replication on
ORIGIN = "mariadb:skip_replication"
SESSION_SETUP = "SET SESSION skip_replication = 1"


def origin_of(flags: int) -> str | None:
    """The origin of a binlog event with these header ``flags``: :data:`ORIGIN` when the flag is set."""
    return ORIGIN if flags & SKIP_REPLICATION_F else None


def binlog_origin(source: Any, dsn: str) -> str | None:
    """The origin a sync side's writes to ``dsn`` carry back through its ``source``; None when they carry none.

    :data:`ORIGIN` for a ``type: mariadb`` source reading the server ``dsn``
    points at (same host and port); None otherwise (MySQL, another server, a
    source of another type), and then the sync knows its echoes by value.
    """
    if getattr(source, "type", None) != "mariadb":
        return None
    try:
        a, b = parse_dsn(str(source.dsn)), parse_dsn(dsn)
    except ConfigError:  # a dsn this parser does not read (mysql+pymysql://...): no mark, the ledger decides
        return None
    return ORIGIN if (a["host"], a["port"]) == (b["host"], b["port"]) else None
