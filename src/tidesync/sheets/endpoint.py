"""A csv or xlsx file as a two-way sync side: the :class:`~tidesync.sync.endpoint.Endpoint` contract on a sheet.

Reading is the source's own (:mod:`.read` and :class:`~.table.Typer`, with the
source's ``columns:`` types), so a row the endpoint returns is exactly the row
the side's source emits for that content. Writing is the sink's own
(:class:`~.grid.Grid`: :mod:`.csv_grid` or :mod:`.xlsx_grid` through openpyxl,
which keeps every other cell, formula and format; :func:`~.grid.save_atomically`).

One :meth:`SheetEndpoint.apply` call is one read-compare-write of the file:

1. the file is read and typed (reused when its signature, inode/size/mtime,
   is the one this endpoint saved last or read last);
2. every op's conditions are compared with the current cells, in op order
   (a later op sees the writes of earlier ones);
3. if anything is to be written, the new content is saved to a temporary
   file beside it (fsynced), read back and typed, the file's signature is
   checked once more, and the temporary file renamed over it (then the
   directory fsynced). A file that changed while being read, or between the
   read and the rename, is read and compared again (a few times, then the
   call fails as transient and the sync retries it).

The content saved is handed, as read back, to the side's source
(:attr:`SheetEndpoint.listener`, :meth:`~.source.SheetSource.observe`)
before the call returns, so the source diffs every version the sync wrote:
a person who deletes a row the sync has just added, or puts back a cell's
old value, before the source has read the file, is still seen as a change.

Compare-and-set, and its window: calls are serialised by a lock (one
endpoint per file), and a save replaces the file in one rename, so a
person's save is either before the read (its values are compared: an edit
is reported as ``conflict``, never overwritten) or after the replace. What
remains is the instant between the last signature check and the rename,
and, as with any two writers of one file, an editor that still
holds an older copy: saving it later puts back the cells it held, the
sync's writes included. The side's source then reports those cells as that
side's edits, so the sync copies them on or raises conflicts; nothing is
lost silently, but the sync's write to that sheet is undone.

Values are compared as the cell stores them (:func:`cell_value`): the new
value and the expected one go through the format's own conversion
(:func:`~.types.to_xlsx` / :func:`~.types.to_text`) and then the one text per
value that keys use (:func:`~.types.canonical`), so ``5``, ``5.0``,
``Decimal("5")`` and the text ``"5"`` are one value, an aware datetime is
its UTC wall time in xlsx, and a number written to xlsx is compared as the
double the cell holds. That is how a value written before a crash is
recognised as ``already`` when the write is repeated. A sheet has no
types per column beyond what ``columns:`` declares: a text column whose
values look like numbers should be declared ``text`` on the source.

The comparison of ops with cells, and the reads by key, are
:class:`GridSide`'s, which :class:`~.gsheets_endpoint.GSheetsEndpoint` (a Google
sheet as a side) shares; only reading, writing and the cell form of a value
(:meth:`GridSide.cell`) differ.

Keys: a sheet never makes keys, so a sheet side needs shared keys (the sync
gives every record its key); an insert without a key fails. A row whose key
cells are empty is not a record; a duplicate key row is ignored after its
first occurrence (as the source does). Deletes remove the row (rows below
move up, as the sheet sink's ``deletes: remove``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from tidesync.errors import PermanentError, TransientError
from tidesync.event import Key, Row
from tidesync.sheets.config import SheetSourceConfig
from tidesync.sheets.grid import Grid, key_text
from tidesync.sheets.read import Unreadable, parse, read_bytes
from tidesync.sheets.table import HeaderError, Records, Table, Typer
from tidesync.sheets.types import canonical, to_text, to_xlsx
from tidesync.sheets.watch import Signature, signature
from tidesync.sync.endpoint import DeleteOp, InsertOp, Op, OpResult, UpdateOp

ATTEMPTS = 5  # reads of a file that keeps changing under one call before it fails as transient


Listener = Callable[[Table, Records, float], None]  # (the saved content as read back, its mtime)


class _Moved(Exception):
    """The file changed between two steps of one call: read it again."""


@dataclass(frozen=True, slots=True)
class _View:
    """The sheet as read: typed records by key (sheet order) and every keyed row by key text; ``sig`` names
    the content read (a file's signature, a digest of a Google sheet's values)."""

    sig: Any
    sheet: str
    records: dict[Key, Row]
    by_text: dict[tuple[str, ...], Row]


def cell_value(value: Any, fmt: str) -> Any:
    """``value`` as a cell of ``fmt`` stores it, in one comparable form (None for an empty cell)."""
    if value is None:
        return None
    if fmt == "xlsx":
        stored = to_xlsx(value)
        if isinstance(stored, (float, Decimal)) and not isinstance(stored, bool):
            stored = float(stored)  # an xlsx number is a double
    else:
        stored = to_text(value)
    if stored is None or stored == "":
        return None
    return canonical(stored)


class Cells(Protocol):
    """What the op comparison edits: rows under a header, found by key (a file's :class:`~.grid.Grid`, or
    :class:`~.gsheets_grid.GSheetsGrid` for a Google sheet); :meth:`GridSide._one` is written against this."""

    header: list[str]
    index: dict[tuple[str, ...], int]

    def add_column(self, name: str) -> int: ...

    def check(self, value: Any) -> Any: ...

    def put(self, row: int, column: int, value: Any) -> None: ...

    def append(self) -> int: ...

    def remove(self, rows: set[int]) -> None: ...


class GridSide:
    """The part of a sheet side that is the same whatever stores the sheet: each op compared with the cells
    as read (:meth:`_one`, into a :class:`Cells` copy), and the reads by key (:meth:`fetch`, :meth:`find`,
    :meth:`scan`) over :meth:`_current`. Subclasses read and write: :class:`SheetEndpoint` (a file),
    :class:`~.gsheets_endpoint.GSheetsEndpoint` (a Google sheet)."""

    key: tuple[str, ...]
    fmt: str
    where: str

    def cell(self, value: Any) -> Any:
        """``value`` as a cell of this side stores it, in one comparable form (see :func:`cell_value`)."""
        return cell_value(value, self.fmt)

    def _view_of(self, sig: Any, table: Table, records: Records) -> _View:
        by_text = {key_text(k): r for k, r in records.rows.items()}
        for reject in records.rejects:  # a row with a bad cell is still there to compare and write
            if len(reject.key) == len(self.key):
                by_text.setdefault(key_text(reject.key), reject.cells)
        return _View(sig, table.sheet, records.rows, by_text)

    @staticmethod
    def _changed(results: list[OpResult]) -> bool:
        for r in results:
            if r.columns:
                if any(s == "ok" for s in r.columns.values()):
                    return True
            elif r.status == "ok":
                return True
        return False

    def _same(self, x: Any, y: Any) -> bool:
        return bool(self.cell(x) == self.cell(y))

    def _one(self, grid: Cells, rows: dict[tuple[str, ...], Row], doomed: set[int], op: Op) -> OpResult:
        if isinstance(op, UpdateOp):
            return self._update(grid, rows, op)
        if isinstance(op, InsertOp):
            return self._insert(grid, rows, op)
        return self._delete(grid, rows, doomed, op)

    def _update(self, grid: Cells, rows: dict[tuple[str, ...], Row], op: UpdateOp) -> OpResult:
        kt = key_text(op.key)
        current = rows.get(kt)
        at = grid.index.get(kt)
        if current is None or at is None:
            return OpResult("missing", {f.column: "missing" for f in op.fields})
        status: dict[str, str] = {}
        todo = []
        for f in op.fields:
            have = current.get(f.column)
            if not f.conditional or self._same(have, f.expected):
                todo.append(f)
                status[f.column] = "ok"
            else:
                status[f.column] = "already" if self._same(have, f.value) else "conflict"
        try:
            cells = [(f.column, grid.check(f.value)) for f in todo]  # every value checked before any is written
        except (ValueError, TypeError) as exc:
            return OpResult("failed", {f.column: "failed" for f in op.fields}, error=f"{self.where}: {exc}")
        row = dict(current)
        for (column, cell), f in zip(cells, todo, strict=True):
            grid.put(at, self._column(grid, column), cell)
            row[column] = f.value
        rows[kt] = row
        return OpResult("ok", status)

    def _insert(self, grid: Cells, rows: dict[tuple[str, ...], Row], op: InsertOp) -> OpResult:
        if op.key is None:
            return OpResult("failed", error=f"{self.where}: a sheet makes no keys (map the key columns: shared keys)")
        kt = key_text(op.key)
        if kt in grid.index:
            return OpResult("exists", key=op.key, row=dict(rows.get(kt) or {}))
        values = dict(op.row)
        for k, v in zip(self.key, op.key, strict=True):
            values.setdefault(k, v)
        try:
            cells = [(c, grid.check(v)) for c, v in values.items()]
        except (ValueError, TypeError) as exc:
            return OpResult("failed", error=f"{self.where}: {exc}")
        columns = [(self._column(grid, c), cell) for c, cell in cells]
        at = grid.append()
        grid.index[kt] = at
        for column, cell in columns:
            grid.put(at, column, cell)
        rows[kt] = values
        return OpResult("ok", key=op.key)

    def _delete(self, grid: Cells, rows: dict[tuple[str, ...], Row], doomed: set[int], op: DeleteOp) -> OpResult:
        kt = key_text(op.key)
        at = grid.index.get(kt)
        if at is None:
            return OpResult("missing")
        current = rows.get(kt) or {}
        if op.expected is not None and not all(self._same(current.get(c), v) for c, v in op.expected.items()):
            return OpResult("conflict")
        doomed.add(at)
        del grid.index[kt]
        rows.pop(kt, None)
        return OpResult("ok")

    @staticmethod
    def _column(grid: Cells, name: str) -> int:
        try:
            return grid.header.index(name)
        except ValueError:
            return grid.add_column(name)

    # --- reads ------------------------------------------------------------------------------

    async def _current(self) -> _View:
        """The sheet as it is now (read under the side's lock)."""
        raise NotImplementedError

    async def fetch(self, keys: Sequence[Key]) -> dict[Key, Row]:
        if not keys:
            return {}
        view = await self._current()
        out: dict[Key, Row] = {}
        for k in keys:
            row = view.by_text.get(key_text(k))
            if row is not None:
                out[k] = dict(row)
        return out

    async def find(self, values: Mapping[str, Any], limit: int = 20) -> list[tuple[Key, Row]]:
        """Rows holding ``values`` (compared as cells, see :func:`cell_value`); the lowest in the sheet first."""
        view = await self._current()
        out: list[tuple[Key, Row]] = []
        for key, row in reversed(view.records.items()):
            if all(self._same(row.get(c), v) for c, v in values.items()):
                out.append((key, dict(row)))
                if len(out) >= limit:
                    break
        return out

    async def scan(self, page_size: int = 5000) -> list[Row]:
        view = await self._current()
        rows = [dict(r) for r in view.records.values()]
        try:
            rows.sort(key=lambda r: tuple(r[k] for k in self.key))
        except TypeError:  # keys of mixed types: their text order
            rows.sort(key=lambda r: key_text(r[k] for k in self.key))
        return rows


class SheetEndpoint(GridSide):
    """One sheet of one csv or xlsx file, read and written as a sync side; see the module docstring."""

    def __init__(self, config: SheetSourceConfig, key: Sequence[str], *, sheet: str | None = None) -> None:
        self.config = config
        self.path = Path(config.path)
        self.fmt = config.type
        self.sheet = sheet or config.sheet
        self.key = tuple(key)
        self._typer = Typer(self.key, config.columns)
        self._lock = asyncio.Lock()
        self._view: _View | None = None
        self._grid: Grid | None = None
        self._grid_sig: Signature | None = None
        self.where = f"{self.path}" + (f"!{self.sheet}" if self.sheet else "")
        self.rewrites = 0  # file replacements, for tests and metrics
        self.grid_loads = 0
        self.listener: Listener | None = None  # the side's source (see the module docstring)

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self, *, writes: bool = True) -> None:
        """Read the file once: it must exist, hold the header row and the key columns (nothing is written)."""
        async with self._lock:
            try:
                await asyncio.to_thread(self._read_settled)
            except TransientError as exc:
                raise PermanentError(f"{exc} (a sheet side needs the file, with its header row)") from None

    async def close(self) -> None:
        self._view = None
        self._grid = None

    # --- reading (in a worker thread, under the lock) ------------------------------------------

    def _read(self) -> _View:
        sig = signature(self.path)
        if sig is None:
            raise TransientError(f"{self.where}: the file does not exist (being replaced?)")
        if self._view is not None and self._view.sig == sig:
            return self._view
        table, records = self._parse(self.path)
        if signature(self.path) != sig:
            raise _Moved
        self._view = self._view_of(sig, table, records)
        return self._view

    def _parse(self, path: Path) -> tuple[Table, Records]:
        try:
            table = parse(
                read_bytes(path),
                self.config.type,
                name=self.path.stem,
                sheet=self.sheet,
                header_row=self.config.header_row,
                delimiter=self.config.delimiter,
                encoding=self.config.encoding,
            )
            return table, self._typer.records(table)
        except Unreadable as exc:
            raise TransientError(f"{self.where}: {exc}") from None
        except HeaderError as exc:
            raise PermanentError(f"{self.where}: {exc}") from None

    def _read_settled(self) -> _View:
        for _ in range(ATTEMPTS):
            try:
                return self._read()
            except _Moved:
                continue
        raise TransientError(f"{self.where}: the file kept changing while it was read")

    def _load_grid(self, view: _View) -> Grid:
        """The writable copy of exactly the content of ``view`` (raises _Moved when the file moved on)."""
        if self._grid is not None and self._grid_sig == view.sig:
            return self._grid
        self._grid = None
        self.grid_loads += 1
        try:
            if self.fmt == "xlsx":
                from tidesync.sheets.xlsx_grid import XlsxGrid

                grid: Grid = XlsxGrid(
                    self.path, sheet=view.sheet, key=list(self.key), header_row=self.config.header_row
                )
            else:
                from tidesync.sheets.csv_grid import CsvGrid

                grid = CsvGrid(
                    self.path,
                    key=list(self.key),
                    header_row=self.config.header_row,
                    delimiter=self.config.delimiter or ",",
                    encoding=self.config.encoding,
                )
        except FileNotFoundError:
            raise _Moved from None
        except Exception as exc:  # a workbook mid-replace, a corrupt one: the call is retried
            raise TransientError(f"{self.where}: cannot load ({exc})") from exc
        if signature(self.path) != view.sig:
            raise _Moved
        return grid

    # --- writes -----------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        if not ops:
            return []
        async with self._lock:
            results, saved = await asyncio.to_thread(self._apply_settled, list(ops))
            if saved is not None and self.listener is not None:
                self.listener(*saved)
            return results

    def _apply_settled(self, ops: list[Op]) -> tuple[list[OpResult], tuple[Table, Records, float] | None]:
        for _ in range(ATTEMPTS):
            try:
                return self._apply_once(ops)
            except _Moved:
                self._grid = None
                continue
        raise TransientError(f"{self.where}: the file kept changing while it was written")

    def _apply_once(self, ops: list[Op]) -> tuple[list[OpResult], tuple[Table, Records, float] | None]:
        view = self._read()
        grid = self._load_grid(view)
        self._grid = None  # until saved, the copy in memory may hold a half-applied call
        rows = dict(view.by_text)
        doomed: set[int] = set()
        results = [self._one(grid, rows, doomed, op) for op in ops]
        if not self._changed(results):
            self._grid, self._grid_sig = grid, view.sig
            return results, None
        grid.remove(doomed)
        saved = self._save(grid, view.sig)
        self.rewrites += 1
        return results, saved

    def _save(self, grid: Grid, seen: Signature) -> tuple[Table, Records, float]:
        """Save ``grid`` over the file if it still has signature ``seen`` (else _Moved); the content as read back."""
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".sync", dir=self.path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            try:
                grid.save(tmp)  # written and fsynced (the grid's own atomic save, onto our temporary name)
            except OSError as exc:
                raise TransientError(f"{self.where}: cannot save ({exc})") from exc
            table, records = self._parse(tmp)
            mtime = tmp.stat().st_mtime
            if signature(self.path) != seen:
                raise _Moved  # a save since the read: compare with what it holds
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        sig = signature(self.path)
        if sig is not None:
            self._grid, self._grid_sig = grid, sig
            self._view = self._view_of(sig, table, records)
        return table, records, mtime

    async def _current(self) -> _View:
        async with self._lock:
            return await asyncio.to_thread(self._read_settled)
