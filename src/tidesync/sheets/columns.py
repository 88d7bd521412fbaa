"""The shape of a sheet as an :class:`~tidesync.schema.EntitySchema`, for sinks that create tables.

Declared columns (``columns: {price: decimal}``) have their type; the others
get the type their values in the first 1,000 rows share (all integers:
``int64``; integers and decimals: ``decimal``; ...), ``unknown`` when they
mix, ``string`` when empty. Declare a column whose later rows may differ.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from decimal import Decimal

from tidesync.schema import Column, EntitySchema
from tidesync.sheets.table import Records, Table

PORTABLE: dict[str, str] = {
    "text": "string",
    "integer": "int64",
    "number": "decimal",
    "decimal": "decimal",
    "float": "float64",
    "bool": "bool",
    "date": "date",
    "datetime": "timestamp",
}

_GUESSES: dict[frozenset[type], str] = {
    frozenset({int}): "int64",
    frozenset({Decimal}): "decimal",
    frozenset({int, Decimal}): "decimal",
    frozenset({float}): "float64",
    frozenset({str}): "string",
    frozenset({bool}): "bool",
    frozenset({dt.date}): "date",
    frozenset({dt.datetime}): "timestamp",
    frozenset({dt.time}): "time",
}


def guess(types: set[type]) -> str:
    """A portable type for an undeclared column from the types of its values (None aside); unknown if mixed."""
    types.discard(type(None))
    return _GUESSES.get(frozenset(types), "unknown" if types else "string")


def entity_schema(
    entity: str, table: Table, records: Records, declared: Mapping[str, str], key: Sequence[str]
) -> EntitySchema:
    sample = list(itertools.islice(records.rows.values(), 1000))
    cols = []
    for name in table.header:
        if name:
            kind = declared.get(name, "auto")
            cols.append(Column(name, PORTABLE[kind] if kind != "auto" else guess({type(r.get(name)) for r in sample})))
    return EntitySchema(entity, tuple(cols), tuple(key))
