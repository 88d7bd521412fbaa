"""What a source knows about the shape of an entity, shared with transforms and sinks.

Sources that know column types (Postgres relations, SQLite table info) publish
an :class:`EntitySchema` into the pipeline's :class:`SchemaRegistry`; transforms
rewrite it the way they rewrite rows; sinks read it to create or evolve
destination tables. Types use one portable vocabulary so that a Postgres
column can become a MariaDB or SQLite column:

    int16 int32 int64 decimal float32 float64 string bool date time timetz
    timestamp timestamptz interval uuid json bytes array unknown

``decimal`` carries ``precision``/``scale`` when known; ``string`` carries
``length`` when bounded; ``array`` carries ``item`` (the element type).
``native`` keeps the source's own type name (for the same database on both
ends, and for error messages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

PORTABLE_TYPES = frozenset(
    {
        "int16",
        "int32",
        "int64",
        "decimal",
        "float32",
        "float64",
        "string",
        "bool",
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
        "json",
        "bytes",
        "array",
        "unknown",
    }
)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str = "unknown"
    nullable: bool = True
    native: str | None = None
    precision: int | None = None
    scale: int | None = None
    length: int | None = None
    item: str | None = None

    def __post_init__(self) -> None:
        if self.type not in PORTABLE_TYPES:
            raise ValueError(f"unknown portable type {self.type!r} for column {self.name!r}")


@dataclass(frozen=True, slots=True)
class EntitySchema:
    entity: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    version: int = 0  # bumped by the source whenever the shape changes

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def rename(self, mapping: dict[str, str]) -> EntitySchema:
        cols = tuple(replace(c, name=mapping.get(c.name, c.name)) for c in self.columns)
        pk = tuple(mapping.get(n, n) for n in self.primary_key)
        return replace(self, columns=cols, primary_key=pk)


Listener = Callable[[EntitySchema], None]


@dataclass
class SchemaRegistry:
    """The schemas a pipeline has seen, by entity (after transforms, as sinks see them)."""

    _schemas: dict[str, EntitySchema] = field(default_factory=dict)
    _listeners: list[Listener] = field(default_factory=list)

    def get(self, entity: str) -> EntitySchema | None:
        return self._schemas.get(entity)

    def put(self, schema: EntitySchema) -> None:
        old = self._schemas.get(schema.entity)
        if old == schema:
            return
        self._schemas[schema.entity] = schema
        for listener in self._listeners:
            listener(schema)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def all(self) -> dict[str, EntitySchema]:
        return dict(self._schemas)
