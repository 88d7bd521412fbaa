"""An xlsx worksheet as a :class:`~.grid.Grid`, through openpyxl.

Only the cells the sink writes change. Everything else in the workbook is
loaded and saved by openpyxl as it is: other columns and their formulas,
cell formatting, column widths, other sheets, defined names. Removing rows
moves the rows below up with their cells, styles and formulas; relative
references in a moved formula are shifted with it (``=B7*2`` moved to row 6
becomes ``=B6*2``). Limits (openpyxl's): formulas elsewhere that point into
moved rows are not rewritten, row heights stay with their row numbers, and
charts, images and pivot tables are not kept by openpyxl at all.

A text value that starts with ``=`` is written as text, never as a formula.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from tidesync.sheets.grid import key_text, save_atomically
from tidesync.sheets.types import to_xlsx


class XlsxGrid:
    def __init__(self, path: Path, *, sheet: str, key: list[str], header_row: int) -> None:
        self.key = key
        self.header_row = header_row
        if path.exists():
            self.book = load_workbook(path, rich_text=True)  # rich text in cells kept as it is
        else:
            self.book = Workbook()
            self.book.active.title = sheet  # type: ignore[union-attr]
        if sheet in self.book.sheetnames:
            self.ws: Worksheet = self.book[sheet]
        else:
            self.ws = self.book.create_sheet(sheet)
        top = next(self.ws.iter_rows(min_row=header_row, max_row=header_row, values_only=True), ())
        names = ["" if v is None else str(v).strip() for v in top]
        while names and names[-1] == "":
            names.pop()
        self.header: list[str] = names
        self.index: dict[tuple[str, ...], int] = {}
        self.last = header_row  # the last row holding anything
        self._reindex()

    def _reindex(self) -> None:
        self.index = {}
        self.last = self.header_row
        cols = [self.header.index(k) if k in self.header else -1 for k in self.key]
        r = self.header_row
        for r, values in enumerate(
            self.ws.iter_rows(min_row=self.header_row + 1, values_only=True), self.header_row + 1
        ):
            if any(v is not None for v in values):
                self.last = r
                if -1 not in cols and all(c < len(values) and values[c] not in (None, "") for c in cols):
                    self.index.setdefault(key_text(values[c] for c in cols), r)

    def add_column(self, name: str) -> int:
        self.header.append(name)
        col = len(self.header)
        self.ws.cell(row=self.header_row, column=col, value=name)
        return col - 1

    def hide(self, column: int) -> None:
        self.ws.column_dimensions[get_column_letter(column + 1)].hidden = True

    def check(self, value: Any) -> Any:
        v = to_xlsx(value)
        if isinstance(v, str) and ILLEGAL_CHARACTERS_RE.search(v):
            raise ValueError("text with control characters cannot be stored in an xlsx cell")
        if isinstance(v, Decimal) and not v.is_finite():
            raise ValueError(f"{v} cannot be stored in an xlsx cell")
        if isinstance(v, dt.datetime) and not (dt.datetime(1900, 1, 1) <= v):
            raise ValueError(f"{v.isoformat()} is before 1900, which Excel cannot show as a date")
        return v

    def put(self, row: int, column: int, value: Any) -> None:
        cell = self.ws.cell(row=row, column=column + 1)
        cell.value = value
        if isinstance(value, str) and value.startswith("="):
            cell.data_type = "s"  # text, not a formula

    def append(self) -> int:
        self.last += 1
        return self.last

    def remove(self, rows: set[int]) -> None:
        if not rows:
            return
        ws = self.ws
        width = max(ws.max_column, 1)
        cells = ws._cells
        for r in rows:
            for c in range(1, width + 1):
                cells.pop((r, c), None)
        doomed = sorted(rows)
        end = ws.max_row
        letter = get_column_letter(width)
        for i, r in enumerate(doomed):
            start = r + 1
            stop = doomed[i + 1] - 1 if i + 1 < len(doomed) else end
            if start <= stop:
                ws.move_range(f"A{start}:{letter}{stop}", rows=-(i + 1), translate=True)
        self._reindex()

    def save(self, path: Path) -> None:
        save_atomically(path, lambda tmp: self.book.save(tmp))
