"""A small, safe expression language for ``compute:`` and ``filter:``.

An expression is Python expression syntax, parsed with :mod:`ast` in eval
mode, checked against a whitelist and compiled once into nested closures; no
``eval``, and no walk over the tree per row. Accepted:

- constants: strings, numbers, ``True``/``False``/``None``;
- field names (``first_name``); ``field('first-name')`` for names that are not
  identifiers; ``payload['plan']`` / ``tags[0]`` with a constant key;
- arithmetic ``+ - * / // %`` and unary minus; ``* / // %`` and unary minus
  take numbers only (int, float, Decimal; not bool), ``+`` also joins two
  strings, bytes or lists (see :mod:`tidesync.transform.limits`), ``-`` also
  takes dates and durations; no operator takes a bool;
- comparisons ``== != < <= > >=`` (chains too), ``in`` / ``not in`` (after a
  tuple or list literal, or any value that holds others), ``is None`` /
  ``is not None``;
- ``and``, ``or``, ``not`` and ``a if condition else b``;
- calls of the functions in :mod:`tidesync.transform.functions`.

Everything else (attribute access, method calls, lambdas, comprehensions,
f-strings, dict/set literals, ``**``, bit operators, ``:=``, calls of unknown
names, dunder names or keys) raises :class:`ExpressionError` naming the
construct and its column, when the configuration is read.

NULL semantics, as in SQL where Python would raise: arithmetic, ordering
comparisons, unary minus, ``in`` on a None container and subscripts of None
give None; ``==``/``!=`` compare None like any value (``status != 'deleted'``
is true for a NULL status). A filter keeps a record when its value is truthy,
so None drops it. Mixing Decimal and float in arithmetic converts the float by
its shortest repr (``price * 1.1`` with a Decimal price is exact).

Other runtime errors (``'a' + 1``, ``'a' * 3``, division by zero, a value
beyond a bound of :mod:`tidesync.transform.limits`) propagate to the caller,
which turns them into a per-record failure. What an expression costs is
bounded by the size of the record and of the expression, never by a number in
the record: there is no ``**``, no string repetition or ``%`` formatting, and
values an expression builds are capped at ``MAX_VALUE_SIZE``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tidesync.transform.arith import ARITH, binary, binary_constant, constant_error, mixed
from tidesync.transform.casts import show
from tidesync.transform.functions import FORBIDDEN, FUNCTIONS
from tidesync.transform.limits import NUMBERS

Row = Mapping[str, Any]
Fn = Callable[[Row], Any]
MAX_DEPTH: Final = 100


class ExpressionError(ValueError):
    """An expression is not valid or uses a construct the language does not allow."""


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression. ``names`` are the fields it reads, all required to evaluate it."""

    source: str
    names: tuple[str, ...]
    evaluate: Fn

    def __call__(self, row: Row) -> Any:
        return self.evaluate(row)


def compile_expression(source: str) -> Expression:
    """Parse, check and compile ``source``; raises :class:`ExpressionError`."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" (column {exc.offset})" if exc.offset else ""
        raise ExpressionError(f"invalid expression {source!r}: {exc.msg}{where}") from None
    compiler = _Compiler()
    evaluate = compiler.compile(tree.body, 0)
    return Expression(source, tuple(compiler.names), evaluate)


_EQUALITY: Final[dict[type, Callable[[Any, Any], Any]]] = {ast.Eq: operator.eq, ast.NotEq: operator.ne}
_ORDERING: Final[dict[type, Callable[[Any, Any], Any]]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_OPERATOR_TEXT: Final[dict[type, str]] = {
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.UAdd: "unary +",
}
_CONSTRUCTS: Final[dict[type, str]] = {
    ast.Lambda: "lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.NamedExpr: "an assignment expression (:=)",
    ast.JoinedStr: "an f-string (use concat())",
    ast.Dict: "a dict literal",
    ast.Set: "a set literal",
    ast.Starred: "unpacking (*)",
    ast.Slice: "a slice (use substr())",
    ast.Tuple: "a tuple outside 'in (...)'",
    ast.List: "a list outside 'in [...]'",
}
_NOT_LITERAL: Final = object()


def _null_safe(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        try:
            return op(a, b)
        except TypeError as exc:
            return mixed(op, a, b, exc)

    return apply


def _contains(a: Any, container: Any) -> Any:
    return None if container is None else a in container


def _not_contains(a: Any, container: Any) -> Any:
    return None if container is None else a not in container


class _Compiler:
    def __init__(self) -> None:
        self.names: dict[str, None] = {}  # ordered set of the fields read

    def reject(self, node: ast.AST, what: str) -> ExpressionError:
        col = getattr(node, "col_offset", None)
        where = f" (column {col + 1})" if col is not None else ""
        return ExpressionError(f"{what} is not allowed in expressions{where}")

    def compile(self, node: ast.AST, depth: int) -> Fn:
        if depth > MAX_DEPTH:
            raise self.reject(node, f"nesting deeper than {MAX_DEPTH} levels")
        method: Callable[[ast.AST, int], Fn] | None = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.reject(node, self._describe(node))
        return method(node, depth + 1)

    def _describe(self, node: ast.AST) -> str:
        if isinstance(node, ast.Attribute):
            return f"attribute access '.{node.attr}'"
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            return f"the operator {_OPERATOR_TEXT.get(type(node.op), type(node.op).__name__)}"
        return _CONSTRUCTS.get(type(node), type(node).__name__)

    def literal(self, node: ast.AST) -> Any:
        """The value of a constant (or negative number, or tuple/list of constants), else _NOT_LITERAL."""
        if isinstance(node, ast.Constant):
            self._check_constant(node)
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.literal(node.operand)
            if type(inner) in (int, float):
                return -inner
        if isinstance(node, ast.Tuple | ast.List):
            values = tuple(self.literal(e) for e in node.elts)
            if _NOT_LITERAL not in values:
                return values
        return _NOT_LITERAL

    def _check_constant(self, node: ast.Constant) -> None:
        if node.value is not None and type(node.value) not in (str, int, float, bool):
            raise self.reject(node, f"a {type(node.value).__name__} constant")

    def field(self, node: ast.AST, name: str) -> Fn:
        if name.startswith("__"):
            raise self.reject(node, f"the dunder name {name!r}")
        self.names[name] = None
        return operator.itemgetter(name)

    # --- node types ------------------------------------------------------------------

    def _Constant(self, node: ast.Constant, depth: int) -> Fn:
        self._check_constant(node)
        value = node.value
        return lambda row: value

    def _Name(self, node: ast.Name, depth: int) -> Fn:
        return self.field(node, node.id)

    def _BinOp(self, node: ast.BinOp, depth: int) -> Fn:
        kind = type(node.op)
        if kind not in ARITH:
            raise self.reject(node, self._describe(node))
        a = self.literal(node.left) if isinstance(node.left, ast.Constant | ast.UnaryOp) else _NOT_LITERAL
        if a is not _NOT_LITERAL and (why := constant_error(kind, a)) is not None:
            raise self.reject(node.left, why)  # True + x, 'a' - x: wrong on every row
        left = self.compile(node.left, depth)
        b = self.literal(node.right) if isinstance(node.right, ast.Constant | ast.UnaryOp) else _NOT_LITERAL
        if b is _NOT_LITERAL or b is None:
            return binary(kind, left, self.compile(node.right, depth))
        why = constant_error(kind, b)
        if why is not None:
            raise self.reject(node.right, why)
        return binary_constant(kind, left, b)

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Fn:
        operand = self.compile(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return lambda row: not operand(row)
        if isinstance(node.op, ast.USub):
            numbers = NUMBERS

            def negate(row: Row) -> Any:
                v = operand(row)
                if type(v) in numbers:
                    return -v
                if v is None:
                    return None
                raise TypeError(f"unary minus takes a number, got {show(v)}")

            return negate
        raise self.reject(node, self._describe(node))

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> Fn:
        parts = tuple(self.compile(v, depth) for v in node.values)
        stop_when = not isinstance(node.op, ast.And)

        def boolop(row: Row) -> Any:
            value = None
            for part in parts:
                value = part(row)
                if bool(value) is stop_when:
                    return value
            return value

        return boolop

    def _IfExp(self, node: ast.IfExp, depth: int) -> Fn:
        test, body, orelse = (self.compile(n, depth) for n in (node.test, node.body, node.orelse))
        return lambda row: body(row) if test(row) else orelse(row)

    def _Compare(self, node: ast.Compare, depth: int) -> Fn:
        left = self.compile(node.left, depth)
        parts: list[tuple[Callable[[Any, Any], Any], Fn]] = []
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                fn = _contains if isinstance(op, ast.In) else _not_contains
                parts.append((fn, self._container(comparator, depth)))
            elif isinstance(op, ast.Is | ast.IsNot):
                if not (isinstance(comparator, ast.Constant) and comparator.value is None):
                    raise self.reject(comparator, "'is' with anything but None")
                parts.append((operator.is_ if isinstance(op, ast.Is) else operator.is_not, lambda row: None))
            elif type(op) in _EQUALITY:
                parts.append((_EQUALITY[type(op)], self.compile(comparator, depth)))
            else:
                parts.append((_null_safe(_ORDERING[type(op)]), self.compile(comparator, depth)))
        if len(parts) == 1:
            ((cmp, right),) = parts
            (comparator,) = node.comparators
            const = None if isinstance(node.ops[0], ast.Is | ast.IsNot) else self.literal(comparator)
            if const is not _NOT_LITERAL:  # the common `field == 'x'` / `field in (...)`: one call less
                return lambda row: cmp(left(row), const)
            return lambda row: cmp(left(row), right(row))
        chain = tuple(parts)

        def compare(row: Row) -> Any:
            a = left(row)
            result: Any = True
            for cmp, right in chain:
                b = right(row)
                result = cmp(a, b)
                if not result:
                    return result
                a = b
            return result

        return compare

    def _container(self, node: ast.AST, depth: int) -> Fn:
        if isinstance(node, ast.Tuple | ast.List):
            values = self.literal(node)
            if values is not _NOT_LITERAL:
                return lambda row: values
            items = tuple(self.compile(e, depth) for e in node.elts)
            return lambda row: tuple(item(row) for item in items)
        return self.compile(node, depth)

    def _Subscript(self, node: ast.Subscript, depth: int) -> Fn:
        if isinstance(node.slice, ast.Slice):
            raise self.reject(node.slice, self._describe(node.slice))
        key = self.literal(node.slice)
        if type(key) not in (str, int):
            raise self.reject(node.slice, "a subscript other than a constant string or integer")
        if type(key) is str and key.startswith("__"):
            raise self.reject(node.slice, f"the dunder key {key!r}")
        value = self.compile(node.value, depth)

        def subscript(row: Row) -> Any:
            v = value(row)
            return None if v is None else v[key]

        return subscript

    def _Call(self, node: ast.Call, depth: int) -> Fn:
        if not isinstance(node.func, ast.Name):
            what = self._describe(node.func) if isinstance(node.func, ast.Attribute) else "calling an expression"
            raise self.reject(node.func, what)
        name = node.func.id
        if node.keywords:
            raise self.reject(node, f"a keyword argument in {name}()")
        if name == "field":
            if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or type(node.args[0].value) is not str:
                raise self.reject(node, "field() with anything but one constant string")
            return self.field(node, node.args[0].value)
        if name in FORBIDDEN:
            raise self.reject(node.func, f"{name}() (transforms must be deterministic)")
        function = FUNCTIONS.get(name)
        if function is None:
            known = ", ".join(sorted([*FUNCTIONS, "field"]))
            raise ExpressionError(f"unknown function {name}() (column {node.col_offset + 1}); known functions: {known}")
        n = len(node.args)
        if n < function.min_args or (function.max_args is not None and n > function.max_args):
            if function.max_args is None:
                expected = f"at least {function.min_args}"
            elif function.min_args == function.max_args:
                expected = str(function.min_args)
            else:
                expected = f"{function.min_args} to {function.max_args}"
            raise ExpressionError(f"{name}() takes {expected} argument(s), got {n} (column {node.col_offset + 1})")
        args = tuple(self.compile(a, depth) for a in node.args)
        fn = function.fn
        if n == 1:
            (a0,) = args
            return lambda row: fn(a0(row))
        if n == 2:
            a0, a1 = args
            return lambda row: fn(a0(row), a1(row))
        return lambda row: fn(*[a(row) for a in args])
