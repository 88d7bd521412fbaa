"""Destination tables as a sink sees them: names, columns, key (values; no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TableName:
    """A destination table; ``schema`` is None for the connection's default (search path, database, main)."""

    name: str
    schema: str | None = None

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A destination column. ``kind`` is the portable type it maps to (see tidesync.schema)."""

    name: str
    native: str
    kind: str = "unknown"
    nullable: bool = True
    cast: str | None = None  # a type to cast parameters to (Postgres arrays of this column)
    collation: str | None = None  # MariaDB: compare key strings in the column's own collation
    charset: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class TableInfo:
    """What the sink introspected about a destination table (cached until an error or DDL).

    ``key``: the key columns (primary key, or the ``keys`` override), empty for
    an append-only table. ``key_unique``: a primary key or unique index covers
    exactly the key, so upserts can rely on it. ``key_indexed``: some index
    starts with a key column, so key lookups are cheap.
    """

    name: TableName
    columns: Mapping[str, ColumnInfo]
    key: tuple[str, ...] = ()
    key_unique: bool = False
    key_indexed: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    # Compared and hashed by identity: one object per introspection.


def split_name(name: str) -> TableName:
    """``schema.table`` -> TableName; a name without a dot has no schema."""
    schema, dot, table = name.partition(".")
    return TableName(table, schema) if dot else TableName(name)


def resolve_table(entity: str, tables: Mapping[str, str], *, keep_schema: bool) -> TableName:
    """The destination table of ``entity``: the configured name, else one derived from the entity.

    ``keep_schema``: whether the entity's schema part names a schema in the
    destination too (Postgres) or is dropped (MariaDB, SQLite).
    """
    configured = tables.get(entity)
    if configured is not None:
        return split_name(configured)
    if keep_schema:
        return split_name(entity)
    return TableName(entity.rsplit(".", 1)[-1])


def key_override(table: TableName, entity: str, keys: Mapping[str, list[str]]) -> tuple[str, ...] | None:
    """The configured key columns of a table: by its full name, its bare name, or the entity."""
    for name in (str(table), table.name, entity):
        cols = keys.get(name)
        if cols:
            return tuple(cols)
    return None
