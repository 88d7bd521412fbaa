"""The expression language of ``compute:`` and ``filter:``: what it accepts, computes and rejects."""

from __future__ import annotations

import datetime as dt
import re
import tracemalloc
from decimal import Decimal
from typing import Any

import pytest

from tidesync.event import ChangeEvent
from tidesync.transform import compile_transforms
from tidesync.transform.expr import ExpressionError, compile_expression
from tidesync.transform.limits import MAX_ROUND_DIGITS, MAX_VALUE_SIZE, LimitExceeded

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


# --- bounds: what an expression costs follows the record's size, never a number in it ------------

BIG = "x" * (MAX_VALUE_SIZE // 2 + 1)  # two of them are over the limit
NUMBERS_ONLY: list[tuple[str, dict[str, Any], str]] = [
    ("qty % 7", {"qty": "%050000000d"}, "'%' takes numbers, got '%050000000d' and 7"),
    ("note * qty", {"note": "x" * 30, "qty": 10_000_000}, "'*' takes numbers, got 'xxx"),
    ("qty * note", {"note": "x" * 30, "qty": 10_000_000}, "'*' takes numbers, got 10000000 and 'xxx"),
    ("tags * n", {"tags": ["x"], "n": 10_000_000}, "'*' takes numbers, got ['x'] and 10000000"),
    ("note / 2", {"note": "x"}, "'/' takes numbers"),
    ("note // 2", {"note": "x"}, "'//' takes numbers"),
    ("flag * 2", {"flag": True}, "'*' takes numbers, got True and 2"),
    ("-note", {"note": "x"}, "unary minus takes a number, got 'x'"),
    ("-flag", {"flag": True}, "unary minus takes a number, got True"),
    # + and - too: Python's True + 1 is 2, True - True is 0
    ("flag + 1", {"flag": True}, "'+' takes numbers, not bool: got True and 1"),
    ("flag - 1", {"flag": False}, "'-' takes numbers, not bool: got False and 1"),
    ("a + flag", {"a": 1, "flag": True}, "'+' takes numbers, not bool: got 1 and True"),
    ("flag + flag", {"flag": True}, "'+' takes numbers, not bool: got True and True"),
    ("flag - flag", {"flag": True}, "'-' takes numbers, not bool: got True and True"),
    ("d - flag", {"d": Decimal(2), "flag": True}, "'-' takes numbers, not bool: got Decimal('2') and True"),
    ("f + flag", {"f": 0.5, "flag": False}, "'+' takes numbers, not bool: got 0.5 and False"),
    ("flag + 'x'", {"flag": True}, "unsupported operand"),
]


@pytest.mark.parametrize(("source", "row", "message"), NUMBERS_ONLY)
def test_arithmetic_other_than_plus_takes_numbers_only(source: str, row: dict[str, Any], message: str) -> None:
    expr = compile_expression(source)
    tracemalloc.start()
    try:
        with pytest.raises(TypeError) as info:
            expr(row)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message in str(info.value)
    assert peak < 1 << 20  # nothing was built (string formatting would have made 50 MB)


def test_numbers_of_every_kind_still_mix() -> None:
    row = {"i": 7, "f": 0.5, "d": Decimal("1.5"), "nothing": None, "flag": True}
    assert compile_expression("i * f + d * i - i % 4 + i // 2 - d / 3")(row) == Decimal("13.5")
    assert compile_expression("nothing * i")(row) is None
    assert compile_expression("i % nothing")(row) is None
    assert compile_expression("flag + nothing")(row) is None  # NULL wins, as for every other operand
    assert compile_expression("nothing - flag")(row) is None
    when = {"day": dt.date(2024, 3, 1), "span": dt.timedelta(days=1)}
    assert compile_expression("day - span")(when) == dt.date(2024, 2, 29)  # - still takes dates and durations
    assert compile_expression("day - day")(when) == dt.timedelta(0)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a + True", "the operator + with a bool constant"),
        ("a - True", "the operator - with a bool constant"),
        ("False - a", "the operator - with a bool constant"),
        ("True + a", "the operator + with a bool constant"),
        ("a - 'x'", "the operator - with a str constant"),
    ],
)
def test_a_bool_constant_in_arithmetic_is_refused_at_compile_time(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_expression(source)


OVER_THE_SIZE_LIMIT: list[tuple[str, dict[str, Any]]] = [
    ("s + s", {"s": BIG}),
    ("b + b", {"b": BIG.encode()}),
    ("l + l", {"l": list(BIG)}),
    ("concat(s, s)", {"s": BIG}),
    ("concat(s, n, s)", {"s": BIG, "n": None}),
    ("replace(s, '', s)", {"s": "ab" * 1000}),  # a million-fold: 2,000 characters become 4 million
    ("replace(s, 'a', s)", {"s": "ab" * 1000}),
    ("upper(s)", {"s": "ß" * (MAX_VALUE_SIZE // 2 + 1)}),  # 'SS' for each
    ("lower(s)", {"s": "İ" * (MAX_VALUE_SIZE // 2 + 1)}),  # 'i̇', two characters
    ("str(d)", {"d": Decimal("1E+100000000")}),
    ("str(d)", {"d": Decimal("1E-100000000")}),
]


@pytest.mark.parametrize(("source", "row"), OVER_THE_SIZE_LIMIT)
def test_a_value_an_expression_makes_is_capped(source: str, row: dict[str, Any]) -> None:
    expr = compile_expression(source)
    with pytest.raises(ValueError, match=r"limit is 1,048,576|more than 1,048,576 characters"):
        expr(row)


def test_values_up_to_the_size_limit_are_made() -> None:
    half = "x" * (MAX_VALUE_SIZE // 2)
    assert len(compile_expression("s + s")({"s": half})) == MAX_VALUE_SIZE
    assert len(compile_expression("concat(s, s)")({"s": half})) == MAX_VALUE_SIZE
    assert compile_expression("replace(s, 'b', 'cc')")({"s": "ab" * 10}) == "acc" * 10
    assert compile_expression("replace(s, '', '-')")({"s": "ab"}) == "-a-b-"
    assert compile_expression("str(d)")({"d": Decimal("1E+3")}) == "1000"


def test_the_size_of_replace_is_known_before_it_is_built() -> None:
    expr = compile_expression("replace(s, '', s)")
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded):
            expr({"s": "ab" * 1000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("digits", [MAX_ROUND_DIGITS + 1, -MAX_ROUND_DIGITS - 1, -(10**8), 10**18])
def test_round_digits_are_bounded(digits: int) -> None:
    # round(7, -10**8) would compute 10**(10**8): seconds of CPU.
    with pytest.raises(ValueError, match=r"round\(\) digits must be between -50 and 50"):
        compile_expression("round(x, n)")({"x": 7, "n": digits})


def test_round_within_the_bound() -> None:
    expr = compile_expression("round(x, n)")
    assert expr({"x": 123456, "n": -MAX_ROUND_DIGITS}) == 0
    assert expr({"x": 1.25, "n": MAX_ROUND_DIGITS}) == 1.25
    assert expr({"x": Decimal("2.345"), "n": 2}) == Decimal("2.34")


@pytest.mark.parametrize("source", ["round(s)", "round(flag, 1)", "abs(s)", "abs(flag)"])
def test_round_and_abs_take_numbers_only(source: str) -> None:
    with pytest.raises(TypeError, match="expects a number"):
        compile_expression(source)({"s": "x", "flag": True})


@pytest.mark.parametrize("value", [Decimal("1E+100000000"), "1e100000000"])
def test_int_of_a_decimal_is_bounded(value: Any) -> None:
    with pytest.raises(ValueError, match="more than 4300 digits"):
        compile_expression("int(v)")({"v": value})


@pytest.mark.parametrize(
    "source", ["10 ** 10 ** 8", "repeat(s, n)", "lpad(s, n)", "zfill(s, n)", "format(s, n)", "range(n)", "join(s)"]
)
def test_no_power_and_no_repeating_or_padding_function(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"\*\* is not allowed|unknown function"):
        compile_expression(source)


def test_a_bound_broken_by_one_record_fails_that_record_only() -> None:
    transform = compile_transforms(
        [{"compute": {"mod": "qty % 7", "pad": "note * qty", "r": "round(x, n)"}}, {"filter": "s + s != ''"}]
    )
    good = ChangeEvent("orders", (1,), "insert", after={"qty": 3, "note": 2, "x": 1.5, "n": 0, "s": "a"})
    rows = [
        {"qty": "%0800000000d", "note": 1, "x": 1, "n": 0, "s": "a"},
        {"qty": 10**8, "note": "xx", "x": 1, "n": 0, "s": "a"},
        {"qty": 1, "note": 1, "x": 7, "n": -(10**8), "s": "a"},
        {"qty": 1, "note": 1, "x": 7, "n": 0, "s": BIG},
    ]
    bad = [ChangeEvent("orders", (i,), "insert", after=row) for i, row in enumerate(rows, 2)]
    out, failures = transform.apply([*bad, good])
    assert [e.key for e in out] == [(1,)]
    assert out[0].after is not None and out[0].after["pad"] == 6
    assert [f[0] for f in failures] == bad
    reasons = [f[1] for f in failures]
    assert reasons[0].startswith("compute mod: '%' takes numbers, got '%0800000000d' and 7 (qty='%0800000000d')")
    assert reasons[1].startswith("compute pad: '*' takes numbers, got 'xx' and 100000000")
    assert reasons[2].startswith("compute r: round() digits must be between -50 and 50, got -100000000")
    assert reasons[3].startswith("filter \"s + s != ''\": '+' would make a value of 1,048,578 characters")
