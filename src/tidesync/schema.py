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

Schema changes: a source that sees an entity's shape change publishes the new
:class:`EntitySchema` with ``since``, the position of the first event of the
new shape; the registry keeps every version (:meth:`SchemaRegistry.history`),
so a sink writing a batch can tell which shape each event has
(:meth:`SchemaRegistry.shape_at`) and change the destination *before* the
first event of the new shape, never before the last event of the old one.
``Column.ident`` is the source's stable identity of a column (Postgres: its
attnum), kept across a rename, so that a renamed column is told apart from a
dropped one plus an added one (:func:`diff`). ``Column.default`` is the value
rows that existed before the column was added hold at the source, when the
source knows it (``has_default``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

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
    ident: int | None = None  # stable across renames (Postgres: attnum); None when unknown
    default: Any = None  # what existing rows hold in a newly added column, when has_default
    has_default: bool = False

    def __post_init__(self) -> None:
        if self.type not in PORTABLE_TYPES:
            raise ValueError(f"unknown portable type {self.type!r} for column {self.name!r}")


@dataclass(frozen=True, slots=True)
class EntitySchema:
    entity: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    version: int = 0  # bumped by the source whenever the shape changes
    since: tuple[Any, ...] | None = None  # position of the first event of this shape (None: from the start)

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


@dataclass(frozen=True, slots=True)
class SchemaDiff:
    """How ``new`` differs from ``old`` (columns matched by ``ident`` where both have one, else by name)."""

    added: tuple[Column, ...] = ()
    dropped: tuple[Column, ...] = ()
    renamed: tuple[tuple[Column, Column], ...] = ()  # (old, new)
    retyped: tuple[tuple[Column, Column], ...] = ()  # (old, new), names as in ``new``

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped or self.renamed or self.retyped)

    def describe(self) -> str:
        parts = [f"column {c.name} added" for c in self.added]
        parts += [f"column {c.name} dropped" for c in self.dropped]
        parts += [f"column {o.name} renamed to {n.name}" for o, n in self.renamed]
        parts += [f"column {n.name} changed type from {type_text(o)} to {type_text(n)}" for o, n in self.retyped]
        return "; ".join(parts)


def type_text(c: Column) -> str:
    """The column's type for people: the source's own name with its modifiers where known."""
    base = c.native or c.type
    if c.type == "decimal" and c.precision:
        return f"{base}({c.precision},{c.scale or 0})"
    if c.type == "string" and c.length:
        return f"{base}({c.length})"
    return base


def _same_type(a: Column, b: Column) -> bool:
    return (a.type, a.native, a.precision, a.scale, a.length, a.item) == (
        b.type,
        b.native,
        b.precision,
        b.scale,
        b.length,
        b.item,
    )


def diff(old: EntitySchema, new: EntitySchema) -> SchemaDiff:
    """What changed from ``old`` to ``new`` (pure)."""
    by_ident = {c.ident: c for c in old.columns if c.ident is not None}
    by_name = {c.name: c for c in old.columns}
    matched: set[str] = set()
    added, renamed, retyped = [], [], []
    for c in new.columns:
        o = by_ident.get(c.ident) if c.ident is not None else None
        if o is None:
            o = by_name.get(c.name)
            if o is not None and o.ident is not None and c.ident is not None and o.ident != c.ident:
                o = None  # same name, another column: the old one was dropped and this one added
        if o is None or o.name in matched:
            added.append(c)
            continue
        matched.add(o.name)
        if o.name != c.name:
            renamed.append((o, c))
        if not _same_type(o, c):
            retyped.append((o, c))
    dropped = tuple(c for c in old.columns if c.name not in matched)
    return SchemaDiff(tuple(added), dropped, tuple(renamed), tuple(retyped))


Listener = Callable[[EntitySchema], None]


@dataclass
class SchemaRegistry:
    """The schemas a pipeline has seen, by entity (after transforms, as sinks see them)."""

    _schemas: dict[str, EntitySchema] = field(default_factory=dict)
    _listeners: list[Listener] = field(default_factory=list)
    _history: dict[str, list[EntitySchema]] = field(default_factory=dict)

    def get(self, entity: str) -> EntitySchema | None:
        return self._schemas.get(entity)

    def put(self, schema: EntitySchema) -> None:
        old = self._schemas.get(schema.entity)
        if old == schema:
            return
        self._schemas[schema.entity] = schema
        self._history.setdefault(schema.entity, []).append(schema)
        for listener in self._listeners:
            listener(schema)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def all(self) -> dict[str, EntitySchema]:
        return dict(self._schemas)

    def history(self, entity: str) -> tuple[EntitySchema, ...]:
        """Every version of ``entity``'s schema put here, oldest first."""
        return tuple(self._history.get(entity, ()))

    def shape_at(self, entity: str, position: tuple[Any, ...]) -> EntitySchema | None:
        """The version in effect for an event at ``position``: the one announced last before it.

        Among the versions whose ``since`` is at or before ``position`` (None:
        from the start), the greatest ``since`` wins, then the one put last: a
        source reopened from an earlier position announces the older shape
        again with an earlier ``since``, which must not win for later events.
        """
        best: EntitySchema | None = None
        best_key: tuple[Any, ...] | None = None
        for i, s in enumerate(self._history.get(entity, ())):
            since = s.since or ()
            try:
                if since and position and since > position:
                    continue
                key = (since, i)
                if best_key is None or key > best_key:
                    best, best_key = s, key
            except TypeError:  # positions of another source: not comparable, take the newest
                best, best_key = s, (since, i)
        return best
