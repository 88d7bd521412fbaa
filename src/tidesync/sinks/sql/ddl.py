"""Which tables a write creates and which columns it adds (pure, no I/O; the sink runs the DDL).

- A missing table is created (``create_tables``) from the entity's schema, or,
  when the source published none, from one inferred from the batch's events of
  the entity (tidesync.sinks.sql.infer). Columns whose names the database
  cannot take (tidesync.sinks.sql.names) are left out, and the events that
  write them fail alone; a table whose own name or key column names the
  database cannot take is not created, and its events fail with the reason.
- A missing column is added (``evolve: add_columns``) typed by the entity's
  schema, else by the batch's values of that field (an entity with a schema
  that lacks the column: text).
- Each table and column is tried at most once per write (``tried``): still
  missing afterwards, the database took its name for another, and the
  events that need it fail permanently instead of being planned again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from tidesync.event import TRUNCATE, ChangeEvent
from tidesync.schema import Column, EntitySchema
from tidesync.sinks.sql.infer import infer_column, infer_schema
from tidesync.sinks.sql.names import NameRules
from tidesync.sinks.sql.tables import TableInfo, TableName

# What a write has run DDL for: (table, None) created, (table, folded column name) added.
Tried = set[tuple[TableName, str | None]]


@dataclass(frozen=True, slots=True)
class NewTable:
    entity: str
    table: TableName
    schema: EntitySchema  # only columns the database can take
    key: tuple[str, ...]
    inferred: bool  # the types were guessed from values


def table_name_problem(table: TableName, rules: NameRules) -> str | None:
    """Why the database cannot take this table name (or its schema's), None when it can."""
    return rules.problem(table.name, "table") or (
        rules.problem(table.schema, "schema") if table.schema is not None else None
    )


def new_table(
    entity: str,
    table: TableName,
    schema: EntitySchema | None,
    events: Sequence[ChangeEvent],
    key: tuple[str, ...] | None,
    rules: NameRules,
) -> NewTable | str:
    """The table to create for ``entity``, or why it cannot be created.

    ``schema``: the source's, None to infer one from ``events`` (the batch's
    events of the entity); ``key``: the configured key columns, if any.
    """
    problem = table_name_problem(table, rules)
    if problem is not None:
        return problem
    inferred = schema is None
    if schema is None:
        rows = [ev for ev in events if ev.op != TRUNCATE]
        if not rows:
            return (
                f"the source published no schema for {entity} and this batch has no row of it "
                "to infer one from; create the table"
            )
        schema = infer_schema(entity, rows, key)
    key = key or schema.primary_key
    for k in key:
        problem = rules.problem(k, "key column")
        if problem is not None:
            return problem
    seen: set[str] = set()
    columns = []
    for c in schema.columns:
        folded = rules.fold(c.name)
        if rules.problem(c.name) is None and folded not in seen:
            seen.add(folded)
            columns.append(c)
    return NewTable(entity, table, replace(schema, columns=tuple(columns)), key, inferred)


def columns_to_add(
    missing: Mapping[TableInfo, Mapping[str, str]], tried: Tried, rules: NameRules
) -> dict[TableInfo, dict[str, str]]:
    """Of the plan's missing columns (table -> column -> entity), those not tried in this write."""
    fold = rules.fold
    out = {}
    for table, cols in missing.items():
        new = {c: e for c, e in cols.items() if (table.name, fold(c)) not in tried}
        if new:
            out[table] = new
    return out


def column_to_add(name: str, schema: EntitySchema | None, events: Iterable[ChangeEvent]) -> Column:
    """The column to add for field ``name``: from the schema, else typed by the events' values."""
    if schema is not None:
        return schema.column(name) or Column(name, "unknown")
    return infer_column(name, events)
