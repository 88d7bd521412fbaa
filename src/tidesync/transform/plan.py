"""Consecutive rename / select / drop / cast steps, composed into one pass over a row.

A :class:`ColumnPlan` tracks, for each input field a step mentioned, the name
it has now (or that it is gone), whether fields no step mentioned survive
(until a ``select``), and the casts by input field. :meth:`ColumnPlan.compile`
turns that into one dict comprehension plus a loop over the cast fields only,
so a rename of one field and a cast of another cost one pass over the row.

The pass copies the row (a C-level ``dict`` copy) and moves renamed fields, so
a renamed field comes last in the row's order; ``select`` orders the fields as
listed. Row order carries no meaning: destinations write fields by name, and
the schema (:mod:`tidesync.transform.schema_map`) keeps columns in place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.transform.casts import Converter

Row = dict[str, Any]
_ABSENT: Any = object()
_FIELDS_CACHE_MAX = 4096  # distinct ``changed`` tuples remembered per plan


@dataclass(frozen=True, slots=True)
class CompiledColumns:
    """``rows(row) -> new row`` (casts not applied), the casts by output name, and ``fields(changed)``."""

    rows: Callable[[Mapping[str, Any]], Row]
    casts: tuple[tuple[str, Converter, str], ...]  # (output name, converter, field as configured)
    fields: Callable[[Sequence[str]], tuple[str, ...]] | None  # None: names are unchanged


class ColumnPlan:
    def __init__(self) -> None:
        self.names: dict[str, str | None] = {}  # input name -> current name; None: dropped
        self.keep_rest = True  # fields no step mentioned pass (until a select)
        self.order: list[str] = []  # input names in output order, once keep_rest is False
        self.casts: list[tuple[str, Converter, str]] = []  # (input name, converter, field as configured)

    @property
    def empty(self) -> bool:
        return not self.names and self.keep_rest and not self.casts

    def _holders(self, name: str) -> list[str]:
        """The input fields whose current name is ``name`` (at most one, as names stay unique)."""
        found = [k for k, v in self.names.items() if v == name]
        if self.keep_rest and name not in self.names:
            found.append(name)
        return found

    def rename(self, mapping: Mapping[str, str]) -> None:
        updates: dict[str, str | None] = {}
        for src, dst in mapping.items():
            if src != dst:
                for k in self._holders(src):
                    updates[k] = dst
        # A field already named like a rename target (and not renamed itself) is replaced.
        for dst in set(mapping.values()) - set(mapping):
            for k in self._holders(dst):
                updates.setdefault(k, None)
        self.names.update(updates)

    def select(self, wanted: Sequence[str]) -> None:
        order = [k for name in dict.fromkeys(wanted) for k in self._holders(name)]
        keep = set(order)
        for k, v in self.names.items():
            if v is not None and k not in keep:
                self.names[k] = None
        for k in order:
            self.names.setdefault(k, k)
        self.keep_rest = False
        self.order = order

    def drop(self, names: Sequence[str]) -> None:
        gone = [k for name in names for k in self._holders(name)]
        for k in gone:
            self.names[k] = None

    def cast(self, name: str, conv: Converter, label: str) -> None:
        for k in self._holders(name):
            self.casts.append((k, conv, label))

    def output_name(self, input_name: str) -> str | None:
        return self.names.get(input_name, input_name if self.keep_rest else None)

    def compile(self) -> CompiledColumns:
        casts = tuple((out, conv, label) for k, conv, label in self.casts if (out := self.output_name(k)) is not None)
        return CompiledColumns(self._rows(), casts, self._fields())

    def _rows(self) -> Callable[[Mapping[str, Any]], Row]:
        if not self.keep_rest:
            pairs = tuple((k, out) for k in self.order if (out := self.names[k]) is not None)
            return lambda row: {out: row[k] for k, out in pairs if k in row}
        renames = tuple((k, v) for k, v in self.names.items() if v is not None and v != k)
        drops = tuple(k for k, v in self.names.items() if v is None)
        if not renames and not drops:
            return dict
        if len(renames) == 1:
            ((src, dst),) = renames

            def rename_one(row: Mapping[str, Any]) -> Row:
                out = dict(row)
                value = out.pop(src, _ABSENT)
                for name in drops:
                    out.pop(name, None)
                if value is not _ABSENT:
                    out[dst] = value
                return out

            return rename_one

        def rename_many(row: Mapping[str, Any]) -> Row:
            out = dict(row)
            # Take every source out before writing any target: renames are simultaneous.
            moved = [(dst, out.pop(src, _ABSENT)) for src, dst in renames]
            for name in drops:
                out.pop(name, None)
            for dst, value in moved:
                if value is not _ABSENT:
                    out[dst] = value
            return out

        return rename_many

    def _fields(self) -> Callable[[Sequence[str]], tuple[str, ...]] | None:
        if self.keep_rest and all(v == k for k, v in self.names.items()):
            return None
        get = dict(self.names).get
        keep_rest = self.keep_rest
        cache: dict[tuple[str, ...], tuple[str, ...]] = {}

        # Updates of one entity change few distinct sets of fields: remember the answers.
        def fields(changed: Sequence[str]) -> tuple[str, ...]:
            if type(changed) is not tuple:  # a list would not hash
                changed = tuple(changed)
            result = cache.get(changed)
            if result is None:
                result = tuple(m for n in changed if (m := get(n, n if keep_rest else None)) is not None)
                if len(cache) < _FIELDS_CACHE_MAX:
                    cache[changed] = result
            return result

        return fields
