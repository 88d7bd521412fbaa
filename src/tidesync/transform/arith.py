"""The arithmetic of expressions, compiled into closures: NULL and Decimal rules, and the bounds.

``* / // %`` take numbers only (int, float, Decimal; not bool): on a str or a
list, ``*`` repeats and ``%`` formats, each to a size a field's value decides
(``'%0800000000d' % 7`` is 800 MB). ``+`` also joins two strings, bytes or
lists, up to :data:`~tidesync.transform.limits.MAX_VALUE_SIZE`; ``-`` is
Python's on numbers, dates and durations. Neither takes a bool (Python's
``True + 1`` is 2): a bool operand raises TypeError, like ``'a' + 1``. None
in, None out, as in SQL; a Decimal mixed with a float takes the float by its
shortest repr.

An operand that is a constant is bound into the closure (``qty % 7``,
``price * 1.1``, ``name + '!'``): one call less per row, and a constant of the
wrong type is rejected when the expression is compiled.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

from tidesync.transform.casts import show
from tidesync.transform.limits import MAX_VALUE_SIZE, NUMBERS, SIZED, too_large

Fn = Callable[[Mapping[str, Any]], Any]
Op = Callable[[Any, Any], Any]

ARITH: Final[dict[type, Op]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
SYMBOL: Final[dict[type, str]] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
}


def mixed(op: Op, a: Any, b: Any, exc: TypeError) -> Any:
    """Retry an arithmetic or ordering operation that raised TypeError, with NULL and Decimal rules."""
    if a is None or b is None:
        return None
    if type(a) is Decimal and type(b) is float:
        return op(a, Decimal(repr(b)))
    if type(a) is float and type(b) is Decimal:
        return op(Decimal(repr(a)), b)
    raise exc


def _not_numbers(symbol: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    raise TypeError(f"{symbol!r} takes numbers, got {show(a)} and {show(b)}")


def _a_bool(symbol: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    raise TypeError(f"{symbol!r} takes numbers, not bool: got {show(a)} and {show(b)}")


def constant_error(kind: type, value: Any) -> str | None:
    """Why ``value`` cannot be the right operand of ``kind`` (an ``ast`` operator type), None if it can."""
    if value is None or type(value) in NUMBERS:
        return None
    if kind is ast.Add and type(value) is str:
        return None
    return f"the operator {SYMBOL[kind]} with a {type(value).__name__} constant"


def binary(kind: type, left: Fn, right: Fn) -> Fn:
    """``left <op> right`` for ``kind``, an ``ast`` operator type in :data:`ARITH`."""
    op = ARITH[kind]
    numbers, sized, limit = NUMBERS, SIZED, MAX_VALUE_SIZE  # closure cells: cheaper than globals per row
    if kind is ast.Add:

        def add(row: Mapping[str, Any]) -> Any:
            a = left(row)
            b = right(row)
            t = type(a)
            if t in sized and type(b) is t and len(a) + len(b) > limit:
                raise too_large("'+'", len(a) + len(b))
            if t is bool or type(b) is bool:
                return _a_bool("+", a, b)
            try:
                return a + b
            except TypeError as exc:
                return mixed(op, a, b, exc)

        return add
    if kind is ast.Sub:

        def subtract(row: Mapping[str, Any]) -> Any:
            a = left(row)
            b = right(row)
            if type(a) is bool or type(b) is bool:
                return _a_bool("-", a, b)
            try:
                return a - b
            except TypeError as exc:
                return mixed(op, a, b, exc)

        return subtract
    symbol = SYMBOL[kind]

    def numeric(row: Mapping[str, Any]) -> Any:
        a = left(row)
        b = right(row)
        if type(a) in numbers and type(b) in numbers:
            try:
                return op(a, b)
            except TypeError as exc:
                return mixed(op, a, b, exc)
        return _not_numbers(symbol, a, b)

    return numeric


def binary_constant(kind: type, left: Fn, b: Any) -> Fn:
    """``left <op> b`` for a constant ``b`` (not None) that :func:`constant_error` accepts."""
    op = ARITH[kind]
    numbers = NUMBERS
    if kind is ast.Add and type(b) is str:
        room = MAX_VALUE_SIZE - len(b)

        def append(row: Mapping[str, Any]) -> Any:
            a = left(row)
            if type(a) is str and len(a) > room:
                raise too_large("'+'", len(a) + len(b))
            try:
                return a + b
            except TypeError as exc:
                return mixed(op, a, b, exc)

        return append
    if kind is ast.Add or kind is ast.Sub:  # a number (never a bool: constant_error): no size to check
        symbol = SYMBOL[kind]

        def offset(row: Mapping[str, Any]) -> Any:
            a = left(row)
            if type(a) is bool:
                return _a_bool(symbol, a, b)
            try:
                return op(a, b)
            except TypeError as exc:
                return mixed(op, a, b, exc)

        return offset
    symbol = SYMBOL[kind]

    def numeric(row: Mapping[str, Any]) -> Any:
        a = left(row)
        if type(a) in numbers:
            try:
                return op(a, b)
            except TypeError as exc:
                return mixed(op, a, b, exc)
        return _not_numbers(symbol, a, b)

    return numeric
