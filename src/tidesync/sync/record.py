"""What a sync remembers about one record, and how that is stored.

A record is known by a *record id* (``rid``, a tuple) that never changes: the
canonical key when both sides share their key, else ``(side, *key)`` of the
side it was first seen on. For each record the state holds:

- ``keys``: its key on each side (None where it does not exist yet);
- ``shadow``: per field, the last value both sides agreed on (:class:`Agreed`:
  the value, the source commit time of the edit it came from, the side that
  made that edit, or ``merge``/``manual``);
- ``image``: per side and field, the last value tidesync saw on that side or
  wrote there (:class:`Seen`: canonical value, commit time, and the side's own
  form ``raw`` when a transform makes it differ);
- ``gone``: per side, when the record was deleted there (None: alive);
- ``conflicts``: field -> id of the pending manual conflict of that field;
- ``pending``: side -> canonical rows of inserts whose outcome is not known
  (committed before an insert runs: after a crash, a row found there is
  known to be the sync's own, so it is neither created twice nor mistaken
  for a conflicting edit);
- ``sent``: side -> field -> the ledger of the sync's field writes to that
  side, committed before each write is made, until its echo comes back: after
  a crash the echo is still known as the sync's own, so it neither counts an
  increment twice nor passes for an edit of that side (see :mod:`.echo`);
- ``stream``: per side, the row as that side's change stream last showed it
  (never moved by the sync's own writes): a change event that carries the
  whole row is narrowed to the fields that differ from it, so a field the
  event did not change cannot undo a newer value the sync wrote there (a
  Postgres update carries every column, changed or not);
- ``unconfirmed``: sides where the sync deleted the record and that side's
  delete event has not come back yet: any change of the record arriving from
  that side before it was committed before the delete, and is stale.

Values are canonical: A's field names and A's representation. The state is
stored as one :class:`~tidesync.state.store.ShadowRow` (scope ``sync:<name>``,
entity ``record``) with compact keys, and commits atomically with both sides'
positions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tidesync.event import Key

Side = Literal["a", "b"]
SIDES: Final[tuple[Side, Side]] = ("a", "b")


def other(side: Side) -> Side:
    return "b" if side == "a" else "a"


class _NoRaw:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_RAW"


NO_RAW: Final[Any] = _NoRaw()


@dataclass(frozen=True, slots=True)
class Seen:
    """A side's last known value of a field: canonical ``value`` at source commit time ``at``."""

    value: Any
    at: float
    raw: Any = NO_RAW  # the side's own form, when a transform makes it differ from ``value``

    def side_value(self) -> Any:
        return self.value if self.raw is NO_RAW else self.raw

    def to_list(self) -> list[Any]:
        return [self.value, self.at] if self.raw is NO_RAW else [self.value, self.at, self.raw]

    @classmethod
    def from_list(cls, data: list[Any]) -> Seen:
        return cls(data[0], data[1], data[2] if len(data) > 2 else NO_RAW)


@dataclass(frozen=True, slots=True)
class Agreed:
    """A value both sides hold: from an edit committed at ``at`` on ``side`` (``a``, ``b``, ``merge``, ``manual``)."""

    value: Any
    at: float
    side: str


@dataclass(slots=True)
class RecordState:
    rid: Key
    keys: dict[str, Key | None] = field(default_factory=lambda: {"a": None, "b": None})
    shadow: dict[str, Agreed] = field(default_factory=dict)
    image: dict[str, dict[str, Seen]] = field(default_factory=lambda: {"a": {}, "b": {}})
    gone: dict[str, float | None] = field(default_factory=lambda: {"a": None, "b": None})
    conflicts: dict[str, str] = field(default_factory=dict)
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unconfirmed: set[str] = field(default_factory=set)
    sent: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    stream: dict[str, dict[str, Any]] = field(default_factory=dict)

    def copy(self) -> RecordState:
        # Seen/Agreed are frozen; the maps around them are copied one level deep.
        return RecordState(
            self.rid,
            dict(self.keys),
            dict(self.shadow),
            {"a": dict(self.image["a"]), "b": dict(self.image["b"])},
            dict(self.gone),
            dict(self.conflicts),
            copy.deepcopy(self.pending),
            set(self.unconfirmed),
            copy.deepcopy(self.sent),
            {side: dict(row) for side, row in self.stream.items()},
        )

    def alive(self, side: Side) -> bool:
        return self.keys[side] is not None and self.gone[side] is None

    def reset(self) -> None:
        """Forget the record's values and keys: it starts a new life.

        ``unconfirmed`` stays: it is about events still on their way, not about the record.
        """
        self.keys = {"a": None, "b": None}
        self.shadow = {}
        self.image = {"a": {}, "b": {}}
        self.gone = {"a": None, "b": None}
        self.conflicts = {}
        self.pending = {}

    # --- storage ----------------------------------------------------------------------------

    def to_row(self) -> dict[str, Any]:
        return {
            "k": {s: (list(k) if k is not None else None) for s, k in self.keys.items()},
            "s": {f: [a.value, a.at, a.side] for f, a in self.shadow.items()},
            "i": {s: {f: v.to_list() for f, v in img.items()} for s, img in self.image.items()},
            "g": dict(self.gone),
            "c": dict(self.conflicts),
            "p": self.pending,
            "u": sorted(self.unconfirmed),
            "w": self.sent,
            "r": self.stream,
        }

    @classmethod
    def from_row(cls, rid: Key, row: dict[str, Any]) -> RecordState:
        return cls(
            rid,
            {s: (tuple(k) if k is not None else None) for s, k in row["k"].items()},
            {f: Agreed(v[0], v[1], v[2]) for f, v in row["s"].items()},
            {s: {f: Seen.from_list(v) for f, v in img.items()} for s, img in row["i"].items()},
            dict(row["g"]),
            dict(row["c"]),
            {s: list(rows) for s, rows in (row.get("p") or {}).items()},
            set(row.get("u") or ()),
            {s: {f: list(v) for f, v in m.items()} for s, m in (row.get("w") or {}).items()},
            {s: dict(r) for s, r in (row.get("r") or {}).items()},
        )


def same(x: Any, y: Any) -> bool:
    """Value equality for sync decisions (lists and tuples of equal items are the same)."""
    if x is y:
        return True
    if isinstance(x, tuple):
        x = list(x)
    if isinstance(y, tuple):
        y = list(y)
    try:
        return bool(x == y)
    except Exception:  # an exotic type whose == raises: treat as different
        return False
