"""Initial pairing of two populated tables, and its dry run (``tidesync sync plan``).

Both tables are read whole. Records are matched:

- with shared keys, by key;
- otherwise by ``match.by`` (canonical field names; a business key such as
  email), then, for records still unmatched, by ``match.fallback``. A match
  value held by more than one record on a side is a *collision*: matching it
  would pick one at random and duplicate the rest, so by default the start
  fails and names them (``on_collision: create`` creates them unmatched).
  Empty values (None, "") never match.

Matched records whose fields differ are settled by the rules, never by
overwriting one side: with no agreed value yet, both values count as edits.
``lww`` compares each side's per-row ``timestamp`` column (configure it per
side); without one it cannot tell and escalates to the fallback (default
``manual``: parked for review). ``sum`` has no base to add deltas to, so it
escalates too. Records found on one side only are created on the other.

Records the sync already knows (a pairing cut short by a crash, then run
again) are left to the normal flow, so running it twice creates nothing twice.

The plan is computed without writing anything; going live runs the same
decisions through the processor (conditional writes, one commit per chunk).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tidesync.errors import ConfigError
from tidesync.event import Batch, Key
from tidesync.state.store import StateChanges
from tidesync.sync import decisions
from tidesync.sync.processor import SyncProcessor
from tidesync.sync.record import RecordState, Seen, Side, same
from tidesync.sync.rules import Rules, settle

log = logging.getLogger("tidesync.sync")


@dataclass(frozen=True, slots=True)
class Match:
    by: tuple[str, ...]
    fallback: tuple[str, ...] | None = None
    on_collision: str = "fail"


@dataclass
class PairPlan:
    matched: list[tuple[Key, Key]] = field(default_factory=list)
    create: dict[str, list[Key]] = field(
        default_factory=lambda: {"a": [], "b": []}
    )  # exists on side -> create on other
    collisions: list[dict[str, Any]] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)
    known: int = 0  # records the sync already tracks (left alone)
    rows: dict[str, dict[Key, dict[str, Seen]]] = field(default_factory=lambda: {"a": {}, "b": {}})

    def as_dict(self, limit: int = 1000) -> dict[str, Any]:
        return {
            "matched": len(self.matched),
            "create_on_b": len(self.create["a"]),
            "create_on_a": len(self.create["b"]),
            "collisions": self.collisions[:limit],
            "differences": self.differences[:limit],
            "already_tracked": self.known,
            "matched_pairs": [[list(a), list(b)] for a, b in self.matched[:limit]],
            "records_to_create_on_b": [list(k) for k in self.create["a"][:limit]],
            "records_to_create_on_a": [list(k) for k in self.create["b"][:limit]],
        }


def epoch(value: Any) -> float:
    """A per-row modification time as epoch seconds (0.0 when unknown)."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return epoch(dt.datetime.fromisoformat(value))
        except ValueError:
            return 0.0
    return 0.0


def _empty(v: Any) -> bool:
    return v is None or v == ""


async def plan(proc: SyncProcessor, match: Match | None, rules: Rules) -> PairPlan:
    """Read both tables and decide what pairing would do; writes nothing."""
    fmap = proc.fmap
    out = PairPlan()
    for side in ("a", "b"):
        spec = fmap.sides[side]
        for row in await proc.endpoints[side].scan():
            at = epoch(row.get(spec.timestamp)) if spec.timestamp else 0.0
            out.rows[side][fmap.key_of_row(side, row)] = fmap.to_canonical(side, row, at)
    await _drop_known(proc, out)
    if fmap.shared_keys:
        by_rid = {fmap.rid_of("b", k): k for k in out.rows["b"]}
        for ka in out.rows["a"]:
            kb = by_rid.pop(fmap.rid_of("a", ka), None)
            if kb is None:
                out.create["a"].append(ka)
            else:
                out.matched.append((ka, kb))
        out.create["b"] = list(by_rid.values())
    else:
        if match is None and out.rows["a"] and out.rows["b"]:
            raise ConfigError(
                f"sync {proc.name}: both tables hold records and each side makes its own keys, so records "
                "cannot be paired by key: set match: {by: <a unique field such as email>}"
            )
        _match(out, match)
    for ka, kb in out.matched:
        ra, rb = out.rows["a"][ka], out.rows["b"][kb]
        for name in fmap.fields:
            a, b = ra.get(name), rb.get(name)
            if a is None or b is None or same(a.value, b.value):
                continue
            s = settle(rules.for_field(name), rules, None, a, b)
            out.differences.append(
                {
                    "a_key": list(ka),
                    "b_key": list(kb),
                    "field": name,
                    "a": a.value,
                    "b": b.value,
                    "a_at": a.at,
                    "b_at": b.at,
                    "rule": s.rule,
                    "why": s.why,
                    "outcome": "parked for review" if s.parked else f"{s.winner or 'merge'} wins",
                    "value": None if s.parked else s.value,
                }
            )
    return out


async def _drop_known(proc: SyncProcessor, out: PairPlan) -> None:
    """Leave out records the sync already tracks."""
    for side in ("a", "b"):
        rows = out.rows[side]
        keys = list(rows)
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            if proc.fmap.shared_keys:
                rids = {proc.fmap.rid_of(side, k): k for k in chunk}
                found = await proc.state.shadow_get(proc.scope, "record", list(rids))
                gone = [rids[r] for r in found]
            else:
                gone = list(await proc.state.shadow_get(proc.scope, f"id:{side}", chunk))
            for k in gone:
                if rows.pop(k, None) is not None and side == "a":
                    out.known += 1


def _match(out: PairPlan, match: Match | None) -> None:
    left = {"a": dict(out.rows["a"]), "b": dict(out.rows["b"])}
    rounds = [] if match is None else [match.by, *([match.fallback] if match.fallback else [])]
    for names in rounds:
        index: dict[str, dict[tuple[Any, ...], list[Key]]] = {"a": {}, "b": {}}
        for side in ("a", "b"):
            for key, row in left[side].items():
                value = tuple(row[n].value if n in row else None for n in names)
                if any(_empty(v) for v in value):
                    continue
                index[side].setdefault(_hashable(value), []).append(key)
        for value, keys_a in index["a"].items():
            keys_b = index["b"].get(value)
            if keys_b is None:
                continue
            if len(keys_a) > 1 or len(keys_b) > 1:
                out.collisions.append(
                    {
                        "fields": list(names),
                        "value": list(value),
                        "a_keys": [list(k) for k in keys_a],
                        "b_keys": [list(k) for k in keys_b],
                    }
                )
                continue
            out.matched.append((keys_a[0], keys_b[0]))
            del left["a"][keys_a[0]], left["b"][keys_b[0]]
        for side in ("a", "b"):
            for value, keys in index[side].items():
                other_keys = index["b" if side == "a" else "a"].get(value)
                if len(keys) > 1 and other_keys is None:
                    out.collisions.append(
                        {
                            "fields": list(names),
                            "value": list(value),
                            f"{side}_keys": [list(k) for k in keys],
                            "note": f"several records on {side.upper()} share this value: one at most can match",
                        }
                    )
    out.create["a"] = list(left["a"])
    out.create["b"] = list(left["b"])


def _hashable(value: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(repr(v) if isinstance(v, (list, dict, set)) else v for v in value)


async def go_live(proc: SyncProcessor, match: Match | None, *, chunk: int = 500) -> PairPlan:
    """Pair for real: match, create what is missing, settle differences by the rules."""
    rules = proc.policy.rules
    p = await plan(proc, match, rules)
    blocking = [c for c in p.collisions if "a_keys" in c and "b_keys" in c]
    if blocking and (match is None or match.on_collision == "fail"):
        shown = "; ".join(f"{c['fields']}={c['value']}: A {c['a_keys']} / B {c['b_keys']}" for c in blocking[:5])
        raise ConfigError(
            f"sync {proc.name}: {len(blocking)} match value(s) are shared by several records, so pairing would "
            f"create duplicates ({shown}). Fix the data, match on another field, or set match.on_collision: "
            "create (see `tidesync sync plan`)"
        )
    fmap = proc.fmap
    items: list[tuple[Key, RecordState, decisions.Decision]] = []
    new_ids: dict[tuple[str, Key], Key] = {}
    for ka, kb in p.matched:
        rid = fmap.new_rid("a", ka)
        st = RecordState(rid, keys={"a": ka, "b": kb}, image={"a": dict(p.rows["a"][ka]), "b": dict(p.rows["b"][kb])})
        st.stream = {side: {f: v.value for f, v in p.rows[side][k].items()} for side, k in (("a", ka), ("b", kb))}
        if not fmap.shared_keys:
            new_ids[("a", ka)] = rid
            new_ids[("b", kb)] = rid
        items.append((rid, st, decisions.evaluate(st.copy(), fmap.fields, rules)))
    for side in ("a", "b"):
        s: Side = side
        for key in p.create[side]:
            rid = fmap.new_rid(s, key)
            if not fmap.shared_keys:
                new_ids[(side, key)] = rid
            ev = decisions.SideEvent(s, key, decisions.UPSERT, p.rows[side][key], 0.0, created=True, full=True)
            before = RecordState(rid)
            items.append((rid, before, decisions.decide(before, ev, proc.policy)))
    for i in range(0, len(items), chunk):
        await _apply(proc, items[i : i + chunk], new_ids if i == 0 else {})
    log.info(
        "sync %s paired: %d matched, %d created on B, %d created on A, %d field difference(s) settled by the rules",
        proc.name,
        len(p.matched),
        len(p.create["a"]),
        len(p.create["b"]),
        len(p.differences),
    )
    return p


async def _apply(
    proc: SyncProcessor,
    items: Sequence[tuple[Key, RecordState, decisions.Decision]],
    new_ids: Mapping[tuple[str, Key], Key],
) -> None:
    ids = dict(new_ids)
    outcomes = await proc.write_round(list(items), ids)
    states: dict[Key, RecordState] = {}
    for (rid, _, _), out in zip(items, outcomes, strict=True):
        proc.bookkeeper.record(out)
        states[rid] = out.state
        if out.reconsider:
            d = decisions.evaluate(out.state.copy(), out.reconsider, proc.policy.rules)
            more = await proc.write_round([(rid, out.state, d)], ids)
            proc.bookkeeper.record(more[0])
            states[rid] = more[0].state
    await proc.commit_batch(states, set(states), ids, Batch[StateChanges]([]))
