"""The Google Sheets sink (``type: gsheets``): upsert rows by key, one short burst of requests per write.

``write(events)`` reads the sheet (``values.batchGet``; the sheet's id and grid
size once per open, creating the sheet when missing), applies the events in
order to that copy with the same rules as the file sink
(:meth:`~.sink.SheetSink._apply`: rows found by their key cells, an update
writes only ``changed``, an insert every field, new fields get a column,
``deletes: remove|mark``, truncate) and sends the edits
(:meth:`~.gsheets_grid.GSheetsGrid.flush`: at most four requests). Other
cells, formulas, formatting and sheets are never touched.

Without ``key:`` rows are found by a ``_tidesync_id`` column holding each
event's key, exactly as in the file sink (:mod:`.sink`). The write that adds
the column hides it (``updateDimensionProperties``, ``hiddenByUser``, in the
first request, with any ``appendDimension``) before its header cell is
written, and no later write does: a person may show it again.

Idempotent: the highest position written is kept in the state store (kv
``sheet_applied``) after the requests succeed, and events at or before it
are skipped unless ``replay``; and since every write reads the sheet first
and finds rows by key, a write retried after a partial failure (cells
written, append lost) updates the rows it appended instead of adding them
again. Appends and row deletes are never retried inside one call (their
answer lost, they may have happened): the call fails as transient and the
engine retries it whole.

Errors: a value a cell cannot hold (over 50,000 characters, NaN) fails its
own event (:class:`PartialBatchError`); the API refusing the credential is
:class:`SystemicError` (the pipeline blocks until fixed); a missing
spreadsheet (404), or a sheet that cannot be read (renamed, removed),
too; 5xx, timeouts and 429s beyond ``max_throttled`` are transient; a 400
to a write fails the batch as permanent (the engine splits it).

Caution: rows are addressed by the row numbers read at the start of the
write. A person inserting or removing rows above them in the half second
between that read and the requests shifts them, and the edit lands on the
neighbouring row; ``deletes: mark`` avoids removing the wrong row.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from tidesync.errors import DeliveryError, PermanentError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sheets.config import SheetSinkConfig
from tidesync.sheets.gsheets_api import SheetsApi
from tidesync.sheets.gsheets_config import GSheetsSinkConfig
from tidesync.sheets.gsheets_grid import GSheetsGrid
from tidesync.sheets.sink import SheetSink
from tidesync.sources.http.client import ApiStatusError
from tidesync.sources.http.delivery import delivery_errors


class GSheetsSink(SheetSink):
    """Writes one sheet of one spreadsheet; see the module docstring."""

    def __init__(self, config: GSheetsSinkConfig) -> None:
        as_file = SheetSinkConfig.model_validate(
            {**config.file_fields(), "deletes": config.deletes, "mark_column": config.mark_column}
        )
        super().__init__(as_file)
        self.gconfig = config
        self.api: SheetsApi | None = None
        self._props: dict[str, Any] | None = None

    async def open(self, ctx: Context) -> None:
        c = self.gconfig
        await super().open(ctx)
        if self.api is None:
            self.api = SheetsApi(
                f"gsheets sink {ctx.pipeline}/{ctx.name}", c.spreadsheet_id, base_url=c.base_url,
                drive_url=c.drive_url, key=c.credentials, rate_limit=c.rate_limit, http=c.http, clock=ctx.clock,
            )  # fmt: skip
        self._props = None

    async def close(self) -> None:
        api, self.api = self.api, None
        if api is not None:
            await api.close()

    async def _save(self, events: list[ChangeEvent]) -> dict[int, DeliveryError]:
        grid = await self._load_grid()
        failures = self._apply_each(grid, events, self.gconfig.sheet)  # type: ignore[arg-type]  # a Grid, structurally
        assert self.api is not None
        try:
            with _translated(self.gconfig.sheet):
                await grid.flush(self.api)
        except DeliveryError:
            self._props = None  # someone may have resized or removed the sheet: ask again
            raise
        if self._props is not None:  # the grid may have grown columns
            self._props.setdefault("gridProperties", {})["columnCount"] = grid.columns
        self.rewrites += 1
        return failures

    async def _load_grid(self) -> GSheetsGrid:
        assert self.api is not None
        c = self.gconfig
        with _translated(c.sheet, reading=True):
            if self._props is None:
                props = await self.api.sheet_properties(c.sheet)
                if props is None:
                    await self.api.structure([{"addSheet": {"properties": {"title": c.sheet}}}], once=False)
                    props = await self.api.sheet_properties(c.sheet)
                if props is None:
                    raise SystemicError(f"{c.sheet}: no such sheet in spreadsheet {c.spreadsheet_id}")
                self._props = props
            values = await self.api.read(c.sheet)
        self.loads += 1
        grid_props = self._props.get("gridProperties", {})
        grid = GSheetsGrid(
            values, title=c.sheet, sheet_id=int(self._props.get("sheetId", 0)),
            columns=int(grid_props.get("columnCount", 26)), key=self.key, header_row=c.header_row,
        )  # fmt: skip
        return grid


def _translated(what: str, *, reading: bool = False) -> AbstractContextManager[None]:
    """Client errors to delivery errors. A 4xx on the read before any write (the sheet renamed or removed)
    would fail every event alike: systemic, not a reason to dead-letter the batch."""

    def rejected(exc: ApiStatusError) -> DeliveryError:
        if exc.status == 404 or reading:
            return SystemicError(f"{what}: cannot read the sheet (renamed? shared with the account?): {exc}")
        return PermanentError(f"{what}: {exc}")

    return delivery_errors(rejected, refused="Google refused the service account")
