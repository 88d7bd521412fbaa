"""A Google sheet as a :class:`~.grid.Grid`: the rows as read, and the edits to send, as requests.

The sink applies a batch to this in-memory copy exactly as it does to a file
(:meth:`~.sink.SheetSink._apply`), and :meth:`GSheetsGrid.flush` then sends the
edits, at most four requests per batch, in this order:

1. one ``spreadsheets.batchUpdate`` of ``appendDimension`` (columns), only when the
   header grows past the grid, and ``updateDimensionProperties`` (``hiddenByUser``)
   for a column :meth:`GSheetsGrid.hide` was asked to hide (a keyless sink's id
   column, hidden before its header cell is written);
2. ``values.batchUpdate`` (RAW): the written cells of existing rows, a range per
   run of adjacent cells, and new header cells;
3. ``values.append`` (RAW, ``INSERT_ROWS``): the new rows, after the sheet's table;
4. ``deleteDimension`` (one ``spreadsheets.batchUpdate``): removed rows, bottom up,
   so the row numbers read stay right for each.

Row ids are sheet row numbers (1-based); rows are addressed by the numbers
read at the start of the batch. Values (:meth:`GSheetsGrid.check`): None
clears the cell (``""``), booleans and numbers are numbers (a Decimal or an
integer a double cannot hold exactly is written as its text), dates and times
as ISO 8601 text (aware datetimes as UTC wall time), JSON values as JSON text;
RAW input keeps text as text (``0123``, ``=A1``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

from tidesync.sheets.grid import key_text
from tidesync.sheets.gsheets_api import SheetsApi, a1_sheet
from tidesync.sheets.gsheets_source import cell_of
from tidesync.sheets.table import column_letter

MAX_CELL = 50_000  # characters a cell holds
_EXACT = 2**53


class GSheetsGrid:
    def __init__(
        self, values: list[list[Any]], *, title: str, sheet_id: int, columns: int, key: list[str], header_row: int
    ) -> None:
        self.title = title
        self.sheet_id = sheet_id
        self.columns = columns
        self.key = key
        self.header_row = header_row
        top = values[header_row - 1] if len(values) >= header_row else []
        names = ["" if v in (None, "") else str(v).strip() for v in top]
        while names and names[-1] == "":
            names.pop()
        self.header: list[str] = names
        self.last = max(len(values), header_row)
        self.rows = {header_row + 1 + i: row for i, row in enumerate(values[header_row:])}
        self.writes: dict[tuple[int, int], Any] = {}
        self.new: dict[int, list[Any]] = {}  # appended row id -> its cells
        self.doomed: set[int] = set()
        self.hidden: set[int] = set()  # columns to hide (0-based)
        self.index: dict[tuple[str, ...], int] = {}
        cols = [self.header.index(k) if k in self.header else -1 for k in key]
        if -1 not in cols:
            for r, row in self.rows.items():
                cells = [cell_of(row[c]) if c < len(row) else "" for c in cols]
                if all(v not in (None, "") for v in cells):
                    self.index.setdefault(key_text(cells), r)

    def add_column(self, name: str) -> int:
        self.header.append(name)
        col = len(self.header) - 1
        self.writes[(self.header_row, col)] = name
        return col

    def hide(self, column: int) -> None:
        self.hidden.add(column)

    def check(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if -_EXACT <= value <= _EXACT else str(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{value} cannot be stored in a Google Sheets cell")
            return value
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"{value} cannot be stored in a Google Sheets cell")
            as_float = float(value)
            return as_float if Decimal(repr(as_float)) == value else format(value, "f")
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return value.isoformat(sep=" ")
        if isinstance(value, (dt.date, dt.time)):
            return value.isoformat()
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        if len(text) > MAX_CELL:
            raise ValueError(f"{len(text)} characters do not fit a Google Sheets cell (at most {MAX_CELL})")
        return text

    def put(self, row: int, column: int, value: Any) -> None:
        cells = self.new.get(row)
        if cells is None:
            self.writes[(row, column)] = value
            return
        if len(cells) <= column:
            cells.extend([""] * (column + 1 - len(cells)))
        cells[column] = value

    def append(self) -> int:
        self.last += 1
        self.new[self.last] = []
        return self.last

    def remove(self, rows: set[int]) -> None:
        for r in rows:
            if self.new.pop(r, None) is None:
                self.doomed.add(r)
        gone = sorted(self.doomed)
        self.index = {k: r - sum(1 for d in gone if d < r) for k, r in self.index.items() if r not in self.doomed}

    def requests(self) -> int:
        """How many requests :meth:`flush` will send."""
        grid = len(self.header) > self.columns or self.hidden
        return sum(map(bool, (grid, self.writes, self.new, self.doomed)))

    async def flush(self, api: SheetsApi) -> None:
        grid: list[dict[str, Any]] = []
        if len(self.header) > self.columns:
            grid.append({"appendDimension": {"sheetId": self.sheet_id, "dimension": "COLUMNS",
                                             "length": len(self.header) - self.columns}})  # fmt: skip
        grid += [self._hide(c) for c in sorted(self.hidden)]
        if grid:
            await api.structure(grid, once=False)  # a retry adds spare columns at worst; hiding twice is hiding
            self.columns = max(self.columns, len(self.header))
            self.hidden.clear()
        writes = {k: v for k, v in self.writes.items() if k[0] not in self.doomed}
        if writes:
            await api.write_cells(self._ranges(writes))
        if self.new:
            await api.append(self.title, self.header_row, [self.new[r] for r in sorted(self.new)])
        if self.doomed:
            runs: list[list[int]] = []
            for r in sorted(self.doomed, reverse=True):
                if runs and runs[-1][0] == r + 1:
                    runs[-1][0] = r
                else:
                    runs.append([r, r])
            deletes = [self._delete(lo, hi) for lo, hi in runs]
            await api.structure(deletes, once=True)

    def _hide(self, column: int) -> dict[str, Any]:
        span = {"sheetId": self.sheet_id, "dimension": "COLUMNS", "startIndex": column, "endIndex": column + 1}
        return {"updateDimensionProperties": {"range": span, "properties": {"hiddenByUser": True},
                                              "fields": "hiddenByUser"}}  # fmt: skip

    def _delete(self, first: int, last: int) -> dict[str, Any]:
        """Sheet rows ``first``..``last`` (1-based, inclusive) as a deleteDimension (0-based, end exclusive)."""
        span = {"sheetId": self.sheet_id, "dimension": "ROWS", "startIndex": first - 1, "endIndex": last}
        return {"deleteDimension": {"range": span}}

    def _ranges(self, writes: dict[tuple[int, int], Any]) -> list[dict[str, Any]]:
        """One ValueRange per run of adjacent cells in a row."""
        out: list[dict[str, Any]] = []
        prefix = a1_sheet(self.title)
        run: list[Any] = []
        start: tuple[int, int] | None = None
        for (r, c), v in sorted(writes.items()):
            if start is not None and r == start[0] and c == start[1] + len(run):
                run.append(v)
                continue
            if start is not None:
                out.append(self._range(prefix, start, run))
            start, run = (r, c), [v]
        if start is not None:
            out.append(self._range(prefix, start, run))
        return out

    @staticmethod
    def _range(prefix: str, start: tuple[int, int], run: list[Any]) -> dict[str, Any]:
        r, c = start
        where = f"{prefix}!{column_letter(c)}{r}:{column_letter(c + len(run) - 1)}{r}"
        return {"range": where, "majorDimension": "ROWS", "values": [run]}
