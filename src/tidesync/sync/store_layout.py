"""The review queue, the sync history, rule overrides and resolution requests, as state-store entries.

All live in the state store's key-value space, so they commit in the same
transaction as the record states and both sides' positions:

=====================  ==============================  =====================================
namespace              key                             value
=====================  ==============================  =====================================
``sync-conflicts``     ``<sync>/<n, 10 digits>``       a pending conflict (:func:`conflict_entry`)
``sync-history``       ``<sync>/<seq, 12 digits>``     one settlement (:func:`history_entry`)
``sync-meta``          ``<sync>``                      counters: next conflict number, history seq
``sync-position``      ``<sync>/a``, ``<sync>/b``      each side's checkpoint
``sync-rules``         ``<sync>``                      field -> rule overrides (``prefer:a``)
``sync-resolve``       ``<sync>/<n>``                  a person's resolution, waiting for the engine
=====================  ==============================  =====================================

A conflict's id is ``<sync>:<n>``. Only the running sync changes record
states; the CLI and the API record a resolution request, which the sync
applies in its own loop (in order with the changes it processes), so a
resolution never races a change of the same record.
"""

from __future__ import annotations

from typing import Any, Final

from tidesync.sync.record import Agreed, Seen

CONFLICTS: Final = "sync-conflicts"
HISTORY: Final = "sync-history"
META: Final = "sync-meta"
POSITIONS: Final = "sync-position"
RULES: Final = "sync-rules"
RESOLVE: Final = "sync-resolve"


def conflict_id(sync: str, n: int) -> str:
    return f"{sync}:{n}"


def parse_conflict_id(cid: str) -> tuple[str, int]:
    sync, sep, n = cid.rpartition(":")
    if not sep or not sync or not n.isdigit():
        raise ValueError(f"bad conflict id {cid!r}: expected SYNC:NUMBER, e.g. customers:7")
    return sync, int(n)


def conflict_key(sync: str, n: int) -> str:
    return f"{sync}/{n:010d}"


def history_key(sync: str, seq: int) -> str:
    return f"{sync}/{seq:012d}"


def seen_json(s: Seen | None) -> dict[str, Any] | None:
    return None if s is None else {"value": s.value, "at": s.at}


def agreed_json(s: Agreed | None) -> dict[str, Any] | None:
    return None if s is None else {"value": s.value, "at": s.at, "side": s.side}


def conflict_entry(
    *,
    cid: str,
    sync: str,
    rid: tuple[Any, ...],
    keys: dict[str, Any],
    field: str,
    shadow: Agreed | None,
    a: Seen | None,
    b: Seen | None,
    rule: str,
    why: str,
    created_at: float,
    updated_at: float,
    kind: str = "conflict",
) -> dict[str, Any]:
    """A pending review item: both candidates, the value both last agreed on, and why it waits."""
    return {
        "id": cid,
        "sync": sync,
        "kind": kind,  # "conflict" (a rule parked it) or "rejected" (a side refused the write)
        "rid": list(rid),
        "keys": {s: (list(k) if k is not None else None) for s, k in keys.items()},
        "field": field,
        "shadow": agreed_json(shadow),
        "a": seen_json(a),
        "b": seen_json(b),
        "rule": rule,
        "why": why,
        "created_at": created_at,
        "updated_at": updated_at,
    }


def history_entry(
    *,
    seq: int,
    at: float,
    rid: tuple[Any, ...],
    keys: dict[str, Any],
    field: str,
    rule: str,
    why: str,
    winner: str,
    value: Any,
    shadow: Agreed | None,
    a: Seen | None,
    b: Seen | None,
    by: str,
    conflict: str | None = None,
) -> dict[str, Any]:
    """One line of the sync history: who or what won, with what value, and why."""
    return {
        "seq": seq,
        "at": at,
        "rid": list(rid),
        "keys": {s: (list(k) if k is not None else None) for s, k in keys.items()},
        "field": field,
        "rule": rule,
        "why": why,
        "winner": winner,
        "value": value,
        "shadow": agreed_json(shadow),
        "a": seen_json(a),
        "b": seen_json(b),
        "by": by,  # "rule", "edits" (the sides came to agree) or the person who resolved it
        "conflict": conflict,
    }
