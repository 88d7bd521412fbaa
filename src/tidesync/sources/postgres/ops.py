"""Operations on a source's replication resources: slot lag, and dropping slot and publication."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tidesync.errors import SourceError
from tidesync.sources.postgres.catalog import connect
from tidesync.sources.postgres.config import PostgresSourceConfig
from tidesync.sources.postgres.errors import translate
from tidesync.sources.postgres.setup import PUBLICATION_MARK


@dataclass(frozen=True, slots=True)
class SlotLag:
    """How far a slot is behind.

    ``retained_wal_bytes``: WAL the server keeps for the slot (current WAL
    position minus ``restart_lsn``): disk the slot costs. ``unconfirmed_bytes``:
    WAL after the last confirmed flush position. ``lag_seconds``: age of the
    newest commit the source has read while more is waiting (0 when caught up).
    """

    slot: str
    exists: bool
    active: bool = False
    wal_status: str | None = None
    retained_wal_bytes: int | None = None
    unconfirmed_bytes: int | None = None
    lag_seconds: float | None = None

    def with_lag_seconds(self, seconds: float) -> SlotLag:
        return dataclasses.replace(self, lag_seconds=seconds)


async def slot_lag(dsn: str, slot: str) -> SlotLag:
    conn = await connect(dsn)
    try:
        cur = await conn.execute(
            "SELECT active, wal_status,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        row = await cur.fetchone()
    except psycopg.Error as exc:
        raise translate(exc, "cannot read the replication slot") from exc
    finally:
        await conn.close()
    if row is None:
        return SlotLag(slot, False)
    active, wal_status, retained, unconfirmed = row
    return SlotLag(slot, True, bool(active), wal_status, retained, unconfirmed)


async def drop_replication(config: PostgresSourceConfig, pipeline: str) -> str:
    """Drop the pipeline's replication slot, and its publication when tidesync created it.

    Returns what was done, in words. Raises SourceError when the slot is in use
    (stop the pipeline first). A publication that tidesync did not create is
    left in place.
    """
    slot = config.slot_name(pipeline)
    publication = config.publication_name(pipeline)
    done: list[str] = []
    conn: Any = await connect(config.dsn)
    try:
        cur = await conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = await cur.fetchone()
        if row is None:
            done.append(f"no replication slot {slot}")
        elif row[0] is not None:
            raise SourceError(f"replication slot {slot} is in use by server process {row[0]}; stop the pipeline first")
        else:
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            done.append(f"dropped replication slot {slot}")
        cur = await conn.execute(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s", (publication,)
        )
        row = await cur.fetchone()
        if row is None:
            done.append(f"no publication {publication}")
        elif (row[0] or "").startswith(PUBLICATION_MARK):
            await conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)))
            done.append(f"dropped publication {publication}")
        else:
            done.append(f"left publication {publication} in place (not created by tidesync)")
    except psycopg.Error as exc:
        raise translate(exc, "cannot drop replication resources") from exc
    finally:
        await conn.close()
    shutil.rmtree(Path(config.work_dir) / slot, ignore_errors=True)
    return "; ".join(done)
