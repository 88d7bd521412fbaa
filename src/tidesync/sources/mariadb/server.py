"""What the source asks the server outside the binlog stream (PyMySQL, blocking: call through a thread).

Settings and grants checked at open, the binlog files still on the server, the
current end of the binlog, and table shapes from ``information_schema``. Every
PyMySQL error is translated here (:func:`translate`), the one boundary for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pymysql
import pymysql.cursors

from tidesync.errors import SourceError, SourceTransientError
from tidesync.sources.mariadb.tables import TableShape, entity_name
from tidesync.sources.mariadb.types import from_information_schema

# Connection refused or lost, server shutting down, too many connections, lock waits: reopening may help.
_TRANSIENT = {1040, 1053, 1077, 1078, 1079, 1205, 1213, 1317, 1927, 2002, 2003, 2006, 2013, 2055}

REQUIRED = {
    "log_bin": ("ON", "log_bin = <basename> in the server's config, then restart it"),
    "binlog_format": ("ROW", "SET GLOBAL binlog_format = 'ROW' (and binlog_format = ROW in the config)"),
    "binlog_row_image": ("FULL", "SET GLOBAL binlog_row_image = 'FULL' (and in the config)"),
    "binlog_row_metadata": ("FULL", "SET GLOBAL binlog_row_metadata = 'FULL' (and in the config)"),
}


def translate(exc: BaseException, doing: str) -> SourceError:
    code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else None
    if isinstance(exc, (OSError, EOFError)) or code in _TRANSIENT or isinstance(exc, pymysql.err.InterfaceError):
        return SourceTransientError(f"{doing}: {exc}")
    return SourceError(f"{doing}: {exc}")


T = TypeVar("T")


def guarded(doing: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with its PyMySQL and socket errors translated (a server going down mid-query is transient)."""
    try:
        return fn(*args)
    except (pymysql.err.MySQLError, OSError, EOFError) as exc:
        raise translate(exc, doing) from exc


def connect(args: dict[str, Any], *, autocommit: bool = True) -> pymysql.connections.Connection[Any]:
    try:
        return pymysql.connect(**args, autocommit=autocommit, charset="utf8mb4", connect_timeout=10)
    except pymysql.err.MySQLError as exc:
        raise translate(exc, "cannot connect to the MariaDB/MySQL server") from exc


def query(conn: pymysql.connections.Connection[Any], sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


@dataclass(frozen=True, slots=True)
class ServerFacts:
    mariadb: bool
    version: str
    settings: dict[str, str]

    def problems(self) -> list[str]:
        out = []
        for name, (want, fix) in REQUIRED.items():
            have = self.settings.get(name, "")
            if have.upper() != want:
                out.append(f"{name} is {have or 'not set'}, needs {want}: {fix}")
        return out


def server_facts(conn: pymysql.connections.Connection[Any]) -> ServerFacts:
    version = str(query(conn, "SELECT VERSION()")[0][0])
    names = ", ".join(f"'{n}'" for n in REQUIRED)
    settings = {
        str(k).lower(): str(v) for k, v in query(conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
    }
    return ServerFacts("mariadb" in version.lower(), version, settings)


def binlog_files(conn: pymysql.connections.Connection[Any]) -> list[str]:
    """The binlog files the server still has, oldest first (needs REPLICATION CLIENT or BINLOG MONITOR)."""
    try:
        return [str(r[0]) for r in query(conn, "SHOW BINARY LOGS")]
    except pymysql.err.MySQLError as exc:
        raise translate(
            exc, "cannot list the binlog files (grant it: GRANT REPLICATION CLIENT ON *.* TO <user>)"
        ) from exc


def binlog_end(conn: pymysql.connections.Connection[Any]) -> tuple[str, int]:
    """The current end of the binlog: (file, offset) where the next transaction will start.

    ``SHOW MASTER STATUS``; MySQL 8.4 removed it for ``SHOW BINARY LOG STATUS`` (8.2+), asked when the
    first is a syntax error.
    """
    try:
        rows = query(conn, "SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError as exc:
        if not exc.args or exc.args[0] != 1064:  # ER_PARSE_ERROR: a server without the old statement
            raise
        rows = query(conn, "SHOW BINARY LOG STATUS")
    if not rows:
        raise SourceError("the server writes no binlog (SHOW MASTER STATUS is empty): set log_bin and restart it")
    return str(rows[0][0]), int(rows[0][1])


def gtid_states(conn: pymysql.connections.Connection[Any], oldest_file: str) -> tuple[str, str]:
    """MariaDB: the last GTID written per domain (``@@gtid_binlog_pos``), and the GTID state where the oldest
    binlog file still on the server starts (what a GTID resume can reach back to)."""
    rows = query(conn, "SELECT @@GLOBAL.gtid_binlog_pos, BINLOG_GTID_POS(%s, 4)", (oldest_file,))
    return str(rows[0][0] or ""), str(rows[0][1] or "")


def json_columns(conn: pymysql.connections.Connection[Any], database: str, table: str) -> frozenset[str]:
    """Columns holding JSON: MySQL's JSON type, or MariaDB's LONGTEXT with a ``json_valid`` check."""
    found = {
        str(r[0])
        for r in query(
            conn,
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s "
            "AND DATA_TYPE='json'",
            (database, table),
        )
    }
    try:
        checks = query(
            conn,
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA=%s AND TABLE_NAME=%s",
            (database, table),
        )
    except pymysql.err.MySQLError:
        checks = []  # MySQL names the column differently; its JSON columns are typed anyway
    for (clause,) in checks:
        text = str(clause)
        if text.lower().startswith("json_valid(`") and text.endswith("`)"):
            found.add(text[len("json_valid(`") : -2].replace("``", "`"))
    return frozenset(found)


def table_shape(conn: pymysql.connections.Connection[Any], database: str, table: str) -> TableShape:
    """The table as ``information_schema`` describes it now; SourceError when it is missing or has no primary key."""
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        rows = list(cur.fetchall())
    if not rows:
        raise SourceError(f"table {database}.{table} does not exist (or this user cannot see it)")
    key = tuple(
        str(r[0])
        for r in query(
            conn,
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s "
            "AND INDEX_NAME='PRIMARY' ORDER BY SEQ_IN_INDEX",
            (database, table),
        )
    )
    if not key:
        raise SourceError(f"table {database}.{table} has no primary key; the binlog source needs one to key its rows")
    jsons = json_columns(conn, database, table)
    cols = tuple(from_information_schema(r, jsons) for r in rows)
    return TableShape(entity_name(database, table), cols, key)
