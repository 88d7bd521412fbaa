"""What the sink edits: a :class:`Grid` of rows under a header, found by key, and saved atomically.

Two implementations: :mod:`.csv_grid` (rows of text) and :mod:`.xlsx_grid`
(an openpyxl worksheet, so every cell the sink does not write keeps its
value, formula and formatting). :func:`save_atomically` is how both replace
the file: a temporary file in the same directory, fsynced, renamed over the
old one (``os.replace``), and the directory fsynced, so a reader or a crash
sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from tidesync.sheets.types import canonical


def key_text(values: Iterable[Any]) -> tuple[str, ...]:
    """A row's key in the one form that matches across value types (see :func:`~.types.canonical`)."""
    return tuple(canonical(v) for v in values)


class Grid(Protocol):
    """Rows under a header. Row ids are the format's own (csv: list index; xlsx: sheet row)."""

    header: list[str]
    index: dict[tuple[str, ...], int]  # key text -> row id

    def add_column(self, name: str) -> int:
        """Append ``name`` to the header; its column number (0-based)."""

    def hide(self, column: int) -> None:
        """Hide a column from people (xlsx); a no-op where the format has no hidden columns (csv)."""

    def check(self, value: Any) -> Any:
        """``value`` as this format stores it; ValueError when it cannot be stored (nothing is changed)."""

    def put(self, row: int, column: int, value: Any) -> None:
        """Write a value :meth:`check` returned."""

    def append(self) -> int:
        """A new empty row after the last one; its id."""

    def remove(self, rows: set[int]) -> None:
        """Remove these rows; later rows move up, and :attr:`index` follows."""

    def save(self, path: Path) -> None: ...


def save_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, fsync it, rename it over ``path``, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
