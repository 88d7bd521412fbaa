"""How each step changes an :class:`EntitySchema`, the same way it changes rows.

- rename: columns renamed in place; a column already named like a target is
  replaced; primary-key names follow.
- select: the selected columns, in select order; drop: the rest.
- cast: the column's portable type becomes the cast's (``native``, length and
  precision are dropped, as they described the old type).
- set: adds (or retypes) a column typed from the constant; compute: adds (or
  retypes) a ``string`` column, unless a later cast says otherwise.
- filter: unchanged. A user function or plugin: unchanged, unless the callable
  has a ``map_schema(schema) -> EntitySchema`` attribute.

A key column removed by select/drop leaves ``primary_key``; the key values in
``ChangeEvent.key`` are never changed by transforms.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from tidesync.schema import Column, EntitySchema
from tidesync.transform.casts import SCHEMA_TYPE
from tidesync.transform.config import (
    CastStep,
    ComputeStep,
    DropStep,
    FunctionStep,
    PluginStep,
    RenameStep,
    SelectStep,
    SetStep,
    StepConfig,
)


def constant_type(value: Any) -> str:
    """The portable type of a ``set:`` constant."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dt.datetime):
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time"
    return "json"


def _keep(schema: EntitySchema, columns: list[Column]) -> EntitySchema:
    names = {c.name for c in columns}
    return replace(schema, columns=tuple(columns), primary_key=tuple(n for n in schema.primary_key if n in names))


def _put(schema: EntitySchema, column: Column) -> EntitySchema:
    if schema.column(column.name) is None:
        return replace(schema, columns=(*schema.columns, column))
    return replace(schema, columns=tuple(column if c.name == column.name else c for c in schema.columns))


def _retype(column: Column, type_: str) -> Column:
    if column.type == type_:
        return column
    return Column(column.name, type_, column.nullable)


def apply_step(schema: EntitySchema, step: StepConfig, fn: Callable[..., Any] | None = None) -> EntitySchema:
    if isinstance(step, RenameStep):
        mapping = step.rename
        replaced = set(mapping.values()) - set(mapping)
        kept = [c for c in schema.columns if c.name in mapping or c.name not in replaced]
        pk = tuple(mapping.get(n, n) for n in schema.primary_key if n in mapping or n not in replaced)
        return replace(
            schema, primary_key=pk, columns=tuple(replace(c, name=mapping.get(c.name, c.name)) for c in kept)
        )
    if isinstance(step, SelectStep):
        by_name = {c.name: c for c in schema.columns}
        return _keep(schema, [by_name[n] for n in dict.fromkeys(step.select) if n in by_name])
    if isinstance(step, DropStep):
        gone = set(step.drop)
        return _keep(schema, [c for c in schema.columns if c.name not in gone])
    if isinstance(step, CastStep):
        types = {name: SCHEMA_TYPE[t] for name, t in step.cast.items()}
        columns = tuple(_retype(c, types[c.name]) if c.name in types else c for c in schema.columns)
        return replace(schema, columns=columns)
    if isinstance(step, SetStep):
        for name, value in step.set.items():
            schema = _put(schema, Column(name, constant_type(value), nullable=value is None))
        return schema
    if isinstance(step, ComputeStep):
        for name in step.compute:
            schema = _put(schema, Column(name, "string"))
        return schema
    if isinstance(step, FunctionStep | PluginStep) and fn is not None:
        mapper: Callable[[EntitySchema], EntitySchema] | None = getattr(fn, "map_schema", None)
        if mapper is not None:
            return mapper(schema)
    return schema
