"""From decisions to endpoint ops, and from op results back to what :func:`apply_outcome` reads.

One :class:`RoundWrites` collects the writes of a round of decisions (at most
one decision per record), so each side gets one :meth:`Endpoint.apply` call
per round: field writes of a record become one :class:`UpdateOp`; inserts,
deletes and re-creates become record ops. Re-creates need the editing side's
whole row first: :meth:`RoundWrites.fetch_sources` reads those in one call per side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidesync.errors import TransformError
from tidesync.event import Key, Row
from tidesync.sync import outcome
from tidesync.sync.decisions import Decision, Delete, Insert, Recreate
from tidesync.sync.endpoint import DeleteOp, Endpoint, FieldWrite, InsertOp, Op, OpResult, UpdateOp
from tidesync.sync.mapping import FieldMap
from tidesync.sync.record import Seen, Side


@dataclass
class _Update:
    index: int
    forms: dict[str, Any]  # canonical name -> side form written
    values: dict[str, Any]  # canonical name -> canonical value


@dataclass
class _RowOp:
    index: int
    kind: str
    forms: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Seen] = field(default_factory=dict)  # what is written, canonical
    source_row: dict[str, Seen] | None = None
    key: Key | None = None


@dataclass
class RoundWrites:
    fmap: FieldMap
    decisions: list[Decision]
    find_columns: Mapping[str, tuple[str, ...] | None]  # side -> columns an insert retry looks for (None: all)
    retries: set[int] = field(default_factory=set)  # decisions whose insert may have landed before a crash
    earlier: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # retries: rows those attempts wrote
    ops: dict[str, list[Op]] = field(default_factory=lambda: {"a": [], "b": []})
    refs: dict[str, list[_Update | _RowOp]] = field(default_factory=lambda: {"a": [], "b": []})
    field_results: dict[int, dict[tuple[str, str], outcome.FieldResult]] = field(default_factory=dict)
    row_results: dict[int, outcome.RowResult] = field(default_factory=dict)
    fetches: dict[str, list[tuple[int, Recreate]]] = field(default_factory=lambda: {"a": [], "b": []})

    def build(self) -> None:
        for i, d in enumerate(self.decisions):
            self.field_results[i] = {}
            self._fields(i, d)
            op = d.op
            if isinstance(op, Insert):
                values = {f: s.value for f, s in op.row.items()}
                self._insert(i, op.side, values, op.row)
            elif isinstance(op, Delete):
                key = d.state.keys[op.side]
                if key is None:
                    self.row_results[i] = outcome.RowResult(outcome.MISSING)
                    continue
                expected = None
                if op.expected is not None:
                    expected = {self.fmap.column(op.side, f): self.fmap.expected(s) for f, s in op.expected.items()}
                self.ops[op.side].append(DeleteOp(key, expected))
                self.refs[op.side].append(_RowOp(i, "delete"))
            elif isinstance(op, Recreate):
                self.fetches[op.source].append((i, op))

    def _fields(self, i: int, d: Decision) -> None:
        per_side: dict[str, dict[str, tuple[Any, Seen | None]]] = {"a": {}, "b": {}}
        for plan in d.fields:
            for side, expected in plan.writes.items():
                per_side[side][plan.field] = (plan.stamp.value, expected)
        for side, items in per_side.items():
            if not items:
                continue
            s: Side = side  # type: ignore[assignment]
            key = d.state.keys[s]
            if key is None or d.state.gone[s] is not None:
                for f in items:
                    self.field_results[i][(s, f)] = outcome.FieldResult(outcome.MISSING)
                continue
            values = {f: v for f, (v, _) in items.items()}
            try:
                forms = self.fmap.to_side(s, values)
            except TransformError as exc:
                for f in items:
                    self.field_results[i][(s, f)] = outcome.FieldResult(outcome.FAILED, error=str(exc))
                continue
            writes = tuple(
                FieldWrite(
                    self.fmap.column(s, f), forms.get(f, v), self.fmap.expected(exp), conditional=exp is not None
                )
                for f, (v, exp) in items.items()
            )
            self.ops[s].append(UpdateOp(key, writes))
            self.refs[s].append(_Update(i, {f: forms.get(f, v) for f, v in values.items()}, values))

    def _insert(self, i: int, side: Side, values: dict[str, Any], seen: Mapping[str, Seen]) -> None:
        try:
            row, forms = self.fmap.insert_row(side, values)
        except TransformError as exc:
            self.row_results[i] = outcome.RowResult(outcome.FAILED, error=str(exc))
            return
        key = self.fmap.key_of_row(side, row) if self.fmap.shared_keys else None
        written = {f: Seen(s.value, s.at, self.fmap.raw_of(s.value, forms.get(f, s.value))) for f, s in seen.items()}
        self.ops[side].append(InsertOp(row, key))
        self.refs[side].append(_RowOp(i, "insert", forms, written))

    def sending(self) -> set[tuple[int, str, str]]:
        """(decision, side, field) of every field write queued (not already settled without a write)."""
        out: set[tuple[int, str, str]] = set()
        for side in ("a", "b"):
            for ref in self.refs[side]:
                if isinstance(ref, _Update):
                    out.update((ref.index, side, f) for f in ref.forms)
        return out

    def retry_of_failed_call(self, side: str) -> None:
        """A call to ``side`` failed and may have committed: its inserts count as earlier attempts."""
        for ref in self.refs[side]:
            self.retries.add(ref.index)
            if isinstance(ref, _RowOp) and ref.kind in ("insert", "recreate"):
                rows = self.earlier.setdefault(ref.index, [])
                row = {f: s.value for f, s in ref.row.items()}
                if row not in rows:
                    rows.append(row)

    def unsure_inserts(self, side: str) -> list[tuple[int, InsertOp]]:
        """Inserts of generated keys that may have landed already (positions in ``ops[side]``)."""
        return [
            (n, op)
            for n, (op, ref) in enumerate(zip(self.ops[side], self.refs[side], strict=True))
            if isinstance(op, InsertOp) and op.key is None and ref.index in self.retries
        ]

    def adopt(self, side: Side, n: int, key: Key, row: Row | None) -> None:
        """The insert at ``ops[side][n]`` had landed before: drop it and report the row found (None: deleted since)."""
        ref = self.refs[side].pop(n)
        self.ops[side].pop(n)
        assert isinstance(ref, _RowOp)
        canonical = self.fmap.to_canonical(side, row, 0.0) if row is not None else {}
        self.row_results[ref.index] = outcome.RowResult(outcome.EXISTS, key, canonical, ref.source_row)

    def find_values(self, side: str, op: InsertOp) -> dict[str, Any]:
        cols = self.find_columns.get(side)
        return {c: v for c, v in op.row.items() if cols is None or c in cols}

    async def fetch_sources(self, endpoints: Mapping[str, Endpoint]) -> None:
        """Read the rows that re-creates copy, then queue their inserts."""
        for source, items in self.fetches.items():
            if not items:
                continue
            keys = [self.decisions[i].state.keys[source] for i, _ in items]
            rows = await endpoints[source].fetch([k for k in keys if k is not None])
            for (i, op), key in zip(items, keys, strict=True):
                row = rows.get(key) if key is not None else None
                if row is None:
                    self.row_results[i] = outcome.RowResult(outcome.GONE)
                    continue
                src: Side = source  # type: ignore[assignment]
                canonical = self.fmap.to_canonical(src, row, op.at)
                values = {f: s.value for f, s in canonical.items()}
                self._insert(i, op.side, values, canonical)
                ref = self.refs[op.side][-1] if self.refs[op.side] else None
                if isinstance(ref, _RowOp) and ref.index == i:
                    ref.kind = "recreate"
                    ref.source_row = canonical

    def record(self, side: Side, results: list[OpResult]) -> None:
        """Turn one side's op results into field and row results per decision."""
        for ref, res in zip(self.refs[side], results, strict=True):
            if isinstance(ref, _Update):
                out = self.field_results[ref.index]
                for f, form in ref.forms.items():
                    status = res.columns.get(self.fmap.column(side, f), res.status)
                    raw = self.fmap.raw_of(ref.values[f], form)
                    out[(side, f)] = outcome.FieldResult(status, raw, res.error)
            elif ref.kind == "delete":
                self.row_results[ref.index] = outcome.RowResult(res.status, error=res.error)
            else:
                row: Mapping[str, Seen] | None = ref.row
                if res.status == outcome.EXISTS and res.row is not None:
                    row = self.fmap.to_canonical(side, res.row, 0.0)
                self.row_results[ref.index] = outcome.RowResult(
                    res.status, res.key, row, ref.source_row, error=res.error
                )
