"""The Google Sheets source (``type: gsheets``): a sheet polled by revision, diffed by key like the files.

Every ``poll_interval`` one Drive ``files.get?fields=modifiedTime,version``
asks whether the spreadsheet changed. Only when its revision moved is the
sheet read whole (``values.batchGet``, :data:`~.gsheets_api.READ_OPTIONS`),
turned into a :class:`~.table.Table` (:func:`table_of`), typed and diffed
against the snapshot exactly as the file source does: this class is
:class:`~.source.SheetSource` with the file watch and file read replaced, so
events, positions ``(epoch, seq, revision digest)``, shadow rows in the state
store, rejected cells (``Customers!D17: 'abc' is not a number``) and restarts
follow the same rules (see that module).

The revision is asked for before the values are read, so an edit that lands
in between is read now and seen as a new revision at the next check: it is
never missed, at worst read twice (the diff then finds nothing).

Cells, as the API gives them: numbers as numbers (``int`` when integral,
else the ``Decimal`` of their shortest text), booleans, text as text (``0123``
stays text), empty cells as None; a date cell as the text it shows
(``FORMATTED_STRING``): a date or datetime when that text is ISO 8601
(format date columns as ``yyyy-mm-dd`` / ``yyyy-mm-dd hh:mm:ss``), else text.
Text cells holding ISO dates (as the ``gsheets`` sink writes them) read as
dates too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from typing import Any

import xxhash

from tidesync.clock import Clock
from tidesync.event import Position
from tidesync.protocols import Context
from tidesync.sheets.config import SheetSourceConfig
from tidesync.sheets.diff import Change, diff
from tidesync.sheets.gsheets_api import SheetsApi
from tidesync.sheets.gsheets_config import GSheetsSourceConfig
from tidesync.sheets.read import cyclic_gc_paused
from tidesync.sheets.source import SheetSource
from tidesync.sheets.table import HeaderError, Records, Table

log = logging.getLogger("tidesync.sheets.gsheets")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?\Z")


def cell_of(value: Any) -> Any:
    """An API cell value in the form python-calamine gives for xlsx (so :class:`~.table.Typer` types it alike)."""
    if isinstance(value, str) and value[:1].isdigit():
        try:
            if _DATE.match(value):
                return dt.date.fromisoformat(value)
            if _DATETIME.match(value):
                return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # one type per number, as in a workbook: 5 and 5.0 are one cell value
    return value


def table_of(values: list[list[Any]], title: str, header_row: int, revision: str) -> Table:
    """The sheet as read (rows from A1) to the table model; raises HeaderError without a header row."""
    if len(values) < header_row:
        raise HeaderError(f"{title}!{header_row}: no header row")
    header = tuple(str(h).strip() if h not in (None, "") else "" for h in values[header_row - 1])
    rows = [[cell_of(v) for v in row] for row in values[header_row:]]
    return Table("xlsx", title, header, rows, header_row + 1, revision)


class _Pace:
    """What the file source's read loop waits on: the time of the next revision check."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.next_check = 0.0

    async def wait(self, timeout: float) -> None:
        await self.clock.sleep(max(0.0, min(timeout, self.next_check - self.clock.monotonic())))

    async def close(self) -> None:
        return None


class GSheetsSource(SheetSource):
    """Reads one sheet of one spreadsheet; see the module docstring."""

    def __init__(self, config: GSheetsSourceConfig) -> None:
        as_file = SheetSourceConfig.model_validate(
            {**config.file_fields(), "entity": config.entity or config.sheet, "poll_interval": config.poll_interval}
        )
        super().__init__(as_file)
        self.gconfig = config
        self.api: SheetsApi | None = None
        self._revision: tuple[str, str] | None = None
        self._pace: _Pace | None = None
        # Held around each check-read-diff; a sync endpoint writing this sheet holds it around each write call,
        # whose result it hands to observe(): the two never interleave (see sheets.gsheets_endpoint).
        self.gate = asyncio.Lock()

    async def open(self, ctx: Context, after: Position | None) -> None:
        c = self.gconfig
        if self.api is None:
            self.api = SheetsApi(
                f"gsheets source {ctx.pipeline}/{ctx.name}", c.spreadsheet_id, base_url=c.base_url,
                drive_url=c.drive_url, key=c.credentials, rate_limit=c.rate_limit, http=c.http, clock=ctx.clock,
            )  # fmt: skip
        self._pace = _Pace(ctx.clock)
        self._watch = self._pace  # type: ignore[assignment]  # the read loop only waits on it
        self._revision = None
        await super().open(ctx, after)

    async def close(self) -> None:
        self._watch = None
        api, self.api = self.api, None
        if api is not None:
            await api.close()

    async def _poll(self) -> bool:
        """One revision check when due; a read and diff when the revision moved. True when that queued events."""
        assert self._ctx is not None and self.api is not None and self._pace is not None
        clock = self._ctx.clock
        if clock.monotonic() < self._pace.next_check:
            return False
        self._pace.next_check = clock.monotonic() + self.gconfig.poll_interval
        async with self.gate:
            return await self._check()

    async def _check(self) -> bool:
        assert self._ctx is not None and self.api is not None
        revision = await self.api.revision()
        if revision == self._revision:
            return False
        values = await self.api.read(self.gconfig.sheet)
        digest = xxhash.xxh3_128_hexdigest("\0".join(revision).encode())
        try:
            table, records, changes = await asyncio.to_thread(self._diff, values, digest)
        except HeaderError as exc:
            log.warning("%s: not read (%s); trying again at the next change", self.gconfig.sheet, exc)
            self._revision = revision
            return False
        self.reads += 1
        self._revision = revision
        self._publish(table, records)
        self._queue_changes(records, changes, _seconds(revision[1], self._ctx.clock.time()), digest)
        return bool(self._queue or self._memo_delete)

    def _diff(self, values: list[list[Any]], digest: str) -> tuple[Table, Records, list[Change]]:
        with cyclic_gc_paused():
            table = table_of(values, self.gconfig.sheet, self.gconfig.header_row, digest)
            records = self._typer.records(table)
            return table, records, diff(self._snapshot, records.rows, keep={r.key for r in records.rejects})


def _seconds(rfc3339: str, default: float) -> float:
    try:
        return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
