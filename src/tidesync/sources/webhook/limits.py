"""The shape a delivery may have: nesting depth, width of each object or array, and total number of values.

Checked at intake, on the parsed body, before anything is journaled: a body
past a limit is answered 400 with :class:`ShapeError`'s message, so nothing
that would later fail to map or encode (an event nested a thousand levels
deep makes every recursive walk fail) ever reaches the journal.

The check is one iterative pass over the containers (it never recurses, so
no depth can make *it* fail) and never looks at a scalar twice; on a
Stripe-sized event it adds some microseconds to a delivery that costs a
journal commit (``bench/webhook_shape.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidesync.sources.webhook.provider import Malformed

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_WIDTH = 10_000
DEFAULT_MAX_VALUES = 200_000


class ShapeError(Malformed):
    """The body is valid JSON but nests too deep or holds too many values (answered 400)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason  # the rejection counter's label: too_deep, too_wide, too_many_values
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ShapeLimits:
    """``max_depth`` objects/arrays nested in each other (the body itself is level 1), ``max_width``
    keys of one object or items of one array, ``max_values`` values in the whole body (every
    object, array and scalar below the top)."""

    max_depth: int = DEFAULT_MAX_DEPTH
    max_width: int = DEFAULT_MAX_WIDTH
    max_values: int = DEFAULT_MAX_VALUES

    def check(self, doc: Any) -> None:
        """Raise :class:`ShapeError` when ``doc`` (as parsed from JSON) is past a limit."""
        t = type(doc)
        if t is not dict and t is not list:
            return
        max_depth, max_width, max_values = self.max_depth, self.max_width, self.max_values
        values = 0
        stack: list[tuple[Any, int]] = [(doc, 1)]
        pop, push = stack.pop, stack.append
        while stack:
            node, depth = pop()
            if depth > max_depth:
                raise ShapeError("too_deep", f"body nested deeper than {max_depth} levels")
            n = len(node)
            if n > max_width:
                what = "keys in one object" if type(node) is dict else "items in one array"
                raise ShapeError("too_wide", f"body has more than {max_width} {what}")
            values += n
            if values > max_values:
                raise ShapeError("too_many_values", f"body has more than {max_values} values")
            deeper = depth + 1
            for child in node.values() if type(node) is dict else node:
                c = type(child)
                if c is dict or c is list:
                    push((child, deeper))
