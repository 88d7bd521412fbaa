"""A small JSON path syntax for the generic mapping: ``data.object.id``, ``items[0].x``, ``$`` (the whole document).

A path is a dotted list of names, each optionally followed by ``[n]`` indexes
(negative counts from the end). Names are any characters but ``.`` and ``[``.
:func:`compile_path` checks the syntax once, at config load; :func:`lookup`
returns :data:`MISSING` when the document does not have the path.
"""

from __future__ import annotations

import re
from typing import Any, Final

PathPart = str | int
MISSING: Final = object()
_PART = re.compile(r"([^.\[\]]*)((?:\[-?\d+\])*)")
_INDEX = re.compile(r"\[(-?\d+)\]")


def compile_path(text: str) -> tuple[PathPart, ...]:
    """``"a.b[0].c"`` → ``("a", "b", 0, "c")``; ``"$"`` or ``""`` → ``()``. Raises ValueError on bad syntax."""
    text = text.strip()
    if text in ("", "$"):
        return ()
    if text.startswith("$."):
        text = text[2:]
    parts: list[PathPart] = []
    for segment in text.split("."):
        m = _PART.fullmatch(segment)
        if m is None or (not m.group(1) and not m.group(2)):
            raise ValueError(f"bad path {text!r}: use names separated by dots, with [n] for list items")
        if m.group(1):
            parts.append(m.group(1))
        parts.extend(int(i) for i in _INDEX.findall(m.group(2)))
    return tuple(parts)


def lookup(doc: Any, path: tuple[PathPart, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or not -len(doc) <= part < len(doc):
                return MISSING
            doc = doc[part]
        else:
            if not isinstance(doc, dict) or part not in doc:
                return MISSING
            doc = doc[part]
    return doc
