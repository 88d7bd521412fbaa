"""Portable keyset queries (pure: SQLAlchemy constructs, no I/O).

Row-value comparison ``(a, b) > (x, y)`` is written out as
``a >= x AND (a > x OR b > y)`` (recursively for more columns): every dialect
reads it, and the leading ``a >= x`` lets an index on ``(a, b)`` serve it as
a range scan. Values are bound without a SQLAlchemy type, so each driver
sends them as it would any parameter (see :mod:`.dialect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


def lit(value: Any) -> ColumnElement[Any]:
    return sa.literal(value, sa.types.NullType())


def tuple_gt(cols: Sequence[ColumnElement[Any]], values: Sequence[Any]) -> ColumnElement[bool]:
    """``(cols) > (values)`` in lexicographic order; no column may be NULL."""
    first, v = cols[0], values[0]
    if len(cols) == 1:
        return first > lit(v)
    return sa.and_(first >= lit(v), sa.or_(first > lit(v), tuple_gt(cols[1:], values[1:])))


def tuple_le(cols: Sequence[ColumnElement[Any]], values: Sequence[Any]) -> ColumnElement[bool]:
    """``(cols) <= (values)`` in lexicographic order; no column may be NULL."""
    first, v = cols[0], values[0]
    if len(cols) == 1:
        return first <= lit(v)
    return sa.and_(first <= lit(v), sa.or_(first < lit(v), tuple_le(cols[1:], values[1:])))


def key_range(
    cols: Sequence[ColumnElement[Any]], lo: Sequence[Any] | None, hi: Sequence[Any] | None
) -> ColumnElement[bool]:
    """Keys in the half-open range ``(lo, hi]``; None is unbounded on that side."""
    parts: list[ColumnElement[bool]] = []
    if lo is not None:
        parts.append(tuple_gt(cols, lo))
    if hi is not None:
        parts.append(tuple_le(cols, hi))
    return sa.and_(sa.true(), *parts)


def key_in(cols: Sequence[ColumnElement[Any]], keys: Sequence[Sequence[Any]]) -> ColumnElement[bool]:
    if len(cols) == 1:
        return cols[0].in_([lit(k[0]) for k in keys])
    return sa.or_(*(sa.and_(*(c == lit(v) for c, v in zip(cols, k, strict=True))) for k in keys))


def page(
    table: sa.TableClause,
    cursor: str,
    key: Sequence[str],
    *,
    floor: Any = None,
    after: Sequence[Any] | None = None,
    limit: int,
) -> sa.Select[Any]:
    """The next page in (cursor, key) order: rows with cursor >= ``floor``, or after the mark ``after``.

    ``after`` is ``(cursor value, *key values)``. Rows whose cursor is NULL are
    never read (they have no place in the order).
    """
    c = table.c[cursor]
    order = [c, *(table.c[k] for k in key)]
    q = sa.select(table).where(c.is_not(None))
    if after is not None:
        q = q.where(tuple_gt(order, after))
    elif floor is not None:
        q = q.where(c >= lit(floor))
    return q.order_by(*order).limit(limit)


def keys_after(table: sa.TableClause, key: Sequence[str], after: Sequence[Any] | None, limit: int) -> sa.Select[Any]:
    """The next ``limit`` keys after ``after``, in key order (a key-only scan of the index)."""
    cols = [table.c[k] for k in key]
    q = sa.select(*cols)
    if after is not None:
        q = q.where(tuple_gt(cols, after))
    return q.order_by(*cols).limit(limit)


def null_keys(
    table: sa.TableClause, cursor: str, key: Sequence[str], after: Sequence[Any] | None, limit: int
) -> sa.Select[Any]:
    """The next ``limit`` keys after ``after`` (key order) of rows whose cursor is NULL (see :mod:`.nulls`)."""
    cols = [table.c[k] for k in key]
    q = sa.select(*cols).where(table.c[cursor].is_(None))
    if after is not None:
        q = q.where(tuple_gt(cols, after))
    return q.order_by(*cols).limit(limit)


def newest(table: sa.TableClause, cursor: str, key: Sequence[str]) -> sa.Select[Any]:
    """The newest row's ``(cursor, *key)``: the last in (cursor, key) order (none for an empty table)."""
    c = table.c[cursor]
    cols = [c, *(table.c[k] for k in key)]
    return sa.select(*cols).where(c.is_not(None)).order_by(*(col.desc() for col in cols)).limit(1)
