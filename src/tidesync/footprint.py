"""What a pipeline or sync leaves outside its running process, and the WAL its slots hold back.

A pipeline (or sync) owns, besides its state in the state store:

- per Postgres source, a replication slot (while it exists the server keeps
  every WAL segment after the slot's restart position, running or not) and
  the publication tidesync created for it, if it did;
- per Postgres side of a sync, a replication origin (tags its own writes).

:func:`slots_of`, :func:`origins_of` and :func:`state_scopes` read these from
the config (pure); :func:`read_slots` asks the source servers, each within a
short timeout, and reports a failure as a reason instead of raising.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from tidesync.config import LoadedConfig
from tidesync.errors import ConfigError
from tidesync.secrets import REDACTOR
from tidesync.sources.postgres.setup import SlotUsage, slot_usage

CONNECT_TIMEOUT = 3  # seconds; status must answer even when a source is down
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class SlotRef:
    """A Postgres source's slot and publication, as its config names them."""

    owner: str  # the pipeline or sync
    context: str  # the name the source ran under: the pipeline, or "<sync>.<side>"
    loc: Loc  # the source's key path in the config
    dsn: str
    slot: str
    publication: str


@dataclass(frozen=True, slots=True)
class OriginRef:
    owner: str
    loc: Loc
    dsn: str
    name: str


@dataclass(frozen=True, slots=True)
class SlotReading:
    ref: SlotRef
    usage: SlotUsage | None = None  # None with no error: the slot does not exist
    error: str | None = None


def _sources(loaded: LoadedConfig, name: str) -> Iterator[tuple[str, Loc, Any]]:
    """(context name, key path, source model) of every source of pipeline or sync ``name``."""
    for p in loaded.pipelines:
        if p.name == name:  # a fan-out sink's pipeline reads through its parent's source (and slot)
            yield p.fanout or name, ("pipelines", p.index, "source"), p.source
    for i, s in enumerate(loaded.syncs):
        if s.name == name:
            yield f"{name}.a", ("syncs", i, "a"), s.a_source
            yield f"{name}.b", ("syncs", i, "b"), s.b_source


def owners(loaded: LoadedConfig) -> list[str]:
    return [p.name for p in loaded.pipelines] + [s.name for s in loaded.syncs]


def check_owner(loaded: LoadedConfig, name: str) -> None:
    if name not in owners(loaded):
        known = ", ".join(owners(loaded)) or "none"
        raise ConfigError(f"no pipeline or sync named {name!r}; known: {known}")


def slots_of(loaded: LoadedConfig, name: str) -> list[SlotRef]:
    out = []
    for context, loc, source in _sources(loaded, name):
        if getattr(source, "type", None) == "postgres":
            out.append(
                SlotRef(
                    name, context, loc, str(source.dsn), source.slot_name(context), source.publication_name(context)
                )
            )
    return out


def origins_of(loaded: LoadedConfig, name: str) -> list[OriginRef]:
    from tidesync.sync.build import is_postgres, origin_name, side_dsn

    out = []
    for i, s in enumerate(loaded.syncs):
        if s.name != name:
            continue
        for side, cfg, source in (("a", s.config.a, s.a_source), ("b", s.config.b, s.b_source)):
            try:
                dsn = side_dsn(cfg, source)
            except ConfigError:
                continue
            if is_postgres(dsn):
                out.append(OriginRef(name, ("syncs", i, side), dsn, origin_name(name, side)))
    return out


def _scopes_of(loaded: LoadedConfig, name: str) -> set[str]:
    scopes = {name}
    if name in {s.name for s in loaded.syncs}:
        scopes.add(f"sync:{name}")
    for context, _, source in _sources(loaded, name):
        scopes.add(context)
        if getattr(source, "type", None) == "hybrid":
            scopes |= {f"hybrid:{context}", f"hybrid:{context}:order"}
        for part in (source, getattr(source, "primary", None), getattr(source, "fallback", None)):
            if part is None:
                continue
            if getattr(part, "shadow_scope", None):
                scopes.add(str(part.shadow_scope))
            if getattr(part, "type", None) == "webhook":
                route = getattr(part, "name", None) or context
                scopes |= {route, f"webhook:{route}"}
    return scopes


def state_scopes(loaded: LoadedConfig, name: str) -> list[str]:
    """The names ``name``'s parts key state by (for ``remove_pipeline``), less any another entry also uses."""
    others: set[str] = set()
    for other in owners(loaded):
        if other != name:
            others |= _scopes_of(loaded, other)
    return sorted(_scopes_of(loaded, name) - others - {name})


def shared_scopes(loaded: LoadedConfig, name: str) -> list[str]:
    """Scopes of ``name`` that another pipeline or sync uses as well (kept by a drop)."""
    others: set[str] = set()
    for other in owners(loaded):
        if other != name:
            others |= _scopes_of(loaded, other)
    return sorted(_scopes_of(loaded, name) & others)


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    from tidesync.sources.postgres.catalog import session_dsn

    return await psycopg.AsyncConnection.connect(
        session_dsn(dsn, connect_timeout=CONNECT_TIMEOUT, application_name="tidesync-cli"), autocommit=True
    )


def reason(exc: BaseException) -> str:
    """A one-line, secret-free reason for a failed source query."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT}s"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return REDACTOR.redact(text)


async def read_slot(loaded: LoadedConfig, ref: SlotRef) -> SlotReading:
    """The slot's usage, or why it could not be read (a missing secret, an unreachable server)."""
    problems = loaded.unresolved(*ref.loc)
    if problems:
        return SlotReading(ref, error=problems[0].rsplit(": ", 1)[-1])
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT + 2):
            conn = await connect(ref.dsn)
            async with conn:
                return SlotReading(ref, await slot_usage(conn, ref.slot))
    except Exception as exc:  # whatever goes wrong, status still answers for the other pipelines
        return SlotReading(ref, error=reason(exc))


async def read_slots(loaded: LoadedConfig, names: list[str]) -> dict[str, list[SlotReading]]:
    """Per pipeline or sync in ``names``, its slots' readings (sources read concurrently)."""
    refs = [ref for name in names for ref in slots_of(loaded, name)]
    readings = await asyncio.gather(*(read_slot(loaded, ref) for ref in refs))
    out: dict[str, list[SlotReading]] = {name: [] for name in names}
    for r in readings:
        out[r.ref.owner].append(r)
    return out


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
