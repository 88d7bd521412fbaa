"""Two snapshots of a sheet, by key, to the changes between them (pure).

``diff(old, new, keep)`` compares the records last emitted (``old``) with the
records just read (``new``):

- a key only in ``new``: an insert (``changed`` None: every field);
- a key in both whose rows differ: an update, ``changed`` naming exactly the
  fields whose value or type differs (``1`` and ``True``, ``1`` and
  ``Decimal(1)`` differ), in the new row's column order; a column that
  disappeared from the sheet is not a change (absent means unknown);
- a key only in ``old``: a delete, unless it is in ``keep`` (a row that is
  still in the sheet but was rejected this time: its last good state stands).

Inserts and updates come in sheet order, then deletes in the old order. A
row object that ``new`` shares with ``old`` (see :class:`~.table.Typer`) is
unchanged without a field comparison.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from tidesync.event import DELETE, INSERT, UPDATE, Key, Row, diff_fields


@dataclass(frozen=True, slots=True)
class Change:
    op: str
    key: Key
    before: Row | None
    after: Row | None
    changed: tuple[str, ...] | None = None


def diff(old: Mapping[Key, Row], new: Mapping[Key, Row], keep: Collection[Key] = ()) -> list[Change]:
    out: list[Change] = []
    get = old.get
    for key, row in new.items():
        prev = get(key)
        if prev is row:
            continue
        if prev is None:
            out.append(Change(INSERT, key, None, row))
            continue
        changed = diff_fields(prev, row)
        if changed:
            out.append(Change(UPDATE, key, prev, row, changed))
    for key, prev in old.items():
        if key not in new and key not in keep:
            out.append(Change(DELETE, key, prev, None))
    return out


def apply(old: Mapping[Key, Row], changes: list[Change]) -> dict[Key, Row]:
    """``old`` with ``changes`` applied: the snapshot a reader holds after emitting them."""
    out = dict(old)
    for c in changes:
        if c.op == DELETE:
            out.pop(c.key, None)
        else:
            assert c.after is not None
            out[c.key] = c.after
    return out
