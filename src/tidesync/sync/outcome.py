"""Applying the outcome of a decision's writes to the record state (pure).

Field writes are conditional (see :mod:`.endpoint`); each comes back as
``ok`` (written), ``already`` (the side already held the value: a replay after
a crash), ``conflict`` (the side's value is no longer the expected one),
``missing`` (the row is gone) or ``failed`` (rejected for good).

For a field plan:

- every write ok: the shadow becomes the plan's stamp, the written sides'
  images the written value; a settled conflict goes to the history and a
  pending manual conflict of the field is closed;
- no write ok: nothing moves. The side that changed under us sends its own
  change event, and the comparison then sees a conflict;
- some ok, some not (a merged value written to A but not to B): A now holds
  B's value as it was seen merged in, so B's image becomes the shadow. The
  next merge then counts only what B changed since: a counter delta is never
  added twice, a set item never resurrected.

``already`` counts as written except for counters (``FieldPlan.strict``): a
counter that reached the value by its own increment has counted that
increment itself; its change event then settles the field by ``sum`` (see
:mod:`.echo` for how a write cut short by a crash is still recognised).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tidesync.event import Key
from tidesync.sync import echo
from tidesync.sync.decisions import Decision, Delete, Insert, Park, Recreate
from tidesync.sync.record import NO_RAW, Agreed, RecordState, Seen, Side, other, same
from tidesync.sync.rules import Settlement

OK: Final = "ok"
ALREADY: Final = "already"
CONFLICT: Final = "conflict"
MISSING: Final = "missing"
FAILED: Final = "failed"
EXISTS: Final = "exists"
GONE: Final = "gone"


@dataclass(frozen=True, slots=True)
class FieldResult:
    status: str
    raw: Any = NO_RAW  # the side's own form of the value written, when a transform changed it
    error: str = ""


@dataclass(frozen=True, slots=True)
class RowResult:
    """Outcome of a record op. ``row``: what was written (ok) or the side's current row (exists)."""

    status: str
    key: Key | None = None
    row: Mapping[str, Seen] | None = None
    source_row: Mapping[str, Seen] | None = None  # re-create: the row fetched from the editing side
    error: str = ""
    retried: bool = False  # the insert was attempted before (a crash cut it short): a row found is the sync's
    earlier: tuple[Mapping[str, Any], ...] = ()  # retried: the canonical rows those earlier attempts wrote


@dataclass(frozen=True, slots=True)
class Settled:
    """One history entry: a conflict settled by a rule (or parked, or resolved by a person)."""

    field: str
    rule: str
    why: str
    winner: str
    value: Any
    shadow: Agreed | None
    a: Seen | None
    b: Seen | None


@dataclass(slots=True)
class Outcome:
    state: RecordState
    history: list[Settled] = field(default_factory=list)
    parks: list[Park] = field(default_factory=list)
    closed: list[tuple[str, str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (field or "*", error)
    reconsider: tuple[str, ...] = ()


def apply_outcome(d: Decision, fields: Mapping[tuple[str, str], FieldResult], row: RowResult | None = None) -> Outcome:
    st = d.state
    out = Outcome(st, parks=list(d.parks), closed=list(d.closed))
    for plan in d.fields:
        name = plan.field
        oks: list[str] = []
        fails: list[str] = []
        for side in plan.writes:
            r = fields.get((side, name))
            ok = r is not None and (r.status == OK or (r.status == ALREADY and not plan.strict))
            status = r.status if r is not None else FAILED
            echo.written(st, side, name, plan.stamp.value, status, plan.strict)
            if ok:
                assert r is not None
                oks.append(side)
                st.image[side][name] = Seen(plan.stamp.value, plan.stamp.at, r.raw)
            else:
                fails.append(side)
                if r is not None and r.status == FAILED:
                    out.failures.append((name, r.error))
        if not fails:
            st.shadow[name] = plan.stamp
            if plan.settlement is not None:
                out.history.append(_settled(name, plan.settlement, plan.shadow, plan.a, plan.b))
            pending = st.conflicts.pop(name, None)
            if pending:
                out.closed.append(
                    (name, pending, "settled: " + (plan.settlement.rule if plan.settlement else "copied"))
                )
        elif oks:
            seen = plan.writes[fails[0]]
            if seen is not None:
                st.shadow[name] = Agreed(seen.value, seen.at, fails[0])
    if d.op is not None:
        _row_op(d, row, out)
    return out


def _settled(name: str, s: Settlement, shadow: Agreed | None, a: Seen | None, b: Seen | None) -> Settled:
    return Settled(name, s.rule, s.why, s.winner, s.value, shadow, a, b)


def _row_op(d: Decision, r: RowResult | None, out: Outcome) -> None:
    st, op = d.state, d.op
    if r is None:
        return
    if r.status == FAILED:
        out.failures.append(("*", r.error))
    intents: list[dict[str, Any]] = []
    if isinstance(op, Insert | Recreate):
        for name, value in _inserted(op, r, st).items():
            echo.written(st, op.side, name, value, OK if r.status == OK else r.status)
        if r.status in (OK, EXISTS) or not r.retried:
            intents = st.pending.pop(op.side, [])
        # else nothing was inserted now (the row to copy is gone, or the insert failed), but an attempt a crash
        # cut short may have landed: its intent stays until that row comes back, to be known as the sync's.
    if isinstance(op, Insert):
        if r.status == OK:
            st.keys[op.side] = r.key
            st.image[op.side] = dict(r.row or op.row)
            st.shadow.update(op.stamps)
            # A repeated insert writes what its first attempt meant to: what the source changed since follows.
            src, dst = st.image[other(op.side)], st.image[op.side]
            newer = [f for f, v in src.items() if f not in dst or not same(v.value, dst[f].value)]
            if newer:
                out.reconsider = tuple(sorted(newer))
        elif r.status == EXISTS:
            _found(st, op.side, r, out, intents)
    elif isinstance(op, Delete):
        if r.status in (OK, MISSING):
            st.gone[op.side] = op.at
            st.unconfirmed.add(op.side)
            out.closed.extend((f, cid, "the record was deleted") for f, cid in st.conflicts.items())
            st.conflicts = {}
    elif isinstance(op, Recreate):
        if r.source_row is not None:
            st.image[op.source] = dict(r.source_row)
        if r.status == OK:
            st.keys[op.side] = r.key
            st.gone[op.side] = None
            st.image[op.side] = dict(r.row or {})
            st.shadow = {f: Agreed(v.value, v.at, op.source) for f, v in (r.row or {}).items()}
        elif r.status == EXISTS:
            st.gone[op.side] = None
            _found(st, op.side, r, out, intents)


def _inserted(op: Insert | Recreate, r: RowResult, st: RecordState) -> dict[str, Any]:
    """Canonical values an insert wrote (or meant to): what its echo will carry."""
    if isinstance(op, Insert):
        return {f: s.value for f, s in op.row.items()}
    return {f: s.value for f, s in (r.source_row or {}).items()}


def _found(st: RecordState, side: Side, r: RowResult, out: Outcome, intents: list[dict[str, Any]]) -> None:
    """The insert found the record already there: compare field by field.

    When an earlier attempt of this insert was cut short by a crash, the row
    found is the sync's own: what that attempt inserted (``r.earlier``; not
    what this attempt meant to, which did not run and may carry newer values)
    is what both sides agreed on, so each field's inserted value becomes the
    shadow and a later edit of either side counts as that side's edit (a
    counter's increment is not lost). Otherwise someone else created the row:
    only fields holding what the sync meant to insert (``intents``) count as
    agreed; the rest are compared by the rules as edits of both sides.
    """
    st.keys[side] = r.key
    st.image[side] = dict(r.row or {})
    rows = r.earlier if r.retried and r.earlier else intents
    for name, seen in st.image[side].items():
        values = [row[name] for row in rows if name in row]
        if r.retried and values and all(same(v, values[0]) for v in values):
            st.shadow[name] = Agreed(values[0], 0.0, other(side))
        elif any(same(v, seen.value) for v in values):
            st.shadow[name] = Agreed(seen.value, 0.0, other(side))
    if st.image[side]:  # else the row was deleted since: its delete event is on its way
        out.reconsider = tuple(sorted(set(st.image["a"]) | set(st.image["b"])))
