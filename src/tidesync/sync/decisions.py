"""The decision core of two-way sync (pure): record state + one side's change -> what to write.

:func:`decide` takes a record's state and a change from side S (canonical
names and values) and returns a :class:`Decision`: the state with S's image
updated, the writes to make (per field, or one record operation), the fields
to park for review, and the pending conflicts that no longer apply.
:func:`apply_outcome` (in :mod:`.outcome`) applies the outcome of the writes.
Nothing here does I/O, so the whole algebra is property-tested.

Per field, after S's image is updated, both images are compared with the
shadow (the value both sides last agreed on):

======================  ==================================================
A vs shadow, B vs shadow  decision
======================  ==================================================
neither differs         nothing (an echo, or an edit undone)
A and B equal           they agree: the shadow moves, nothing is written
only A differs          copy A's value to B (conditional on B's image)
only B differs          copy B's value to A
both differ             conflict: the field's rule settles it
======================  ==================================================

Decisions (and why):

- Both sides are re-compared symmetrically instead of asking "did S change?":
  a side that undoes its edit while a conflict is pending, or a write that
  failed earlier, is then handled by the same table.
- The shadow moves only when a write succeeded (see :mod:`.outcome`), so a
  conditional write that lost a race leaves the field as it was; the other
  side's own change event arrives and the table then sees a conflict.
- A record op (insert, delete, re-create) replaces field writes: an insert
  carries the whole row; a delete makes field values moot.
- Deletes: ``delete_wins`` deletes the other side unconditionally and ignores
  later edits of the record (they were committed before the delete reached
  them). ``resurrect`` deletes the other side only if it was not edited after
  the delete (conditional on its image); an edit committed after the delete
  re-creates the deleted side from the editing side's full row.
- An insert of a key whose record is deleted on that side starts a new life.
- An insert whose earlier attempt a crash cut short repeats that attempt's
  row, so a row it finds there holds exactly what was inserted; newer values
  of the source are then copied field by field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from tidesync.event import Key
from tidesync.sync import echo
from tidesync.sync.record import Agreed, RecordState, Seen, Side, other, same
from tidesync.sync.rules import Rules, Settlement, settle

UPSERT: Final = "upsert"
DELETE: Final = "delete"
DELETE_WINS: Final = "delete_wins"
RESURRECT: Final = "resurrect"


@dataclass(frozen=True, slots=True)
class SideEvent:
    """A change from one side in canonical form. ``fields`` are the changed (or, if ``full``, all) fields."""

    side: Side
    key: Key
    op: str  # UPSERT or DELETE
    fields: Mapping[str, Seen] = field(default_factory=dict)
    at: float = 0.0
    created: bool = False  # an insert: may start a new life of a record deleted on this side
    full: bool = False
    tagged: bool = False  # carries the sync's replication origin: the sync's own write


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """Write ``stamp.value`` to ``writes`` (conditional on ``expected``); on success the shadow becomes ``stamp``."""

    field: str
    stamp: Agreed
    writes: Mapping[str, Seen | None]  # side -> expected image (None: write unconditionally)
    settlement: Settlement | None = None  # set when a conflict was settled (goes to the history)
    shadow: Agreed | None = None
    a: Seen | None = None
    b: Seen | None = None
    strict: bool = False  # a side already holding the value is not enough (counters: it may have counted itself)


@dataclass(frozen=True, slots=True)
class Park:
    """A field parked for review (``rule`` ``manual`` or an escalation to it)."""

    field: str
    shadow: Agreed | None
    a: Seen
    b: Seen
    rule: str
    why: str


@dataclass(frozen=True, slots=True)
class Insert:
    """Create the record on ``side`` from ``row`` (canonical, whole). ``stamps`` become the shadow."""

    side: Side
    row: Mapping[str, Seen]
    stamps: Mapping[str, Agreed]


@dataclass(frozen=True, slots=True)
class Delete:
    side: Side
    at: float
    expected: Mapping[str, Seen] | None  # None: unconditional (delete wins)


@dataclass(frozen=True, slots=True)
class Recreate:
    """Fetch the whole row from ``source`` and insert it on ``side`` (an edit after a delete)."""

    source: Side
    side: Side
    at: float


RecordOp = Insert | Delete | Recreate


@dataclass(slots=True)
class Decision:
    state: RecordState
    fields: list[FieldPlan] = field(default_factory=list)
    op: RecordOp | None = None
    parks: list[Park] = field(default_factory=list)
    closed: list[tuple[str, str, str]] = field(default_factory=list)  # (field, conflict id, why)
    note: str = ""
    echoes: int = 0  # fields of the change that were echoes of the sync's own writes

    @property
    def writes(self) -> bool:
        return self.op is not None or any(p.writes for p in self.fields)


@dataclass(frozen=True, slots=True)
class Policy:
    rules: Rules
    deletes: str = DELETE_WINS
    origin_sides: frozenset[str] = frozenset()  # sides whose change events carry the sync's replication origin


def decide(state: RecordState, ev: SideEvent | Sequence[SideEvent], policy: Policy) -> Decision:
    """What to do about a change, or a run of upserts of one record from one side (``state`` is not modified).

    A run is observed event by event (each field change classified against
    the echo ledger, in order) and then decided once, on every field it
    touched: the same outcome as deciding each, without the writes in between.
    """
    events = [ev] if isinstance(ev, SideEvent) else list(ev)
    st = state.copy()
    first = events[0]
    s = first.side
    if first.op == DELETE:
        known = st.keys[s]
        if known is not None and tuple(first.key) != tuple(known):
            return Decision(st, note="a change of a key the record no longer has")
        return _on_delete(st, first, policy)
    applied: dict[str, None] = {}
    echoes = 0
    seen: list[SideEvent] = []
    note = ""
    for e in events:
        got = _observe(st, e, e.side not in policy.origin_sides or e.tagged)
        if isinstance(got, str):
            note = got
            continue
        seen.append(e)
        echoes += got[1]
        applied.update(dict.fromkeys(got[0]))
    if not seen:
        return Decision(st, note=note)
    acting = SideEvent(s, seen[-1].key, UPSERT, {}, max(e.at for e in seen), seen[0].created, seen[0].full)
    d = _after_upsert(st, acting, policy, list(applied))
    d.echoes = echoes
    return d


def _observe(st: RecordState, ev: SideEvent, maybe_ours: bool) -> tuple[list[str], int] | str:
    """Apply one upsert to the side's image; the fields applied and echoes seen, or why it is ignored.

    ``maybe_ours``: the change may be an echo. On a side with replication
    origins only changes carrying the origin can be; elsewhere any change is
    compared with the echo ledger. On an origin side a change without the
    origin, of a field the sync wrote there and whose echo has not come back,
    was committed before that write: it is stale and not applied.
    """
    s, o = ev.side, other(ev.side)
    # The sync's own insert there, whose outcome the state never learnt, coming back (maybe under a new key).
    own = ev.created and s in st.pending and (st.keys[s] is None or st.gone[s] is not None)
    known = st.keys[s]
    if not own and known is not None and tuple(ev.key) != tuple(known):
        # Re-created there under a new key (the side generates keys): the old key's changes are history.
        return "a change of a key the record no longer has"
    if s in st.unconfirmed:
        return "a change committed before the sync deleted the record there"
    if st.gone[s] is not None:
        if not ev.created:
            return "edit of a record deleted on this side (committed before the delete)"
        if not own and (st.gone[o] is not None or st.keys[o] is None):
            rid = st.rid
            st.reset()
            st.rid = rid
        else:
            st.gone[s] = None
            st.image[s] = {}
    if own:
        _own_insert(st, ev)
    st.keys[s] = ev.key
    img = st.image[s]
    applied: list[str] = []
    echoes = 0
    # The row as the side's stream showed it just before this change: what a write of the sync coming back replaced.
    before = st.stream.get(s) if not ev.created else None
    replaced = dict(before) if before is not None else {}
    for name, value in _changed(st, ev).items():
        if not maybe_ours and name in img and echo.landed(st, s, name):
            continue  # older than a write of the sync that landed there and has not come back yet
        e = echo.on_change(st, s, name, value, replaced.get(name, echo.UNKNOWN)) if maybe_ours else echo.NOT_ECHO
        echoes += e.echo
        if not e.apply and name in img:
            continue  # an older write's echo: the image holds the newer value written since
        img[name] = value
        applied.append(name)
        if e.shadow is not None and st.alive(o):
            st.shadow[name] = e.shadow
    return applied, echoes


def _after_upsert(st: RecordState, ev: SideEvent, policy: Policy, applied: list[str]) -> Decision:
    s, o = ev.side, other(ev.side)
    img = st.image[s]
    if st.keys[o] is None:
        return _create_on(st, o, ev)
    if st.gone[o] is not None:
        if policy.deletes == DELETE_WINS:
            return Decision(st, op=Delete(s, st.gone[o] or ev.at, None), note="deleted on the other side")
        # The side's image, not this change alone: a change read again after a crash may come before edits of
        # the side that the image already holds (and that decided this before), as in _on_delete.
        edited = max(ev.at, _latest(img))
        if edited > (st.gone[o] or 0.0):
            return Decision(st, op=Recreate(s, o, edited), note="edited after the other side deleted it")
        return Decision(st, op=Delete(s, st.gone[o] or ev.at, dict(img)), note="edit older than the delete")
    return evaluate(st, applied, policy.rules)


def _changed(st: RecordState, ev: SideEvent) -> Mapping[str, Seen]:
    """The fields ``ev`` really changed: a whole-row update is compared with the side's stream image."""
    s = ev.side
    before = st.stream.get(s)
    if before is None and not ev.created:
        before = {f: v.value for f, v in st.image[s].items()}  # a record from before stream images were kept
    if ev.created or not ev.full or before is None:
        fields: Mapping[str, Seen] = ev.fields
    else:
        fields = {f: v for f, v in ev.fields.items() if f not in before or not same(before[f], v.value)}
    row = st.stream.setdefault(s, {})
    if ev.created:
        row.clear()
    row.update({f: v.value for f, v in ev.fields.items()})
    return fields


def _own_insert(st: RecordState, ev: SideEvent) -> None:
    """The first change of a record on a side where the sync's insert is unconfirmed: that insert, come back.

    A field holding what the sync inserted is a value both sides agreed on
    (it came from the other side), so it becomes the shadow: a later edit of
    the other side is then copied, not taken for a conflict.
    """
    intents = st.pending.pop(ev.side, [])
    for name, seen in ev.fields.items():
        if any(name in row and same(row[name], seen.value) for row in intents):
            st.shadow[name] = Agreed(seen.value, 0.0, other(ev.side))


def _latest(img: Mapping[str, Seen]) -> float:
    return max((v.at for v in img.values()), default=0.0)


def _create_on(st: RecordState, side: Side, ev: SideEvent) -> Decision:
    src = st.image[ev.side]
    if not ev.full:
        # An update of a record never seen before: the row may be partial, so fetch it whole.
        return Decision(st, op=Recreate(ev.side, side, ev.at), note="first seen as an update")
    row = dict(src)
    earlier = st.pending.get(side)
    if earlier:
        # An insert there whose outcome is unknown (a crash cut it short) is repeated as it was, so that a row
        # found there is what every attempt wrote (a counter's agreed value is then known); what changed here
        # since is copied after it, field by field (see :mod:`.outcome`).
        row = {f: src[f] if f in src and same(src[f].value, v) else Seen(v, 0.0) for f, v in earlier[0].items()}
    stamps = {f: Agreed(v.value, v.at, ev.side) for f, v in row.items()}
    return Decision(st, op=Insert(side, row, stamps))


def _on_delete(st: RecordState, ev: SideEvent, policy: Policy) -> Decision:
    s, o = ev.side, other(ev.side)
    # Whatever the sync wrote there before the delete has come back by now (or never will): forget it.
    st.sent.pop(s, None)
    st.stream.pop(s, None)
    if s in st.unconfirmed:
        st.unconfirmed.discard(s)
        return Decision(st, note="the sync's own delete, come back")
    if st.keys[s] is None:
        return Decision(st, note="a record the sync never saw")
    if st.gone[s] is None:
        st.gone[s] = ev.at
    # else: known deleted already (a replay after the state stored the delete but not what followed it):
    # decide the follow-up again; it is idempotent.
    at = st.gone[s] or ev.at
    closed = [(f, cid, "the record was deleted") for f, cid in st.conflicts.items()]
    st.conflicts = {}
    if not st.alive(o):
        return Decision(st, closed=closed)
    if policy.deletes == DELETE_WINS:
        return Decision(st, op=Delete(o, at, None), closed=closed)
    if _latest(st.image[o]) > at:
        return Decision(st, op=Recreate(o, s, at), closed=closed, note="the other side edited it after the delete")
    return Decision(st, op=Delete(o, at, dict(st.image[o])), closed=closed)


def evaluate(st: RecordState, names: Iterable[str], rules: Rules) -> Decision:
    """Compare the named fields of a record alive on both sides with the shadow; ``st`` is the decision's state."""
    d = Decision(st)
    for name in names:
        _field(d, name, rules)
    return d


def _field(d: Decision, name: str, rules: Rules) -> None:
    st = d.state
    sh = st.shadow.get(name)
    ia, ib = st.image["a"].get(name), st.image["b"].get(name)
    if ia is None and ib is None:
        return
    if ia is None or ib is None:
        known, side = (ia, "a") if ib is None else (ib, "b")
        assert known is not None
        if sh is None or not same(known.value, sh.value):
            expected = Seen(sh.value, sh.at) if sh is not None else None
            d.fields.append(FieldPlan(name, Agreed(known.value, known.at, side), {other(side): expected}))  # type: ignore[arg-type]
        return
    da = sh is None or not same(ia.value, sh.value)
    db = sh is None or not same(ib.value, sh.value)
    pending = st.conflicts.get(name)
    rule = rules.for_field(name)
    # Two counters that both moved to the same value moved twice (2 + 1 on each side is 4, not 3).
    counted = rule.kind == "sum" and sh is not None and da and db
    if same(ia.value, ib.value) and not counted:
        if da:
            first = "a" if ia.at <= ib.at else "b"
            st.shadow[name] = Agreed(ia.value, min(ia.at, ib.at), first)
        if pending:
            d.closed.append((name, pending, "both sides now hold the same value"))
            del st.conflicts[name]
        return
    strict = rule.kind == "sum"
    if da and not db:
        d.fields.append(FieldPlan(name, Agreed(ia.value, ia.at, "a"), {"b": ib}, shadow=sh, a=ia, b=ib, strict=strict))
        return
    if db and not da:
        d.fields.append(FieldPlan(name, Agreed(ib.value, ib.at, "b"), {"a": ia}, shadow=sh, a=ia, b=ib, strict=strict))
        return
    s = settle(rule, rules, sh, ia, ib)
    if s.parked:
        d.parks.append(Park(name, sh, ia, ib, s.rule, s.why))
        return
    at = ia.at if s.winner == "a" else ib.at if s.winner == "b" else max(ia.at, ib.at)
    stamp = Agreed(s.value, at, s.winner)
    writes = {side: img for side, img in (("a", ia), ("b", ib)) if not same(img.value, s.value)}
    d.fields.append(FieldPlan(name, stamp, writes, s, sh, ia, ib, strict=rule.kind == "sum"))
