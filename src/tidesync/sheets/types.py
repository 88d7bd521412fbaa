"""Cell typing: what a spreadsheet cell becomes in a row, and what a row value becomes in a cell.

Reading, without a declared type (``auto``):

- an empty cell is None;
- an xlsx cell keeps its stored type: numbers become ``int`` when integral,
  else the ``Decimal`` of the shortest text that reads back as the same
  double (``0.1`` is ``Decimal("0.1")``, as the user typed it); text stays
  text, so ``"0123"`` stored as text is never a number; booleans, dates,
  datetimes and times stay what they are;
- a csv cell is text, read as: ``true``/``false`` (any case) a bool; an
  integer without a leading zero (``0`` itself, ``-12``) an ``int``; a plain
  decimal (``-1.50``) a ``Decimal`` (exact); ``YYYY-MM-DD`` a date;
  ``YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]][±HH:MM|Z]`` a datetime; anything else,
  ``0123`` (a phone number), ``1e5`` and ``1,234`` included, stays text.

A declared type (``columns: {price: decimal}``) converts strictly and says
why it cannot, as :class:`CellError`; the caller prefixes the cell's address
(``Sheet1!D17: 'abc' is not a number``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

ColumnType = Literal["auto", "text", "integer", "number", "decimal", "float", "bool", "date", "datetime"]

_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_DEC = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?\Z"
)
_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})


class CellError(ValueError):
    """A cell's value cannot be read as its column's declared type; the message says why."""


def from_xlsx(value: Any) -> Any:
    """A python-calamine cell value as a row value (see the module docstring)."""
    t = type(value)
    if t is str:
        return value if value != "" else None
    if t is float:
        if value.is_integer():
            return int(value)
        return Decimal(repr(value))
    return value


def from_csv(text: str) -> Any:
    """A csv cell's text as a row value, inferred (see the module docstring)."""
    if text == "":
        return None
    c = text[0]
    if c.isdigit() or c == "-":
        if _INT.match(text):
            return int(text)
        if _DEC.match(text):
            return Decimal(text)
        if _DATE.match(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                return text
        if _DATETIME.match(text):
            try:
                return dt.datetime.fromisoformat(text)
            except ValueError:
                return text
        return text
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    return text


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else repr(str(value))


def _integer(v: Any) -> int:
    if isinstance(v, bool):
        raise CellError(f"{_show(v)} is not an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, (float, Decimal)) and v == int(v):
        return int(v)
    if isinstance(v, str) and _INT.match(v.strip()):
        return int(v.strip())
    raise CellError(f"{_show(v)} is not an integer")


def _decimal(v: Any) -> Decimal:
    if isinstance(v, bool):
        raise CellError(f"{_show(v)} is not a number")
    if isinstance(v, Decimal):
        return v
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, str):
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            raise CellError(f"{_show(v)} is not a number") from None
        if d.is_finite():
            return d
    raise CellError(f"{_show(v)} is not a number")


def _number(v: Any) -> int | Decimal:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and _INT.match(v.strip()):
        return int(v.strip())
    return _decimal(v)


def _float(v: Any) -> float:
    try:
        return float(_decimal(v))
    except CellError:
        raise CellError(f"{_show(v)} is not a number") from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, Decimal)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        low = v.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise CellError(f"{_show(v)} is not a boolean (true/false)")


def _date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        if v.time() == dt.time(0):
            return v.date()
        raise CellError(f"{_show(v)} is not a date (it has a time of day)")
    if isinstance(v, dt.date):
        return v
    if isinstance(v, str) and _DATE.match(v.strip()):
        try:
            return dt.date.fromisoformat(v.strip())
        except ValueError:
            pass
    raise CellError(f"{_show(v)} is not a date (YYYY-MM-DD)")


def _datetime(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    if isinstance(v, str):
        s = v.strip()
        if _DATETIME.match(s) or _DATE.match(s):
            try:
                return dt.datetime.fromisoformat(s)
            except ValueError:
                pass
    raise CellError(f"{_show(v)} is not a datetime (YYYY-MM-DD HH:MM:SS)")


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    return str(v)


CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "text": _text,
    "integer": _integer,
    "number": _number,
    "decimal": _decimal,
    "float": _float,
    "bool": _bool,
    "date": _date,
    "datetime": _datetime,
}


def convert(value: Any, kind: str) -> Any:
    """``value`` (already read as auto) as the declared ``kind``; None stays None. Raises CellError."""
    if value is None or kind == "auto":
        return value
    return CONVERTERS[kind](value)


def to_text(value: Any) -> str:
    """A row value as csv text: the inverse of :func:`from_csv` for the types it infers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, default=str)
    return str(value)


def to_xlsx(value: Any) -> Any:
    """A row value as an openpyxl cell value. Excel has no time zones: aware times become UTC wall time."""
    if value is None or isinstance(value, (str, bool, int, float, Decimal)):
        return value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, dt.time):
        return value.replace(tzinfo=None)
    if isinstance(value, (dt.date, dt.timedelta)):
        return value
    return to_text(value)


def canonical(value: Any) -> str:
    """One text per key value, so a key matches across formats (``5``, ``5.0``, ``"5"`` and ``Decimal(5)``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")
    if isinstance(value, str):
        return from_csv_canonical(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def from_csv_canonical(text: str) -> str:
    """A key cell's text, canonical when it reads as a number (``"5"`` and ``5`` are one key)."""
    v = from_csv(text)
    if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
        return canonical(v)
    return text
