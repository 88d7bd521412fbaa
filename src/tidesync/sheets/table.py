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
right only for a read-only source: a sink without a key keeps its own row ids
instead (``_tidesync_id``, :mod:`.sink`), and a two-way side needs a key.

Typing is the expensive part of a read, and most rows of a large sheet did
not change since the last read: a row whose raw cells (values and types)
equal the ones typed last time gets the same typed row object back, untyped
again; :func:`tidesync.sheets.diff.diff` then skips it by identity. A csv
record is found again by its raw text (:class:`~.csv_records.CsvRows`), so
an unchanged one is not even split into cells. Under a changed header
everything is typed again (a cached row names the old columns).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tidesync.event import Key, Row
from tidesync.sheets.csv_records import CsvRows
from tidesync.sheets.types import CellError, convert, from_csv, from_xlsx

Format = Literal["csv", "xlsx"]


@dataclass(frozen=True, slots=True)
class Table:
    """A sheet as read. ``rows[i]`` is sheet row ``first_row + i``; ``digest`` hashes the file's bytes.

    A csv file's ``rows`` are :class:`~.csv_records.CsvRows`: each record's raw text, split on demand.
    """

    fmt: Format
    sheet: str
    header: tuple[str, ...]
    rows: Sequence[list[Any]]
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
        self._shape: tuple[Any, ...] | None = None  # what the cached rows were typed under
        self._cache: dict[Any, Any] = {}

    def records(self, table: Table) -> Records:
        plan = [(name, i, self.columns.get(name, "auto")) for i, name in enumerate(table.header) if name]
        names = [name for name, _, _ in plan]
        missing = [c for c in (*(self.key or ()), *self.columns) if c not in names]
        if missing:
            raise HeaderError(f"{table.sheet}!{table.first_row - 1}: no column named {', '.join(map(repr, missing))}")
        rows = table.rows
        by_text = isinstance(rows, CsvRows)
        shape = (table.fmt, table.header, rows.delimiter if isinstance(rows, CsvRows) else None, by_text)
        # Under another header a cached row would name other columns: type everything again.
        old = self._cache if shape == self._shape else {}
        self._shape = shape
        t = _Typing(self, table, plan, names)
        self._cache = t.by_text(rows, old) if isinstance(rows, CsvRows) else t.by_cells(rows, old)
        return t.out

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


class _Typing:
    """One :meth:`Typer.records` call: its plan, its output, and the two ways to find unchanged rows.

    The cache maps a row's raw form to ``(key, row)`` as typed, ``key`` before a
    keyless copy's ``#n`` (which depends on the rows above it, so it is found
    again at every read).
    """

    def __init__(self, typer: Typer, table: Table, plan: list[tuple[str, int, str]], names: list[str]) -> None:
        self.typer = typer
        self.table = table
        self.plan = plan
        self.key_idx = [table.header.index(k) for k in typer.key] if typer.key else None
        self.auto = from_csv if table.fmt == "csv" else from_xlsx
        self.width = len(table.header)
        self.plain = names if len(names) == self.width and all(k == "auto" for _, _, k in plan) else None
        self.out = Records()
        self.first_seen: dict[Key, int] = {}

    def by_cells(self, rows: Sequence[list[Any]], old: dict[Any, Any]) -> dict[Any, Any]:
        """Rows found again by their key cells, then compared cell by cell (values and types)."""
        width, key_idx, first_seen, out_rows = self.width, self.key_idx, self.first_seen, self.out.rows
        typed = self.table.fmt != "csv"  # csv cells are all text: their types need no comparing
        cache: dict[Any, Any] = {}
        for line, cells in enumerate(rows, self.table.first_row):
            if len(cells) != width:
                cells = (cells + [""] * width)[:width]
            raw_key: Any = tuple(cells) if key_idx is None else tuple([cells[j] for j in key_idx])
            hit = old.get(raw_key)
            types = list(map(type, cells)) if typed else _TEXT
            if hit is not None and hit[0] == cells and hit[1] == types:
                key, row = hit[2], hit[3]
            else:
                got = self.fresh(cells, line)
                if got is None:
                    continue
                key, row = got
            placed = key if key not in first_seen else self.again(key, cells, line)
            if placed is None:
                continue
            first_seen[placed] = line
            cache[raw_key] = (cells, types, key, row)
            out_rows[placed] = row
        return cache

    def by_text(self, rows: CsvRows, old: dict[Any, Any]) -> dict[Any, Any]:
        """csv records found again by their raw text: an unchanged record is neither split nor compared."""
        get, first_seen, out_rows = old.get, self.first_seen, self.out.rows
        first = self.table.first_row
        cache: dict[Any, Any] = {}
        # The sheet row of each record placed, in order: ``first_seen`` is built from it only once a key
        # comes twice (most sheets have no duplicates, and a dict per row is a good part of a warm read).
        lines: list[int] = []
        tracking = False
        for i, text in enumerate(rows.texts):
            hit = get(text)
            if hit is None:
                hit = self.fresh(self.cells(rows, i), first + i)
                if hit is None:
                    continue
            key = hit[0]
            if key in out_rows:
                if not tracking:
                    first_seen.update(zip(out_rows, lines, strict=True))
                    tracking = True
                key = self.again(key, self.cells(rows, i), first + i)
                if key is None:
                    continue
            if tracking:
                first_seen[key] = first + i
            lines.append(first + i)
            cache[text] = hit
            out_rows[key] = hit[1]
        return cache

    def cells(self, rows: CsvRows, i: int) -> list[Any]:
        cells = rows.cells(i)
        width = self.width
        return cells if len(cells) == width else (cells + [""] * width)[:width]

    def fresh(self, cells: list[Any], line: int) -> tuple[Key, Row] | None:
        """A row typed anew; None for a blank row, or a rejected one (added to the rejects)."""
        width, table, auto, out = self.width, self.table, self.auto, self.out
        if cells.count("") + cells.count(None) == width:
            return None  # a blank row
        problems: list[str] = []
        if self.plain is not None:
            row = dict(zip(self.plain, map(auto, cells), strict=True))
        else:
            row, problems = self.typer._type(table, self.plan, cells, line, auto)
        key = self.typer._key_of(row, cells)
        if problems or any(v is None for v in key):
            if not problems:
                empty = [k for k in self.typer.key or () if row.get(k) is None]
                col = column_letter(table.header.index(empty[0]))
                problems = [f"{table.sheet}!{col}{line}: the key column {empty[0]!r} is empty"]
            bad_key = key if all(v is not None for v in key) else (f"{table.sheet}!{line}",)
            raw = {n: auto(cells[j]) for n, j, _ in self.plan}
            out.rejects.append(Reject(bad_key, "; ".join(problems), raw, fingerprint(cells), len(out.rows)))
            return None
        return key, row

    def again(self, key: Key, cells: list[Any], line: int) -> Key | None:
        """A key seen above: without a key the n-th identical row is its own record; with one, a reject."""
        first_seen, table = self.first_seen, self.table
        if self.typer.key is None:
            n = 2
            while (key[0] + f"#{n}",) in first_seen:
                n += 1
            return (key[0] + f"#{n}",)
        raw = {name: self.auto(cells[j]) for name, j, _ in self.plan}
        where = f"{table.sheet}!{column_letter(self.key_idx[0] if self.key_idx else 0)}{line}"
        reason = f"{where}: duplicate key {list(key)!r} (first in row {first_seen[key]})"
        self.out.rejects.append(Reject(key, reason, raw, fingerprint(cells), len(self.out.rows)))
        return None
