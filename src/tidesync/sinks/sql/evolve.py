"""What a schema change announced by the source means for a destination table (pure, no I/O).

The source publishes each new shape of an entity with the position of its
first event (tidesync.schema). Before writing the first event of a new shape,
the sink compares the shape it last brought the table to (``old``) with the new
one (:func:`tidesync.schema.diff`) and checks every difference against the
table as it is now, so that running the plan twice, or after a person changed
the table by hand, does nothing more:

- added column: ``ADD COLUMN``, with the source's constant default so that the
  existing destination rows get the value the source's existing rows got
  (``Column.default``); a non-constant default (``now()``, a sequence) is not
  copied, and existing destination rows hold NULL in the column until their
  row changes at the source or is read again (snapshot, reconcile);
- dropped column: kept, with its NOT NULL removed (never dropped: the values
  stay for whoever still reads them);
- renamed column (same ``ident``, a new name): renamed in the destination;
- widened type (int16 -> int32 -> int64, varchar(n) -> varchar(m > n) or text,
  numeric(p, s) -> numeric(p', s') with s' >= s and p'-s' >= p-s, numeric(p, s)
  -> unbounded numeric): the destination column is widened when it cannot hold
  the new type already;
- any other type change (a narrowing, a change of kind): refused, naming the
  table, column, old and new type and what to do. A narrowing makes the source
  rewrite its existing values (rounding, cutting), which the change stream does
  not carry: the destination would keep values the source no longer has. The
  refusal holds until the destination column has exactly the new type (the
  person ran the same ALTER on it); nothing is ever silently truncated.

Databases with loose types (SQLite: any integer is 64-bit, lengths are not
enforced, decimals are stored as text) need no widening, and a narrowing there
is only logged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tidesync.schema import Column, EntitySchema, SchemaDiff, diff, type_text
from tidesync.sinks.sql.tables import ColumnInfo, TableInfo

_INT_RANK = {"int16": 1, "int32": 2, "int64": 3}
_INT_DIGITS = {"int16": 5, "int32": 10, "int64": 19}
_MODIFIERS = re.compile(r"\((\d+)(?:\s*,\s*(\d+))?\)")
# MariaDB text types by the characters they hold (utf8mb4: 4 bytes a character); longer ones: unbounded.
_MARIADB_TEXTS = {"tinytext": 63, "text": 16383}


@dataclass(frozen=True, slots=True)
class TypeFacts:
    """A type as far as "can it hold every value of that one exactly" needs: None means unbounded."""

    kind: str
    precision: int | None = None
    scale: int | None = None
    length: int | None = None


def source_facts(c: Column) -> TypeFacts:
    if c.type == "decimal":
        return TypeFacts("decimal", c.precision or None, (c.scale or 0) if c.precision else None)
    if c.type == "string":
        return TypeFacts("string", length=c.length or None)
    return TypeFacts(c.type)


def dest_facts(info: ColumnInfo) -> TypeFacts:
    """The facts of a destination column from its kind and native type text (Postgres, MariaDB)."""
    native = info.native.lower()
    m = _MODIFIERS.search(native)
    if info.kind == "decimal":
        if m is None:
            return TypeFacts("decimal")
        return TypeFacts("decimal", int(m.group(1)), int(m.group(2) or 0))
    if info.kind == "string":
        base = native.split("(")[0].strip()
        if base in _MARIADB_TEXTS:
            return TypeFacts("string", length=_MARIADB_TEXTS[base])
        if m is not None and ("char" in base or "varying" in base):
            return TypeFacts("string", length=int(m.group(1)))
        return TypeFacts("string")
    return TypeFacts(info.kind)


def holds(dest: TypeFacts, src: TypeFacts) -> bool:
    """Can a column of type ``dest`` hold every value of type ``src`` exactly?"""
    if dest.kind == src.kind == "decimal":
        if dest.precision is None:
            return True
        if src.precision is None:
            return False
        ds, ss = dest.scale or 0, src.scale or 0
        return ds >= ss and dest.precision - ds >= src.precision - ss
    if dest.kind == src.kind == "string":
        return dest.length is None or (src.length is not None and src.length <= dest.length)
    if dest.kind == src.kind:
        return True
    if dest.kind in _INT_RANK and src.kind in _INT_RANK:
        return _INT_RANK[dest.kind] >= _INT_RANK[src.kind]
    if dest.kind == "decimal" and src.kind in _INT_DIGITS:
        return dest.precision is None or dest.precision - (dest.scale or 0) >= _INT_DIGITS[src.kind]
    return dest.kind == "float64" and src.kind == "float32"


def widening(old: Column, new: Column) -> bool:
    """Does the new type hold every value of the old one (so the source's values did not change)?"""
    return holds(source_facts(new), source_facts(old))


@dataclass(frozen=True, slots=True)
class AddColumn:
    column: Column  # with the source's constant default when it has one


@dataclass(frozen=True, slots=True)
class RenameColumn:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class WidenColumn:
    column: Column  # the new type; the destination column's name
    current: ColumnInfo  # the destination column as it is (nullability, charset)


@dataclass(frozen=True, slots=True)
class RelaxColumn:
    """Remove NOT NULL from a column the source dropped."""

    current: ColumnInfo


Action = AddColumn | RenameColumn | WidenColumn | RelaxColumn


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """The DDL a change needs on this table (in order), and the differences refused."""

    diff: SchemaDiff
    actions: tuple[Action, ...] = ()
    refused: tuple[str, ...] = ()  # one message each: table, column, old and new type, what to do
    notes: tuple[str, ...] = ()  # accepted with a remark (log lines)

    def describe_actions(self) -> str:
        out = []
        for a in self.actions:
            if isinstance(a, AddColumn):
                out.append(f"add column {a.column.name} {type_text(a.column)}")
            elif isinstance(a, RenameColumn):
                out.append(f"rename column {a.old} to {a.new}")
            elif isinstance(a, WidenColumn):
                out.append(f"change column {a.column.name} from {a.current.native} to {type_text(a.column)}")
            else:
                out.append(f"make column {a.current.name} nullable")
        return "; ".join(out)


@dataclass(slots=True)
class _Columns:
    """The destination's columns by folded name, as the plan changes them."""

    fold: Callable[[str], str]
    by_name: dict[str, ColumnInfo] = field(default_factory=dict)

    def get(self, name: str) -> ColumnInfo | None:
        return self.by_name.get(self.fold(name))


def plan_change(
    old: EntitySchema,
    new: EntitySchema,
    table: TableInfo,
    *,
    fold: Callable[[str], str],
    loose: bool,
    where: str,
) -> ChangePlan:
    """What to run on ``table`` to bring it from ``old``'s shape to ``new``'s; see the module docstring."""
    d = diff(old, new)
    if not d:
        return ChangePlan(d)
    cols = _Columns(fold, {fold(n): c for n, c in table.columns.items()})
    actions: list[Action] = []
    refused: list[str] = []
    notes: list[str] = []
    for o, n in d.renamed:
        has_old, has_new = cols.get(o.name), cols.get(n.name)
        if has_old is not None and has_new is None:
            actions.append(RenameColumn(has_old.name, n.name))
            cols.by_name[fold(n.name)] = ColumnInfo(
                n.name, has_old.native, has_old.kind, has_old.nullable, has_old.cast, has_old.collation, has_old.charset
            )
            del cols.by_name[fold(o.name)]
        elif has_old is None and has_new is None:
            actions.append(AddColumn(_nullable(n)))
    for c in d.added:
        if cols.get(c.name) is None:
            actions.append(AddColumn(_nullable(c)))
    for c in d.dropped:
        current = cols.get(c.name)
        if current is not None and not current.nullable and current.name not in table.key:
            actions.append(RelaxColumn(current))
    for o, n in d.retyped:
        current = cols.get(n.name)
        if current is None or any(isinstance(a, AddColumn) and a.column.name == n.name for a in actions):
            continue  # added just now, typed as the new shape says
        if loose:
            if not widening(o, n):
                notes.append(_narrowing(table, n.name, o, n, where, loose=True))
            continue
        target = source_facts(n)
        now = dest_facts(current)
        if widening(o, n):
            if not holds(now, target):
                actions.append(WidenColumn(n, current))
        elif now != target:
            refused.append(_narrowing(table, n.name, o, n, where, loose=False))
    return ChangePlan(d, tuple(actions), tuple(refused), tuple(notes))


def _nullable(c: Column) -> Column:
    # Existing destination rows have no value yet unless the default fills them: never NOT NULL.
    return Column(
        c.name,
        c.type,
        True,
        c.native,
        c.precision,
        c.scale,
        c.length,
        c.item,
        c.ident,
        c.default,
        c.has_default,
    )


def _narrowing(table: TableInfo, name: str, old: Column, new: Column, where: str, *, loose: bool) -> str:
    kind = "a narrowing" if _comparable(old, new) else "not a widening"
    said = (
        f"column {name} of table {table.name} ({where}) changed type at the source from {type_text(old)} "
        f"to {type_text(new)}, {kind}: the source may have rewritten existing values, which the change "
        "stream does not carry"
    )
    if loose:
        return said + "; the destination keeps its values as they were"
    return (
        said + f". To go on, change the destination column to {type_text(new)} by hand (the same conversion), "
        "or re-read the table (tidesync snapshot); the pipeline resumes by itself once the destination "
        "column has the new type"
    )


def _comparable(old: Column, new: Column) -> bool:
    a, b = source_facts(old).kind, source_facts(new).kind
    return a == b or (a in _INT_RANK and b in _INT_RANK)


def schema_to_state(schema: EntitySchema) -> dict[str, object]:
    """What a sink remembers of the shape it brought a table to (the state store's kv; no values)."""
    return {
        "entity": schema.entity,
        "primary_key": list(schema.primary_key),
        "columns": [
            {
                "name": c.name,
                "type": c.type,
                "nullable": c.nullable,
                "native": c.native,
                "precision": c.precision,
                "scale": c.scale,
                "length": c.length,
                "item": c.item,
                "ident": c.ident,
            }
            for c in schema.columns
        ],
    }


def schema_from_state(raw: object) -> EntitySchema | None:
    """The shape :func:`schema_to_state` stored; None for anything else (a newer or damaged entry)."""
    if not isinstance(raw, Mapping):
        return None
    try:
        columns = tuple(Column(**dict(c)) for c in raw["columns"])
        return EntitySchema(str(raw["entity"]), columns, tuple(raw["primary_key"]))
    except (KeyError, TypeError, ValueError):
        return None
