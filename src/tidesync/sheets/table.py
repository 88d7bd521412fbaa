"""The table model both formats share, and typed records by key.

A :class:`Table` is a sheet as read: its header and its data rows, cells
still in the format's own form (csv: text; xlsx: python-calamine values).
:class:`Typer` turns it into :class:`Records`: one typed row per key, in
sheet order, and the rows that could not be typed (a bad cell, an empty or
duplicate key) as :class:`Reject` values whose ``reason`` names the cell
(``Customers!D17: 'abc' is not a number``).

Without a key (``key:`` unset) a row is identified by its fingerprint, a
hash of its cells (``#2`` appended for the second identical row): an edited
row is then a delete of the old row and an insert of the new one. That is
right only for a read-only source, so sinks always need a key.

Typing is the expensive part of a read, and most rows of a large sheet did
not change since the last read: a row whose raw cells (values and types)
equal the ones typed last time gets the same typed row object back, untyped
again; :func:`tidesync.sheets.diff.diff` then skips it by identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tidesync.event import Key, Row
from tidesync.sheets.types import CellError, convert, from_csv, from_xlsx

Format = Literal["csv", "xlsx"]


@dataclass(frozen=True, slots=True)
class Table:
    """A sheet as read. ``rows[i]`` is sheet row ``first_row + i``; ``digest`` hashes the file's bytes."""

    fmt: Format
    sheet: str
    header: tuple[str, ...]
    rows: list[list[Any]]
    first_row: int
    digest: str


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that could not become a record; ``cells`` holds its values typed as ``auto``, by column name."""

    key: Key
    reason: str
    cells: Row
    fingerprint: str
    after: int = 0  # how many records precede it in the sheet (its place among them)


@dataclass(slots=True)
class Records:
    rows: dict[Key, Row] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)


def column_letter(index: int) -> str:
    """``0`` → ``A``, ``26`` → ``AA``."""
    out = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


def fingerprint(cells: list[Any]) -> str:
    return hashlib.blake2b(repr(cells).encode(), digest_size=8).hexdigest()


_TEXT: list[type] = []  # the types of a csv row: not compared


class HeaderError(ValueError):
    """The header does not hold a configured column (the key, a typed column)."""


class Typer:
    """Types a table's rows into records; see the module docstring. Not thread-safe."""

    def __init__(self, key: tuple[str, ...] | None, columns: Mapping[str, str]) -> None:
        self.key = key
        self.columns = dict(columns)
        self._cache: dict[Any, tuple[list[Any], list[type], Key, Row]] = {}

    def records(self, table: Table) -> Records:
        plan = [(name, i, self.columns.get(name, "auto")) for i, name in enumerate(table.header) if name]
        names = [name for name, _, _ in plan]
        missing = [c for c in (*(self.key or ()), *self.columns) if c not in names]
        if missing:
            raise HeaderError(f"{table.sheet}!{table.first_row - 1}: no column named {', '.join(map(repr, missing))}")
        key_idx = [table.header.index(k) for k in self.key] if self.key else None
        auto = from_csv if table.fmt == "csv" else from_xlsx
        width = len(table.header)
        typed = table.fmt != "csv"  # csv cells are all text: their types need no comparing
        plain = names if len(names) == width and all(k == "auto" for _, _, k in plan) else None
        out = Records()
        cache: dict[Any, tuple[list[Any], list[type], Key, Row]] = {}
        old = self._cache
        first_seen: dict[Key, int] = {}
        for i, cells in enumerate(table.rows):
            if len(cells) != width:
                cells = (cells + [""] * width)[:width]
            line = table.first_row + i
            raw_key: Any = tuple(cells) if key_idx is None else tuple([cells[j] for j in key_idx])
            hit = old.get(raw_key)
            types = list(map(type, cells)) if typed else _TEXT
            if hit is not None and hit[0] == cells and hit[1] == types:
                key, row = hit[2], hit[3]
            else:
                if cells.count("") + cells.count(None) == width:
                    continue  # a blank row
                problems: list[str] = []
                if plain is not None:
                    row = dict(zip(plain, map(auto, cells), strict=True))
                else:
                    row, problems = self._type(table, plan, cells, line, auto)
                key = self._key_of(row, cells)
                if problems or any(v is None for v in key):
                    if not problems:
                        empty = [k for k in self.key or () if row.get(k) is None]
                        col = column_letter(table.header.index(empty[0]))
                        problems = [f"{table.sheet}!{col}{line}: the key column {empty[0]!r} is empty"]
                    bad_key = key if all(v is not None for v in key) else (f"{table.sheet}!{line}",)
                    raw = {n: auto(cells[j]) for n, j, _ in plan}
                    out.rejects.append(Reject(bad_key, "; ".join(problems), raw, fingerprint(cells), len(out.rows)))
                    continue
            if key in first_seen:
                if self.key is None:  # identical rows without a key: the n-th copy is its own record
                    n = 2
                    while (key[0] + f"#{n}",) in first_seen:
                        n += 1
                    key = (key[0] + f"#{n}",)
                else:
                    raw = {n: auto(cells[j]) for n, j, _ in plan}
                    where = f"{table.sheet}!{column_letter(key_idx[0] if key_idx else 0)}{line}"
                    reason = f"{where}: duplicate key {list(key)!r} (first in row {first_seen[key]})"
                    out.rejects.append(Reject(key, reason, raw, fingerprint(cells), len(out.rows)))
                    continue
            first_seen[key] = line
            cache[raw_key] = (cells, types, key, row)
            out.rows[key] = row
        self._cache = cache
        return out

    def _key_of(self, row: Row, cells: list[Any]) -> Key:
        if self.key is None:
            return (fingerprint(cells),)
        return tuple([row.get(k) for k in self.key])

    @staticmethod
    def _type(
        table: Table, plan: list[tuple[str, int, str]], cells: list[Any], line: int, auto: Any
    ) -> tuple[Row, list[str]]:
        row: Row = {}
        problems: list[str] = []
        for name, j, kind in plan:
            raw = cells[j]
            if kind == "auto":
                row[name] = auto(raw)
                continue
            value = raw if table.fmt == "csv" else auto(raw)
            if value == "" or value is None:
                row[name] = None
                continue
            try:
                row[name] = convert(value, kind)
            except CellError as exc:
                problems.append(f"{table.sheet}!{column_letter(j)}{line}: {exc}")
                row[name] = None
        return row, problems
