"""Stages: a ChangeEvent in, a ChangeEvent (or None: filtered out) out, or :class:`TransformError`.

A row stage runs one fused pass of column steps (rename/select/drop/cast,
see :mod:`tidesync.transform.plan`) followed by in-place steps (set, compute,
later casts) on a fresh dict, over ``after`` and ``before``, and maps
``changed``. Event stages are ``filter`` and user functions. A stage never
mutates the event it gets, so a failing record can be reported as it came in.
"""

from __future__ import annotations

import copy
import decimal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.errors import TransformError
from tidesync.event import UPDATE, ChangeEvent, Row
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

    def transform_row(row: Row) -> Row:
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
        return out

    def stage(e: ChangeEvent) -> ChangeEvent:
        after = e.after
        before = e.before
        changed = e.changed
        if after is not None:
            after = transform_row(after)
        if before is not None:
            try:
                before = transform_row(before)
            except TransformError as exc:
                raise TransformError(f"{exc} (before image)") from None
        if changed is not None and (fields is not None or adjusting):
            if fields is not None:
                changed = fields(changed)
            if adjusting:
                names = list(changed)
                for op in adjusting:
                    op.adjust(names, after or {})
                changed = tuple(names)
        return ChangeEvent(e.entity, e.key, e.op, before, after, changed, e.position, e.committed_at, e.origin, e.txid)

    return stage


def filter_stage(expr: Expression) -> Stage:
    names, evaluate, label = expr.names, expr.evaluate, f"filter {expr.source!r}"

    def complete(e: ChangeEvent, row: Row) -> Row:
        # A field absent from an update's ``after`` did not change: its value is in ``before``, if anywhere.
        if e.op == UPDATE and e.before:
            row = {**e.before, **row}
        for n in names:
            if n not in row:
                raise TransformError(f"{label}: field {n!r} is unknown (absent from the row)")
        return row

    def stage(e: ChangeEvent) -> ChangeEvent | None:
        row = e.after if e.after is not None else e.before
        if row is None:
            row = {}
        for n in names:
            if n not in row:
                row = complete(e, row)
                break
        try:
            keep = evaluate(row)
        except Exception as exc:
            raise TransformError(f"{label}: {describe_error(exc)}") from None
        return e if keep else None

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
