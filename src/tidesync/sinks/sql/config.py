"""Configuration of the SQL sinks (pydantic, ``extra="forbid"``).

Only pydantic and pure modules (name rules, table names) are imported here, so ``tidesync
validate`` never loads a database driver.

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

Column names
    Each database's rules apply (tidesync.sinks.sql.names): Postgres refuses
    NUL and names over 63 bytes of UTF-8; MariaDB/MySQL refuses NUL, names over
    64 characters, names ending in a space and characters beyond U+FFFF;
    SQLite refuses NUL. An event that writes a field whose name its database
    refuses fails permanently (dead letter) with the reason, for example
    ``column name 'xxx…' is 70 bytes; Postgres allows 63``; no DDL is run for
    it and the other events of the batch are written. MariaDB and SQLite
    compare column names without case (SQLite: A-Z only), so a field
    ``Email`` writes an existing column ``email``; two fields of one event
    that name the same column fail that event. A column still missing after
    the sink's own ``ADD COLUMN`` (the database took the name for another)
    fails its events permanently; nothing is retried forever. Names in the
    config itself (``tables``, ``keys``, ``position_table``) are checked by the
    same rules when the config is loaded.

metadata, deletes
    Columns for analytics destinations (synced_at, committed_at, op,
    deleted, position) and soft deletes: see tidesync.sinks.sql.metadata.

create_tables
    A missing table is created from the schema the source published for the
    entity (Postgres, SQLite and SQL polling sources publish one). For sources
    that publish none (webhooks, HTTP APIs), the columns are inferred from
    the events of the batch that needs the table (tidesync.sinks.sql.infer):

    - types by Python value: bool -> bool, int -> int64, float -> float64,
      Decimal -> decimal, str -> string, aware/naive datetime ->
      timestamptz/timestamp, date, time, timedelta -> interval, UUID -> uuid,
      bytes -> bytes, dict/list -> json, then each database's type (typemap);
      a column that held only None is text;
    - several types in one column: int+float -> float64, int/float+Decimal
      -> decimal, date+datetime -> timestamp, any other mix -> text;
    - key columns: ``keys`` when it names them, else for each value of the
      event key the first field holding it in every event of the batch, else
      a column ``key`` (``key_1``, ``key_2``, ...); key columns are NOT NULL.
      Until the sink restarts, an event whose row image lacks a key column
      (a delete without a before image) takes its key from ``event.key``;
    - with ``evolve: add_columns``, a field that appears later adds a column
      typed the same way from the values of the batch that brings it.

    Columns are never widened or retyped: a later value that does not fit an
    inferred column (text in an integer column) is refused by the database, a
    permanent error that dead-letters that event alone. SQLite tables made
    from inferred types are ``STRICT`` so that SQLite refuses such values too
    instead of storing them as they are.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tidesync.sinks.sql.metadata import column_names
from tidesync.sinks.sql.names import MARIADB, POSTGRES, SQLITE, NameRules
from tidesync.sinks.sql.tables import split_name

MetadataField = Literal["synced_at", "committed_at", "op", "deleted", "position"]


class SqlSinkConfig(BaseModel):
    """What every SQL sink shares."""

    model_config = ConfigDict(extra="forbid")

    tables: dict[str, str] = Field(default_factory=dict, description="entity -> destination table")
    keys: dict[str, list[str]] = Field(default_factory=dict, description="table (or entity) -> key columns")
    create_tables: bool = Field(
        False,
        description="create a missing table from the entity's schema (or, for sources without one, from the "
        "events); off: a missing table blocks the pipeline until it exists",
    )
    evolve: Literal["block", "add_columns", "dead_letter"] = Field(
        "block",
        description="a column the destination lacks: block the pipeline until it is added (it resumes by itself), "
        "add it, or dead-letter the events that write it",
    )
    lock_timeout: float | None = Field(
        None, gt=0, description="seconds a write waits for a row lock before failing transiently"
    )
    connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for a connection")
    position_table: str = Field(
        "_tidesync_applied", description="where the applied source position is kept, per pipeline and sink"
    )
    metadata: dict[MetadataField, str] | list[MetadataField] = Field(
        default_factory=dict,
        description="columns written with every row: synced_at, committed_at, op, deleted, position; a map "
        "names their columns ({synced_at: _synced_at}), a list takes the names _tidesync_<field> "
        "(see docs/analytics.md)",
    )
    deletes: Literal["hard", "soft"] = Field(
        "hard",
        description="hard: a delete removes the row; soft: it sets the deleted metadata column (and the other "
        "metadata columns) and keeps the row",
    )

    name_rules: ClassVar[NameRules | None] = None  # the database's, in each subclass

    @model_validator(mode="after")
    def _metadata(self) -> SqlSinkConfig:
        meta = column_names(self.metadata)
        if isinstance(self.metadata, list) and len(set(self.metadata)) != len(self.metadata):
            raise ValueError("metadata: a field is listed twice")
        names = list(meta.values())
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"metadata: column {twice[0]!r} is named for two fields")
        if self.deletes == "soft" and "deleted" not in meta:
            raise ValueError(
                "deletes: soft needs the deleted column: add it under metadata: (e.g. metadata: {deleted: _deleted})"
            )
        return self

    @property
    def metadata_columns(self) -> dict[str, str]:
        """``metadata`` as field -> column name (tidesync.sinks.sql.metadata)."""
        return column_names(self.metadata)

    @model_validator(mode="after")
    def _names(self) -> SqlSinkConfig:
        """Table and key column names the database cannot take fail at start, not per event."""
        rules = self.name_rules
        if rules is None:
            return self
        named = [(f"tables.{e}", t) for e, t in self.tables.items()] + [("position_table", self.position_table)]
        for where, value in named:
            table = split_name(value)
            problem = rules.problem(table.name, "table") or (
                rules.problem(table.schema, "schema") if table.schema is not None else None
            )
            if problem is not None:
                raise ValueError(f"{where}: {problem}")
        meta = column_names(self.metadata)
        for f, col in meta.items():
            problem = rules.problem(col, "column")
            if problem is not None:
                raise ValueError(f"metadata.{f}: {problem}")
        for table_name, cols in self.keys.items():
            for col in cols:
                problem = rules.problem(col, "key column")
                if problem is not None:
                    raise ValueError(f"keys.{table_name}: {problem}")
        return self


class PostgresSinkConfig(SqlSinkConfig):
    name_rules: ClassVar[NameRules | None] = POSTGRES
    type: Literal["postgres"] = "postgres"
    dsn: str = Field(description="libpq connection string or URL")


class MariadbSinkConfig(SqlSinkConfig):
    name_rules: ClassVar[NameRules | None] = MARIADB
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
    name_rules: ClassVar[NameRules | None] = SQLITE
    type: Literal["sqlite"] = "sqlite"
    path: str = Field(description="database file (created if missing)")
    lock_timeout: float | None = Field(5.0, gt=0, description="seconds to wait for another writer (busy timeout)")
