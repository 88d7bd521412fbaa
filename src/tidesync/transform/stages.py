"""Stages: a ChangeEvent in, a ChangeEvent (or None: filtered out) out, or :class:`TransformError`.

A row stage runs one fused pass of column steps (rename/select/drop/cast,
see :mod:`tidesync.transform.plan`) followed by in-place steps (set, compute,
later casts) on a fresh dict, over ``after`` and ``before``, and maps
``changed``. Event stages are ``filter`` and user functions. A stage never
mutates the event it gets, so a failing record can be reported as it came in.

Only ``after`` can make a record fail. ``before`` is informational (what the
row was): it is transformed best-effort, a cast that fails there keeps the
value as it was and a computation that fails there leaves its field unknown
(absent). Otherwise the update that repairs a bad value would be dead-lettered
because of the bad value it replaces.
"""

from __future__ import annotations

import copy
import decimal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.errors import TransformError
from tidesync.event import DELETE, INSERT, UPDATE, ChangeEvent, Row
from tidesync.transform.casts import CastFailure, Converter, show
from tidesync.transform.expr import Expression
from tidesync.transform.plan import CompiledColumns

Stage = Callable[[ChangeEvent], ChangeEvent | None]


def describe_error(exc: BaseException) -> str:
    """A short reason for an error raised while evaluating an expression."""
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, decimal.InvalidOperation):
        return "invalid decimal operation"
    if isinstance(exc, decimal.Overflow):
        return "decimal overflow"
    if isinstance(exc, KeyError):
        return f"no key {exc.args[0]!r}" if exc.args else "key not found"
    if isinstance(exc, IndexError):
        return "index out of range"
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class SetOp:
    values: tuple[tuple[str, Any], ...]
    mutable: bool  # a dict/list constant is copied per row: rows must not share it

    def apply(self, row: Row) -> None:
        for name, value in self.values:
            row[name] = copy.deepcopy(value) if self.mutable else value

    def adjust(self, changed: list[str], after: Row) -> None:
        # A constant never changes, so an update does not write it.
        changed[:] = [n for n in changed if all(n != name for name, _ in self.values)]


@dataclass(frozen=True, slots=True)
class ComputeOp:
    target: str
    expr: Expression

    def apply(self, row: Row) -> None:
        names = self.expr.names
        for n in names:
            if n not in row:
                # An input is unknown (absent, e.g. an unchanged TOASTed column): so is the result.
                row.pop(self.target, None)
                return
        try:
            row[self.target] = self.expr.evaluate(row)
        except Exception as exc:
            inputs = ", ".join(f"{n}={show(row[n])}" for n in names)
            reason = f"compute {self.target}: {describe_error(exc)}" + (f" ({inputs})" if inputs else "")
            raise TransformError(reason) from None

    def adjust(self, changed: list[str], after: Row) -> None:
        inputs_changed = any(n in changed for n in self.expr.names)
        present = self.target in changed
        if self.target in after and inputs_changed:
            if not present:
                changed.append(self.target)
        elif present:
            changed.remove(self.target)


@dataclass(frozen=True, slots=True)
class CastOp:
    name: str
    conv: Converter
    label: str

    def apply(self, row: Row) -> None:
        value = row.get(self.name)
        if value is not None:
            try:
                row[self.name] = self.conv(value)
            except CastFailure as exc:
                raise TransformError(f"cast {self.label}: {exc}") from None

    def adjust(self, changed: list[str], after: Row) -> None:
        return None


InPlaceOp = SetOp | ComputeOp | CastOp


def row_stage(columns: CompiledColumns, ops: Sequence[InPlaceOp]) -> Stage:
    rows, casts, fields = columns.rows, columns.casts, columns.fields
    ops = tuple(ops)
    adjusting = tuple(op for op in ops if not isinstance(op, CastOp))

    def transform_row(row: Row, names: list[str] | None = None) -> Row:
        """The transformed after image; ``names`` (the changed fields) is adjusted op by op, each
        op seeing the row as it stands after it (a later op may remove what an earlier one made)."""
        out = rows(row)
        if casts:
            try:
                for name, conv, label in casts:  # noqa: B007 (label names the failing cast below)
                    value = out.get(name)  # absent (unknown) and None both stay as they are
                    if value is not None:
                        out[name] = conv(value)
            except CastFailure as exc:
                raise TransformError(f"cast {label}: {exc}") from None
        for op in ops:
            op.apply(out)
            if names is not None:
                op.adjust(names, out)
        return out

    def transform_before(row: Row) -> Row:
        # Best effort (see the module docstring): the before image never fails an event.
        out = rows(row)
        for name, conv, _ in casts:
            value = out.get(name)
            if value is not None:
                try:
                    out[name] = conv(value)
                except CastFailure:
                    pass  # keep the value as the source had it
        for op in ops:
            try:
                op.apply(out)
            except TransformError:
                if isinstance(op, ComputeOp):
                    out.pop(op.target, None)  # unknown rather than wrong
        return out

    def stage(e: ChangeEvent) -> ChangeEvent:
        after = e.after
        before = e.before
        changed = e.changed
        names: list[str] | None = None
        if changed is not None and (fields is not None or adjusting):
            if fields is not None:
                changed = fields(changed)
            if adjusting:
                names = list(changed)
        if after is not None:
            after = transform_row(after, names)
        elif names is not None:
            for op in adjusting:
                op.adjust(names, {})
        if names is not None:
            changed = tuple(names)
        if before is not None:
            before = transform_before(before)
        return ChangeEvent(e.entity, e.key, e.op, before, after, changed, e.position, e.committed_at, e.origin, e.txid)

    return stage


def filter_stage(expr: Expression, on_exit: str = "delete") -> Stage:
    """Keep the records that match ``expr``, and turn crossings of the filter's edge into writes.

    The destination should hold exactly the matching records. Per operation:

    - insert / snapshot: kept when ``after`` matches, else filtered out.
    - update, ``after`` matches: when ``before`` is known and did not match,
      the record *enters*: it becomes an ``insert`` of the whole row
      (``before`` completed by ``after``), an upsert in SQL destinations, so it
      appears with every field. When ``before`` matched, or is not known (e.g.
      Postgres without REPLICA IDENTITY FULL), the update passes unchanged; SQL
      destinations insert an update whose row they lack from everything
      ``after`` holds (a field absent from ``after``, such as an unchanged
      TOASTed column, is then missing: the limit of a source that sends only
      what changed).
    - update, ``after`` does not match: with ``on_exit: delete`` it becomes a
      ``delete`` of its key, unless ``before`` is known and did not match
      either (then it is filtered out: the record was never there). With
      ``on_exit: keep`` it is filtered out, so the destination keeps the last
      matching version.
    - delete: filtered out when ``before`` is known and did not match (the
      record was never there); otherwise passed (deleting an absent record
      changes nothing).

    A field the expression needs that is absent from an update's ``after`` is
    read from ``before`` (it did not change); absent from both, the event fails.
    """
    names, evaluate, label = expr.names, expr.evaluate, f"filter {expr.source!r}"
    delete_on_exit = on_exit == "delete"

    def matches(row: Row) -> bool:
        try:
            return bool(evaluate(row))
        except Exception as exc:
            raise TransformError(f"{label}: {describe_error(exc)}") from None

    def known(row: Row | None) -> bool:
        return row is not None and all(n in row for n in names)

    def matched(before: Row | None) -> bool | None:
        # Whether the before image matched; None when unknown. Informational: it never fails the event.
        if before is None or not known(before):
            return None
        try:
            return bool(evaluate(before))
        except Exception:
            return None

    def current(e: ChangeEvent, row: Row) -> Row:
        # A field absent from an update's ``after`` did not change: its value is in ``before``, if anywhere.
        if e.op == UPDATE and e.before:
            row = {**e.before, **row}
        for n in names:
            if n not in row:
                raise TransformError(f"{label}: field {n!r} is unknown (absent from the row)")
        return row

    def stage(e: ChangeEvent) -> ChangeEvent | None:
        op = e.op
        if op == DELETE or e.after is None:
            before = e.before
            if matched(before) is False:
                return None
            if before is None or op == DELETE:
                return e
            # Neither a delete nor an after image: judge by what is known, as before this rule existed.
            return e if matches(current(e, before)) else None
        after = e.after
        now = matches(after if known(after) else current(e, after))
        if op != UPDATE:  # insert, snapshot
            return e if now else None
        before = e.before
        was = matched(before)
        if now:
            if was is False:
                assert before is not None
                return ChangeEvent(
                    e.entity, e.key, INSERT, None, {**before, **after}, None,
                    e.position, e.committed_at, e.origin, e.txid,
                )  # fmt: skip
            return e
        if was is False or not delete_on_exit:
            return None
        return ChangeEvent(e.entity, e.key, DELETE, before, None, None, e.position, e.committed_at, e.origin, e.txid)

    return stage


def function_stage(fn: Callable[[ChangeEvent], Any], label: str, copy_rows: bool) -> Stage:
    """Call a user function. ``copy_rows``: it would see the caller's dicts, so it gets copies."""

    def stage(e: ChangeEvent) -> ChangeEvent | None:
        arg = e
        if copy_rows:
            arg = e.replace(
                after=dict(e.after) if e.after is not None else None,
                before=dict(e.before) if e.before is not None else None,
            )
        try:
            result = fn(arg)
        except Exception as exc:
            raise TransformError(f"{label}: {type(exc).__name__}: {exc}") from None
        if result is None or type(result) is ChangeEvent:
            return result
        raise TransformError(f"{label} returned {type(result).__name__}, expected a ChangeEvent or None")

    return stage
