"""The SQL sinks (postgres, mariadb/mysql, sqlite): reachable, destination tables present or creatable, writable.

The tables checked are those the source's entities map to (``tables:``, else the
name derived from the entity, as the sink resolves it) and every table named in
``tables:``. A source whose entities are known only from its events (webhooks,
APIs) leaves only ``tables:`` to check. Write permission is checked on Postgres
(``has_table_privilege``); on MariaDB and SQLite it is not (no cheap, exact test).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from tidesync.checks import Check, Endpoint
from tidesync.sinks.sql.tables import TableName, resolve_table, split_name


def wanted_tables(e: Endpoint) -> list[TableName]:
    cfg = e.config
    keep_schema = e.type == "postgres"
    out: list[TableName] = []
    for entity in e.entities or ():
        out.append(resolve_table(entity, cfg.tables, keep_schema=keep_schema))
    out += [split_name(t) for t in cfg.tables.values()]
    return list(dict.fromkeys(out))


def _missing(e: Endpoint, table: TableName) -> Check:
    return e.check(
        f"table {table}",
        "fail",
        "does not exist and create_tables is off",
        f"set create_tables: true in {e.where}, or create table {table} before starting",
    )


def _unknown(e: Endpoint) -> list[Check]:
    if e.config.create_tables:
        return [e.ok("tables", "named by the events; missing ones are created (create_tables)")]
    return [
        e.check(
            "tables",
            "warn",
            "the source's entities are known only from its events; a missing table blocks the pipeline",
            f"set create_tables: true in {e.where}, or list the tables in {e.where}.tables",
        )
    ]


async def check_sink(endpoint: Endpoint) -> list[Check]:
    if endpoint.type == "postgres":
        return await _postgres(endpoint)
    if endpoint.type == "sqlite":
        return await asyncio.to_thread(_sqlite, endpoint)
    return await asyncio.to_thread(_mariadb, endpoint)


async def _postgres(e: Endpoint) -> list[Check]:
    cfg = e.config
    try:
        conn = await psycopg.AsyncConnection.connect(
            str(cfg.dsn), autocommit=True, connect_timeout=max(1, int(cfg.connect_timeout))
        )
    except psycopg.Error as exc:
        return [
            e.check(
                "reachable", "fail", f"cannot connect: {str(exc).strip()}", f"fix {e.where}.dsn, or start the server"
            )
        ]
    try:
        cur = await conn.execute("SELECT current_user, current_database(), current_schema()")
        user, database, default_schema = await cur.fetchone()  # type: ignore[misc]
        out = [e.ok("reachable", f"database {database} as {user}")]
        tables = wanted_tables(e)
        if not tables:
            return out + _unknown(e)
        for t in tables:
            qualified = f'"{t.schema}"."{t.name}"' if t.schema else f'"{t.name}"'
            cur = await conn.execute(
                "SELECT has_table_privilege(c.oid, 'INSERT') AND has_table_privilege(c.oid, 'UPDATE')"
                " AND has_table_privilege(c.oid, 'DELETE') FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (qualified,),
            )
            row = await cur.fetchone()
            if row is not None:
                if row[0]:
                    out.append(e.ok(f"table {t}", "exists, writable"))
                else:
                    out.append(
                        e.check(
                            f"table {t}",
                            "fail",
                            f"{user} may not write it",
                            f'GRANT INSERT, UPDATE, DELETE ON {qualified} TO "{user}";',
                        )
                    )
                continue
            if not cfg.create_tables:
                out.append(_missing(e, t))
                continue
            schema = t.schema or default_schema
            cur = await conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (schema,))
            if (await cur.fetchone() or (False,))[0]:
                out.append(e.ok(f"table {t}", "missing; created at start (create_tables)"))
            else:
                out.append(
                    e.check(
                        f"table {t}",
                        "fail",
                        f"missing, and {user} may not create it in schema {schema}",
                        f'GRANT CREATE ON SCHEMA "{schema}" TO "{user}";',
                    )
                )
        return out
    finally:
        await conn.close()


def _mariadb(e: Endpoint) -> list[Check]:
    from tidesync.sinks.sql.mariadb import parse_dsn

    args = parse_dsn(str(e.config.dsn))
    try:
        conn = _pymysql_connect(args, e.config.connect_timeout)
    except Exception as exc:
        return [e.check("reachable", "fail", f"cannot connect: {exc}", f"fix {e.where}.dsn, or start the server")]
    try:
        out = [e.ok("reachable", f"database {args['database']} as {args['user']}")]
        tables = wanted_tables(e)
        if not tables:
            return out + _unknown(e)
        with conn.cursor() as cur:
            for t in tables:
                cur.execute(
                    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s",
                    (t.schema or args["database"], t.name),
                )
                if cur.fetchone() is not None:
                    out.append(e.ok(f"table {t}", "exists"))
                elif e.config.create_tables:
                    out.append(e.ok(f"table {t}", "missing; created at start (create_tables)"))
                else:
                    out.append(_missing(e, t))
        return out
    finally:
        conn.close()


def _pymysql_connect(args: dict[str, Any], timeout: float) -> Any:
    import pymysql

    return pymysql.connect(**{"connect_timeout": max(1, int(timeout)), **args})


def _sqlite(e: Endpoint) -> list[Check]:
    path = Path(e.config.path)
    tables = wanted_tables(e)
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not os.access(parent if parent.exists() else Path("."), os.W_OK):
            return [
                e.check(
                    "reachable",
                    "fail",
                    f"{path} does not exist and its directory is not writable",
                    f"fix {e.where}.path, or make {parent} writable",
                )
            ]
        out = [e.ok("reachable", f"{path} will be created")]
        existing: set[str] = set()
    else:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                existing = {
                    str(r[0]).lower() for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return [e.check("reachable", "fail", f"cannot read {path}: {exc}", f"fix {e.where}.path")]
        if not os.access(path, os.W_OK):
            return [e.check("writable", "fail", f"{path} is read-only", f"make {path} writable by this user")]
        out = [e.ok("reachable", f"{path}, writable")]
    if not tables:
        return out + _unknown(e)
    for t in tables:
        if t.name.lower() in existing:
            out.append(e.ok(f"table {t}", "exists"))
        elif e.config.create_tables:
            out.append(e.ok(f"table {t}", "missing; created at start (create_tables)"))
        else:
            out.append(_missing(e, t))
    return out
