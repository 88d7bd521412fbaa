"""The expression language of ``compute:`` and ``filter:``: what it accepts, computes and rejects."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tidesync.transform.expr import ExpressionError, compile_expression

ROW: dict[str, Any] = {
    "a": 7,
    "b": 2,
    "zero": 0,
    "name": "  Ada Lovelace ",
    "first": "Ada",
    "last": "King",
    "price": Decimal("10.00"),
    "ratio": 0.5,
    "status": "active",
    "country": "DE",
    "nothing": None,
    "payload": {"plan": "pro", "seats": [3, 4]},
    "tags": ["x", "y"],
    "first-name": "dashed",
    "flag": True,
}

ACCEPTED: list[tuple[str, Any]] = [
    ("42", 42),
    ("'text'", "text"),
    ("None", None),
    ("a", 7),
    ("a + b", 9),
    ("a - b", 5),
    ("a * b", 14),
    ("a / b", 3.5),
    ("a // b", 3),
    ("a % b", 1),
    ("-a", -7),
    ("-(a + b) * 2", -18),
    ("price * 1.1", Decimal("11.000")),
    ("ratio + price", Decimal("10.50")),
    ("a > b", True),
    ("a >= 7 and b <= 2", True),
    ("b < a < 10", True),
    ("b < a < 5", False),
    ("a == 7", True),
    ("a != 7", False),
    ("country in ('DE', 'FR')", True),
    ("country not in ['DE', 'FR']", False),
    ("country in (first, last)", False),
    ("'x' in tags", True),
    ("'pl' in status", False),
    ("nothing is None", True),
    ("a is not None", True),
    ("not flag", False),
    ("flag or nothing", True),
    ("nothing or 'default'", "default"),
    ("a if flag else b", 7),
    ("a if nothing else b", 2),
    ("payload['plan']", "pro"),
    ("payload['seats'][-1]", 4),
    ("tags[0]", "x"),
    ("field('first-name')", "dashed"),
    ("lower(first)", "ada"),
    ("upper(first)", "ADA"),
    ("trim(name)", "Ada Lovelace"),
    ("len(first)", 3),
    ("len(tags)", 2),
    ("concat(first, ' ', last, nothing, a)", "Ada King7"),
    ("coalesce(nothing, first)", "Ada"),
    ("round(ratio)", 0),
    ("round(price / 3, 2)", Decimal("3.33")),
    ("abs(-a)", 7),
    ("str(a)", "7"),
    ("str(flag)", "true"),
    ("int('12')", 12),
    ("float(b)", 2.0),
    ("substr(first, 1, 2)", "da"),
    ("substr(first, -2)", "da"),
    ("substr(first, 1)", "da"),
    ("replace(status, 'act', 'pass')", "passive"),
    ("startswith(status, 'act')", True),
    ("endswith(status, 'x')", False),
    # SQL NULL rules where Python would raise
    ("nothing + 1", None),
    ("nothing > 1", None),
    ("-nothing", None),
    ("lower(nothing)", None),
    ("nothing == None", True),
    ("nothing != 'x'", True),
]


@pytest.mark.parametrize(("source", "expected"), ACCEPTED)
def test_expression_value(source: str, expected: Any) -> None:
    result = compile_expression(source)(ROW)
    assert result == expected
    assert type(result) is type(expected)


def test_names_lists_the_fields_read_in_order() -> None:
    expr = compile_expression("concat(first, ' ', last) if flag else field('first-name') + first")
    assert expr.names == ("flag", "first", "last", "first-name")
    assert compile_expression("lower('x')").names == ()


REJECTED: list[tuple[str, str]] = [
    ("a.real", "attribute access '.real' is not allowed"),
    ("first.upper()", "attribute access '.upper' is not allowed"),
    ("().__class__", "attribute access '.__class__' is not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("[x for x in tags]", "a comprehension is not allowed"),
    ("{x: 1 for x in tags}", "a comprehension is not allowed"),
    ("(x for x in tags)", "a generator expression is not allowed"),
    ("__import__('os')", "unknown function __import__()"),
    ("open('/etc/passwd')", "open() (transforms must be deterministic) is not allowed"),
    ("now_utc()", "now_utc() (transforms must be deterministic) is not allowed"),
    ("eval('1')", "eval() (transforms must be deterministic) is not allowed"),
    ("getattr(a, 'x')", "unknown function getattr()"),
    ("payload['__class__']", "the dunder key '__class__' is not allowed"),
    ("__builtins__", "the dunder name '__builtins__' is not allowed"),
    ("tags[0:1]", "a slice (use substr()) is not allowed"),
    ("tags[a]", "a subscript other than a constant string or integer is not allowed"),
    ("a ** 2", "the operator ** is not allowed"),
    ("a | b", "the operator | is not allowed"),
    ("~a", "the operator ~ is not allowed"),
    ("(y := 1)", "an assignment expression (:=) is not allowed"),
    ("f'{a}'", "an f-string (use concat()) is not allowed"),
    ("{'a': 1}", "a dict literal is not allowed"),
    ("{1, 2}", "a set literal is not allowed"),
    ("(1, 2)", "a tuple outside 'in (...)' is not allowed"),
    ("a is 1", "'is' with anything but None is not allowed"),
    ("lower(*tags)", "unpacking (*) is not allowed"),
    ("lower(s=first)", "a keyword argument in lower() is not allowed"),
    ("lower(a, b)", "lower() takes 1 argument(s), got 2"),
    ("replace(a)", "replace() takes 3 argument(s), got 1"),
    ("coalesce()", "coalesce() takes at least 1 argument(s), got 0"),
    ("field(a)", "field() with anything but one constant string is not allowed"),
    ("(lambda: 1)()", "calling an expression is not allowed"),
    ("b'x'", "a bytes constant is not allowed"),
    ("a +", "invalid expression 'a +'"),
    ("import os", "invalid expression"),
    ("a = 1", "invalid expression"),
    ("", "invalid expression"),
    (" + ".join(["a"] * 150), "nesting deeper than 100 levels is not allowed"),
]


@pytest.mark.parametrize(("source", "message"), REJECTED)
def test_rejected_at_compile_time_naming_the_construct(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert message in str(info.value)


def test_rejection_names_the_column() -> None:
    with pytest.raises(
        ExpressionError, match=r"attribute access '\.upper' is not allowed in expressions \(column 12\)"
    ):
        compile_expression("lower(a) + first.upper()")


RUNTIME_ERRORS: list[tuple[str, type[Exception]]] = [
    ("a / zero", ZeroDivisionError),
    ("price / zero", ZeroDivisionError),
    ("first + a", TypeError),
    ("first > a", TypeError),
    ("payload['missing']", KeyError),
    ("tags[5]", IndexError),
    ("lower(a)", TypeError),
    ("int(first)", ValueError),
    ("substr(first, 0, -1)", ValueError),
]


@pytest.mark.parametrize(("source", "error"), RUNTIME_ERRORS)
def test_runtime_errors_propagate_for_the_caller_to_report(source: str, error: type[Exception]) -> None:
    expr = compile_expression(source)
    with pytest.raises(error):
        expr(ROW)


def test_compiled_once_evaluated_many_times_without_state() -> None:
    expr = compile_expression("a * 2 if a > 1 else 0")
    assert [expr({"a": n}) for n in range(4)] == [0, 0, 4, 6]
