"""The file spreadsheet sink (``type: csv`` / ``type: xlsx``): upsert rows by key, one file rewrite per write.

``write(events)`` loads the file (or reuses the copy it saved last, when the
file's signature shows nobody touched it since), applies the events in order,
and replaces the file atomically (:func:`~.grid.save_atomically`) once:

- insert, snapshot, update: the row with the event's key is found by its key
  cells (``5``, ``5.0`` and ``"5"`` are one key); missing, it is appended
  after the last row. Only the event's fields are written: for an update
  only ``changed``, for an insert every field of ``after`` (``columns:``
  narrows both). Other columns are never touched. A field without a column
  gets one, appended to the header.
- delete: ``deletes: remove`` removes the row (rows below move up);
  ``deletes: mark`` sets ``mark_column`` to TRUE, and a later upsert of the
  key clears it.
- truncate: every keyed row is removed (or marked).

Without ``key:`` the sink keeps its own row ids in a ``_tidesync_id`` column
(:data:`~.config.ID_COLUMN`), added after the event's fields the first time
a row is written, and hidden in an xlsx sheet (a plain column in a csv
file). It holds the event's key: its one value when that is a whole number
(up to 2**53) or text, otherwise the key as JSON (``[7,"eu"]``). Rows are
found, updated and deleted by it exactly as by key columns, so a re-delivered
or re-snapshotted row lands on its row again; an event's own field named
``_tidesync_id`` is not written. A row whose ``_tidesync_id`` cell a person
clears is no longer the sink's: the next upsert of that key appends a row.

Writing the same events twice leaves the file as writing them once: the
sink keeps the highest position it has written (state store, kv
``sheet_applied``, stored right after the file is replaced) and skips events
at or before it unless ``replay`` (dead-letter replays), so a re-delivered
batch does not undo an edit made in the file since; and upserts by key are
idempotent anyway (a crash between the file replace and that store write
applies the batch again, to the same result). Per-key order is the order of
the events. A value the format cannot hold (control characters in xlsx text)
fails its own event, nothing of it written, as a :class:`PartialBatchError`;
the others are saved. A file that cannot be loaded or saved (disk full, no
permission, a corrupt workbook) fails the whole call as transient: nothing
was replaced.

A person saving an older copy of the file over a newer one written by the
sink undoes those writes, as with any two writers of one file: edit the
file, do not replace it with a stale copy, while a pipeline writes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, TransientError
from tidesync.event import DELETE, TRUNCATE, ChangeEvent, Key, Position, json_dumps
from tidesync.protocols import Context
from tidesync.sheets.config import ID_COLUMN, SheetSinkConfig
from tidesync.sheets.grid import Grid, key_text
from tidesync.sheets.watch import Signature, signature

APPLIED_NS = "sheet_applied"


class SheetSink:
    """Writes one sheet of one file; see the module docstring for the rules."""

    def __init__(self, config: SheetSinkConfig) -> None:
        self.config = config
        self.path = Path(config.path)
        self.key = list(config.key) if config.key is not None else [ID_COLUMN]  # the columns rows are found by
        self._grid: Grid | None = None
        self._saved: Signature | None = None
        self._lock = asyncio.Lock()
        self._ctx: Context | None = None
        self._applied: Position | None = None
        self.rewrites = 0  # file replacements, for tests and metrics
        self.loads = 0

    async def open(self, ctx: Context) -> None:
        self._ctx = ctx
        stored = await ctx.state.kv_get(APPLIED_NS, self._applied_key())
        self._applied = tuple(stored) if isinstance(stored, list) else None

    def _applied_key(self) -> str:
        assert self._ctx is not None
        return f"{self._ctx.pipeline}:{self._ctx.name}"

    async def close(self) -> None:
        self._grid = None

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        applied = None if replay else self._applied
        todo = [(i, e) for i, e in enumerate(events) if not _at_or_before(e.position, applied)]
        if not todo:
            return
        async with self._lock:
            failures = await self._save([e for _, e in todo])
            newest = todo[-1][1].position  # events come in source order
            if newest and self._ctx is not None and not _at_or_before(newest, self._applied):
                self._applied = newest
                await self._ctx.state.kv_put(APPLIED_NS, self._applied_key(), list(newest))
        if failures:
            raise PartialBatchError({todo[j][0]: err for j, err in failures.items()})

    async def _save(self, events: list[ChangeEvent]) -> dict[int, DeliveryError]:
        """Apply ``events`` in order and save them at once (under the lock); the failures by index into
        ``events``. Raises a DeliveryError when nothing was saved (the call fails whole)."""
        return await asyncio.to_thread(self._write, events)

    def _apply_each(self, grid: Grid, events: list[ChangeEvent], where: str) -> dict[int, DeliveryError]:
        """Apply ``events`` in order to ``grid``; an event whose value a cell cannot hold fails alone."""
        failures: dict[int, DeliveryError] = {}
        doomed: set[int] = set()
        for i, ev in enumerate(events):
            try:
                self._apply(grid, ev, doomed)
            except (ValueError, TypeError) as exc:
                failures[i] = PermanentError(f"{where}: {exc}")
        grid.remove(doomed)
        return failures

    # --- in a worker thread ------------------------------------------------------------------

    def _load(self) -> Grid:
        if self._grid is not None and self._saved is not None and signature(self.path) == self._saved:
            return self._grid
        self._grid = None
        self.loads += 1
        c = self.config
        if c.type == "xlsx":
            from tidesync.sheets.xlsx_grid import XlsxGrid

            return XlsxGrid(self.path, sheet=c.sheet, key=self.key, header_row=c.header_row)
        from tidesync.sheets.csv_grid import CsvGrid

        return CsvGrid(self.path, key=self.key, header_row=c.header_row, delimiter=c.delimiter, encoding=c.encoding)

    def _write(self, events: list[ChangeEvent]) -> dict[int, DeliveryError]:
        try:
            grid = self._load()
        except Exception as exc:  # a file being replaced, a corrupt workbook: the write is retried
            raise TransientError(f"{self.path}: cannot load ({exc})") from exc
        self._grid = None  # until saved, the copy in memory may hold a half-applied batch
        failures = self._apply_each(grid, events, str(self.path))
        try:
            grid.save(self.path)
        except OSError as exc:
            raise TransientError(f"{self.path}: cannot save ({exc})") from exc
        self.rewrites += 1
        self._grid, self._saved = grid, signature(self.path)
        return failures

    def _column(self, grid: Grid, name: str) -> int:
        try:
            return grid.header.index(name)
        except ValueError:
            col = grid.add_column(name)
            if name == ID_COLUMN and self.config.key is None:
                grid.hide(col)  # once, when made: a person may show it again
            return col

    def _apply(self, grid: Grid, ev: ChangeEvent, doomed: set[int]) -> None:
        mark = self.config.deletes == "mark"
        if ev.op == TRUNCATE:
            if mark:
                col = self._column(grid, self.config.mark_column)
                for r in grid.index.values():
                    grid.put(r, col, grid.check(True))
            else:
                doomed.update(grid.index.values())
                grid.index.clear()
            return
        if self.config.key is None:
            ident: tuple[Any, ...] = (row_id(ev.key),)
        elif len(ev.key) != len(self.config.key):
            raise ValueError(f"the key {list(ev.key)!r} does not fit key: {self.config.key}")
        else:
            ident = ev.key
        key = key_text(ident)
        row = grid.index.get(key)
        if ev.op == DELETE:
            if row is None:
                return
            if mark:
                grid.put(row, self._column(grid, self.config.mark_column), grid.check(True))
            else:
                doomed.add(row)
                del grid.index[key]
            return
        after = ev.after or {}
        names = ev.changed if row is not None and ev.changed is not None else tuple(after)
        if self.config.columns is not None:
            names = tuple(n for n in names if n in self.config.columns)
        if self.config.key is None:
            names = tuple(n for n in names if n != ID_COLUMN)
        values: list[tuple[str, Any]] = [(n, grid.check(after[n])) for n in names if n in after]
        if row is None:
            key_values = [(k, grid.check(v)) for k, v in zip(self.key, ident, strict=True)]
            if self.config.key is None:  # the id column goes after the fields in a new sheet
                values = values + key_values
            else:
                values = key_values + [(n, v) for n, v in values if n not in self.key]
        writes = [(self._column(grid, n), v) for n, v in values]  # every value checked before any is written
        if row is None:
            row = grid.append()
            grid.index[key] = row
        for col, v in writes:
            grid.put(row, col, v)
        if mark and self.config.mark_column in grid.header:
            grid.put(row, grid.header.index(self.config.mark_column), None)


def row_id(key: Key) -> Any:
    """What a keyless sink writes in ``_tidesync_id`` for an event's key: its one value when that is text or a
    whole number a spreadsheet holds exactly (an xlsx number is a double), otherwise the key as JSON text."""
    if len(key) == 1:
        (v,) = key
        if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and -(2**53) <= v <= 2**53):
            return v
    return json_dumps(list(key)).decode()


def _at_or_before(position: Position, applied: Position | None) -> bool:
    """True when ``position`` is known to be written already (positions of another source never are)."""
    if not position or not applied:
        return False
    try:
        return position <= applied
    except TypeError:
        return False
