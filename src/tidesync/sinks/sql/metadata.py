"""Columns for analytics destinations: when and how each row was synced, and soft deletes (pure, no I/O).

``metadata:`` on a SQL sink names the columns to write with every row; each
one is off unless named:

================  ======================================  ====================================
field             value                                   created as (Postgres / MariaDB / SQLite)
================  ======================================  ====================================
``synced_at``     when the sink applied the row (UTC)     timestamptz / DATETIME(6) / TEXT
``committed_at``  when the source committed the change    timestamptz / DATETIME(6) / TEXT
``op``            insert, update, delete or snapshot      varchar(8) / VARCHAR(8) / TEXT
``deleted``       the row was deleted at the source       boolean / BOOLEAN / INTEGER, default false
``position``      the change's source position, JSON      text / LONGTEXT / TEXT
================  ======================================  ====================================

A map renames them (``metadata: {synced_at: _synced_at, deleted: _deleted}``);
a list takes the default names (``metadata: [synced_at, op]`` writes
``_tidesync_synced_at`` and ``_tidesync_op``).

What each change writes:

- insert, snapshot row, update: its fields, plus every metadata column
  (``deleted`` false: a row inserted again after a soft delete is live
  again). An update still writes only the fields that changed, plus the
  metadata columns, so a concurrent edit of another column survives;
- delete with ``deletes: hard`` (the default): the row is deleted;
- delete with ``deletes: soft``: an update of the metadata columns alone
  (``deleted`` true, ``op`` delete, ``synced_at``, ``committed_at``,
  ``position``); the row's data stays. A soft delete of a row the destination
  does not hold writes nothing (as a hard delete would). ``deletes: soft``
  needs the ``deleted`` column;
- truncate empties the table whatever ``deletes`` says.

The values are part of the same transaction as the data and the stored
position, so exactly-once holds for them too: a batch delivered again after
it was applied is skipped whole, and ``synced_at`` keeps the time of the first
apply. ``synced_at`` is one time per transaction (the sink's clock).

A metadata column the destination table lacks is added when ``create_tables``
is on (with the table, for a new one); otherwise the pipeline blocks with the
``ALTER TABLE`` to run, and resumes by itself once the column exists. A field
of the events with the same name as a metadata column is overwritten by the
metadata value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from tidesync.event import DELETE, ChangeEvent
from tidesync.schema import Column
from tidesync.sinks.sql.tables import TableInfo, TableName

FIELDS: Final = ("synced_at", "committed_at", "op", "deleted", "position")
DEFAULT_PREFIX: Final = "_tidesync_"

_COLUMNS: Final = {
    "synced_at": Column("synced_at", "timestamptz"),
    "committed_at": Column("committed_at", "timestamptz"),
    "op": Column("op", "string", length=8),
    "deleted": Column("deleted", "bool", default=False, has_default=True),
    "position": Column("position", "string"),
}


def column_names(configured: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """``metadata:`` as configured (a map, or a list of fields) -> field -> column name."""
    if isinstance(configured, Mapping):
        return dict(configured)
    return {f: DEFAULT_PREFIX + f for f in configured}


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a sink writes besides the data: ``columns`` (field -> column name, enabled ones only)."""

    columns: Mapping[str, str]
    soft_deletes: bool = False

    def __bool__(self) -> bool:
        return bool(self.columns) or self.soft_deletes

    def table_columns(self) -> list[Column]:
        """The columns to create, typed (see the module docstring)."""
        out = []
        for f in FIELDS:
            name = self.columns.get(f)
            if name is not None:
                c = _COLUMNS[f]
                out.append(Column(name, c.type, length=c.length, default=c.default, has_default=c.has_default))
        return out

    def lacking(self, table: TableInfo, fold: Callable[[str], str]) -> list[Column]:
        """The metadata columns ``table`` lacks (names compared by the database's rules, ``fold``)."""
        have = {fold(c) for c in table.columns}
        return [c for c in self.table_columns() if fold(c.name) not in have]

    def stamp(self, ev: ChangeEvent, synced_at: dt.datetime) -> dict[str, Any]:
        """The metadata values of one change (a delete's when it is a soft delete)."""
        cols = self.columns
        out: dict[str, Any] = {}
        name = cols.get("synced_at")
        if name is not None:
            out[name] = synced_at
        name = cols.get("committed_at")
        if name is not None:
            out[name] = dt.datetime.fromtimestamp(ev.committed_at, dt.UTC) if ev.committed_at else None
        name = cols.get("op")
        if name is not None:
            out[name] = ev.op
        name = cols.get("deleted")
        if name is not None:
            out[name] = ev.op == DELETE
        name = cols.get("position")
        if name is not None:
            out[name] = msgspec.json.encode(ev.position).decode() if ev.position else None
        return out


_DIALECT_TYPES: Final = {
    "postgres": {"timestamptz": "timestamptz", "string": "text", "bool": "boolean DEFAULT false"},
    "mariadb": {"timestamptz": "DATETIME(6)", "string": "LONGTEXT", "bool": "BOOLEAN DEFAULT 0"},
    "sqlite": {"timestamptz": "TEXT", "string": "TEXT", "bool": "INTEGER DEFAULT 0"},
}


def alter_statement(dialect: str, table: TableName, columns: Iterable[Column]) -> str:
    """The ``ALTER TABLE`` that adds ``columns``, for a person to run (``dialect``: the sink's type)."""
    dialect = "mariadb" if dialect == "mysql" else dialect
    quote = "`" if dialect == "mariadb" else '"'
    types = _DIALECT_TYPES.get(dialect, _DIALECT_TYPES["postgres"])

    def q(name: str) -> str:
        return quote + name.replace(quote, quote * 2) + quote

    def typed(c: Column) -> str:
        if c.type == "string" and c.length and dialect != "sqlite":
            return f"VARCHAR({c.length})" if dialect == "mariadb" else f"varchar({c.length})"
        return types[c.type]

    target = f"{q(table.schema)}.{q(table.name)}" if table.schema else q(table.name)
    adds = [f"ADD COLUMN {q(c.name)} {typed(c)}" for c in columns]
    if dialect == "sqlite":  # SQLite adds one column per statement
        return "; ".join(f"ALTER TABLE {target} {add}" for add in adds)
    return f"ALTER TABLE {target} {', '.join(adds)}"
