"""Configuration of the SQL sinks (pydantic, ``extra="forbid"``).

Only pydantic is imported here, so ``tidesync validate`` never loads a database driver.

Table names
    ``tables`` maps an entity to a destination table; an entity that is not
    listed goes to a table named after it:

    - Postgres keeps the entity's schema part: ``public.customers`` goes to
      schema ``public``, table ``customers``; an entity without a dot goes to
      the first schema of the search path.
    - MariaDB/MySQL and SQLite have no schema inside a database, so the
      default drops the schema part: ``public.customers`` goes to table
      ``customers`` of the DSN's database (SQLite: of the file). A name given
      in ``tables`` is used as written, so ``crm.accounts`` there means
      database ``crm`` on MariaDB (or an attached database on SQLite).

Keys
    Key columns come from the destination table's primary key. ``keys`` names
    them for tables that have none (the name as in ``tables``, or the entity);
    such a table needs a unique index on those columns for upserts. A table
    with neither is append-only: inserts and snapshot rows are appended
    (exactly once, thanks to the stored position); updates and deletes of it
    are dead-lettered.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SqlSinkConfig(BaseModel):
    """What every SQL sink shares."""

    model_config = ConfigDict(extra="forbid")

    tables: dict[str, str] = Field(default_factory=dict, description="entity -> destination table")
    keys: dict[str, list[str]] = Field(default_factory=dict, description="table (or entity) -> key columns")
    create_tables: bool = Field(False, description="create a missing table from the entity's schema")
    evolve: Literal["add_columns", "dead_letter"] = Field(
        "dead_letter", description="a column the destination lacks: add it, or dead-letter the events"
    )
    lock_timeout: float | None = Field(
        None, gt=0, description="seconds a write waits for a row lock before failing transiently"
    )
    connect_timeout: float = Field(10.0, gt=0)
    position_table: str = Field(
        "_tidesync_applied", description="where the applied source position is kept, per pipeline and sink"
    )


class PostgresSinkConfig(SqlSinkConfig):
    type: Literal["postgres"] = "postgres"
    dsn: str = Field(description="libpq connection string or URL")


class MariadbSinkConfig(SqlSinkConfig):
    type: Literal["mariadb", "mysql"] = "mariadb"
    dsn: str = Field(description="mysql://user:password@host:port/database")

    @field_validator("dsn")
    @classmethod
    def _url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in ("mysql", "mariadb") or "/" not in rest or not rest.split("/", 1)[1]:
            raise ValueError("must look like mysql://user:password@host:port/database")
        return v


class SqliteSinkConfig(SqlSinkConfig):
    type: Literal["sqlite"] = "sqlite"
    path: str = Field(description="database file (created if missing)")
    lock_timeout: float | None = Field(5.0, gt=0, description="seconds to wait for another writer (busy timeout)")
