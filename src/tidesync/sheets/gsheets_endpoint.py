"""A Google sheet as a two-way sync side: the :class:`~tidesync.sync.endpoint.Endpoint` contract over the Sheets API.

The comparison of each op with the cells is the file endpoint's
(:class:`~.endpoint.GridSide`: outcomes ``ok`` / ``already`` / ``conflict`` /
``missing`` / ``exists``, rows found by key text, a field without a column gets
one); reading is the ``gsheets`` source's own (:meth:`~.gsheets_api.SheetsApi.read`,
:func:`~.gsheets_source.table_of`, :class:`~.table.Typer` with the source's
``columns:``), so a row this endpoint returns is the row the side's source
emits for that content; writing is the ``gsheets`` sink's own
(:class:`~.gsheets_grid.GSheetsGrid` and its ``flush``: RAW values, other
cells, formulas and formatting untouched).

One :meth:`GSheetsEndpoint.apply` call:

1. reads the sheet (one ``values.batchGet``);
2. compares every op with those cells, in op order (a later op sees the
   writes of earlier ones);
3. if anything is to be written, sends it: the changed cells of existing rows
   in one ``values.batchUpdate``; new rows in one ``values.append``; removed
   rows in one ``spreadsheets.batchUpdate`` of ``deleteDimension`` (and an
   ``appendDimension`` first when the header outgrows the grid);
4. hands the sheet as it left it (:func:`written`: the cells read with the
   writes applied, as the API stores RAW values) to the side's source
   (:attr:`GSheetsEndpoint.listener`, :meth:`~.source.SheetSource.observe`),
   so the source diffs the version the sync wrote even if a person changes it
   again before the source's next revision check (a row the sync added,
   deleted at once, is still seen as deleted). It is built, not read back: a
   read-back could already hold that person's change and hide it.

The endpoint and the side's source take turns (:attr:`GSheetsEndpoint.lock`
is the source's :attr:`~.gsheets_source.GSheetsSource.gate`): a source read
is wholly before a write call or wholly after it, so the version handed over
is never older than one the source already diffed, nor the reverse.

No compare-and-set, and its window: Google Sheets has no conditional write.
The cells are compared as read in step 1, and the requests of step 3 follow
a fraction of a second later. A person's edit in between, to a cell the call
writes, is overwritten (their value is lost; it is never reported as a
conflict); an edit to another cell is kept, and the source reports it as
usual. A person inserting or removing rows above the rows written, in that
window, shifts them: the write lands on the neighbouring row (as for the
``gsheets`` sink). Edits a person makes after the write are seen by the
source at its next check like any other.

Values are compared as a Google cell stores them (:meth:`GSheetsEndpoint.cell`:
the sink's RAW conversion, then the source's reading of it, then
:func:`~.types.canonical`): ``5``, ``5.0``, ``Decimal("5")`` and ``"5"`` are
one value, a date is its ISO text, a Decimal a double cannot hold is its text.
A write repeated after a lost answer therefore finds its values (``already``)
and its rows (``exists``): every call is safe to repeat, and a failed request
fails the call as transient.

Requests: a call that changes nothing costs one read; one that writes costs a
read and one to three writes (usually the one ``values.batchUpdate``). They are paced by the source's
``rate_limit`` on a client of their own (the source's revision checks and
reads are paced separately): set ``rate_limit`` to half the quota to keep the
two under it together, or let 429s be waited out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import xxhash

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import DeliveryError, PermanentError
from tidesync.event import json_dumps
from tidesync.sheets.endpoint import GridSide, _View
from tidesync.sheets.gsheets_api import SheetsApi
from tidesync.sheets.gsheets_config import GSheetsSourceConfig
from tidesync.sheets.gsheets_grid import GSheetsGrid
from tidesync.sheets.gsheets_sink import _translated
from tidesync.sheets.gsheets_source import cell_of, table_of
from tidesync.sheets.read import cyclic_gc_paused
from tidesync.sheets.table import HeaderError, Records, Table, Typer
from tidesync.sheets.types import canonical, to_text
from tidesync.sync.endpoint import Op, OpResult

log = logging.getLogger("tidesync.sheets.gsheets")

Listener = Callable[[Table, Records, float], None]  # (the sheet as a write call left it, when)


class GSheetsEndpoint(GridSide):
    """One sheet of one Google spreadsheet, read and written as a sync side; see the module docstring."""

    def __init__(
        self, config: GSheetsSourceConfig, key: Sequence[str], *, sheet: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.config = config
        self.sheet = sheet or config.sheet
        self.key = tuple(key)
        self.fmt = "gsheets"
        self.where = f"{self.sheet} (spreadsheet {config.spreadsheet_id})"
        self.clock = clock
        self._typer = Typer(self.key, config.columns)
        self._values = GSheetsGrid([], title=self.sheet, sheet_id=0, columns=0, key=list(self.key), header_row=1)
        self.lock = asyncio.Lock()  # the side's source's gate when built by a sync (see the module docstring)
        self.api: SheetsApi | None = None
        self._props: dict[str, Any] | None = None
        self.listener: Listener | None = None
        self.rewrites = 0  # calls that sent writes, for tests and metrics
        self.reads = 0

    def cell(self, value: Any) -> Any:
        """``value`` as a Google cell holds it after a RAW write and reads back, in one comparable form."""
        if value is None:
            return None
        try:
            stored = self._values.check(value)
        except (ValueError, TypeError):  # not storable (NaN, too long): its text
            return canonical(to_text(value))
        if stored == "":
            return None
        return canonical(cell_of(stored))

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self, *, writes: bool = True) -> None:
        """Find the sheet and read it once: it must hold the header row and the key columns (nothing is written)."""
        c = self.config
        if self.api is None:
            self.api = SheetsApi(
                f"gsheets sync side {self.sheet}", c.spreadsheet_id, base_url=c.base_url, drive_url=c.drive_url,
                key=c.credentials, rate_limit=c.rate_limit, http=c.http, clock=self.clock,
            )  # fmt: skip
        async with self.lock:
            await self._properties()
            await self._read()

    async def close(self) -> None:
        api, self.api = self.api, None
        self._props = None
        if api is not None:
            await api.close()

    # --- reading ----------------------------------------------------------------------------

    async def _properties(self) -> dict[str, Any]:
        assert self.api is not None
        if self._props is None:
            with _translated(self.where, reading=True):
                props = await self.api.sheet_properties(self.sheet)
            if props is None:
                raise PermanentError(f"{self.where}: no such sheet (a sheet side needs the sheet, with its header row)")
            self._props = props
        return self._props

    async def _read(self) -> tuple[list[list[Any]], Table, Records, _View]:
        assert self.api is not None
        with _translated(self.where, reading=True):
            values = await self.api.read(self.sheet)
        self.reads += 1
        table, records = await asyncio.to_thread(self._type, values)
        return values, table, records, self._view_of(table.digest, table, records)

    def _type(self, values: list[list[Any]]) -> tuple[Table, Records]:
        digest = xxhash.xxh3_128_hexdigest(json_dumps(values))
        try:
            with cyclic_gc_paused():
                table = table_of(values, self.sheet, self.config.header_row, digest)
                return table, self._typer.records(table)
        except HeaderError as exc:
            raise PermanentError(f"{self.where}: {exc}") from None

    async def _current(self) -> _View:
        async with self.lock:
            return (await self._read())[3]

    # --- writes -----------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        if not ops:
            return []
        async with self.lock:
            props = await self._properties()
            values, _, _, view = await self._read()
            grid = GSheetsGrid(
                values, title=self.sheet, sheet_id=int(props.get("sheetId", 0)),
                columns=int(props.get("gridProperties", {}).get("columnCount", 26)), key=list(self.key),
                header_row=self.config.header_row,
            )  # fmt: skip
            rows = dict(view.by_text)
            doomed: set[int] = set()
            results = [self._one(grid, rows, doomed, op) for op in ops]
            if not self._changed(results):
                return results
            grid.remove(doomed)
            assert self.api is not None
            try:
                with _translated(self.where):
                    await grid.flush(self.api)
            except DeliveryError:
                self._props = None  # someone may have resized or removed the sheet: ask again
                raise
            props.setdefault("gridProperties", {})["columnCount"] = grid.columns
            self.rewrites += 1
            await self._hand_over(values, grid)
            return results

    async def _hand_over(self, values: list[list[Any]], grid: GSheetsGrid) -> None:
        """The sheet as this call left it, to the side's source (see the module docstring)."""
        if self.listener is None:
            return
        table, records = await asyncio.to_thread(self._type, written(values, grid))
        self.listener(table, records, self.clock.time())


def written(values: list[list[Any]], grid: GSheetsGrid) -> list[list[Any]]:
    """``values`` (the sheet as read) with ``grid``'s edits applied as :meth:`GSheetsGrid.flush` sends them: the
    cells written (RAW: stored and read back as sent), the new rows after the last row holding anything, the
    removed rows taken out. Numbers may read back as ``5`` where ``5.0`` was sent: typed alike."""
    out = [list(r) for r in values]
    for (r, c), v in grid.writes.items():
        if r in grid.doomed:
            continue  # flush does not write into rows it removes
        while len(out) < r:
            out.append([])
        row = out[r - 1]
        if len(row) <= c:
            row.extend([""] * (c + 1 - len(row)))
        row[c] = v
    while out and not any(v not in ("", None) for v in out[-1]):
        out.pop()  # an append goes after the last row holding anything
    out.extend(list(grid.new[r]) for r in sorted(grid.new))
    for r in sorted(grid.doomed, reverse=True):
        if r <= len(out):
            del out[r - 1]
    return out
