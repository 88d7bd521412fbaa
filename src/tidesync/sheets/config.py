"""Configuration of the file spreadsheet source and sink (``type: csv`` / ``type: xlsx``); pydantic only.

::

    source:
      type: xlsx                    # or csv
      path: customers.xlsx
      sheet: Customers              # xlsx only; default: the first sheet
      key: [id]                     # omit for a row fingerprint (read-only; see tidesync.sheets.table)
      header_row: 1
      columns: {id: integer, price: decimal, joined: date, phone: text}   # the rest: auto
      entity: customers             # default: the file name without its extension
      poll_interval: 1s             # stat check when no file-system notification comes
      settle: 200ms                 # size and mtime must hold this long before a read

    sink:
      type: xlsx                    # or csv
      path: exports/customers.xlsx
      sheet: Customers              # xlsx only; default: Sheet1 (created when missing)
      key: [id]                     # omit: a hidden `_tidesync_id` column holds each row's event key
      deletes: remove               # or mark: the row stays, `mark_column` says TRUE
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidesync.sheets.types import ColumnType
from tidesync.sources.polling.config import Seconds

ID_COLUMN = "_tidesync_id"  # a keyless sink's row ids (see tidesync.sheets.sink)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SheetSourceConfig(_Strict):
    type: Literal["csv", "xlsx"]
    path: str = Field(min_length=1, description="the file to watch")
    sheet: str | None = Field(None, description="xlsx: the sheet's name (default: the first sheet)")
    key: list[str] | None = Field(
        None, min_length=1, description="columns that identify a row; unset: a row fingerprint (read-only sources)"
    )
    header_row: int = Field(1, ge=1, description="the row holding the column names; data follows it")
    columns: dict[str, ColumnType] = Field(
        default_factory=dict, description="declared cell types by column; a cell that does not fit is dead-lettered"
    )
    entity: str | None = Field(None, description="entity of the events (default: the file name without extension)")
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="csv: the delimiter (default: sniffed)")
    encoding: str = Field("utf-8", description="csv: the text encoding")
    poll_interval: Seconds = Field(1.0, gt=0, description="seconds between stat checks of the file")
    settle: Seconds = Field(0.2, ge=0, description="size and mtime must hold this long before the file is read")
    watch: Literal["auto", "poll"] = Field(
        "auto", description="auto: file-system notifications (watchfiles) plus polling; poll: polling only"
    )

    @model_validator(mode="after")
    def _sheet_for_xlsx(self) -> SheetSourceConfig:
        if self.type == "csv" and self.sheet is not None:
            raise ValueError("sheet: applies to xlsx only (a csv file has one sheet)")
        return self


class SheetSinkConfig(_Strict):
    type: Literal["csv", "xlsx"]
    path: str = Field(min_length=1, description="the file to write (created with a header when missing)")
    sheet: str = Field("Sheet1", min_length=1, description="xlsx: the sheet to write (created when missing)")
    key: list[str] | None = Field(
        None,
        min_length=1,
        description=f"columns that identify a row (the event's key, in order); unset: a `{ID_COLUMN}` column "
        "(hidden in xlsx) holds each row's event key",
    )
    header_row: int = Field(1, ge=1, description="the row holding the column names")
    columns: list[str] | None = Field(
        None, description="the fields to write (default: every field of the events); other columns are never touched"
    )
    deletes: Literal["remove", "mark"] = Field("remove", description="remove the row, or mark it in mark_column")
    mark_column: str = Field("_deleted", min_length=1, description="deletes: mark: the column set to TRUE")
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv: the delimiter of a new file")
    encoding: str = Field("utf-8", description="csv: the text encoding")

    @model_validator(mode="after")
    def _keyless(self) -> SheetSinkConfig:
        if self.key is None and self.deletes == "mark" and self.mark_column == ID_COLUMN:
            raise ValueError(f"mark_column: {ID_COLUMN} holds the row ids of a sink without key:")
        return self
