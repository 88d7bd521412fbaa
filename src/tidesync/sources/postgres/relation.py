"""What the source knows about one captured table: its columns, their converters, its key, its schema.

Built once per Relation message (or, for a snapshot, from the catalog), then
used for every row of the table: ``cols``, the ``(name, converter)`` pairs,
is what :func:`~tidesync.sources.postgres.pgoutput.read_tuple` loops over — a
per-relation converter table, no per-value type dispatch.

Keys: an event's ``key`` is the replica identity index's columns under
``REPLICA IDENTITY USING INDEX`` (deletes carry nothing else), else the
primary key, else (``REPLICA IDENTITY FULL`` without a key) every column.
``identity`` names the columns a 'K' old tuple carries: pgoutput sends every
column in a 'K' tuple, with NULL in the columns that are not part of the
replica identity, so only ``identity`` columns are read from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidesync.schema import Column, EntitySchema
from tidesync.sources.postgres.pgoutput import Relation
from tidesync.sources.postgres.types import Converter, TypeMap, typmod_facts


@dataclass(frozen=True, slots=True)
class RelationFacts:
    """Catalog facts pgoutput does not send: the primary key, NOT NULL columns, attnums, constant defaults.

    ``attnums`` (name, attnum) identify columns across a rename: Postgres keeps
    a column's attnum when it is renamed and never reuses a dropped one's.
    ``defaults`` (name, text) hold the constant defaults in the column type's
    text form (None: a NULL default); columns with a non-constant default
    (``now()``, a sequence) or none are absent. Read from the catalog when the
    Relation message arrives, so they describe the table as it is then.
    """

    primary_key: tuple[str, ...] = ()
    not_null: frozenset[str] = frozenset()
    attnums: tuple[tuple[str, int], ...] = ()
    defaults: tuple[tuple[str, str | None], ...] = ()


@dataclass(slots=True)
class RelationInfo:
    oid: int
    entity: str
    names: tuple[str, ...]
    type_oids: tuple[int, ...]
    converters: tuple[Converter, ...]
    key: tuple[str, ...]
    identity: tuple[str, ...]
    replica_identity: str
    schema: EntitySchema
    cols: tuple[tuple[str, Converter], ...] = ()
    key_of: Callable[[dict[str, Any]], tuple[Any, ...]] = field(default=lambda row: ())

    def __post_init__(self) -> None:
        self.cols = tuple(zip(self.names, self.converters, strict=True))
        self.key_of = key_function(self.key)

    def same_shape(self, other: RelationInfo) -> bool:
        return (
            self.names == other.names
            and self.type_oids == other.type_oids
            and self.key == other.key
            and self.schema.columns == other.schema.columns
        )


def key_function(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A fast ``row -> key tuple`` for these key columns (missing columns give None)."""
    if len(names) == 1:
        (only,) = names
        return lambda row: (row.get(only),)
    names = tuple(names)
    return lambda row: tuple([row.get(n) for n in names])


def entity_name(namespace: str, name: str) -> str:
    return f"{namespace or 'pg_catalog'}.{name}"


def build_relation(msg: Relation, types: TypeMap, facts: RelationFacts | None = None, version: int = 0) -> RelationInfo:
    """The decoding table for a Relation message (type rows for its columns must be in ``types``)."""
    facts = facts or RelationFacts()
    names = tuple(c.name for c in msg.columns)
    oids = tuple(c.type_oid for c in msg.columns)
    identity = tuple(c.name for c in msg.columns if c.is_key)
    pk = tuple(n for n in facts.primary_key if n in names)
    if len(pk) != len(facts.primary_key):
        pk = ()
    if msg.replica_identity == "i" and identity:
        key = identity  # deletes carry only the index's columns: key every event by them
    elif pk:
        key = pk
    elif identity and msg.replica_identity != "f":
        key = identity
    else:
        key = names
    # The schema's primary key is what identifies a row in the source table; a
    # table with none keys its events by the whole row, but a destination made
    # from its schema must not get a whole-row primary key (or NOT NULL on every
    # column): it is applied append-only.
    schema_key = key if key is not names else ()
    attnums = dict(facts.attnums)
    defaults = dict(facts.defaults)
    columns = tuple(
        _column(
            c.name,
            c.type_oid,
            c.typmod,
            types,
            c.name not in facts.not_null and c.name not in pk,
            attnums.get(c.name),
            defaults,
        )
        for c in msg.columns
    )
    entity = entity_name(msg.namespace, msg.name)
    schema = EntitySchema(entity=entity, columns=columns, primary_key=schema_key, version=version)
    return RelationInfo(
        oid=msg.oid,
        entity=entity,
        names=names,
        type_oids=oids,
        converters=tuple(types.converter(o) for o in oids),
        key=key,
        identity=identity,
        replica_identity=msg.replica_identity,
        schema=schema,
    )


def _column(
    name: str,
    oid: int,
    typmod: int,
    types: TypeMap,
    nullable: bool,
    ident: int | None,
    defaults: dict[str, str | None],
) -> Column:
    portable, item = types.portable(oid)
    default: Any = None
    has_default = name in defaults
    if has_default:
        text = defaults[name]
        default = None if text is None else types.converter(oid)(text.encode(types.encoding))
    return Column(
        name=name,
        type=portable,
        nullable=nullable,
        native=types.native(oid),
        item=item,
        ident=ident,
        default=default,
        has_default=has_default,
        **typmod_facts(portable, typmod),
    )
