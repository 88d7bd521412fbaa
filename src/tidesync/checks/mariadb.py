"""The MariaDB/MySQL binlog source: log_bin, the binlog format settings, the replication grants, the tables.

Uses the source's own queries (:mod:`tidesync.sources.mariadb.server`, PyMySQL in a
thread), so the settings and their fixes read as they do when ``tidesync run`` refuses to start.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pymysql

from tidesync.checks import Check, Endpoint
from tidesync.errors import SourceError
from tidesync.sources.mariadb import server

# In SHOW GRANTS, MariaDB 10.5+ writes REPLICATION CLIENT as BINLOG MONITOR.
_SLAVE = ("REPLICATION SLAVE", "ALL PRIVILEGES")
_CLIENT = ("REPLICATION CLIENT", "BINLOG MONITOR", "ALL PRIVILEGES")


def granted(grants: list[str], names: tuple[str, ...]) -> bool:
    """Whether a global (``ON *.*``) grant among ``grants`` includes one of ``names``."""
    for g in grants:
        m = re.match(r"GRANT (.+?) ON \*\.\* TO ", g, re.IGNORECASE)
        if m and any(n in m.group(1).upper() for n in names):
            return True
    return False


def account(current_user: str) -> str:
    """``user@host`` (CURRENT_USER()) as a GRANT names it: ``'user'@'host'``."""
    user, _, host = current_user.rpartition("@")
    return f"'{user}'@'{host}'"


async def check_source(endpoint: Endpoint) -> list[Check]:
    return await asyncio.to_thread(_check, endpoint)


def _check(e: Endpoint) -> list[Check]:
    cfg = e.config
    try:
        conn = server.connect(cfg.connect_args())
    except SourceError as exc:
        return [e.check("reachable", "fail", str(exc), f"fix {e.where}.dsn, or start the server")]
    try:
        return _facts(e, conn, cfg)
    finally:
        conn.close()


def _facts(e: Endpoint, conn: Any, cfg: Any) -> list[Check]:
    facts = server.server_facts(conn)
    out = [e.ok("reachable", f"{'MariaDB' if facts.mariadb else 'MySQL'} {facts.version}")]
    for name, (want, fix) in server.REQUIRED.items():
        have = facts.settings.get(name, "")
        if have.upper() == want:
            out.append(e.ok(name, want))
        else:
            out.append(e.check(name, "fail", f"is {have or 'not set'}, the binlog source needs {want}", fix))
    user = str(server.query(conn, "SELECT CURRENT_USER()")[0][0])
    grants = [str(r[0]) for r in server.query(conn, "SHOW GRANTS")]
    for privilege, names in (("REPLICATION SLAVE", _SLAVE), ("REPLICATION CLIENT", _CLIENT)):
        if granted(grants, names):
            out.append(e.ok(f"grant {privilege}", f"{user} has it"))
        else:
            out.append(
                e.check(
                    f"grant {privilege}",
                    "fail",
                    f"{user} lacks {privilege}",
                    f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {account(user)};",
                )
            )
    for database, table in cfg.qualified_tables():
        name = f"table {database}.{table}"
        try:
            server.table_shape(conn, database, table)
        except SourceError as exc:
            fix = "add a primary key" if "primary key" in str(exc) else f"create it, or fix {e.where}.tables"
            out.append(e.check(name, "fail", str(exc).removeprefix(f"table {database}.{table} "), fix))
        except pymysql.err.MySQLError as exc:
            out.append(
                e.check(
                    name, "fail", f"cannot read its shape: {exc}", f"GRANT SELECT ON `{database}`.* TO {account(user)};"
                )
            )
        else:
            out.append(e.ok(name, "exists, with a primary key"))
    return out
