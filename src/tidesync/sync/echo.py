"""Recognising the sync's own writes when they come back as changes: a durable ledger per record (pure).

Every side reports the sync's writes like anyone else's. Two marks tell them apart:

- **Origins** (Postgres): writes run under a replication origin, and the
  change events carry its name. Exact, but only says "ours", not "which write".
- **The ledger** (every side): before a field write is made, it is announced
  in the record state (``RecordState.sent``: side -> field -> entries
  ``{v: value, done, base}``) and that state is committed. A change of the
  field to an announced value is the echo of that write: it and every older
  entry are consumed. A change to any other value is an edit of the side (or
  a change older than the write, still on its way): it drops the entries of
  writes known to have landed, and keeps those whose outcome is unknown
  (their echo may still come).

Why a ledger that survives crashes rather than fingerprints in memory: a write
can land and the process die before the state records it. Its echo then looks
like an edit of that side, and an edit made meanwhile on the other side could
lose to it. With the entry committed before the write, the echo is still
recognised. For an entry whose outcome the state never learnt (``done``
false), the side is known to hold a value the sync wrote, with no edit of its
own: the shadow becomes the other side's value at the time of the decision
(``base``), or the written value itself when the other side already holds it.
That is the same rule as a partly failed merge (:mod:`.outcome`), so counters
(``sum``) stay exact and set merges lose nothing. A counter's shadow may have
moved meanwhile, though: a merge decided before the echo came, on the side's
older image, wrote the other side and made that image the shadow (the partial
rule). So for counters the entry also keeps the side's own image the write
replaced (``was``), and the shadow moves by what the write brought there
(``value - was``) from wherever it is now: with the shadow unmoved that is
``base``, and an increment merged into the other side since is not counted twice.
For counters that rule is the only one: the other side holding the written
value proves nothing there (its own increments may have reached it: 0 + 1 + 1
merged, 0 + 2 counted there), and taken for agreed, the increment the write
brought would be lost. What the write replaced is read from the side's change
stream (the field's value in the change just before the echo) when it showed
the field: attempts cut short by crashes that announced the same value share
one entry, whose ``was`` is the first attempt's image, and the attempt that
landed may have found another.

Echo handling per field (:func:`on_change`):

- echo of the newest write: applied to the side's image (a no-op when the
  state knew; a correction when a stale change moved the image meanwhile);
- echo of an older write while a newer one is announced: ignored (no flapping
  back to an older value);
- a counter's echo answers the entry of its value written over the value it
  replaced (several attempts may have announced one value over different
  images); of two over the same image (one write made twice: only one can
  have found that image) the landed one;
- not an echo: an edit, handled as any other.

On a side with replication origins only changes carrying the origin are
compared with the ledger: there, an echo is certain, never a coincidence.

A write's outcome (:func:`written`): ok marks the entry ``done``; a
conflict removes it, and so does ``already`` (nothing was written), except
for counters, where it is left to the echo. ``already`` counts as written for
every rule but ``sum``: a counter
that reached the value by its own increment has counted it itself, and one
that reached it by a write cut short by a crash shows it by its echo, which
the ledger then recognises. On a side with origins a landed entry makes the
side's own changes of the field stale until its echo comes (:func:`landed`).
A value found in place is not such an entry: a person may have put it there
and the attempt cut short never written it, and then no echo comes.

Limit: on a side without origins, an echo is recognised by value. After a
crash between announcing a counter write and making it, an increment of that
side that happens to reach the same value is taken for the sync's write (that
increment is then not added). Postgres sides, which have origins, are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tidesync.sync.record import Agreed, RecordState, Seen, other, same


@dataclass(frozen=True, slots=True)
class Echo:
    echo: bool  # the change is the sync's own write
    apply: bool  # apply it to the side's image (False: an older write, a newer one is coming)
    shadow: Agreed | None = None  # set the shadow to this (the state never learnt the write's outcome)


NOT_ECHO = Echo(False, True)
UNKNOWN: Any = object()  # ``on_change``'s ``replaced`` when the side's stream never showed the field
MAX_ENTRIES = 8  # per side and field: writes whose echo has not come back


def _entries(st: RecordState, side: str, name: str) -> list[dict[str, Any]]:
    return st.sent.get(side, {}).get(name, [])


def _prune(st: RecordState, side: str, name: str) -> None:
    if side in st.sent and not st.sent[side].get(name):
        st.sent[side].pop(name, None)
        if not st.sent[side]:
            del st.sent[side]


def announce(
    st: RecordState,
    side: str,
    name: str,
    value: Any,
    base: Seen | None,
    *,
    counter: bool = False,
    was: Seen | None = None,
) -> None:
    """Record that ``value`` is about to be written to ``side`` (``base``: the other side's image then).

    ``counter``: the field is a counter (``sum``); ``was`` is then the side's
    own image the write replaces (None: it had none).

    An entry for the same value whose outcome is unknown (an attempt cut short
    by a crash) stands for this attempt too: at most one of them can land, as
    the other then finds the value in place.
    """
    entries = st.sent.setdefault(side, {}).setdefault(name, [])
    if entries and not entries[-1]["done"] and same(entries[-1]["v"], value):
        entries[-1]["tries"] = entries[-1].get("tries", 1) + 1
        return
    entry = {"v": value, "done": False, "base": None if base is None else base.value, "has_base": base is not None}
    if counter:
        entry["was"] = None if was is None else was.value
    entries.append(entry)
    del entries[:-MAX_ENTRIES]


def written(st: RecordState, side: str, name: str, value: Any, status: str, strict: bool = False) -> None:
    """The outcome of this attempt's write of ``value`` (an :mod:`.outcome` status).

    ok: the entry is done (its echo will come). Otherwise nothing was written
    now: if an earlier attempt cut short by a crash announced the same value,
    that attempt may have written it and its echo may still come, so the entry
    stays (done when the value is in place and not a counter, else open until
    an echo tells); else the entry goes.
    """
    entries = _entries(st, side, name)
    for i in range(len(entries) - 1, -1, -1):
        if same(entries[i]["v"], value) and not entries[i]["done"]:
            earlier = entries[i].get("tries", 1) > 1  # announced by an attempt a crash cut short, too
            if status == "ok":
                entries[i]["done"] = True
            elif earlier:
                # That attempt may have written it; then its echo is on its way (a counter waits for it to
                # tell; for other fields a value already in place is as good as written).
                entries[i]["tries"] = 1
                entries[i]["done"] = status == "already" and not strict
                # In place, but maybe by a person's edit, not by the attempt: no echo may ever come for it.
                entries[i]["quiet"] = entries[i]["done"]
            else:
                del entries[i]
            break
    _prune(st, side, name)


def with_consumed(before: dict[str, dict[str, list[Any]]], now: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """The ledger ``now``, with the entries of ``before`` it no longer holds put back first, marked landed.

    For a state stored ahead of its batch's position (see
    ``SyncProcessor._commit_intents``): the batch's echoes, read again after a
    crash, find their entries, and as landed they change nothing more.
    """
    out: dict[str, Any] = {}
    for side in {*before, *now}:
        b_fields, n_fields = before.get(side, {}), now.get(side, {})
        for name in {*b_fields, *n_fields}:
            held = n_fields.get(name, [])
            gone = [{**e, "done": True} for e in b_fields.get(name, []) if not any(_same_entry(e, h) for h in held)]
            if gone or held:
                out.setdefault(side, {})[name] = gone + list(held)
    return out


def _same_entry(x: dict[str, Any], y: dict[str, Any]) -> bool:
    return same(x["v"], y["v"]) and same(x.get("base"), y.get("base")) and same(x.get("was"), y.get("was"))


def landed(st: RecordState, side: str, name: str) -> bool:
    """A write of the sync to this field there is known to have landed, and its echo is still to come.

    A value found in place by a repeat of an attempt a crash cut short
    (``quiet``) does not count: the attempt may never have written it, and
    then no echo comes to close it.
    """
    return any(e["done"] and not e.get("quiet") for e in _entries(st, side, name))


def on_change(st: RecordState, side: str, name: str, seen: Seen, replaced: Any = UNKNOWN) -> Echo:
    """Classify a change of ``name`` on ``side`` and consume the ledger entries it answers.

    ``replaced``: the field's value as the side's change stream showed it just before this change (``UNKNOWN``
    when it never showed it): for a write of the sync, the value that write replaced there.
    """
    entries = _entries(st, side, name)
    if not entries:
        return NOT_ECHO
    hit = next((i for i, e in enumerate(entries) if same(e["v"], seen.value)), None)
    if hit is None:
        # An edit, or a change older than the writes, still on its way. Writes known to have landed
        # have been overtaken; one whose outcome is unknown may still echo.
        entries[:] = [e for e in entries if not e["done"]]
        _prune(st, side, name)
        return NOT_ECHO
    if not entries[hit]["done"] and "was" not in entries[hit]:
        # An attempt a crash cut short announced this value, and a later write of the same value landed: the
        # echo is that write's, unless the attempt landed too (then a second echo follows, taken for an edit of
        # the same value: a repeat, not a loss). Taken for the attempt's, the landed write would stay pending,
        # and the side's own edits of the field would be dropped as older than it, for good. Counters keep the
        # first match: an echo taken for an increment would count it twice.
        landed_same = (j for j in range(hit, len(entries)) if entries[j]["done"] and same(entries[j]["v"], seen.value))
        hit = next(landed_same, hit)
    elif "was" in entries[hit]:
        # A counter: of the entries of this value, the echo answers the write over the image it replaced (the
        # stream shows it; else the first match's image). One cut short by a crash and a later one that landed,
        # both over the same image, are one write made twice: only one of them can have found that image there,
        # and the (last) landed one did. Taken for another entry's, the landed one would stay, and the side's own
        # increments would be dropped as older than it (lost). Entries skipped never landed: their echo, over
        # another image, would have come first. (An entry may be marked landed already: a batch read again after
        # a crash finds the entries its first reading consumed so, see ``with_consumed``; it is answered alike.)
        over = entries[hit]["was"] if replaced is UNKNOWN else replaced
        fits = [
            j
            for j in range(hit, len(entries))
            if same(entries[j]["v"], seen.value) and "was" in entries[j] and same(entries[j]["was"], over)
        ]
        landed_fits = [j for j in fits if entries[j]["done"]]
        hit = landed_fits[-1] if landed_fits else fits[-1] if fits else hit
    entry = entries[hit]
    del entries[: hit + 1]
    newer = any(e["done"] for e in entries)  # a newer write landed (one cut short by a crash may never have)
    _prune(st, side, name)
    if newer:
        return Echo(True, False)
    if entry["done"]:
        return Echo(True, True)
    o = other(side)  # type: ignore[arg-type]
    if "was" in entry:
        # A counter: the other side holding the written value is no sign that it holds what was merged into it.
        # Its own increments may have reached that value (0 + 1 + 1 there, 0 + 2 here), and taken for agreed,
        # the increment this write brought here would be lost. What the write brought moves the shadow instead.
        # What the write replaced: the stream shows it. The entry's ``was`` is its first attempt's image, and
        # attempts cut short by crashes that announced the same value (one entry) may have found other images
        # there; the one that landed is the one whose image the side held.
        was = entry["was"] if replaced is UNKNOWN else replaced
        moved = _moved(st.shadow.get(name), entry["v"], was)
        if moved is not None:
            return Echo(True, True, Agreed(moved, 0.0, o))
    theirs = st.image[o].get(name)
    if theirs is not None and same(theirs.value, seen.value):
        return Echo(True, True, Agreed(seen.value, seen.at, o))
    if entry["has_base"]:
        return Echo(True, True, Agreed(entry["base"], 0.0, o))
    return Echo(True, True)


def _moved(shadow: Agreed | None, value: Any, was: Any) -> Any:
    """A counter's shadow moved by what a write of ``value`` over ``was`` brought (None: not numbers)."""
    if shadow is None:
        return None
    nums = [0 if v is None else v for v in (shadow.value, value, was)]
    if not all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) for v in nums):
        return None
    try:
        return nums[0] + (nums[1] - nums[2])
    except TypeError:  # Decimal with float
        return None
