"""Between each side's rows and the canonical record: names, values, keys and record ids.

Canonical field names are A's; canonical values are A's representation. A's
rows are canonical as they are. B's rows are renamed by the field mapping and
then converted by the ``b_to_a`` transform; canonical values go to B through
``a_to_b`` and the reverse renaming. Transforms change values only, so they
should be inverses of each other on every value that occurs (a cast of a list
to JSON text and back, a value map and its reverse): the sync compares
canonical values, and a pair that does not round-trip keeps re-writing.

Each image also keeps the side's own form of a value when it differs from the
canonical one (``Seen.raw``), and conditional writes expect that form, so a
side that stores ``["x", "y"]`` as text with other spacing still matches.

Record ids: with shared keys, the canonical key (A's key column order); else
``(side, *key)`` of the side where the record was first seen, with an ID map
from each side's key to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.errors import TransformError
from tidesync.event import DELETE, INSERT, SNAPSHOT, UPDATE, ChangeEvent, Key, Row
from tidesync.sync import decisions
from tidesync.sync.record import NO_RAW, Seen, Side

log = logging.getLogger("tidesync.sync")


def _identical(x: Any, y: Any) -> bool:
    return type(x) is type(y) and x == y


@dataclass
class SideSpec:
    side: Side
    entity: str
    key: tuple[str, ...]
    names: dict[str, str]  # canonical -> this side's column
    timestamp: str | None = None

    @property
    def canonical(self) -> dict[str, str]:
        return {v: k for k, v in self.names.items()}


class FieldMap:
    """Converts rows and events of both sides to and from canonical form."""

    def __init__(self, a: SideSpec, b: SideSpec, *, shared_keys: bool, a_to_b: Any = None, b_to_a: Any = None) -> None:
        self.sides = {"a": a, "b": b}
        self.fields = tuple(a.names)
        self.shared_keys = shared_keys
        self._out = {"a": None, "b": a_to_b}
        self._in = {"a": None, "b": b_to_a}
        self._from = {"a": a.canonical, "b": b.canonical}
        self.transform_failures = 0

    # --- values ----------------------------------------------------------------------------

    def _run(self, transform: Any, row: Row) -> Row:
        if transform is None or not row:
            return row
        ev = ChangeEvent("sync", (), UPDATE, None, dict(row), tuple(row))
        out, failures = transform.apply([ev])
        if failures:
            raise TransformError(failures[0][1])
        return dict(out[0].after or {}) if out else {}

    def to_canonical(self, side: Side, row: Mapping[str, Any], at: float) -> dict[str, Seen]:
        """A side's row (its column names) as canonical Seen values; unmapped columns are dropped."""
        names = self._from[side]
        raw = {names[c]: v for c, v in row.items() if c in names}
        values = self._run(self._in[side], raw)
        out: dict[str, Seen] = {}
        for f, r in raw.items():
            v = values.get(f, r)
            out[f] = Seen(v, at) if _identical(v, r) else Seen(v, at, r)
        return out

    def to_side(self, side: Side, values: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical values in the side's own form, keyed by canonical name."""
        return self._run(self._out[side], dict(values))

    def column(self, side: Side, name: str) -> str:
        return self.sides[side].names[name]

    @staticmethod
    def expected(seen: Seen | None) -> Any:
        """The side's own form of an image value, for a conditional write (None: no condition)."""
        return None if seen is None else seen.side_value()

    # --- keys -------------------------------------------------------------------------------

    def key_of_row(self, side: Side, row: Mapping[str, Any]) -> Key:
        return tuple(row[c] for c in self.sides[side].key)

    def rid_of(self, side: Side, key: Key) -> Key:
        """The record id of a key on ``side`` when keys are shared (else the ID map decides)."""
        if side == "a" or not self.shared_keys:
            return key if side == "a" else ("b", *key)
        by_col = dict(zip(self.sides["b"].key, key, strict=True))
        b_names = self.sides["b"].names
        return tuple(by_col[b_names[k]] for k in self.sides["a"].key)

    def key_from_rid(self, side: Side, rid: Key) -> Key:
        """With shared keys: a record id as the key on ``side``."""
        if side == "a":
            return rid
        by_name = dict(zip(self.sides["a"].key, rid, strict=True))
        canon = self._from["b"]
        return tuple(by_name[canon[c]] for c in self.sides["b"].key)

    def new_rid(self, side: Side, key: Key) -> Key:
        return self.rid_of(side, key) if self.shared_keys else (side, *key)

    # --- events -----------------------------------------------------------------------------

    def inbound(self, side: Side, ev: ChangeEvent) -> decisions.SideEvent | None:
        """A source event of this side's entity in canonical form; None for ops a sync ignores (truncate)."""
        spec = self.sides[side]
        if ev.op == DELETE:
            key = self._key(spec, ev.before, ev.key)
            return decisions.SideEvent(side, key, decisions.DELETE, {}, ev.committed_at)
        if ev.op not in (INSERT, UPDATE, SNAPSHOT):
            log.warning("sync ignores %s events (%s on side %s)", ev.op, ev.entity, side)
            return None
        after = ev.after or {}
        key = self._key(spec, after, ev.key)
        names = self._from[side]
        cols = {c: v for c, v in after.items() if c in names}
        full = len(cols) == len(names)
        if ev.op == UPDATE and not full and ev.changed is not None:
            # A partial row (an unchanged TOASTed column is absent): only what the source says changed.
            cols = {c: after[c] for c in ev.changed if c in names and c in after}
        # A whole row is compared with the side's stream image instead (decisions._changed): the source's own
        # idea of `changed` may be wider (Postgres sends every column) or, after a crash, narrower.
        try:
            fields = self.to_canonical(side, cols, ev.committed_at)
        except TransformError as exc:
            self.transform_failures += 1
            log.warning("sync: a change of %s %s on side %s cannot be converted: %s", ev.entity, key, side, exc)
            return None
        created = ev.op in (INSERT, SNAPSHOT)
        return decisions.SideEvent(
            side, key, decisions.UPSERT, fields, ev.committed_at, created=created, full=full or created
        )

    @staticmethod
    def _key(spec: SideSpec, row: Mapping[str, Any] | None, fallback: Key) -> Key:
        if row and all(c in row for c in spec.key):
            return tuple(row[c] for c in spec.key)
        return tuple(fallback)

    # --- rows for writes ----------------------------------------------------------------

    def insert_row(self, side: Side, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(row by the side's columns, side form by canonical name)`` of a canonical row to insert on ``side``.

        Without shared keys the key columns are left out (the side generates them).
        """
        spec = self.sides[side]
        forms = self.to_side(side, values)
        row = {spec.names[f]: forms.get(f, v) for f, v in values.items()}
        if not self.shared_keys:
            for c in spec.key:
                row.pop(c, None)
        return row, forms

    def raw_of(self, value: Any, form: Any) -> Any:
        return NO_RAW if _identical(value, form) else form


def side_specs(names: Mapping[str, str], a: Any, b: Any, entities: Sequence[str]) -> tuple[SideSpec, SideSpec]:
    """SideSpecs from a field mapping (a_field: b_field) and two side configs (``SyncSide``)."""
    return (
        SideSpec("a", entities[0], tuple(a.key), {f: f for f in names}, a.timestamp),
        SideSpec("b", entities[1], tuple(b.key), dict(names), b.timestamp),
    )
