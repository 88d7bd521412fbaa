"""Planning a batch for a SQL destination: events in, statements' worth of rows out (pure, no I/O).

Per table, events become *steps*: one statement each, over many rows of the
same shape (kind and columns). The rules:

- Per key, source order is kept. Events of one key fold into one net change
  while the result is identical to applying them one by one: insert/snapshot
  then update -> one upsert of the merged row; update then update -> one update
  of the union of the written fields (later values win); anything then delete
  -> delete. Otherwise (delete then insert, update then insert) the later
  event goes to the next *level*: every step of level n runs before any step
  of level n+1, and within a level a key appears once, so its steps commute.
- A truncate drops what was planned for its table before it (the table is
  emptied in the same transaction anyway) and runs first.
- An update that changes the key is a barrier: what was planned before it
  runs, then the key change alone, then the rest.
- Tables are independent: no order is kept between tables.
- An update writes the fields in ``changed`` that ``after`` holds (absent means
  unknown). When its row does not exist, the row is inserted from everything
  ``after`` knows (``fallback``), so the destination converges; a destination
  that cannot take that partial row (a NOT NULL column unknown) rejects it.
- A table whose key has no unique index cannot take ``ON CONFLICT`` upserts:
  its inserts become updates with the whole row as fallback, which is the same.
- Events that can never be written (no such table, a column the destination
  lacks, a field name the database cannot take, no key value, an update of an
  append-only table) fail alone, and so does every later event of their key,
  so that nothing overtakes an event that will wait in the dead-letter queue.
- Metadata columns (tidesync.sinks.sql.metadata) are written with every
  insert, snapshot row and update; with soft deletes a delete is an update
  of the metadata columns alone, which inserts nothing when its row is
  missing (no fallback).
- Field names are matched to columns by the database's rules
  (tidesync.sinks.sql.names): exactly, else case-insensitively where the
  database compares names so. Only fields that match no column are checked,
  so the common case costs one set comparison per event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidesync.errors import PermanentError
from tidesync.event import DELETE, INSERT, SNAPSHOT, TRUNCATE, UPDATE, ChangeEvent, Key, Row
from tidesync.sinks.sql.metadata import Metadata
from tidesync.sinks.sql.names import ANY, NameRules
from tidesync.sinks.sql.tables import TableInfo

UPSERT = "upsert"
APPEND = "append"
REKEY = "rekey"
# UPDATE and DELETE keep their event names.


@dataclass(slots=True)
class Step:
    """One statement: ``rows`` hold ``columns`` (key columns first), in the order of ``columns``.

    Update and rekey steps can insert a row they do not find: ``fallback(i)``
    is the image of row ``i`` to insert then (None: insert nothing, a soft
    delete). ``old_keys`` (rekey): per row, the key the row has now.
    """

    kind: str
    table: TableInfo
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    # Per row: (the after image of its first event, None for a soft delete; the values written), for fallback().
    sources: list[tuple[Row | None, Row]] = field(default_factory=list)
    old_keys: list[Key] = field(default_factory=list)

    @property
    def set_columns(self) -> tuple[str, ...]:
        return self.columns[len(self.table.key) :]

    def fallback(self, i: int) -> Row | None:
        """Everything the events of row ``i`` know of it (known destination columns only); None: nothing."""
        first, values = self.sources[i]
        if first is None:
            return None
        cols = self.table.columns
        image = {c: v for c, v in first.items() if c in cols}
        image.update(values)
        nk = len(self.table.key)
        image.update(zip(self.columns[:nk], self.rows[i][:nk], strict=True))
        return image


@dataclass(slots=True)
class TablePlan:
    table: TableInfo
    truncate: bool = False
    steps: list[Step] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    """``failures``: event index -> why it can never be written here.

    ``missing_columns``: per table, the columns events wrote that the
    destination lacks (column -> entity), for ``evolve: add_columns``.
    """

    tables: list[TablePlan] = field(default_factory=list)
    failures: dict[int, PermanentError] = field(default_factory=dict)
    missing_columns: dict[TableInfo, dict[str, str]] = field(default_factory=dict)


# A planned change of one key: (kind, values of the non-key columns, after image of the first
# update folded in). Tuples, because a batch makes thousands; ``values`` is updated in place.
_Op = tuple[str, dict[str, Any], Row | None]
_ORDER = {DELETE: 0, UPDATE: 1, UPSERT: 2}


class _Table:
    """Folds one table's events; see the module docstring for the rules."""

    __slots__ = (
        "appends",
        "cols",
        "done",
        "failed_keys",
        "folded",
        "key",
        "level_of",
        "levels",
        "names",
        "new",
        "plan",
        "upsert",
    )

    def __init__(self, table: TableInfo, names: tuple[str, ...] | None) -> None:
        self.plan = TablePlan(table)
        self.cols = table.columns
        self.key = table.key
        self.names = names
        self.upsert = UPSERT if table.key_unique else UPDATE
        self.done: list[Step] = []
        self.levels: list[dict[Key, _Op]] = []
        self.level_of: dict[Key, int] = {}
        self.appends: list[Row] = []
        self.failed_keys: dict[Key, str] = {}
        self.folded: dict[str, str] | None = None  # folded column name -> column, built on first need
        self.new: dict[str, str] = {}  # folded name -> spelling of a column to add

    def resolve(self, values: Row, rules: NameRules) -> tuple[dict[str, str], list[str], str | None]:
        """For the fields of ``values`` the table lacks: renames (field -> the existing column the
        database takes it for), the columns to add, or why the event cannot be written."""
        cols = self.cols
        fold = rules.fold
        renames: dict[str, str] = {}
        unknown: list[str] = []
        for name in values:
            if name in cols:
                continue
            problem = rules.problem(name)
            if problem is not None:
                return {}, [], problem
            if rules.folds:
                if self.folded is None:
                    self.folded = rules.index(cols)
                existing = self.folded.get(fold(name))
                if existing is not None:
                    renames[name] = existing
                    continue
            unknown.append(name)
        if rules.folds:
            seen: dict[str, str] = {}
            for name in values:
                target = fold(renames.get(name, name))
                other = seen.setdefault(target, name)
                if other != name:
                    column = renames.get(name) or renames.get(other) or other
                    return (
                        {},
                        [],
                        f"fields {other!r} and {name!r} of this event both name column {column!r} of table "
                        f"{self.plan.table.name} ({rules.fold_rule}); rename one of them (rename:)",
                    )
        return renames, unknown, None

    def match(self, row: Row | None, rules: NameRules) -> Row | None:
        """``row`` with fields renamed to the existing columns the database takes them for."""
        if row is None or not rules.folds or row.keys() <= self.cols.keys():
            return row
        if self.folded is None:
            self.folded = rules.index(self.cols)
        folded, fold, cols = self.folded, rules.fold, self.cols
        return {(k if k in cols else folded.get(fold(k), k)): v for k, v in row.items()}

    def truncate(self) -> None:
        self.plan.truncate = True
        self.done.clear()
        self.levels.clear()
        self.level_of.clear()
        self.appends.clear()

    def add(self, key: Key, kind: str, values: dict[str, Any], first: Row | None) -> None:
        lvl = self.level_of.get(key)
        if lvl is None:
            if not self.levels:
                self.levels.append({})
            self.levels[0][key] = (kind, values, first)
            self.level_of[key] = 0
            return
        level = self.levels[lvl]
        last = level[key]
        last_kind = last[0]
        # The single change equal to ``last`` then this one, when there is one.
        if kind == DELETE:
            if last_kind != DELETE:
                level[key] = (DELETE, values, None)
            return
        if last_kind == UPSERT or (last_kind == UPDATE and kind == UPDATE):
            last[1].update(values)
            return
        lvl += 1
        if lvl == len(self.levels):
            self.levels.append({})
        self.levels[lvl][key] = (kind, values, first)
        self.level_of[key] = lvl

    def rekey(self, old: Key, new: Key, values: dict[str, Any], first: Row) -> None:
        self.close_segment()
        step = Step(REKEY, self.plan.table, self.key + tuple(values), [new + tuple(values.values())])
        step.sources.append((first, values))
        step.old_keys.append(old)
        self.done.append(step)

    def close_segment(self) -> None:
        key = self.key
        table = self.plan.table
        for level in self.levels:
            groups: dict[tuple[str, tuple[str, ...]], Step] = {}
            for k, (kind, values, first) in level.items():
                shape = (kind, tuple(values))
                step = groups.get(shape)
                if step is None:
                    step = groups[shape] = Step(kind, table, key + shape[1])
                step.rows.append(k + tuple(values.values()))
                if kind == UPDATE:
                    step.sources.append((first, values))
            # Deletes first: they free unique values that inserts of the same level may take.
            self.done.extend(sorted(groups.values(), key=lambda s: _ORDER[s.kind]))
        self.levels.clear()
        self.level_of.clear()

    def finish(self) -> TablePlan:
        self.close_segment()
        groups: dict[tuple[str, ...], Step] = {}
        for row in self.appends:
            cols = tuple(row)
            step = groups.get(cols)
            if step is None:
                step = groups[cols] = Step(APPEND, self.plan.table, cols)
            step.rows.append(tuple(row.values()))
        self.done.extend(groups.values())
        self.plan.steps = self.done
        return self.plan


def _key_of(
    key_cols: tuple[str, ...], first: Row | None, second: Row | None, names: tuple[str, ...] | None, key: Key
) -> tuple[Any, ...] | str:
    """The key values from the row images (transforms may have renamed columns), or the missing column.

    ``names`` name the values of the event's own ``key``: the last resort.
    """
    out = []
    for k in key_cols:
        if first is not None and k in first:
            out.append(first[k])
        elif second is not None and k in second:
            out.append(second[k])
        elif names is not None and k in names and len(names) == len(key):
            out.append(key[names.index(k)])
        else:
            return k
    return tuple(out)


def build_plan(
    events: Sequence[ChangeEvent],
    live: Sequence[int],
    tables: Mapping[str, TableInfo | None],
    *,
    missing_table: Callable[[str], str],
    missing_column: Callable[[TableInfo, list[str]], str],
    source_keys: Mapping[str, tuple[str, ...]] | None = None,
    name_rules: NameRules = ANY,
    metadata: Metadata | None = None,
    synced_at: dt.datetime | None = None,
) -> Plan:
    """Plan ``events[i] for i in live`` (source order) against the destination ``tables`` (by entity).

    ``missing_table(entity)`` / ``missing_column(table, columns)`` word the
    failure of events that cannot be written for that reason.
    ``source_keys``: per entity, the names of the values in ``event.key``
    (the source's primary key), used when a row image lacks a key column.
    ``name_rules``: the destination database's rules for column names.
    ``metadata``: the metadata columns to write and whether deletes are soft,
    with ``synced_at`` the time to write (tidesync.sinks.sql.metadata).
    """
    stamp = metadata.stamp if metadata else None
    soft = metadata is not None and metadata.soft_deletes
    now = synced_at or dt.datetime.now(dt.UTC)
    plan = Plan()
    folders: dict[str, _Table] = {}
    by_table: dict[TableInfo, _Table] = {}
    failures = plan.failures

    for i in live:
        ev = events[i]
        f = folders.get(ev.entity)
        if f is None:
            table = tables.get(ev.entity)
            if table is None:
                failures[i] = PermanentError(missing_table(ev.entity))
                continue
            f = by_table.get(table)
            if f is None:
                names = source_keys.get(ev.entity) if source_keys else None
                f = by_table[table] = _Table(table, names)
            folders[ev.entity] = f
        op = ev.op
        after = ev.after
        before = ev.before
        cols = f.cols

        # What this event writes.
        if op == UPDATE:
            changed = ev.changed
            if after is None:
                values = {}
            elif changed is None:
                values = dict(after)
            else:
                values = {c: after[c] for c in changed if c in after}
        elif op in (INSERT, SNAPSHOT):
            values = dict(after) if after else {}
        elif op == DELETE:
            values = stamp(ev, now) if soft and stamp is not None else {}
        elif op == TRUNCATE:
            f.truncate()
            continue
        else:
            failures[i] = PermanentError(f"unknown operation {op!r} on {ev.entity}")
            continue
        if stamp is not None and op != DELETE:
            values.update(stamp(ev, now))
        problem: str | None = None
        if not values.keys() <= cols.keys():
            table = f.plan.table
            renames, unknown, problem = f.resolve(values, name_rules)
            if renames:
                values = {renames.get(c, c): v for c, v in values.items()}
                after, before = f.match(after, name_rules), f.match(before, name_rules)
            if unknown:
                missing = plan.missing_columns.setdefault(table, {})
                for c in unknown:
                    # One spelling per column the database would take as one name.
                    if f.new.setdefault(name_rules.fold(c), c) == c:
                        missing[c] = ev.entity
                problem = missing_column(table, unknown)

        key_cols = f.key
        if not key_cols:
            table = f.plan.table
            if op in (INSERT, SNAPSHOT):
                if problem is not None:
                    failures[i] = PermanentError(problem)
                else:
                    f.appends.append(values)
            else:
                failures[i] = PermanentError(
                    f"table {table.name} has no primary key, so a {op} cannot find its row; "
                    f"declare a primary key, or name the key columns under keys: {{{table.name}: [...]}}"
                )
            continue

        # The key, from the row images; the common case (a one-column key in the image) first.
        image = before if op == DELETE else after
        key: tuple[Any, ...] | str
        if len(key_cols) == 1 and image is not None and key_cols[0] in image:
            key = (image[key_cols[0]],)
        else:
            other = after if op == DELETE else before
            key = _key_of(key_cols, image, other, f.names, ev.key)
            if isinstance(key, str) and name_rules.folds:
                # A key field spelled in another case (a delete's before image is not matched above).
                image, other = f.match(image, name_rules), f.match(other, name_rules)
                key = _key_of(key_cols, image, other, f.names, ev.key)
            if isinstance(key, str):
                failures[i] = PermanentError(
                    f"{op} on {ev.entity} carries no value for key column {key!r} of table {f.plan.table.name}; "
                    "map the source's key to it (rename) or name other key columns under keys:"
                )
                continue
        if f.failed_keys:
            blocked = f.failed_keys.get(key)
            if blocked is not None:
                failures[i] = PermanentError(f"not applied: an earlier event of this key failed: {blocked}")
                continue
        if problem is not None:
            failures[i] = PermanentError(problem)
            f.failed_keys[key] = problem
            continue

        for k in key_cols:
            if k in values:
                del values[k]
        if op == DELETE:
            if soft:
                f.add(key, UPDATE, values, None)  # the row stays, flagged; a missing row is not inserted
            else:
                f.add(key, DELETE, values, None)
        elif op == UPDATE:
            if before is not None and all(k in before for k in key_cols):
                old = tuple(before[k] for k in key_cols)
                if old != key:
                    f.rekey(old, key, values, after or {})
                    continue
            f.add(key, UPDATE, values, after or {})
        else:
            f.add(key, f.upsert, values, after)

    plan.tables = [f.finish() for f in by_table.values()]
    return plan
