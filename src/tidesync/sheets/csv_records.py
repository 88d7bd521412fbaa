"""A csv text to its records: each record's raw text, its cells split only when asked for.

Most lines of a csv hold no quote. Such a line is one record, and under
Excel's dialect (quotes as the only quoting, no escape character, spaces
kept) its cells are exactly ``line.split(delimiter)``, an empty line being a
record of no cells, as :mod:`csv` reads it. Those records are kept as their
text and split on demand (:class:`CsvRows`), so a reader that has seen the
same text before (:class:`~tidesync.sheets.table.Typer`) need not split or
compare its cells at all. Any other record (one with a quote, whose quoted
fields may span lines and hold line breaks; a NUL; a line longer than csv's
field size limit, which csv refuses) is read by :mod:`csv` itself, from the
same lines, and its text is its lines joined with their line breaks. Lines
end at ``\\n``, ``\\r`` or ``\\r\\n``, as csv splits them from a file opened
with ``newline=""``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any, overload


class CsvRows(Sequence[list[str]]):
    """Records by their raw ``texts``; ``cells`` holds those :mod:`csv` read, by index; the rest split lazily."""

    __slots__ = ("_cells", "delimiter", "texts")

    def __init__(self, texts: list[str], delimiter: str, cells: dict[int, list[str]]) -> None:
        self.texts = texts
        self.delimiter = delimiter
        self._cells = cells

    def cells(self, index: int) -> list[str]:
        """The cells of record ``index`` (a list the caller may keep; do not change it)."""
        got = self._cells.get(index)
        if got is not None:
            return got
        text = self.texts[index]
        return text.split(self.delimiter) if text else []

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> list[str]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[str]]: ...

    def __getitem__(self, index: int | slice) -> list[str] | list[list[str]]:
        n = len(self.texts)
        if isinstance(index, slice):
            return [self.cells(i) for i in range(*index.indices(n))]
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("record index out of range")
        return self.cells(index)

    def __iter__(self) -> Iterator[list[str]]:
        for i in range(len(self.texts)):
            yield self.cells(i)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=False))

    def __repr__(self) -> str:
        return f"CsvRows({list(self)!r})"

    def tail(self, start: int) -> CsvRows:
        """The records from ``start`` on."""
        cells = {i - start: c for i, c in self._cells.items() if i >= start}
        return CsvRows(self.texts[start:], self.delimiter, cells)


def split_records(text: str, dialect: Any) -> CsvRows:
    """Every record of ``text`` (BOM already dropped) under ``dialect`` (Excel's, with its delimiter).

    Raises :class:`csv.Error` where :mod:`csv` would.
    """
    delimiter: str = dialect.delimiter
    if "\r" not in text:
        lines = text.split("\n")
        ended = lines[-1] == ""
        if ended:
            lines.pop()
        ends: list[str] | None = None
    else:
        ends = io.StringIO(text, newline="").readlines()  # each line with its own line break
        lines = [line.rstrip("\r\n") for line in ends]  # a line ends in at most one break
        ended = True
    n = len(lines)
    pos = 0

    def with_break(i: int) -> str:
        if ends is not None:
            return ends[i]
        return lines[i] + "\n" if ended or i < n - 1 else lines[i]

    def feed() -> Iterator[str]:
        nonlocal pos
        while pos < n:
            pos += 1
            yield with_break(pos - 1)

    reader = csv.reader(feed(), dialect)  # made first: a bad dialect fails as csv.reader fails
    limit = csv.field_size_limit()
    if len(delimiter) == 1 and delimiter not in '"\r\n\0':
        if '"' not in text and "\0" not in text and (not lines or max(map(len, lines)) <= limit):
            return CsvRows(lines, delimiter, {})
        own = _csv_reads  # a line csv must read
    else:
        own = _always
    texts: list[str] = []
    cells: dict[int, list[str]] = {}
    while pos < n:
        line = lines[pos]
        if not own(line, limit):
            texts.append(line)
            pos += 1
            continue
        start = pos
        got = next(reader, None)
        if got is None:  # csv found no further record (end of input)
            break
        cells[len(texts)] = got
        texts.append("".join([with_break(i) for i in range(start, pos)]))
    return CsvRows(texts, delimiter, cells)


def _csv_reads(line: str, limit: int) -> bool:
    return '"' in line or "\0" in line or len(line) > limit


def _always(line: str, limit: int) -> bool:
    return True
