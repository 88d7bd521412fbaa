"""The sync's books: review queue, history, counters and rule overrides, staged for the next commit.

:class:`Bookkeeper` turns what :func:`~tidesync.sync.outcome.apply_outcome` reports
(parked fields, closed conflicts, settlements, rejected writes) into the
state-store entries described in :mod:`.store_layout`, and stages them so they
commit with the record states. A field parked again while its conflict is
pending updates that conflict (same id, new candidates) instead of adding one.
"""

from __future__ import annotations

from typing import Any

from tidesync.clock import Clock
from tidesync.state.store import KeyValues, StateChanges
from tidesync.sync.outcome import Outcome
from tidesync.sync.record import RecordState
from tidesync.sync.rules import Rule
from tidesync.sync.store_layout import (
    CONFLICTS,
    HISTORY,
    META,
    RESOLVE,
    RULES,
    conflict_entry,
    conflict_id,
    conflict_key,
    history_entry,
    history_key,
    parse_conflict_id,
)

_DELETE: Any = object()


class Bookkeeper:
    def __init__(self, sync: str, state: KeyValues, clock: Clock, history_keep: int) -> None:
        self.sync = sync
        self.state = state
        self.clock = clock
        self.history_keep = history_keep
        self.next_conflict = 1
        self.next_history = 1
        self.overrides: dict[str, Rule] = {}
        self._staged: dict[tuple[str, str], Any] = {}
        self._open: dict[str, dict[str, Any]] = {}  # conflict id -> entry, as staged or loaded
        self.parked = 0
        self.settled = 0
        self.rejected = 0

    async def load(self) -> None:
        meta = await self.state.kv_get(META, self.sync) or {}
        self.next_conflict = int(meta.get("conflict", 1))
        self.next_history = int(meta.get("history", 1))
        await self.load_overrides()

    async def load_overrides(self) -> None:
        raw = await self.state.kv_get(RULES, self.sync) or {}
        self.overrides = {f: Rule.parse(r) for f, r in raw.items()}

    # --- staging ------------------------------------------------------------------------------

    def _put(self, ns: str, key: str, value: Any) -> None:
        self._staged[(ns, key)] = value

    async def _entry(self, cid: str) -> dict[str, Any] | None:
        if cid in self._open:
            return self._open[cid]
        _, n = parse_conflict_id(cid)
        entry = await self.state.kv_get(CONFLICTS, conflict_key(self.sync, n))
        if entry is not None:
            self._open[cid] = entry
        return entry

    def _history(self, st: RecordState, **kw: Any) -> None:
        seq = self.next_history
        self.next_history += 1
        self._put(
            HISTORY,
            history_key(self.sync, seq),
            history_entry(seq=seq, at=self.clock.time(), rid=st.rid, keys=st.keys, **kw),
        )
        old = seq - self.history_keep
        if old >= 1:
            self._put(HISTORY, history_key(self.sync, old), _DELETE)

    def record(self, out: Outcome, by: str = "rule") -> None:
        st = out.state
        closing = {f: cid for f, cid, _ in out.closed}
        for s in out.history:
            self.settled += 1
            self._history(
                st,
                field=s.field,
                rule=s.rule,
                why=s.why,
                winner=s.winner,
                value=s.value,
                shadow=s.shadow,
                a=s.a,
                b=s.b,
                by=by,
                conflict=closing.get(s.field),
            )
        settled = {s.field for s in out.history}
        for f, cid, why in out.closed:
            self.close(cid)
            if f not in settled:
                self._history(
                    st,
                    field=f,
                    rule="manual",
                    why=f"conflict {cid} closed: {why}",
                    winner="",
                    value=None,
                    shadow=st.shadow.get(f),
                    a=st.image["a"].get(f),
                    b=st.image["b"].get(f),
                    by="edits",
                    conflict=cid,
                )
        now = self.clock.time()
        for p in out.parks:
            self._park(st, p.field, p.shadow, p.a, p.b, p.rule, p.why, now, "conflict")
        for f, error in out.failures:
            if f == "*":
                self.rejected += 1
                continue
            img = st.image
            self._park(st, f, st.shadow.get(f), img["a"].get(f), img["b"].get(f), "rejected", error, now, "rejected")

    def _park(
        self, st: RecordState, f: str, shadow: Any, a: Any, b: Any, rule: str, why: str, now: float, kind: str
    ) -> None:
        cid = st.conflicts.get(f)
        created = now
        if cid is not None and cid in self._open:
            created = self._open[cid].get("created_at", now)
        if cid is None:
            cid = conflict_id(self.sync, self.next_conflict)
            self.next_conflict += 1
            st.conflicts[f] = cid
            if kind == "conflict":
                self.parked += 1
            else:
                self.rejected += 1
            self._history(
                st,
                field=f,
                rule=rule,
                why=f"parked for review as {cid}: {why}",
                winner="",
                value=None,
                shadow=shadow,
                a=a,
                b=b,
                by="rule",
                conflict=cid,
            )
        entry = conflict_entry(
            cid=cid,
            sync=self.sync,
            rid=st.rid,
            keys=st.keys,
            field=f,
            shadow=shadow,
            a=a,
            b=b,
            rule=rule,
            why=why,
            created_at=created,
            updated_at=now,
            kind=kind,
        )
        self._open[cid] = entry
        self._put(CONFLICTS, conflict_key(self.sync, parse_conflict_id(cid)[1]), entry)

    def close(self, cid: str) -> None:
        _, n = parse_conflict_id(cid)
        self._open.pop(cid, None)
        self._put(CONFLICTS, conflict_key(self.sync, n), _DELETE)
        self._put(RESOLVE, f"{self.sync}/{n}", _DELETE)

    def drop_request(self, key: str) -> None:
        self._put(RESOLVE, key, _DELETE)

    async def conflict(self, cid: str) -> dict[str, Any] | None:
        return await self._entry(cid)

    async def requests(self) -> dict[str, dict[str, Any]]:
        return await self.state.kv_scan(RESOLVE, f"{self.sync}/")

    # --- commit -------------------------------------------------------------------------------

    def stage(self, changes: StateChanges) -> None:
        """Add the staged entries (and the counters) to ``changes``."""
        for k, v in self._staged.items():
            if v is _DELETE:
                changes.kv_delete.append(k)
            else:
                changes.kv_put[k] = v
        changes.kv_put[(META, self.sync)] = {"conflict": self.next_conflict, "history": self.next_history}

    def committed(self) -> None:
        self._staged.clear()
        if len(self._open) > 10_000:
            self._open.clear()
