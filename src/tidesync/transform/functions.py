"""The functions an expression may call (``compute:`` and ``filter:``), and nothing else.

All are deterministic: the same row gives the same value on every replay, so
there is no clock, random or I/O function. A None (SQL NULL) argument where a
value is expected gives None, as in SQL, except for ``coalesce`` (which exists
to replace it) and ``concat`` (which skips it, like Postgres ``concat()``).

==================================  ==================================================
``lower(s)`` ``upper(s)``            case mapping of a string
``trim(s)``                          strip leading and trailing whitespace
``len(x)``                           length of a string, list or JSON object
``concat(a, b, ...)``                the arguments as strings (``str`` rules), joined
``coalesce(a, b, ...)``              the first argument that is not None
``round(x)`` ``round(x, n)``         Python rounding (half to even); Decimal stays Decimal
``abs(x)``                           absolute value
``str(x)`` ``int(x)`` ``float(x)``   the ``string`` / ``int`` / ``float`` casts (strict)
``substr(s, start[, length])``       ``length`` characters from ``start`` (0-based;
                                     negative ``start`` counts from the end)
``replace(s, old, new)``             every ``old`` replaced by ``new``
``startswith(s, p)`` ``endswith(s, p)``  prefix / suffix test
==================================  ==================================================
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tidesync.transform.casts import show, to_float, to_int, to_string


@dataclass(frozen=True, slots=True)
class Function:
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: any number


def _text(name: str, value: Any) -> str:
    if type(value) is not str and not isinstance(value, str):
        raise TypeError(f"{name}() expects a string, got {show(value)}")
    return value


def _int_arg(name: str, value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"{name}() expects an integer, got {show(value)}")
    return value


def _lower(s: Any) -> Any:
    return None if s is None else _text("lower", s).lower()


def _upper(s: Any) -> Any:
    return None if s is None else _text("upper", s).upper()


def _trim(s: Any) -> Any:
    return None if s is None else _text("trim", s).strip()


def _len(x: Any) -> Any:
    if x is None:
        return None
    if not isinstance(x, str | list | dict | tuple):
        raise TypeError(f"len() expects a string, list or object, got {show(x)}")
    return builtins.len(x)


def _concat(*args: Any) -> str:
    return "".join(to_string(a) for a in args if a is not None)


def _coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


def _round(x: Any, ndigits: Any = None) -> Any:
    if x is None:
        return None
    if ndigits is not None:
        _int_arg("round", ndigits)
    if type(x) is bool or not hasattr(x, "__round__"):
        raise TypeError(f"round() expects a number, got {show(x)}")
    return builtins.round(x, ndigits)


def _abs(x: Any) -> Any:
    return None if x is None else builtins.abs(x)


def _str(x: Any) -> Any:
    return None if x is None else to_string(x)


def _int(x: Any) -> Any:
    return None if x is None else to_int(x)


def _float(x: Any) -> Any:
    return None if x is None else to_float(x)


def _substr(s: Any, start: Any, length: Any = None) -> Any:
    if s is None:
        return None
    s = _text("substr", s)
    start = _int_arg("substr", start)
    if start < 0:
        start = max(0, builtins.len(s) + start)
    if length is None:
        return s[start:]
    if _int_arg("substr", length) < 0:
        raise ValueError(f"substr() length must not be negative, got {length}")
    return s[start : start + length]


def _replace(s: Any, old: Any, new: Any) -> Any:
    if s is None:
        return None
    return _text("replace", s).replace(_text("replace", old), _text("replace", new))


def _startswith(s: Any, prefix: Any) -> Any:
    return None if s is None else _text("startswith", s).startswith(_text("startswith", prefix))


def _endswith(s: Any, suffix: Any) -> Any:
    return None if s is None else _text("endswith", s).endswith(_text("endswith", suffix))


FUNCTIONS: Final[dict[str, Function]] = {
    "lower": Function(_lower, 1, 1),
    "upper": Function(_upper, 1, 1),
    "trim": Function(_trim, 1, 1),
    "len": Function(_len, 1, 1),
    "concat": Function(_concat, 1, None),
    "coalesce": Function(_coalesce, 1, None),
    "round": Function(_round, 1, 2),
    "abs": Function(_abs, 1, 1),
    "str": Function(_str, 1, 1),
    "int": Function(_int, 1, 1),
    "float": Function(_float, 1, 1),
    "substr": Function(_substr, 2, 3),
    "replace": Function(_replace, 3, 3),
    "startswith": Function(_startswith, 2, 2),
    "endswith": Function(_endswith, 2, 2),
}

# Names people reach for that would make a transform non-deterministic.
FORBIDDEN: Final[frozenset[str]] = frozenset(
    {"now", "now_utc", "today", "utcnow", "random", "rand", "uuid", "uuid4", "time", "eval", "exec", "open"}
)
