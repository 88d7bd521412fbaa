"""A spreadsheet file to a :class:`~tidesync.sheets.table.Table` (blocking; callers run it in a thread).

The file's bytes are read once, hashed, and parsed from memory, so the
digest always describes exactly the content that was parsed.

- csv: Excel's dialect, with the delimiter sniffed from the first 16 KiB
  unless ``delimiter`` is given; a UTF-8 byte-order mark is dropped. Rows
  are :class:`~.csv_records.CsvRows`: a record without quotes is kept as its
  text and split only when asked for.
- xlsx: python-calamine, the whole sheet from A1, so cell addresses are the
  sheet's own.

:class:`Unreadable` means "not a complete table now": a file missing, being
replaced, or half-written (an xlsx that is not yet a complete zip; a csv whose
last record is cut short, see :func:`_looks_cut`). The source waits for the
next change and tries again; it never reads a half-written file as a sheet
that lost its last rows.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import io
from collections.abc import Iterator
from pathlib import Path

import xxhash

from tidesync.sheets.csv_records import split_records
from tidesync.sheets.table import Format, Table


class Unreadable(Exception):
    """The file cannot be read as a complete table right now; the message says why."""


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise Unreadable(f"{path} does not exist") from None
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc}") from exc


def parse(
    data: bytes,
    fmt: Format,
    *,
    name: str,
    sheet: str | None = None,
    header_row: int = 1,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> Table:
    """Parse a file's bytes; ``name`` names a csv's single sheet in cell addresses. Raises Unreadable."""
    digest = xxhash.xxh3_128_hexdigest(data)
    if fmt == "csv":
        return _csv(data, name, header_row, delimiter, encoding, digest)
    return _xlsx(data, sheet, header_row, digest)


def _csv(data: bytes, name: str, header_row: int, delimiter: str | None, encoding: str, digest: str) -> Table:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not {encoding} text at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if delimiter is None:
        delimiter = sniff_delimiter(text)
    dialect = _with_delimiter(delimiter)
    try:
        records = split_records(text, dialect)
    except csv.Error as exc:
        raise Unreadable(f"not csv: {exc}") from None
    if len(records) < header_row:
        raise Unreadable(f"no header in row {header_row}") if text else Unreadable("the file is empty")
    header = tuple(h.strip() for h in records[header_row - 1])
    body = records.tail(header_row)
    if body and _looks_cut(text, body[-1], len(header)):
        raise Unreadable("the last record is cut short (a file still being written)")
    return Table("csv", name, header, body, header_row + 1, digest)


def sniff_delimiter(text: str) -> str:
    """The delimiter the start of ``text`` suggests (``,`` ``;`` tab ``|``); ``,`` when unclear.

    Only the delimiter is taken from the sniffer: its guesses of quoting
    (``doublequote`` false when a sample has no ``""``) would misread a later
    quoted quote, so quoting stays Excel's.
    """
    return _sniff(text[:16384])


@functools.lru_cache(maxsize=16)
def _sniff(sample: str) -> str:
    # The sniffer is a pure function of the sample, and slow: a file whose start did not change
    # (the usual edit) gets the same answer without sniffing again.
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _with_delimiter(delimiter: str) -> type[csv.Dialect]:
    class Given(csv.excel):
        pass

    Given.delimiter = delimiter
    return Given


def _looks_cut(text: str, last: list[str], width: int) -> bool:
    """A file that stops mid-record: no final newline, and the last record has fewer fields than the header.

    Writers end a csv with a newline; one that does not, and whose last record is
    short, is most likely still being written. A short last record followed by a
    newline is taken as it is (its missing cells are empty).
    """
    return not text.endswith(("\n", "\r")) and len(last) < width


def _xlsx(data: bytes, sheet: str | None, header_row: int, digest: str) -> Table:
    from python_calamine import CalamineError, CalamineWorkbook, WorksheetNotFound

    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except (CalamineError, ValueError, OSError) as exc:
        raise Unreadable(f"not a complete workbook ({exc})") from None
    try:
        ws = book.get_sheet_by_name(sheet) if sheet else book.get_sheet_by_index(0)
        cells = ws.to_python(skip_empty_area=False)
    except WorksheetNotFound:
        raise Unreadable(f"no sheet named {sheet!r} (sheets: {', '.join(book.sheet_names)})") from None
    except (CalamineError, ValueError) as exc:
        raise Unreadable(f"cannot read sheet {sheet!r}: {exc}") from None
    if len(cells) < header_row:
        raise Unreadable(f"sheet {ws.name!r} has no header in row {header_row}")
    header = tuple(str(h).strip() if h is not None else "" for h in cells[header_row - 1])
    return Table("xlsx", ws.name, header, cells[header_row:], header_row + 1, digest)


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a sheet is parsed and typed.

    A read allocates a container per row while the snapshot holds millions of
    objects, so the collector's full passes, triggered by those allocations,
    walk the whole heap again and again for nothing (no cycles are made):
    about two thirds of a warm 100,000-row read. Reference counting still
    frees everything; the collector resumes right after (unless it was off).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
