"""One batch of changes from one side, through decisions and writes, to one state-store commit.

:meth:`SyncProcessor.process` is the unit the runner calls for every batch
(and the property tests call directly):

1. keep the events of this side's entity and convert them to canonical form
   (an event carrying the side's replication origin is marked as the sync's);
2. find each event's record (shared key, or the ID map; a new key on a side
   that makes keys may be the echo of an insert of the sync: ``_claim``) and
   load the record states;
3. in rounds, one item per record per round (a run of consecutive updates
   of a record from this side is one item: each change is checked against
   the echo ledger in order, then the record is decided once): decide,
   store what is about to be written (insert intents, the echo ledger),
   write through both endpoints (one call per side per round, retried on
   transient errors), and apply the outcome;
4. commit every record state, ID map entry, review-queue and history change,
   the source's own state and both sides' positions in one transaction.

The runner tells the source its position is handled only after that commit.

Crash safety: a crash anywhere before the commit leaves the state as it was
before the batch (plus what step 3 stored before writing), and the batch is
read again. Field writes are conditional, so repeating one reports
``already``; the echo ledger (:mod:`.echo`), committed before the writes,
still knows their echoes. An insert is recorded as *pending* before it runs;
repeated, it looks for the row first (by the record's key there if its echo
was seen, else by the match columns or every value written) and adopts it.

Limits (documented, and the property test keeps to them): where the side
makes the keys, an insert hidden by a crash is found again by its values, so
a person inserting a row with exactly the same values at that moment can be
taken for it (the two become one record, nothing is duplicated). On sides
without replication origins, echoes are known by value, see :mod:`.echo`.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import TransientError
from tidesync.event import Batch, ChangeEvent, Key, Position
from tidesync.retry import Failure, RetryPolicy
from tidesync.state.store import ShadowRow, StateChanges, StateStore
from tidesync.sync import decisions, echo
from tidesync.sync.bookkeeping import Bookkeeper
from tidesync.sync.endpoint import Endpoint
from tidesync.sync.mapping import FieldMap
from tidesync.sync.outcome import Outcome, apply_outcome
from tidesync.sync.record import RecordState, Side, same
from tidesync.sync.resolve import resolution_plan
from tidesync.sync.store_layout import POSITIONS
from tidesync.sync.writes import RoundWrites

log = logging.getLogger("tidesync.sync")

Hook = Callable[[str], None]


@dataclass
class SyncStats:
    events: int = 0
    echoes: int = 0  # events that carried the side's replication origin (the sync's own writes)
    echo_fields: int = 0  # field changes recognised as the sync's own writes by the ledger (every side)
    writes: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})  # endpoint calls made
    batches: int = 0


def _transient(exc: Exception) -> bool:
    return isinstance(exc, TransientError)


def joins(run: list[decisions.SideEvent], ev: decisions.SideEvent) -> bool:
    """Whether ``ev`` continues a run of upserts (decided together; an insert starts a new run)."""
    return run[-1].op == decisions.UPSERT and ev.op == decisions.UPSERT and not ev.created


class SyncProcessor:
    def __init__(
        self,
        name: str,
        fmap: FieldMap,
        endpoints: Mapping[str, Endpoint],
        state: StateStore,
        policy: decisions.Policy,
        *,
        origins: Mapping[str, str | None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        retry: RetryPolicy | None = None,
        history_keep: int = 10_000,
        match_columns: Mapping[str, tuple[str, ...] | None] | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.name = name
        self.fmap = fmap
        self.endpoints = endpoints
        self.state = state
        self.base_policy = policy
        self.origins = dict(origins or {})
        self.clock = clock
        self.retry = retry or RetryPolicy(initial_delay=0.05, max_delay=5.0)
        self.match_columns = dict(match_columns or {"a": None, "b": None})
        self.hook = hook
        self.scope = f"sync:{name}"
        self.bookkeeper = Bookkeeper(name, state, clock, history_keep)
        self.stats = SyncStats()
        self.positions: dict[str, Position | None] = {"a": None, "b": None}
        self._states: dict[Key, RecordState] = {}
        self._idmap: dict[tuple[str, Key], Key] = {}
        # side -> rid -> rows of unconfirmed inserts there (an index of RecordState.pending, stored beside it)
        self._intents: dict[str, dict[Key, list[dict[str, Any]]]] = {"a": {}, "b": {}}
        self._claimed: dict[Key, set[str]] = {}  # index entries claimed in this batch, deleted at its commit
        # rid -> both sides' stream images as this batch found them: what its intents commits store (see there)
        self._streams: dict[Key, dict[str, dict[str, Any]]] = {}
        # rid -> the echo ledger as this batch found it: its intents commits keep what the batch consumed (see there)
        self._ledgers: dict[Key, dict[str, dict[str, list[Any]]]] = {}

    @property
    def policy(self) -> decisions.Policy:
        origin_sides = frozenset(s for s, o in self.origins.items() if o)
        return decisions.Policy(
            self.base_policy.rules.with_overrides(self.bookkeeper.overrides), self.base_policy.deletes, origin_sides
        )

    async def load(self) -> None:
        for side in ("a", "b"):
            pos = await self.state.kv_get(POSITIONS, f"{self.name}/{side}")
            self.positions[side] = tuple(pos) if pos is not None else None
            rows = await self.state.shadow_scan(self.scope, f"pending:{side}")
            self._intents[side] = {r.key: list(r.row["rows"]) for r in rows}
        await self.bookkeeper.load()

    # --- lookups -----------------------------------------------------------------------------

    async def rids(self, side: Side, keys: Sequence[Key], new: dict[tuple[str, Key], Key]) -> dict[Key, Key]:
        """Record ids of ``side``'s keys; unknown keys get a new id (added to ``new``: the ID map entries to store)."""
        if self.fmap.shared_keys:
            return {k: self.fmap.rid_of(side, k) for k in keys}
        out: dict[Key, Key] = {}
        missing = []
        for k in keys:
            rid = self._idmap.get((side, k))
            if rid is None:
                missing.append(k)
            else:
                out[k] = rid
        if missing:
            found = await self.state.shadow_get(self.scope, f"id:{side}", list(dict.fromkeys(missing)))
            for k in missing:
                row = found.get(k)
                if row is not None:
                    rid = tuple(row.row["r"])
                else:
                    rid = self.fmap.new_rid(side, k)
                    new[(side, k)] = rid
                self._idmap[(side, k)] = rid
                out[k] = rid
        return out

    def _claim(
        self, side: Side, events: list[decisions.SideEvent], rid_of: dict[Key, Key], new_ids: dict[tuple[str, Key], Key]
    ) -> None:
        """A new key whose row is what an unconfirmed insert of the sync wrote there: that insert's record."""
        origin_side = self.origins.get(side) is not None
        # A record whose insert here comes back in this batch under a key the ID map already gives it (stored
        # before a crash) has its intent answered by that row: a second new row with the same values (a retry
        # that found the first one deleted or changed) is not that insert, and claimed, it would be ignored.
        answered = {rid_of[e.key] for e in events if e.created and (side, e.key) not in new_ids}
        intents = {rid: rows for rid, rows in self._intents[side].items() if rid not in answered}
        for e in events:
            if not e.created or new_ids.get((side, e.key)) != rid_of[e.key]:
                continue
            if origin_side and not e.tagged:
                continue  # where writes carry the origin, a change without it is never the sync's
            values = {f: s.value for f, s in e.fields.items()}
            for rid, rows in intents.items():
                if any(row and all(f in values and same(values[f], v) for f, v in row.items()) for row in rows):
                    log.info(
                        "sync %s: key %s on side %s is the sync's own insert for record %s", self.name, e.key, side, rid
                    )
                    rid_of[e.key] = new_ids[(side, e.key)] = self._idmap[(side, e.key)] = rid
                    del intents[rid]
                    del self._intents[side][rid]
                    self._claimed.setdefault(rid, set()).add(side)
                    break

    async def states(self, rids: Sequence[Key]) -> dict[Key, RecordState]:
        out = {r: self._states[r] for r in rids if r in self._states}
        missing = [r for r in rids if r not in out]
        if missing:
            found = await self.state.shadow_get(self.scope, "record", missing)
            for r in missing:
                s = found.get(r)
                out[r] = RecordState.from_row(r, s.row) if s is not None else RecordState(r)
        return out

    # --- one batch ----------------------------------------------------------------------------

    def _prepare(self, side: Side, events: Sequence[ChangeEvent]) -> tuple[list[decisions.SideEvent], int]:
        """This side's events in canonical form, and how many carried the side's replication origin."""
        spec = self.fmap.sides[side]
        origin = self.origins.get(side)
        out = []
        tagged = 0
        for ev in events:
            if ev.entity != spec.entity:
                continue
            self.stats.events += 1
            ours = origin is not None and ev.origin == origin
            tagged += ours
            sev = self.fmap.inbound(side, ev)
            if sev is not None:
                out.append(replace(sev, tagged=True) if ours else sev)
        return out, tagged

    async def process(self, side: Side, batch: Batch[StateChanges]) -> None:
        """Handle one batch of ``side``'s source and commit it (with ``batch.position``, when given)."""
        new_ids: dict[tuple[str, Key], Key] = {}
        events, tagged = self._prepare(side, batch.events)
        self.stats.echoes += tagged
        rid_of = await self.rids(side, [e.key for e in events], new_ids)
        if self._intents[side] and not self.fmap.shared_keys:
            self._claim(side, events, rid_of, new_ids)
        queues: dict[Key, deque[list[decisions.SideEvent] | tuple[str, ...]]] = {}
        for e in events:
            q = queues.setdefault(rid_of[e.key], deque())
            last = q[-1] if q else None
            if isinstance(last, list) and joins(last, e):
                last.append(e)
            else:
                q.append([e])
        states = await self.states(list(queues))
        self._streams = {rid: {s: dict(row) for s, row in st.stream.items()} for rid, st in states.items()}
        self._ledgers = {rid: copy.deepcopy(st.sent) for rid, st in states.items()}
        touched: set[Key] = set()
        while queues:
            round_: list[tuple[Key, RecordState, decisions.Decision]] = []
            for rid in list(queues):
                q = queues[rid]
                item = q.popleft()
                if not q:
                    del queues[rid]
                st = states[rid]
                if isinstance(item, list):
                    d = decisions.decide(st, item, self.policy)
                    self.stats.echo_fields += d.echoes
                else:
                    d = decisions.evaluate(st.copy(), item, self.policy.rules)
                round_.append((rid, st, d))
            outcomes = await self.write_round(round_, new_ids)
            for (rid, _, _), out in zip(round_, outcomes, strict=True):
                states[rid] = out.state
                touched.add(rid)
                self.bookkeeper.record(out)
                if out.reconsider:
                    queues.setdefault(rid, deque()).appendleft(out.reconsider)
        if batch.position is not None:
            self.positions[side] = batch.position
        await self.commit_batch(states, touched, new_ids, batch)
        self.stats.batches += 1

    async def apply_resolutions(self) -> int:
        """Apply the resolution requests people recorded (see :mod:`.resolve`); return how many took effect.

        A request whose write cannot be made yet (the side changed the field) stays for the next call.
        """
        await self.bookkeeper.load_overrides()
        requests = await self.bookkeeper.requests()
        if not requests:
            return 0
        new_ids: dict[tuple[str, Key], Key] = {}
        round_: list[tuple[Key, RecordState, decisions.Decision]] = []
        picked: list[dict[str, Any]] = []
        self._streams = {}
        self._ledgers = {}
        for key, req in sorted(requests.items()):
            entry = await self.bookkeeper.conflict(req["id"])
            if entry is None:
                self.bookkeeper.drop_request(key)
                continue
            rid = tuple(entry["rid"])
            if any(r == rid for r, _, _ in round_):
                continue  # one decision per record per round: the next call takes it
            st = (await self.states([rid]))[rid]
            d = None
            if st.conflicts.get(entry["field"]) == req["id"]:
                d = resolution_plan(st, entry["field"], req, self.clock.time())
            if d is None:
                log.info("sync %s: conflict %s no longer applies; dropped", self.name, req["id"])
                self.bookkeeper.close(req["id"])
                continue
            round_.append((rid, st, d))
            picked.append(req)
        states = {rid: st for rid, st, _ in round_}
        applied = 0
        if round_:
            outcomes = await self.write_round(round_, new_ids)
            for (rid, _, _), out, req in zip(round_, outcomes, picked, strict=True):
                states[rid] = out.state
                self.bookkeeper.record(out, by=str(req.get("by") or "a person"))
                applied += any(cid == req["id"] for _, cid, _ in out.closed)
        await self.commit_batch(states, set(states), new_ids, Batch[StateChanges]([]))
        return applied

    async def write_round(
        self, round_: list[tuple[Key, RecordState, decisions.Decision]], new_ids: dict[tuple[str, Key], Key]
    ) -> list[Outcome]:
        made = [d for _, _, d in round_]
        rw = RoundWrites(self.fmap, made, self.match_columns)
        for i, (_, before, d) in enumerate(round_):
            if isinstance(d.op, decisions.Insert | decisions.Recreate) and d.op.side in before.pending:
                rw.retries.add(i)
                rw.earlier[i] = [dict(row) for row in before.pending[d.op.side]]
        rw.build()
        await rw.fetch_sources(self.endpoints)
        await self._commit_intents(rw, new_ids)
        for side in ("a", "b"):
            if rw.ops[side]:
                results = await self._apply(side, rw)
                rw.record(side, results)
                if self.hook is not None:
                    self.hook(f"wrote:{side}")
        if self.hook is not None:
            self.hook("written")
        outcomes = []
        for i, d in enumerate(made):
            row = rw.row_results.get(i)
            if row is not None and i in rw.retries:
                row = replace(row, retried=True, earlier=tuple(rw.earlier.get(i, ())))
            out = apply_outcome(d, rw.field_results.get(i, {}), row)
            for side in ("a", "b"):
                key = out.state.keys[side]
                if key is not None and not self.fmap.shared_keys and self._idmap.get((side, key)) != out.state.rid:
                    self._idmap[(side, key)] = out.state.rid
                    new_ids[(side, key)] = out.state.rid
            outcomes.append(out)
        return outcomes

    async def _commit_intents(self, rw: RoundWrites, new_ids: dict[tuple[str, Key], Key]) -> None:
        """Before writing what cannot be repeated blindly, store what is about to be written.

        Inserts (see ``RecordState.pending``) and field writes (the echo ledger, :mod:`.echo`).

        The record state stored is the decision's, with two exceptions, both
        for the same reason: this batch's position is not committed, so after
        a crash its events are read again, and they must find what they found
        the first time.

        - The stream images stay as the batch found them. Narrowed against a
          stream image that already holds them (a whole-row event,
          :func:`decisions._changed`), they would change nothing, no field would
          be decided again, and a write announced here but never made would be
          lost.
        - The ledger entries the batch consumed (echoes it saw) are kept,
          marked as landed: read again, such an echo must still be known, or
          it is taken for an edit of that side (a stale value that then
          conflicts with the other side's newer edits of the field); and as
          landed, it does not move the stored shadow, which already holds
          what the first reading of it did (a counter would move twice).
        """
        states: dict[Key, RecordState] = {}
        for side in ("a", "b"):
            for ref in rw.refs[side]:
                if getattr(ref, "kind", "") in ("insert", "recreate"):
                    d = rw.decisions[ref.index]
                    intent = {f: s.value for f, s in ref.row.items()}  # type: ignore[union-attr]
                    intents = d.state.pending.setdefault(side, [])
                    if intent not in intents:
                        intents.append(intent)
                    for f, v in intent.items():  # its echo is the sync's own, field by field
                        echo.announce(d.state, side, f, v, None)
                    states[d.state.rid] = d.state
        sending = rw.sending()
        for i, d in enumerate(rw.decisions):
            for plan in d.fields:
                for side in plan.writes:
                    if (i, side, plan.field) in sending:
                        base, was = (plan.b if side == "a" else plan.a), plan.writes[side]
                        value = plan.stamp.value
                        echo.announce(d.state, side, plan.field, value, base, counter=plan.strict, was=was)
                        states[d.state.rid] = d.state
        if states:
            rows = []
            for rid, st in states.items():
                row = st.to_row()
                if rid in self._streams:
                    row["r"] = self._streams[rid]
                if rid in self._ledgers:
                    row["w"] = echo.with_consumed(self._ledgers[rid], st.sent)
                rows.append(ShadowRow(self.scope, "record", rid, row))
            changes = StateChanges(shadow_put=rows + self._id_rows(new_ids))
            self._index_intents(states, changes)
            await self.state.commit(self.name, changes)
            if self.hook is not None:
                self.hook("intents")

    def _index_intents(self, states: Mapping[Key, RecordState], changes: StateChanges) -> None:
        """Keep the index of unconfirmed inserts in step with these record states (in memory and in ``changes``)."""
        for side in ("a", "b"):
            index = self._intents[side]
            for rid, st in states.items():
                rows = st.pending.get(side)
                if rows:
                    index[rid] = list(rows)
                    changes.shadow_put.append(ShadowRow(self.scope, f"pending:{side}", rid, {"rows": rows}))
                elif rid in index or side in self._claimed.get(rid, ()):
                    index.pop(rid, None)
                    changes.shadow_delete.append((self.scope, f"pending:{side}", rid))

    def _id_rows(self, new_ids: Mapping[tuple[str, Key], Key]) -> list[ShadowRow]:
        """ID map entries both ways: a side's key -> record id, and record id -> its newest key there."""
        rows = []
        for (side, key), rid in new_ids.items():
            rows.append(ShadowRow(self.scope, f"id:{side}", key, {"r": list(rid)}))
            rows.append(ShadowRow(self.scope, f"key:{side}", rid, {"k": list(key)}))
        return rows

    async def _apply(self, side: Side, rw: RoundWrites) -> list[Any]:
        """Send ``side``'s ops of the round, retrying transient failures on the processor's retry policy."""
        endpoint = self.endpoints[side]

        def retrying(failure: Failure) -> None:
            log.warning("sync %s: writing side %s failed (%s); retrying", self.name, side, failure.error)
            # The failed call may have committed: its inserts of generated keys look before they write.
            rw.retry_of_failed_call(side)

        results: list[Any] = []
        async for attempt in self.retry.attempts(self.clock, _transient, on_retry=retrying):
            with attempt:
                await self._adopt(side, rw)
                if not rw.ops[side]:
                    return []
                results = await endpoint.apply(rw.ops[side])
        self.stats.writes[side] += len(rw.ops[side])
        return results

    async def _adopt(self, side: Side, rw: RoundWrites) -> None:
        """Find the rows that unsure inserts created before, and use them instead of inserting again.

        First by the ID map (the insert's echo was seen and mapped, though the
        record state was not stored); else by the values written (the match
        columns, or all), skipping rows that belong to another record.
        """
        taken: set[Key] = set()
        for n, op in reversed(rw.unsure_inserts(side)):
            st = rw.decisions[rw.refs[side][n].index].state
            rid = st.rid
            known = await self.state.shadow_get(self.scope, f"key:{side}", [rid])
            # (the record's old key there, deleted, is not what a re-create inserted)
            if rid in known and tuple(known[rid].row["k"]) != st.keys[side]:
                # Its echo was mapped: the row is the record's, even if deleted since (that delete is on its way).
                key = tuple(known[rid].row["k"])
                rows = await self.endpoints[side].fetch([key])
                taken.add(key)
                rw.adopt(side, n, key, rows.get(key))
                continue
            hits = await self.endpoints[side].find(rw.find_values(side, op))
            if not hits:
                continue
            stored = await self.state.shadow_get(self.scope, f"id:{side}", [k for k, _ in hits])
            for k, row in hits:
                owner = self._idmap.get((side, k)) or (tuple(stored[k].row["r"]) if k in stored else None)
                if k not in taken and (owner is None or owner == rid):
                    taken.add(k)
                    log.info("sync %s: an insert on side %s had landed before; adopting key %s", self.name, side, k)
                    rw.adopt(side, n, k, row)
                    break

    async def commit_batch(
        self,
        states: Mapping[Key, RecordState],
        touched: set[Key],
        new_ids: Mapping[tuple[str, Key], Key],
        batch: Batch[StateChanges],
    ) -> None:
        changes = StateChanges(
            shadow_put=[ShadowRow(self.scope, "record", rid, states[rid].to_row()) for rid in touched]
            + self._id_rows(new_ids),
        )
        self._index_intents({rid: states[rid] for rid in touched}, changes)
        self._claimed.clear()
        self._streams = {}
        self._ledgers = {}
        self.bookkeeper.stage(changes)
        for side in ("a", "b"):
            if self.positions[side] is not None:
                changes.kv_put[(POSITIONS, f"{self.name}/{side}")] = list(self.positions[side] or ())
        if batch.state is not None:  # the source's own state, committed with the sync's
            changes = changes.merge(batch.state)
        await self.state.commit(self.name, changes)
        self.bookkeeper.committed()
        for rid in touched:
            self._states[rid] = states[rid]
        if len(self._states) > 100_000:
            self._states.clear()  # a cache: the store has every state
