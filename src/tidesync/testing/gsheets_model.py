"""The spreadsheet model behind the fake Google Sheets API (:mod:`.gsheets`): A1 ranges, cells, rendering.

A sheet is a grid (``rowCount`` x ``columnCount``, 1000 x 26 for a new sheet)
of cells. A cell holds what Sheets stores: a string, a number (a double), a
boolean, or a date / datetime (a number with a date format). What follows the
documented Sheets v4 behaviour the fake relies on:

- Reading (``valueRenderOption``): ``UNFORMATTED_VALUE`` gives numbers as JSON
  numbers, ``FORMATTED_VALUE`` as text; dates as ``dateTimeRenderOption`` says
  (``SERIAL_NUMBER``: days since 1899-12-30 as a number; ``FORMATTED_STRING``:
  the displayed text, here ISO ``yyyy-mm-dd`` and ``yyyy-mm-dd hh:mm:ss``).
  Trailing empty rows and columns are omitted, empty cells inside are ``""``.
- Writing (``valueInputOption``): ``RAW`` stores strings as strings;
  ``USER_ENTERED`` parses them as the UI would (numbers, ``TRUE``/``FALSE``,
  ISO dates; a leading ``'`` keeps text). ``null`` in a ValueRange leaves the
  cell as it is, ``""`` clears it. A range beyond the grid is a 400.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

EPOCH = dt.datetime(1899, 12, 30)
_A1 = re.compile(r"^(?:([A-Z]+)?(\d+)?)$")


class RangeError(ValueError):
    """A range the API answers 400 to."""


def column_number(letters: str) -> int:
    """``A`` → 0, ``AA`` → 26."""
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def column_letters(index: int) -> str:
    out = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


@dataclass(frozen=True, slots=True)
class A1:
    """A parsed range; 0-based, end exclusive, None where open (``A:D``, ``2:5``, a whole sheet)."""

    sheet: str
    row0: int | None
    col0: int | None
    row1: int | None
    col1: int | None


def parse_a1(text: str, default_sheet: str | None = None) -> A1:
    if "!" in text:
        sheet, _, cells = text.rpartition("!")
    elif default_sheet is not None and re.fullmatch(r"[A-Z]*\d*(:[A-Z]*\d*)?", text) and text:
        sheet, cells = default_sheet, text
    else:
        sheet, cells = text, ""
    if sheet.startswith("'") and sheet.endswith("'") and len(sheet) >= 2:
        sheet = sheet[1:-1].replace("''", "'")
    if not cells:
        return A1(sheet, None, None, None, None)
    start, _, end = cells.partition(":")
    m0, m1 = _A1.match(start), _A1.match(end or start)
    if m0 is None or m1 is None or not start:
        raise RangeError(f"Unable to parse range: {text}")
    c0 = column_number(m0[1]) if m0[1] else None
    r0 = int(m0[2]) - 1 if m0[2] else None
    c1 = column_number(m1[1]) + 1 if m1[1] else None
    r1 = int(m1[2]) if m1[2] else None
    if not end and r0 is not None and c0 is not None:  # a single cell: the range is open to the right and below
        r1 = c1 = None
    return A1(sheet, r0, c0, r1, c1)


@dataclass
class Sheet:
    sheet_id: int
    title: str
    rows: list[list[Any]] = field(default_factory=list)  # cells; "" or missing is empty
    row_count: int = 1000
    column_count: int = 26

    def properties(self, index: int) -> dict[str, Any]:
        return {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": index,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
        }

    def a1(self, r0: int, c0: int, r1: int, c1: int) -> str:
        return f"{quote_title(self.title)}!{column_letters(c0)}{r0 + 1}:{column_letters(c1 - 1)}{r1}"

    def last_row(self) -> int:
        """The number of rows up to the last one holding anything."""
        n = len(self.rows)
        while n and not any(v not in ("", None) for v in self.rows[n - 1]):
            n -= 1
        return n

    def get(self, rng: A1, render: str, dates: str) -> tuple[str, list[list[Any]]]:
        r0, c0 = rng.row0 or 0, rng.col0 or 0
        r1 = min(rng.row1 if rng.row1 is not None else self.row_count, self.row_count)
        c1 = min(rng.col1 if rng.col1 is not None else self.column_count, self.column_count)
        out = []
        for r in range(r0, min(r1, len(self.rows))):
            row = self.rows[r][c0:c1]
            out.append([render_cell(v, render, dates) for v in row])
        for row in out:
            while row and row[-1] == "":
                row.pop()
        while out and not out[-1]:
            out.pop()
        return self.a1(r0, c0, r1, c1), out

    def put(self, rng: A1, values: list[list[Any]], user_entered: bool) -> tuple[str, int, int, int]:
        """Write ``values`` at the range's top-left; (updated range, rows, columns, cells)."""
        r0, c0 = rng.row0 or 0, rng.col0 or 0
        height = len(values)
        width = max((len(v) for v in values), default=0)
        if r0 + height > self.row_count or c0 + width > self.column_count:
            raise RangeError(
                f"Range ({quote_title(self.title)}!{column_letters(c0)}{r0 + 1}) exceeds grid limits. "
                f"Max rows: {self.row_count}, max columns: {self.column_count}"
            )
        cells = 0
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if v is None:
                    continue  # null: leave the cell as it is
                self._set(r0 + i, c0 + j, parse_input(v) if user_entered else v)
                cells += 1
        if not height:
            return self.a1(r0, c0, r0 + 1, c0 + 1), 0, 0, 0
        return self.a1(r0, c0, r0 + height, c0 + max(width, 1)), height, width, cells

    def _set(self, r: int, c: int, value: Any) -> None:
        while len(self.rows) <= r:
            self.rows.append([])
        row = self.rows[r]
        if len(row) <= c:
            row.extend([""] * (c + 1 - len(row)))
        row[c] = value

    def clear(self, rng: A1) -> None:
        r1 = rng.row1 if rng.row1 is not None else len(self.rows)
        for r in range(rng.row0 or 0, min(r1, len(self.rows))):
            row = self.rows[r]
            c1 = rng.col1 if rng.col1 is not None else len(row)
            for c in range(rng.col0 or 0, min(c1, len(row))):
                row[c] = ""

    def delete_rows(self, start: int, end: int) -> None:
        if not 0 <= start < end <= self.row_count:
            raise RangeError(f"Invalid requests[0].deleteDimension: rows {start}..{end} outside the grid")
        del self.rows[start:end]
        self.row_count -= end - start

    def insert_rows(self, at: int, count: int) -> None:
        for _ in range(count):
            if at <= len(self.rows):
                self.rows.insert(at, [])
        self.row_count += count


def quote_title(title: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", title):
        return title
    return "'" + title.replace("'", "''") + "'"


def render_cell(value: Any, render: str, dates: str) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        if dates == "FORMATTED_STRING" or render == "FORMATTED_VALUE":
            return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
        moment = value if isinstance(value, dt.datetime) else dt.datetime(value.year, value.month, value.day)
        serial = (moment - EPOCH).total_seconds() / 86400
        return int(serial) if serial.is_integer() else serial
    if isinstance(value, bool):
        return value if render != "FORMATTED_VALUE" else ("TRUE" if value else "FALSE")
    if isinstance(value, (int, float)):
        number: int | float = int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)
        return number if render != "FORMATTED_VALUE" else str(number)
    return "" if value is None else value


def parse_input(value: Any) -> Any:
    """USER_ENTERED: a string as the Sheets UI would take it."""
    if not isinstance(value, str):
        return value
    if value.startswith("'"):
        return value[1:]
    if value.upper() in ("TRUE", "FALSE"):
        return value.upper() == "TRUE"
    try:
        return dt.date.fromisoformat(value) if len(value) == 10 else dt.datetime.fromisoformat(value)
    except ValueError:
        pass
    try:
        number = float(value.replace(",", ""))
    except ValueError:
        return value
    return number
