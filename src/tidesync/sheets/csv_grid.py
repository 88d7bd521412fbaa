"""A csv file as a :class:`~.grid.Grid`: rows of text; lines above the header are kept as they are."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tidesync.sheets.grid import key_text, save_atomically
from tidesync.sheets.read import sniff_delimiter
from tidesync.sheets.types import to_text


class CsvGrid:
    def __init__(self, path: Path, *, key: list[str], header_row: int, delimiter: str, encoding: str) -> None:
        self.key = key
        self.header_row = header_row
        self.encoding = encoding
        self.delimiter = delimiter
        self.preamble: list[list[str]] = []
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        if path.exists():
            text = path.read_bytes().decode(encoding)
            bom = text.startswith("\ufeff")
            text = text[1:] if bom else text
            if text:
                self.delimiter = sniff_delimiter(text)
            lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter))
            self.preamble = lines[: header_row - 1]
            if len(lines) >= header_row:
                self.header = [h.strip() for h in lines[header_row - 1]]
            self.rows = lines[header_row:]
        while len(self.preamble) < header_row - 1:
            self.preamble.append([])
        self.index: dict[tuple[str, ...], int] = {}
        self._reindex()

    def _reindex(self) -> None:
        cols = [self.header.index(k) if k in self.header else -1 for k in self.key]
        self.index = {}
        if -1 in cols:
            return
        for i, row in enumerate(self.rows):
            if all(c < len(row) and row[c] != "" for c in cols):
                self.index.setdefault(key_text(row[c] for c in cols), i)

    def add_column(self, name: str) -> int:
        self.header.append(name)
        return len(self.header) - 1

    def hide(self, column: int) -> None:
        return None  # a csv file has no hidden columns: the id column is a plain one

    def check(self, value: Any) -> str:
        return to_text(value)

    def put(self, row: int, column: int, value: Any) -> None:
        cells = self.rows[row]
        if len(cells) <= column:
            cells.extend([""] * (column + 1 - len(cells)))
        cells[column] = value

    def append(self) -> int:
        self.rows.append([])
        return len(self.rows) - 1

    def remove(self, rows: set[int]) -> None:
        if rows:
            self.rows = [r for i, r in enumerate(self.rows) if i not in rows]
            self._reindex()

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding=self.encoding, newline="") as f:
                w = csv.writer(f, delimiter=self.delimiter, lineterminator="\n")
                w.writerows(self.preamble)
                w.writerow(self.header)
                w.writerows(self.rows)

        save_atomically(path, write)
