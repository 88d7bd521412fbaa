"""Resolving parked conflicts: what a person (CLI, admin API) calls, and what the sync then does.

:func:`request_resolution` is the public entry point. It validates the
request against the pending conflict, records it in the state store
(``sync-resolve``) and, with ``remember``, stores ``prefer: <side>`` for the
field as a rule override that applies on top of the config from then on. It
does not touch either side: the running sync picks the request up (within a
second), writes the chosen value to both sides with the same conditional
writes as any other change, records the resolution in the history and closes
the conflict. If a side changed the field in the meantime the write is not
made; the conflict shows the new candidates and the request stays until it
can be applied (``take a`` then means A's newest value).

:func:`resolution_plan` is the pure part: the field plan a request becomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidesync.errors import TidesyncError
from tidesync.state.store import StateChanges, StateStore
from tidesync.sync.decisions import Decision, FieldPlan
from tidesync.sync.record import Agreed, RecordState, Seen, same
from tidesync.sync.rules import Rule, Settlement
from tidesync.sync.store_layout import CONFLICTS, HISTORY, RESOLVE, RULES, conflict_key, parse_conflict_id


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


async def list_conflicts(store: StateStore, sync: str | None = None) -> list[dict[str, Any]]:
    """Pending review items, oldest first (of one sync, or of all)."""
    entries = await store.kv_scan(CONFLICTS, f"{sync}/" if sync else "")
    return sorted(entries.values(), key=lambda e: (e["sync"], parse_conflict_id(e["id"])[1]))


async def get_conflict(store: StateStore, cid: str) -> dict[str, Any] | None:
    try:
        sync, n = parse_conflict_id(cid)
    except ValueError as exc:
        raise ResolutionError(str(exc)) from None
    entry = await store.kv_get(CONFLICTS, conflict_key(sync, n))
    if entry is not None:
        entry = dict(entry)
        entry["pending_resolution"] = await store.kv_get(RESOLVE, f"{sync}/{n}")
    return entry


async def history(store: StateStore, sync: str, limit: int = 100) -> list[dict[str, Any]]:
    entries = await store.kv_scan(HISTORY, f"{sync}/")
    return [entries[k] for k in sorted(entries)][-limit:]


async def request_resolution(
    store: StateStore,
    cid: str,
    *,
    take: str | None = None,
    value: Any = None,
    has_value: bool = False,
    remember: bool = False,
    by: str = "cli",
    now: float = 0.0,
) -> Resolution:
    """Record a person's choice for conflict ``cid``: ``take`` ``a`` or ``b``, or an explicit ``value``."""
    if (take is None) == (not has_value):
        raise ResolutionError("say what wins: --take a, --take b, or --value JSON")
    if take is not None and take not in ("a", "b"):
        raise ResolutionError(f"--take must be a or b, not {take!r}")
    if remember and take is None:
        raise ResolutionError("--remember needs --take a|b: it makes that side the source of truth for the field")
    entry = await get_conflict(store, cid)
    if entry is None:
        raise ResolutionError(f"no pending conflict {cid} (already resolved, or a wrong id; see `conflicts list`)")
    sync, n = parse_conflict_id(cid)
    field = entry["field"]
    request = {"id": cid, "n": n, "take": take, "value": value, "has_value": has_value, "by": by, "at": now}
    changes = StateChanges(kv_put={(RESOLVE, f"{sync}/{n}"): request})
    line = None
    if remember:
        overrides = dict(await store.kv_get(RULES, sync) or {})
        overrides[field] = str(Rule("prefer", take))
        changes.kv_put[(RULES, sync)] = overrides
        line = f"{field}: {{prefer: {take}}}"
    await store.commit(sync, changes)
    return Resolution(cid, field, take, value, remember, line)


async def forget_rule(store: StateStore, sync: str, field: str) -> bool:
    """Remove a remembered rule override; True when there was one."""
    overrides = dict(await store.kv_get(RULES, sync) or {})
    if field not in overrides:
        return False
    del overrides[field]
    await store.commit(sync, StateChanges(kv_put={(RULES, sync): overrides}))
    return True


def resolution_plan(st: RecordState, field: str, request: dict[str, Any], now: float) -> Decision | None:
    """The decision that applies ``request`` to the record, or None when the record can no longer take it."""
    ia, ib = st.image["a"].get(field), st.image["b"].get(field)
    take = request.get("take")
    if take == "a":
        if ia is None:
            return None
        value, stamp_side = ia.value, "a"
    elif take == "b":
        if ib is None:
            return None
        value, stamp_side = ib.value, "b"
    else:
        value, stamp_side = request.get("value"), "manual"
    if not (st.alive("a") and st.alive("b")):
        return None
    by = request.get("by") or "a person"
    why = f"resolved by {by}: " + (f"took {take.upper()}" if take else "set a value")
    writes: dict[str, Seen | None] = {
        s: img for s, img in (("a", ia), ("b", ib)) if img is None or not same(img.value, value)
    }
    plan = FieldPlan(
        field,
        Agreed(value, now, stamp_side),
        writes,
        Settlement("manual", why, value, take or "manual"),
        st.shadow.get(field),
        ia,
        ib,
    )
    return Decision(st.copy(), fields=[plan])
