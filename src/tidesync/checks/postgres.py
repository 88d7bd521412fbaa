"""The Postgres source: wal_level, the REPLICATION grant, slot and sender room, the tables, the publication.

Reuses the source's own start-up checks (:mod:`tidesync.sources.postgres.setup`), so
``--check`` and ``tidesync run`` word a problem and its fix the same way.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tidesync.checks import Check, Endpoint
from tidesync.sources.postgres import setup


def _ident(name: str) -> str:
    return setup._ident(name)


async def check_source(endpoint: Endpoint) -> list[Check]:
    cfg = endpoint.config
    try:
        conn = await psycopg.AsyncConnection.connect(str(cfg.dsn), autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        return [
            endpoint.check(
                "reachable",
                "fail",
                f"cannot connect: {str(exc).strip()}",
                f"fix {endpoint.where}.dsn, or start the server",
            )
        ]
    try:
        facts = await setup.gather(conn, list(cfg.tables))
        out = [endpoint.ok("reachable", f"PostgreSQL {facts.server_version // 10000}, database {facts.database}")]
        out += _settings(endpoint, facts)
        out += await _room(endpoint, conn, cfg.slot_name(endpoint.context), facts.database)
        out += _tables(endpoint, facts)
        out += await _publication(endpoint, conn, cfg.publication_name(endpoint.context), facts)
        return out
    finally:
        await conn.close()


def _settings(e: Endpoint, facts: setup.SetupFacts) -> list[Check]:
    out = []
    if facts.wal_level == "logical":
        out.append(e.ok("wal_level", "logical"))
    else:
        out.append(
            e.check(
                "wal_level",
                "fail",
                f"wal_level is {facts.wal_level!r}, logical replication needs logical",
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
            )
        )
    if facts.can_replicate:
        out.append(e.ok("replication role", f"role {facts.user} may replicate"))
    else:
        out.append(
            e.check(
                "replication role",
                "fail",
                f"role {facts.user} has no REPLICATION attribute",
                f"ALTER ROLE {_ident(facts.user)} WITH REPLICATION;  -- as a superuser",
            )
        )
    return out


async def _room(e: Endpoint, conn: psycopg.AsyncConnection[Any], slot: str, database: str) -> list[Check]:
    cur = await conn.execute(
        "SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots),"
        " current_setting('max_wal_senders')::int,"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')"
    )
    max_slots, used_slots, max_senders, used_senders = await cur.fetchone()  # type: ignore[misc]
    out = []
    state = await setup.slot_state(conn, slot)
    if state is not None:
        problem = setup.slot_problem(state, database)
        if problem is None:
            out.append(e.ok("replication slot", f"slot {slot} exists (resumes there)"))
        else:
            out.append(e.check("replication slot", "fail", problem, f"choose another `slot` in {e.where}"))
    elif used_slots < max_slots:
        out.append(
            e.ok("replication slot", f"slot {slot} will be created ({max_slots - used_slots} of {max_slots} free)")
        )
    else:
        out.append(
            e.check(
                "replication slot",
                "fail",
                f"all {max_slots} replication slots are in use",
                f"ALTER SYSTEM SET max_replication_slots = {max_slots + 1}; then restart PostgreSQL "
                "(or drop an unused slot: SELECT pg_drop_replication_slot('name');)",
            )
        )
    if used_senders < max_senders:
        out.append(e.ok("wal senders", f"{max_senders - used_senders} of {max_senders} free"))
    else:
        out.append(
            e.check(
                "wal senders",
                "fail",
                f"all {max_senders} WAL senders are in use",
                f"ALTER SYSTEM SET max_wal_senders = {max_senders + 1}; then restart PostgreSQL",
            )
        )
    return out


def _tables(e: Endpoint, facts: setup.SetupFacts) -> list[Check]:
    out = []
    for t in facts.tables:
        name = f"table {t.configured}"
        if t.oid is None:
            out.append(
                e.check(
                    name, "fail", f"does not exist in database {facts.database}", f"create it, or fix {e.where}.tables"
                )
            )
        elif not t.is_table:
            out.append(
                e.check(
                    name,
                    "fail",
                    f"{t.entity} is not a table (views cannot be captured)",
                    f"remove it from {e.where}.tables",
                )
            )
        elif not t.can_select:
            out.append(
                e.check(
                    name,
                    "fail",
                    f"role {facts.user} cannot read it",
                    f"GRANT SELECT ON {t.qualified} TO {_ident(facts.user)};",
                )
            )
        elif t.replica_identity == "n" or (t.replica_identity == "d" and not t.has_primary_key):
            out.append(
                e.check(
                    name,
                    "warn",
                    "no primary key or replica identity: only inserts are captured",
                    f"add a primary key, or ALTER TABLE {t.qualified} REPLICA IDENTITY FULL;",
                )
            )
        else:
            how = "primary key" if t.has_primary_key and t.replica_identity == "d" else "replica identity"
            out.append(e.ok(name, f"exists, keyed by its {how}"))
    return out


async def _publication(
    e: Endpoint, conn: psycopg.AsyncConnection[Any], name: str, facts: setup.SetupFacts
) -> list[Check]:
    present = [t for t in facts.tables if t.oid is not None]
    listed = ", ".join(t.qualified for t in present) or "<tables>"
    cur = await conn.execute(
        "SELECT p.puballtables, obj_description(p.oid, 'pg_publication') FROM pg_publication p WHERE p.pubname = %s",
        (name,),
    )
    row = await cur.fetchone()
    if row is not None:
        all_tables, comment = row
        cur = await conn.execute(
            "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables WHERE pubname = %s", (name,)
        )
        published = {r[0] for r in await cur.fetchall()}
        missing = [t.qualified for t in present if t.qualified not in published]
        if all_tables or not missing:
            return [e.ok("publication", f"{name} exists and covers the tables")]
        if (comment or "").startswith(setup.PUBLICATION_MARK):
            return [e.ok("publication", f"{name} exists; tidesync adds {', '.join(missing)} at start")]
        return [
            e.check(
                "publication",
                "fail",
                f"{name} exists but lacks {', '.join(missing)}",
                f"ALTER PUBLICATION {_ident(name)} ADD TABLE {', '.join(missing)};",
            )
        ]
    # CREATE PUBLICATION ... FOR TABLE needs CREATE on the database and ownership of every table.
    cur = await conn.execute(
        "SELECT rolsuper OR (has_database_privilege(current_database(), 'CREATE') AND NOT EXISTS ("
        "  SELECT 1 FROM pg_class c WHERE c.oid = ANY(%s::int8[]::oid[]) AND NOT pg_has_role(c.relowner, 'USAGE')))"
        " FROM pg_roles WHERE rolname = current_user",
        ([t.oid for t in present],),
    )
    can = (await cur.fetchone() or (False,))[0]
    if can:
        return [e.ok("publication", f"{name} will be created at start")]
    return [
        e.check(
            "publication",
            "fail",
            f"{name} does not exist and role {facts.user} cannot create it",
            f"as the tables' owner: CREATE PUBLICATION {_ident(name)} FOR TABLE {listed}; "
            f"and set publication: {name} in {e.where}",
        )
    ]
