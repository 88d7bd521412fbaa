"""The bounds that keep one record's expression from costing more than its size.

A record's values come from outside (a webhook body, a source row); an
expression is trusted configuration. Whatever an expression computes must
cost time and memory in proportion to the record, never to a *number* in it:
``'%0800000000d' % 7``, ``note * qty`` or ``round(x, -10**8)`` would turn a
29-byte body into 800 MB or a 5-second stall of the event loop. So:

- ``* / // %`` and unary minus take numbers only (int, float, Decimal; not
  bool): no string repetition or ``%`` formatting. ``**`` is not in the
  language at all.
- ``+`` of two strings, bytes or lists, ``concat()``, ``replace()``,
  ``upper()``/``lower()``, ``str()`` and the ``string`` cast make at most
  :data:`MAX_VALUE_SIZE` characters (bytes, items); the size is checked
  before the value is built wherever it can be known beforehand.
- ``round(x, n)``: ``|n| <= MAX_ROUND_DIGITS``.
- A Decimal becomes an int (``int()``, ``cast: int``) only with at most
  :data:`MAX_INT_DIGITS` digits (Python's own limit for int/str conversion).

These are fixed: no real transform comes near them. Breaking one raises
:class:`LimitExceeded` (a ValueError), which the stage reports as a failure of
that one record (dead-lettered with the message), like a division by zero.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

MAX_VALUE_SIZE: Final = 1 << 20  # characters of a str, bytes of a bytes, items of a list: 1 MiB
MAX_ROUND_DIGITS: Final = 50
MAX_INT_DIGITS: Final = 4300  # sys.get_int_max_str_digits()'s default

NUMBERS: Final = frozenset({int, float, Decimal})
SIZED: Final = frozenset({str, bytes, list})


class LimitExceeded(ValueError):
    """An expression or cast would make a value beyond a bound of :mod:`tidesync.transform.limits`."""


def too_large(what: str, size: int) -> LimitExceeded:
    return LimitExceeded(f"{what} would make a value of {size:,} characters (the limit is {MAX_VALUE_SIZE:,})")
