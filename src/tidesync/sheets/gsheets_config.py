"""Configuration of the Google Sheets source and sink (``type: gsheets``); pydantic only.

::

    source:
      type: gsheets
      spreadsheet_id: "1AbC..."         # from the sheet's URL: /spreadsheets/d/<id>/edit
      sheet: Customers                  # the tab's title
      key: [id]                         # omit for a row fingerprint (read-only)
      credentials: "${file:sa.json}"    # a service account's JSON key; share the sheet with its client_email
      columns: {id: integer, joined: date}
      poll_interval: 5s                 # one revision check (Drive files.get) per interval
      rate_limit: {per_second: 1, burst: 10}   # 60 requests per minute per user: Google's default quota

    sink:
      type: gsheets
      spreadsheet_id: "1AbC..."
      sheet: Customers
      key: [id]                         # omit: a hidden `_tidesync_id` column holds each row's event key
      credentials: "${file:sa.json}"
      deletes: remove                   # or mark
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidesync.secrets import Secret
from tidesync.sheets.config import ID_COLUMN
from tidesync.sheets.types import ColumnType
from tidesync.sources.http.config import HttpOptions, RateLimit
from tidesync.sources.polling.config import Seconds


def _default_rate() -> RateLimit:
    return RateLimit.model_validate({"per_second": 1, "burst": 10})


def _default_http() -> HttpOptions:
    return HttpOptions.model_validate({})


class _GSheets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["gsheets"]
    spreadsheet_id: str = Field(min_length=1, description="the spreadsheet's id (from its URL)")
    sheet: str = Field(min_length=1, description="the sheet's (tab's) title")
    header_row: int = Field(1, ge=1, description="the row holding the column names; data follows it")
    credentials: Secret = Field(description="a service account's JSON key (its content: use ${file:...})")
    base_url: str = Field("https://sheets.googleapis.com", description="the Sheets API (a local server in tests)")
    drive_url: str = Field("https://www.googleapis.com", description="the Drive API (revision checks)")
    rate_limit: RateLimit = Field(default_factory=_default_rate, description="client-side request pacing")
    http: HttpOptions = Field(default_factory=_default_http, description="per-request timeout and retries")

    def file_fields(self) -> dict[str, Any]:
        """The settings this shares with the file sheet source and sink, as their config takes them: a Google
        sheet follows the xlsx rules, and the path only names the spreadsheet in messages."""
        shared = self.model_dump(include={"sheet", "key", "header_row", "columns"})
        return {"type": "xlsx", "path": f"gsheets/{self.spreadsheet_id}", **shared}


class GSheetsSourceConfig(_GSheets):
    key: list[str] | None = Field(
        None, min_length=1, description="columns that identify a row; unset: a row fingerprint (read-only)"
    )
    columns: dict[str, ColumnType] = Field(
        default_factory=dict, description="declared cell types by column; a cell that does not fit is dead-lettered"
    )
    entity: str | None = Field(None, description="entity of the events (default: the sheet's title)")
    poll_interval: Seconds = Field(5.0, gt=0, description="seconds between revision checks")


class GSheetsSinkConfig(_GSheets):
    key: list[str] | None = Field(
        None,
        min_length=1,
        description=f"columns that identify a row (the event's key, in order); unset: a hidden `{ID_COLUMN}` "
        "column holds each row's event key",
    )
    columns: list[str] | None = Field(
        None, description="the fields to write (default: every field of the events); other columns are never touched"
    )
    deletes: Literal["remove", "mark"] = Field("remove", description="remove the row, or mark it in mark_column")
    mark_column: str = Field("_deleted", min_length=1, description="deletes: mark: the column set to TRUE")

    @model_validator(mode="after")
    def _keyless(self) -> GSheetsSinkConfig:
        if self.key is None and self.deletes == "mark" and self.mark_column == ID_COLUMN:
            raise ValueError(f"mark_column: {ID_COLUMN} holds the row ids of a sink without key:")
        return self
