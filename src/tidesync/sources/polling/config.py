"""Configuration of the SQL polling source (``type: sql_poll``); pydantic only, no driver imports.

::

    source:
      type: sql_poll
      dsn: postgresql://postgres@127.0.0.1/crm      # or mysql://..., sqlite:///path.db
      cursor: updated_at                            # default cursor column for every table
      poll_interval: 1s
      page_size: 1000
      lookback: 60s                                 # re-read window below the high-water mark
      watch_transactions: true                      # ... held open while older transactions are (see source)
      key_scan: {every: 5m, chunk_size: 10000}      # hard-delete detection; null to turn off
      tables:
        - public.customers                          # uses the default cursor and the primary key
        - table: public.orders
          cursor: modified
          key: [order_id]
          entity: shop.orders
          soft_delete: {column: deleted_at}         # deleted when NOT NULL
        - table: public.items
          soft_delete: {column: is_deleted, value: true}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_seconds(value: Any) -> Any:
    """A duration as seconds: a number, or text like ``500ms``, ``30s``, ``10m``, ``1h``, ``1d``."""
    if isinstance(value, str):
        text = value.strip().lower()
        for unit in ("ms", "s", "m", "h", "d"):
            if text.endswith(unit) and text[: -len(unit)].strip().replace(".", "", 1).isdigit():
                return float(text[: -len(unit)]) * _UNITS[unit]
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"cannot read duration {value!r}; use seconds or e.g. 500ms, 30s, 10m, 1h, 1d") from None
    return value


Seconds = Annotated[float, BeforeValidator(parse_seconds)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SoftDelete(_Strict):
    """A row is deleted when ``column`` is not NULL (``value`` unset), or when it equals ``value``."""

    column: str = Field(description="the column that marks a deleted row")
    value: Any = Field(None, description="the value meaning deleted (unset: any non-NULL value)")


class KeyScan(_Strict):
    """Hard-delete detection: every ``every`` seconds, compare the table's keys with the keys seen."""

    every: Seconds = Field(300.0, gt=0, description="time between scans, e.g. 5m")
    chunk_size: int = Field(10_000, ge=1, description="keys read per query")


class PollTable(_Strict):
    table: str = Field(min_length=1, description="table name, optionally schema-qualified")
    cursor: str | None = Field(None, description="column that grows on every change (default: the source's cursor)")
    key: list[str] | None = Field(None, min_length=1, description="key columns (default: the primary key)")
    entity: str | None = Field(None, description="entity name of the events (default: the table name)")
    soft_delete: SoftDelete | None = Field(None, description="rows marked deleted by a column become deletes")
    lookback: Seconds | None = Field(None, ge=0, description="overrides the source's lookback for this table")


def _table_item(value: Any) -> Any:
    return {"table": value} if isinstance(value, str) else value


class SqlPollConfig(_Strict):
    type: Literal["sql_poll"] = "sql_poll"
    dsn: str = Field(description="postgresql://, mysql:// (MariaDB), sqlite:///path, or a SQLAlchemy URL")
    tables: list[Annotated[PollTable, BeforeValidator(_table_item)]] = Field(
        min_length=1, description="tables to poll: a name, or a mapping with table/cursor/key/entity/soft_delete"
    )
    cursor: str | None = Field(None, description="default cursor column")
    poll_interval: Seconds = Field(1.0, gt=0, description="pause between passes over a table")
    page_size: int = Field(1000, ge=1, le=1_000_000, description="rows per query")
    lookback: Seconds = Field(
        60.0, ge=0, description="each pass re-reads rows whose cursor is this far below the high-water mark"
    )
    key_scan: KeyScan | None = Field(
        default_factory=lambda: KeyScan.model_validate({}), description="hard-delete detection; null turns it off"
    )
    watch_transactions: bool = Field(
        True,
        description="hold the re-read window open for transactions still open on the database, so a commit "
        "later than the look-back is still read (Postgres timestamptz and MariaDB/MySQL TIMESTAMP cursors; "
        "needs PROCESS on MariaDB/MySQL, pg_read_all_stats on Postgres to see other roles' sessions)",
    )
    naive_timezone: str = Field("UTC", description="time zone of cursor timestamps without one (for committed_at)")
    shadow_scope: str | None = Field(None, description="scope of the shadow rows (default: the pipeline name)")
    connect_timeout: Seconds = Field(10.0, gt=0, description="seconds to wait for a connection")
    progress: bool = Field(
        True, description="show the initial load's progress: a bar on a terminal, a log line every 10s elsewhere"
    )

    @model_validator(mode="after")
    def _cursor_for_every_table(self) -> SqlPollConfig:
        for t in self.tables:
            if t.cursor is None and self.cursor is None:
                raise ValueError(f"table {t.table!r} has no cursor column: set cursor on it or on the source")
        entities = [t.entity or t.table for t in self.tables]
        dup = {e for e in entities if entities.count(e) > 1}
        if dup:
            raise ValueError(f"two tables would produce the same entity: {', '.join(sorted(dup))}")
        return self
