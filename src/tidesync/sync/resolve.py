"""Resolving parked conflicts: what a person (CLI, admin API) calls, and what the sync then does.

:func:`request_resolution` is the public entry point (a shorthand for
:meth:`.conflicts.ConflictQueue.request_resolution`, like the other readers
here). It validates the request against the pending conflict, records it in
the state store (``sync-resolve``) and, with ``remember``, stores
``prefer: <side>`` for the field as a rule override that applies on top of
the config from then on. It does not touch either side: the running sync
picks the request up (within a second), writes the chosen value to both sides
with the same conditional writes as any other change, records the resolution
in the history and closes the conflict. If a side changed the field in the
meantime the write is not made; the conflict shows the new candidates and the
request stays until it can be applied (``take a`` then means A's newest value).

:func:`resolution_plan` is the pure part: the field plan a request becomes.
"""

from __future__ import annotations

from typing import Any

from tidesync.state.store import KeyValues
from tidesync.sync.conflicts import ConflictQueue, Resolution, ResolutionError
from tidesync.sync.decisions import Decision, FieldPlan
from tidesync.sync.record import Agreed, RecordState, Seen, same
from tidesync.sync.rules import Settlement

__all__ = [
    "Resolution",
    "ResolutionError",
    "forget_rule",
    "get_conflict",
    "history",
    "list_conflicts",
    "request_resolution",
    "resolution_plan",
]


async def list_conflicts(store: KeyValues, sync: str | None = None) -> list[dict[str, Any]]:
    """Pending review items, oldest first (of one sync, or of all)."""
    return await ConflictQueue(store).pending(sync)


async def get_conflict(store: KeyValues, cid: str) -> dict[str, Any] | None:
    """One pending conflict with its waiting request (see :meth:`ConflictQueue.get`)."""
    return await ConflictQueue(store).get(cid)


async def history(store: KeyValues, sync: str, limit: int = 100) -> list[dict[str, Any]]:
    return await ConflictQueue(store).history(sync, limit)


async def request_resolution(store: KeyValues, cid: str, **choice: Any) -> Resolution:
    """Record a person's choice for conflict ``cid`` (see :meth:`ConflictQueue.request_resolution`)."""
    return await ConflictQueue(store).request_resolution(cid, **choice)


async def forget_rule(store: KeyValues, sync: str, field: str) -> bool:
    """Remove a remembered rule override; True when there was one."""
    return await ConflictQueue(store).forget_rule(sync, field)


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
