"""One captured table's shape: its columns as the source decodes them, its key, and its published schema.

A shape is built from a binlog table map (``binlog_row_metadata=FULL`` puts names,
signedness, character sets, ENUM/SET members and the primary key in it) or from
``information_schema`` for the snapshot; both give the same columns. A new table map
whose columns differ from the last one of the table means the table was altered: the
source publishes the new shape (see ``stream.py``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidesync.schema import EntitySchema
from tidesync.sources.mariadb.types import (
    ZERO_SOURCES,
    ColType,
    Convert,
    ZeroDate,
    binlog_converter,
    query_converter,
)


def entity_name(database: str, table: str) -> str:
    return f"{database}.{table}"


@dataclass(slots=True)
class TableShape:
    entity: str
    cols: tuple[ColType, ...]
    key: tuple[str, ...]
    schema: EntitySchema = field(init=False)
    _binlog: tuple[tuple[str, Convert], ...] = field(init=False, default=())
    _query: tuple[tuple[str, Convert], ...] = field(init=False, default=())
    _names: tuple[str, ...] = field(init=False, default=())
    # the key of a row that has every column (a compiled binlog image): a tuple, without key_of's loop
    key_getter: Callable[[dict[str, Any]], tuple[Any, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = tuple(c.column(ident=None) for c in self.cols)
        self.schema = EntitySchema(self.entity, columns, self.key)
        self._binlog = tuple((c.name, binlog_converter(c)) for c in self.cols)
        self._query = tuple((c.name, query_converter(c)) for c in self.cols)
        self._names = tuple(c.name for c in self.cols)
        if len(self.key) == 1:
            self.key_getter = _single_key(self.key[0])
        elif self.key:
            self.key_getter = operator.itemgetter(*self.key)
        else:
            self.key_getter = self.key_of

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cols)

    def same_columns(self, other: TableShape) -> bool:
        return self.cols == other.cols and self.key == other.key

    def key_of(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple([row.get(k) for k in self.key])

    def from_binlog(
        self, values: dict[str, Any], none_sources: dict[str, str] | None
    ) -> tuple[dict[str, Any], list[str]]:
        """A binlog row image as exact values, and the columns that held a zero date (their values None)."""
        return _exact(zip(self._binlog, map(values.get, self._names), strict=True), none_sources)

    def from_query(self, values: Sequence[Any]) -> tuple[dict[str, Any], list[str]]:
        """A snapshot row (values in column order) as exact values, and the columns that held a zero date."""
        return _exact(zip(self._query, values, strict=True), None)


def _exact(
    columns: Iterable[tuple[tuple[str, Convert], Any]], none_sources: dict[str, str] | None
) -> tuple[dict[str, Any], list[str]]:
    """Each ``((name, converter), value)`` converted, and the names whose value was a zero date (now None).

    A None value stays None, unless ``none_sources`` (the binlog decoder's reason for a None)
    says it was a zero date, or an empty SET (then it is "").
    """
    row: dict[str, Any] = {}
    zero: list[str] = []
    for (name, conv), v in columns:
        if v is None:
            source = none_sources.get(name) if none_sources else None
            if source in ZERO_SOURCES:
                zero.append(name)
            elif source == "empty set":
                v = ""
            row[name] = v
            continue
        try:
            row[name] = conv(v)
        except ZeroDate:
            zero.append(name)
            row[name] = None
    return row, zero


def _single_key(name: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row[name],)

    return key
