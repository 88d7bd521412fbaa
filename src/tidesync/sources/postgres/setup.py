"""Checks before capture starts, each failing with what to change in plain words; the publication; the slot.

:func:`gather` reads the facts in a few queries, :func:`problems` (pure) turns
them into sentences, :func:`ensure_publication` creates or extends the
publication, :func:`slot_state` reads the replication slot.

Ownership: a publication tidesync creates carries the comment
``created by tidesync for pipeline <name>`` (kept by the server across
restarts); :func:`publication_owner` reads it back, so ``tidesync drop`` removes
only publications it created for that pipeline. :func:`slot_usage` reads how
much WAL a slot holds back; the ``drop_*`` helpers remove what a pipeline left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from tidesync.errors import SourceError
from tidesync.sources.postgres.errors import translate
from tidesync.sources.postgres.pgoutput import str_to_lsn

PUBLICATION_MARK = "created by tidesync for pipeline "


@dataclass(frozen=True, slots=True)
class TableFacts:
    configured: str  # as written in the config
    oid: int | None  # None: no such table
    entity: str = ""
    qualified: str = ""  # quoted schema.table
    replica_identity: str = "d"
    has_primary_key: bool = False
    can_select: bool = True
    is_table: bool = True


@dataclass(frozen=True, slots=True)
class SetupFacts:
    server_version: int
    wal_level: str
    user: str
    can_replicate: bool
    encoding: str
    database: str
    tables: tuple[TableFacts, ...]


async def gather(conn: psycopg.AsyncConnection[Any], tables: list[str]) -> SetupFacts:
    try:
        cur = await conn.execute(
            "SELECT current_setting('server_version_num')::int, current_setting('wal_level'), current_user,"
            " (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),"
            " current_setting('server_encoding'), current_database()"
        )
        version, wal_level, user, can_replicate, encoding, database = await cur.fetchone()  # type: ignore[misc]
        facts = []
        for name in tables:
            facts.append(await _table(conn, name))
    except psycopg.Error as exc:
        raise translate(exc, "cannot inspect the source database") from exc
    return SetupFacts(version, wal_level, user, bool(can_replicate), encoding, database, tuple(facts))


def _regclass_text(name: str) -> str:
    # a bare name means public.name, whatever the search_path says
    return name if "." in name else f"public.{name}"


async def _table(conn: psycopg.AsyncConnection[Any], name: str) -> TableFacts:
    try:
        cur = await conn.execute("SELECT to_regclass(%s)::oid::int8", (_regclass_text(name),))
        row = await cur.fetchone()
    except psycopg.errors.InvalidName:
        return TableFacts(name, None)
    oid = row[0] if row else None
    if oid is None:
        return TableFacts(name, None)
    cur = await conn.execute(
        "SELECT n.nspname || '.' || c.relname, format('%%I.%%I', n.nspname, c.relname), c.relreplident::text,"
        " EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),"
        " has_table_privilege(c.oid, 'SELECT'), c.relkind IN ('r', 'p')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s::int8::oid",
        (oid,),
    )
    entity, qualified, ident, has_pk, can_select, is_table = await cur.fetchone()  # type: ignore[misc]
    return TableFacts(name, oid, entity, qualified, ident, has_pk, can_select, is_table)


def problems(facts: SetupFacts, *, proto_version: int | None = None) -> list[str]:
    """Everything that stops capture, each with the statement that fixes it."""
    out: list[str] = []
    if facts.server_version < 130000:
        out.append(
            f"PostgreSQL {facts.server_version // 10000} is too old: tidesync captures changes from 13 and newer."
        )
    if proto_version == 2 and facts.server_version < 140000:
        out.append("pgoutput protocol version 2 needs PostgreSQL 14 or newer: set proto_version: 1.")
    if facts.wal_level != "logical":
        out.append(
            f"wal_level is {facts.wal_level!r}, but logical replication needs 'logical'. "
            "Run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL."
        )
    if not facts.can_replicate:
        out.append(
            f"role {facts.user!r} may not use replication. As a superuser, run: "
            f"ALTER ROLE {_ident(facts.user)} WITH REPLICATION;"
        )
    for t in facts.tables:
        if t.oid is None:
            out.append(f"table {t.configured!r} does not exist in database {facts.database!r} (check `tables`).")
            continue
        if not t.is_table:
            out.append(f"{t.entity} is not a table (views cannot be captured).")
            continue
        if not t.can_select:
            grant = f"GRANT SELECT ON {t.qualified} TO {_ident(facts.user)};"
            out.append(f"role {facts.user!r} cannot read {t.entity}. Run: {grant}")
    if facts.encoding not in _known_encodings():
        out.append(f"database encoding {facts.encoding} is not supported; use UTF8.")
    return out


def warnings(facts: SetupFacts) -> list[str]:
    """What does not stop capture but the user must know: tables whose updates and deletes carry no key.

    Such a table can still be captured append-only (inserts; pgbench_history is
    one). While it is in the publication, PostgreSQL itself refuses UPDATE and
    DELETE on it ("does not have a replica identity"), so no keyless change can
    slip through unnoticed.
    """
    out: list[str] = []
    for t in facts.tables:
        if t.oid is None or not t.is_table:
            continue
        if t.replica_identity == "n" or (t.replica_identity == "d" and not t.has_primary_key):
            why = (
                "REPLICA IDENTITY NOTHING"
                if t.replica_identity == "n"
                else "no primary key and REPLICA IDENTITY DEFAULT"
            )
            out.append(
                f"table {t.entity} has {why}, so only its inserts are captured and PostgreSQL refuses its "
                f"updates and deletes while it is published. Add a primary key, or run: "
                f"ALTER TABLE {t.qualified} REPLICA IDENTITY FULL;"
            )
    return out


def _known_encodings() -> set[str]:
    from tidesync.sources.postgres.catalog import ENCODINGS

    return set(ENCODINGS)


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


async def ensure_publication(
    conn: psycopg.AsyncConnection[Any], name: str, tables: tuple[TableFacts, ...], pipeline: str
) -> None:
    """Use publication ``name`` if it exists (adding missing tables when tidesync created it), else create it."""
    pub = sql.Identifier(name)
    cur = await conn.execute(
        "SELECT p.puballtables, obj_description(p.oid, 'pg_publication') FROM pg_publication p WHERE p.pubname = %s",
        (name,),
    )
    row = await cur.fetchone()
    wanted = [t for t in tables if t.oid is not None]
    if row is None:
        tables_sql = sql.SQL(", ").join(sql.SQL(t.qualified) for t in wanted)
        try:
            async with conn.transaction():
                await conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(pub, tables_sql))
                await conn.execute(
                    sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(pub, sql.Literal(PUBLICATION_MARK + pipeline))
                )
        except psycopg.errors.InsufficientPrivilege as exc:
            listed = ", ".join(t.qualified for t in wanted)
            raise SourceError(
                f"cannot create publication {name!r}: {exc}. Creating a publication needs ownership of its "
                f"tables. As their owner run: CREATE PUBLICATION {_ident(name)} FOR TABLE {listed}; "
                f"and set publication: {name} in the source config."
            ) from exc
        except psycopg.errors.DuplicateObject:
            pass  # created concurrently by another worker of the same pipeline
        except psycopg.Error as exc:
            raise translate(exc, f"cannot create publication {name!r}") from exc
        return
    all_tables, comment = row
    if all_tables:
        return
    cur = await conn.execute(
        "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables WHERE pubname = %s", (name,)
    )
    present = {r[0] for r in await cur.fetchall()}
    missing = [t for t in wanted if t.qualified not in present]
    if not missing:
        return
    if not (comment or "").startswith(PUBLICATION_MARK):
        listed = ", ".join(t.qualified for t in missing)
        raise SourceError(
            f"publication {name!r} does not include {listed}. Run: ALTER PUBLICATION {_ident(name)} ADD TABLE {listed};"
        )
    try:
        await conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                pub, sql.SQL(", ").join(sql.SQL(t.qualified) for t in missing)
            )
        )
    except psycopg.Error as exc:
        raise translate(exc, f"cannot add tables to publication {name!r}") from exc


@dataclass(frozen=True, slots=True)
class SlotState:
    name: str
    plugin: str | None
    database: str | None
    active_pid: int | None
    wal_status: str | None
    restart_lsn: int | None
    confirmed_flush_lsn: int | None


async def slot_state(conn: psycopg.AsyncConnection[Any], name: str) -> SlotState | None:
    cur = await conn.execute(
        "SELECT slot_name::text, plugin::text, database::text, active_pid, wal_status,"
        " restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    slot, plugin, database, pid, wal_status, restart, confirmed = row
    return SlotState(
        slot,
        plugin,
        database,
        pid,
        wal_status,
        str_to_lsn(restart) if restart else None,
        str_to_lsn(confirmed) if confirmed else None,
    )


def slot_problem(slot: SlotState, database: str) -> str | None:
    """Why an existing slot cannot be used, or None."""
    name = f"replication slot {slot.name!r}"
    if slot.plugin != "pgoutput":
        return f"{name} exists but uses plugin {slot.plugin!r}, not pgoutput; choose another `slot`."
    if slot.database != database:
        return f"{name} belongs to database {slot.database!r}, not {database!r}; choose another `slot`."
    if slot.wal_status == "lost":
        return (
            f"replication slot {slot.name!r} was invalidated: the server removed WAL it still needed "
            "(max_slot_wal_keep_size). Changes since the checkpoint are gone; tidesync will not restart "
            "silently from scratch. Drop the slot and reset the pipeline's checkpoint to take a new snapshot."
        )
    return None


async def publication_owner(conn: psycopg.AsyncConnection[Any], name: str) -> tuple[bool, str | None]:
    """(whether publication ``name`` exists, the pipeline tidesync created it for or None)."""
    cur = await conn.execute(
        "SELECT obj_description(p.oid, 'pg_publication') FROM pg_publication p WHERE p.pubname = %s", (name,)
    )
    row = await cur.fetchone()
    if row is None:
        return False, None
    comment = row[0] or ""
    return True, comment[len(PUBLICATION_MARK) :] if comment.startswith(PUBLICATION_MARK) else None


@dataclass(frozen=True, slots=True)
class SlotUsage:
    """A replication slot and the WAL it keeps the server from recycling."""

    name: str
    active: bool
    retained_bytes: int | None  # None: the slot holds no WAL position (invalidated)
    wal_status: str | None


async def slot_usage(conn: psycopg.AsyncConnection[Any], name: str) -> SlotUsage | None:
    cur = await conn.execute(
        "SELECT slot_name::text, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8, wal_status"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    slot, active, retained, wal_status = row
    return SlotUsage(slot, bool(active), None if retained is None else max(0, int(retained)), wal_status)


async def drop_slot(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    """Drop replication slot ``name``; False if there was none. An active slot fails (ObjectInUse)."""
    cur = await conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (name,)
    )
    return await cur.fetchone() is not None


async def drop_publication(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    existed, _ = await publication_owner(conn, name)
    await conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    return existed


async def drop_origin(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    """Drop replication origin ``name``; False if there was none."""
    cur = await conn.execute(
        "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = %s", (name,)
    )
    return await cur.fetchone() is not None
