"""A table's shape guessed from events, for entities whose source publishes no schema (pure, no I/O).

Webhook and HTTP sources know no column types. When ``create_tables`` must
create a table (or ``evolve: add_columns`` add a column) for such an entity,
the column types come from the values the events of the batch carry:

===========================  ==============  =========================================
Python value                 portable type   then (typemap): Postgres / MariaDB / SQLite
===========================  ==============  =========================================
bool                         bool            boolean / BOOLEAN / INTEGER
int                          int64           bigint / BIGINT / INTEGER
float                        float64         double precision / DOUBLE / REAL
Decimal                      decimal         numeric / DECIMAL(65,30) / TEXT
str                          string          text / LONGTEXT (key VARCHAR(255)) / TEXT
datetime (aware / naive)     timestamptz /   timestamptz / DATETIME(6) / TEXT
                             timestamp
date, time, timedelta        date, time,     ...
                             interval
UUID                         uuid            uuid / CHAR(36) / TEXT
bytes                        bytes           bytea / LONGBLOB / BLOB
dict, list                   json            jsonb / JSON / TEXT
None only (or never seen)    unknown         text / LONGTEXT / TEXT
===========================  ==============  =========================================

Different types in one column of the batch: int with float -> float64; int or
float with Decimal -> decimal; date with datetime -> timestamp(tz); dict with
list -> json; any other mix -> string (values are stored as text, containers
as JSON text).

Key columns: the ``keys`` setting when it names them; otherwise, for each
value of ``event.key``, the first field (in row order) that holds that value
in every event of the batch that carries a row image; a key value that no
field holds gets a column of its own, ``key`` (``key_1``, ``key_2``, ... for
a composite key). Key columns come first and are NOT NULL; every other column
is nullable.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from tidesync.event import ChangeEvent, Row
from tidesync.schema import Column, EntitySchema

_SCALARS: dict[type, str] = {
    bool: "bool",
    int: "int64",
    float: "float64",
    Decimal: "decimal",
    str: "string",
    dt.date: "date",
    dt.time: "time",
    dt.timedelta: "interval",
    uuid.UUID: "uuid",
    bytes: "bytes",
    bytearray: "bytes",
    dict: "json",
    list: "json",
    tuple: "json",
}
_NUMERIC = {"int64": 0, "float64": 1, "decimal": 2}


def kind_of(value: Any) -> str | None:
    """The portable type of one value; None for None (it says nothing about the type)."""
    if value is None:
        return None
    t = type(value)
    kind = _SCALARS.get(t)
    if kind is not None:
        return kind
    if isinstance(value, dt.datetime):
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    for base, name in _SCALARS.items():
        if isinstance(value, base) and base is not bool:
            return name
    return "string"


def merge(kinds: Iterable[str]) -> str:
    """One portable type for a column that held values of ``kinds`` (see the module docstring)."""
    found = set(kinds)
    if not found:
        return "unknown"
    if len(found) == 1:
        return found.pop()
    if found <= _NUMERIC.keys():
        return max(found, key=_NUMERIC.__getitem__)
    if found <= {"date", "timestamp", "timestamptz"}:
        return "timestamptz" if "timestamptz" in found else "timestamp"
    return "string"


def _image(ev: ChangeEvent) -> Row | None:
    return ev.after if ev.after is not None else ev.before


def key_names(events: Sequence[ChangeEvent], width: int) -> tuple[str, ...]:
    """The fields that hold ``event.key`` (see the module docstring)."""
    candidates: list[list[str] | None] = [None] * width
    for ev in events:
        row = _image(ev)
        if row is None or len(ev.key) != width:
            continue
        for j, value in enumerate(ev.key):
            fields = [f for f, v in row.items() if v == value and type(v) is type(value)]
            prior = candidates[j]
            candidates[j] = fields if prior is None else [f for f in prior if f in fields]
    taken: set[str] = set()
    for ev in events:
        taken.update(_image(ev) or ())
    out: list[str] = []
    for j, holding in enumerate(candidates):
        free = [f for f in holding or () if f not in out]
        if free:
            out.append(free[0])
            continue
        name = "key" if width == 1 else f"key_{j + 1}"
        while name in taken or name in out:
            name = "_" + name
        out.append(name)
    return tuple(out)


def infer_schema(entity: str, events: Sequence[ChangeEvent], key: Sequence[str] | None = None) -> EntitySchema:
    """The schema of ``entity`` guessed from ``events`` (of that entity, in source order).

    ``key``: the key column names when configured (``keys``); else guessed.
    """
    width = max((len(ev.key) for ev in events), default=0)
    names = tuple(key) if key else key_names(events, width)
    kinds: dict[str, set[str]] = {n: set() for n in names}
    for ev in events:
        if len(ev.key) == len(names):
            for name, value in zip(names, ev.key, strict=True):
                k = kind_of(value)
                if k is not None:
                    kinds[name].add(k)
        for image in (ev.before, ev.after):
            for name, value in (image or {}).items():
                seen = kinds.setdefault(name, set())
                k = kind_of(value)
                if k is not None:
                    seen.add(k)
    columns = tuple(Column(n, merge(kinds[n]), nullable=n not in names) for n in kinds)
    return EntitySchema(entity, columns, primary_key=names)


def infer_column(name: str, events: Iterable[ChangeEvent]) -> Column:
    """A column to add for field ``name``, typed by the values the events hold for it."""
    kinds = set()
    for ev in events:
        for image in (ev.before, ev.after):
            if image is not None and name in image:
                k = kind_of(image[name])
                if k is not None:
                    kinds.add(k)
    return Column(name, merge(kinds))
