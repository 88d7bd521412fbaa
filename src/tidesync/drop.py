"""``tidesync drop``: remove a stopped pipeline (or sync) and everything it keeps outside its process.

:func:`plan` reads what exists (slots, publications tidesync created for it,
replication origins, its state) and whether it is running; :func:`execute`
removes it in that order: server objects first, then the state, so a drop cut
short is finished by running it again (every step skips what is gone).

Running means an active replication slot, or a status of starting, running,
degraded, retrying, draining or paused written within :data:`FRESH` seconds (sources
without a slot show life only through the status the engine writes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg

from tidesync.config import LoadedConfig
from tidesync.errors import SourceError, TidesyncError
from tidesync.footprint import (
    OriginRef,
    SlotRef,
    check_owner,
    connect,
    human_bytes,
    origins_of,
    owners,
    reason,
    shared_scopes,
    slots_of,
    state_scopes,
)
from tidesync.sources.postgres.setup import (
    SlotUsage,
    drop_origin,
    drop_publication,
    drop_slot,
    publication_owner,
    slot_usage,
)
from tidesync.state.store import StateStore

FRESH = 60.0  # seconds: a "running" status older than this is taken for a process that died
_LIVE = {"starting", "running", "degraded", "retrying", "draining", "paused"}


@dataclass
class DropPlan:
    name: str
    slots: list[tuple[SlotRef, SlotUsage]] = field(default_factory=list)
    publications: list[SlotRef] = field(default_factory=list)  # created by tidesync for this pipeline
    kept: list[str] = field(default_factory=list)  # what stays, and why
    origins: list[OriginRef] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    state: list[str] = field(default_factory=list)  # what the state store holds, in words
    running: str | None = None

    def lines(self, state_url: str) -> list[str]:
        """What a drop removes, one line per object."""
        out = [
            f"replication slot {ref.slot} (retains {_retained(u)} of WAL) on {_where(ref.dsn)}" for ref, u in self.slots
        ]
        out += [f"publication {ref.publication} on {_where(ref.dsn)}" for ref in self.publications]
        out += [f"replication origin {o.name} on {_where(o.dsn)}" for o in self.origins]
        names = ", ".join([self.name, *self.scopes])
        held = ", ".join(self.state) if self.state else "nothing stored yet"
        out.append(f"state of {names} in {state_url}: {held}")
        return out


def _retained(u: SlotUsage) -> str:
    return human_bytes(u.retained_bytes) if u.retained_bytes is not None else "no position (invalidated)"


def _where(dsn: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "the source database"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or '?'}"


async def plan(loaded: LoadedConfig, name: str, store: StateStore) -> DropPlan:
    """What dropping ``name`` removes. Raises ConfigError for an unknown name or a missing source secret,
    SourceError when a source server cannot be asked (nothing is removed without knowing its slot)."""
    check_owner(loaded, name)
    p = DropPlan(name, scopes=state_scopes(loaded, name))
    p.kept += [f"state under {s} (another pipeline or sync uses it too)" for s in shared_scopes(loaded, name)]
    for ref in slots_of(loaded, name):
        loaded.require_secrets(*ref.loc)
        try:
            conn = await connect(ref.dsn)
            async with conn:
                usage = await slot_usage(conn, ref.slot)
                exists, owner = await publication_owner(conn, ref.publication)
        except psycopg.Error as exc:
            raise SourceError(f"cannot reach the source of {name} at {_where(ref.dsn)}: {reason(exc)}") from exc
        if usage is not None:
            p.slots.append((ref, usage))
            if usage.active and p.running is None:
                p.running = f"{name} is running: its replication slot {ref.slot} is active"
        if exists and owner == ref.context and not _shared_publication(loaded, ref):
            p.publications.append(ref)
        elif exists:
            who = f"created for pipeline {owner}" if owner else "not created by tidesync"
            if owner == ref.context:
                who = "another pipeline reads it too"
            p.kept.append(f"publication {ref.publication} ({who})")
    for origin in origins_of(loaded, name):
        loaded.require_secrets(*origin.loc)
        try:
            conn = await connect(origin.dsn)
            async with conn:
                cur = await conn.execute("SELECT 1 FROM pg_replication_origin WHERE roname = %s", (origin.name,))
                if await cur.fetchone() is not None:
                    p.origins.append(origin)
        except psycopg.Error as exc:
            raise SourceError(f"cannot reach {_where(origin.dsn)} for {name}: {reason(exc)}") from exc
    status = await store.status_get(name)
    if status is not None:
        if p.running is None and status.state in _LIVE and time.time() - status.updated_at < FRESH:
            p.running = f"{name} is {status.state} (status written {time.time() - status.updated_at:.0f}s ago)"
        p.state.append(f"status ({status.state}, {status.events_applied:,} events applied)")
    if await store.load_checkpoint(name) is not None:
        p.state.append("checkpoint")
    dead = await store.dlq_count(name)
    if dead:
        p.state.append(f"{dead} dead letter(s)")
    p.state.append("shadow rows, kv entries and intake journal rows, if any")
    return p


def _shared_publication(loaded: LoadedConfig, ref: SlotRef) -> bool:
    """Another pipeline or sync reads the same publication name from the same database."""
    for other in owners(loaded):
        if other == ref.owner:
            continue
        for o in slots_of(loaded, other):
            if o.publication == ref.publication and _where(o.dsn) == _where(ref.dsn):
                return True
    return False


async def execute(loaded: LoadedConfig, p: DropPlan, store: StateStore) -> list[str]:
    """Remove what ``p`` lists; return a line per object removed. Refuses a running pipeline."""
    if p.running:
        raise TidesyncError(f"{p.running}; stop it first")
    done: list[str] = []
    for ref, _ in p.slots:
        try:
            conn = await connect(ref.dsn)
            async with conn:
                if await drop_slot(conn, ref.slot):
                    done.append(f"dropped replication slot {ref.slot} on {_where(ref.dsn)}")
        except psycopg.errors.ObjectInUse as exc:
            raise TidesyncError(
                f"{p.name} started again: replication slot {ref.slot} is active; stop it first"
            ) from exc
        except psycopg.Error as exc:
            raise SourceError(f"cannot drop replication slot {ref.slot}: {reason(exc)}") from exc
    for ref in p.publications:
        try:
            conn = await connect(ref.dsn)
            async with conn:
                if await drop_publication(conn, ref.publication):
                    done.append(f"dropped publication {ref.publication} on {_where(ref.dsn)}")
        except psycopg.Error as exc:
            raise SourceError(f"cannot drop publication {ref.publication}: {reason(exc)}") from exc
    for origin in p.origins:
        try:
            conn = await connect(origin.dsn)
            async with conn:
                if await drop_origin(conn, origin.name):
                    done.append(f"dropped replication origin {origin.name} on {_where(origin.dsn)}")
        except psycopg.Error as exc:
            raise SourceError(f"cannot drop replication origin {origin.name}: {reason(exc)}") from exc
    counts = await store.remove_pipeline(p.name, p.scopes)
    removed = ", ".join(f"{what} {n}" for what, n in counts.items() if n) or "nothing was stored"
    done.append(f"removed state of {p.name} from {store.url}: {removed}")
    return done
