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

No function repeats or pads a value (there is no ``repeat``, ``lpad``,
``zfill``, ``format`` or ``range``), and those that build a string are bounded
(:mod:`tidesync.transform.limits`): ``concat``, ``replace``, ``upper``,
``lower`` and ``str`` make at most ``MAX_VALUE_SIZE`` characters, ``round``
takes at most ``MAX_ROUND_DIGITS`` digits either way, ``round`` and ``abs``
take numbers only (not bool). Breaking a bound fails the record.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tidesync.transform.casts import show, to_float, to_int, to_string
from tidesync.transform.limits import MAX_ROUND_DIGITS, MAX_VALUE_SIZE, NUMBERS, too_large


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
    # Case mapping can lengthen a string (up to 3 characters for one), hence the check.
    if s is None:
        return None
    result = _text("lower", s).lower()
    if len(result) > MAX_VALUE_SIZE:
        raise too_large("lower()", len(result))
    return result


def _upper(s: Any) -> Any:
    if s is None:
        return None
    result = _text("upper", s).upper()
    if len(result) > MAX_VALUE_SIZE:
        raise too_large("upper()", len(result))
    return result


def _trim(s: Any) -> Any:
    return None if s is None else _text("trim", s).strip()


def _len(x: Any) -> Any:
    if x is None:
        return None
    if not isinstance(x, str | list | dict | tuple):
        raise TypeError(f"len() expects a string, list or object, got {show(x)}")
    return builtins.len(x)


def _concat(*args: Any) -> str:
    parts = [to_string(a) for a in args if a is not None]
    size = sum(map(len, parts))
    if size > MAX_VALUE_SIZE:
        raise too_large("concat()", size)
    return "".join(parts)


def _coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


def _round(x: Any, ndigits: Any = None) -> Any:
    if x is None:
        return None
    if type(x) not in NUMBERS:
        raise TypeError(f"round() expects a number, got {show(x)}")
    if ndigits is not None and not -MAX_ROUND_DIGITS <= _int_arg("round", ndigits) <= MAX_ROUND_DIGITS:
        # round(7, -10**8) computes 10**(10**8): seconds of CPU for a 9-digit field.
        raise ValueError(f"round() digits must be between {-MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}, got {ndigits}")
    return builtins.round(x, ndigits)


def _abs(x: Any) -> Any:
    if x is None:
        return None
    if type(x) not in NUMBERS:
        raise TypeError(f"abs() expects a number, got {show(x)}")
    return builtins.abs(x)


def _str(x: Any) -> Any:
    if x is None:
        return None
    result = to_string(x)
    if len(result) > MAX_VALUE_SIZE:
        raise too_large("str()", len(result))
    return result


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
    s = _text("replace", s)
    old = _text("replace", old)
    new = _text("replace", new)
    growth = len(new) - len(old)
    if growth > 0 and (len(s) + 1) * growth + len(s) > MAX_VALUE_SIZE:
        # Each match grows the result (an empty ``old`` matches between every two characters); the
        # bound above assumes a match everywhere, the exact size is counted before anything is built.
        size = len(s) + (s.count(old) if old else len(s) + 1) * growth
        if size > MAX_VALUE_SIZE:
            raise too_large("replace()", size)
    return s.replace(old, new)


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
