"""The review queue of two-way syncs as people see it: pending conflicts, the history, resolution requests.

:class:`ConflictQueue` is what the CLI, the admin API and the health readings
use; the state-store layout behind it is :mod:`.store_layout`'s, and nothing
outside the sync package needs to know it. It needs only the store's
key-value space (:class:`~tidesync.state.store.KeyValues`).

It reads every sync's entries but writes only what a person decides: a
resolution request (with ``remember``, a rule override beside it, in the same
commit) and the removal of a remembered override. Conflicts and the history
are written by the running sync alone (:mod:`.bookkeeping`, with each batch),
and the sync applies a request in its own loop, so a person's choice never
races a change of the same record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidesync.errors import TidesyncError
from tidesync.state.store import KeyValues, StateChanges
from tidesync.sync.rules import Rule
from tidesync.sync.store_layout import (
    CONFLICTS,
    HISTORY,
    RESOLVE,
    RULES,
    conflict_id,
    conflict_key,
    parse_conflict_id,
)


class ResolutionError(TidesyncError):
    """The resolution cannot be recorded (no such conflict, bad choice)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    conflict: str
    field: str
    take: str | None
    value: Any
    remember: bool
    rule_line: str | None  # the YAML line that makes a remembered choice part of the config


class ConflictQueue:
    """Pending conflicts, history and resolution requests of every sync in one store."""

    def __init__(self, store: KeyValues) -> None:
        self.store = store

    async def pending(self, sync: str | None = None) -> list[dict[str, Any]]:
        """Pending review items, oldest first (of one sync, or of all, ordered by sync)."""
        entries = await self.store.kv_scan(CONFLICTS, f"{sync}/" if sync else "")
        return sorted(entries.values(), key=lambda e: (e["sync"], parse_conflict_id(e["id"])[1]))

    async def requests(self, sync: str | None = None) -> dict[str, dict[str, Any]]:
        """Resolution requests waiting for the running sync, by conflict id (of one sync, or of all)."""
        raw = await self.store.kv_scan(RESOLVE, f"{sync}/" if sync else "")
        out = {}
        for key, request in raw.items():
            name, _, n = key.rpartition("/")
            out[conflict_id(name, int(n))] = request
        return out

    async def get(self, cid: str) -> dict[str, Any] | None:
        """One pending conflict with ``pending_resolution`` (the waiting request, or None); None when not pending.

        Raises :class:`ResolutionError` for an id that is not ``SYNC:NUMBER``.
        """
        try:
            sync, n = parse_conflict_id(cid)
        except ValueError as exc:
            raise ResolutionError(str(exc)) from None
        entry = await self.store.kv_get(CONFLICTS, conflict_key(sync, n))
        if entry is not None:
            entry = dict(entry)
            entry["pending_resolution"] = await self.store.kv_get(RESOLVE, f"{sync}/{n}")
        return entry

    async def history(self, sync: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` settlements of ``sync``, oldest first."""
        entries = await self.store.kv_scan(HISTORY, f"{sync}/")
        return [entries[k] for k in sorted(entries)][-limit:]

    async def request_resolution(
        self,
        cid: str,
        *,
        take: str | None = None,
        value: Any = None,
        has_value: bool = False,
        remember: bool = False,
        by: str = "cli",
        now: float = 0.0,
    ) -> Resolution:
        """Record a person's choice for conflict ``cid``: ``take`` ``a`` or ``b``, or an explicit ``value``.

        The request (and, with ``remember``, ``prefer: <take>`` as the field's
        rule override) is stored in one commit; either side is written later,
        by the running sync. Raises :class:`ResolutionError` for a bad choice
        or a conflict that is not pending.
        """
        if (take is None) == (not has_value):
            raise ResolutionError("say what wins: --take a, --take b, or --value JSON")
        if take is not None and take not in ("a", "b"):
            raise ResolutionError(f"--take must be a or b, not {take!r}")
        if remember and take is None:
            raise ResolutionError("--remember needs --take a|b: it makes that side the source of truth for the field")
        entry = await self.get(cid)
        if entry is None:
            raise ResolutionError(f"no pending conflict {cid} (already resolved, or a wrong id; see `conflicts list`)")
        sync, n = parse_conflict_id(cid)
        field = entry["field"]
        request = {"id": cid, "n": n, "take": take, "value": value, "has_value": has_value, "by": by, "at": now}
        changes = StateChanges(kv_put={(RESOLVE, f"{sync}/{n}"): request})
        line = None
        if remember:
            overrides = dict(await self.store.kv_get(RULES, sync) or {})
            overrides[field] = str(Rule("prefer", take))
            changes.kv_put[(RULES, sync)] = overrides
            line = f"{field}: {{prefer: {take}}}"
        await self.store.commit(sync, changes)
        return Resolution(cid, field, take, value, remember, line)

    async def forget_rule(self, sync: str, field: str) -> bool:
        """Remove a remembered rule override; True when there was one."""
        overrides = dict(await self.store.kv_get(RULES, sync) or {})
        if field not in overrides:
            return False
        del overrides[field]
        await self.store.commit(sync, StateChanges(kv_put={(RULES, sync): overrides}))
        return True
