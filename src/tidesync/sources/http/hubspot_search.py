"""HubSpot CRM search as a change feed: time windows under the 10,000-result ceiling, ties paged by id (pure).

``POST /crm/v3/objects/{type}/search`` takes ``filterGroups`` (filters ANDed
inside a group), ONE sort rule, ``properties``, ``limit`` (at most 100, or 200
lately) and ``after`` (an offset, as text). It answers ``{total, results:
[{id, properties, createdAt, updatedAt, archived}], paging: {next: {after}}}``
and refuses (400) any ``after`` past 10,000 results: a query can never read
more than 10,000 records.

A :class:`Pass` reads every record whose cursor property (``hs_lastmodifieddate``,
``lastmodifieddate`` for contacts; epoch milliseconds) lies in ``(lo, end]``,
one page per :meth:`Pass.request` / :meth:`Pass.advance` round:

- A *window* ``(lo, hi]`` is read in ascending cursor order, 100 per page,
  paging with ``after``. Its first page tells ``total``; when that exceeds
  the ceiling, ``hi`` moves down to where that page's density puts about half
  the ceiling's worth of records (always below the old ``hi``, never below
  the page's last value less one millisecond, so every narrowing shrinks the
  window and none empties it), and the window is asked again until it fits.
  When it is read, the next window is ``(hi, end]`` (narrowed again if needed).
- A window one millisecond wide that still exceeds the ceiling (a bulk
  update that stamped more than 10,000 records with one time) is read by id
  instead: ``cursor EQ t AND hs_object_id GT <last id>`` sorted by id, each
  query starting after the last id read, so it never pages past the ceiling
  and always moves forward. This is the tie that made other connectors loop
  forever re-reading "everything at or after the last timestamp".
- Offsets shift when records leave the window (modified again while it is
  read) or enter it (indexed late): a page whose ``total`` differs from the
  first page's restarts the window just below the last cursor value read.
  What is read twice is de-duplicated by the caller (shadow rows).

A pass is resumable from :meth:`Pass.marks`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

ID_PROPERTY = "hs_object_id"


def cursor_ms(value: Any) -> int | None:
    """A cursor property's value as epoch milliseconds (HubSpot sends ISO 8601 text, or ms as text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return round(moment.timestamp() * 1000)


def _id_number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass
class Pass:
    """Reading ``(lo, end]`` of one object type's cursor property."""

    cursor: str
    lo: int
    end: int
    hi: int = 0  # the current window's end
    after: str | None = None  # the next page's offset inside the window
    total: int | None = None  # the window's size, from its first page
    last: int | None = None  # the cursor of the last record read in the window
    tie: int | None = None  # when reading one millisecond by id: the last id read
    limit: int = 100
    ceiling: int = 10_000
    splits: int = 0  # windows narrowed (for tests and logs)

    def __post_init__(self) -> None:
        if not self.hi:
            self.hi = self.end

    @property
    def done(self) -> bool:
        return self.lo >= self.end

    def marks(self) -> tuple[Any, ...]:
        return (self.lo, self.end, self.hi, self.after, self.total, self.last, self.tie)

    @classmethod
    def restore(cls, cursor: str, marks: Any, limit: int, ceiling: int) -> Pass:
        lo, end, hi, after, total, last, tie = marks
        return cls(cursor, lo, end, hi, after, total, last, tie, limit, ceiling)

    def request(self, properties: list[str] | None) -> dict[str, Any]:
        """The search body for the next page."""
        if self.tie is not None:
            filters = [
                {"propertyName": self.cursor, "operator": "EQ", "value": str(self.hi)},
                {"propertyName": ID_PROPERTY, "operator": "GT", "value": str(self.tie)},
            ]
            sort = ID_PROPERTY
        else:
            filters = [
                {"propertyName": self.cursor, "operator": "GT", "value": str(self.lo)},
                {"propertyName": self.cursor, "operator": "LTE", "value": str(self.hi)},
            ]
            sort = self.cursor
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "limit": self.limit,
        }
        if properties is not None:
            wanted = [*properties, *(p for p in (self.cursor, ID_PROPERTY) if p not in properties)]
            body["properties"] = wanted
        if self.after is not None and self.tie is None:
            body["after"] = self.after
        return body

    def advance(self, answer: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Take a page's answer; the records to use (None: the page was dropped, ask again)."""
        results = answer.get("results")
        if not isinstance(results, list):
            raise ValueError("a search answer needs results: [...]")
        total = answer.get("total")
        nxt = ((answer.get("paging") or {}).get("next") or {}).get("after")
        if self.tie is not None:
            if results:
                self.tie = max(_id_number(r.get("id")) for r in results)
            if len(results) < self.limit or not nxt:
                self._window_done()
            return results
        if self.after is None:
            if isinstance(total, int) and total > self.ceiling:
                self._narrow([cursor_ms((r.get("properties") or {}).get(self.cursor)) for r in results])
                return None
            self.total = total if isinstance(total, int) else None
        elif isinstance(total, int) and self.total is not None and total != self.total:
            self._restart()
            return None
        last = [c for c in (cursor_ms((r.get("properties") or {}).get(self.cursor)) for r in results) if c is not None]
        if last:
            self.last = max(last)
        if nxt and results:
            self.after = str(nxt)
            if _id_number(nxt) >= self.ceiling:  # the window grew past the ceiling since its first page
                self._restart()
        else:
            self._window_done()
        return results

    def _narrow(self, stamps: list[int | None]) -> None:
        """A window over the ceiling: move ``hi`` down, guided by its first page (ascending cursor values)."""
        self.splits += 1
        ts = [t for t in stamps if t is not None]
        if not ts or ts[-1] <= self.lo:
            self.hi = self.lo + max(1, (self.hi - self.lo) // 2)  # nothing to go by: halve
        elif ts[0] == ts[-1]:
            if ts[0] >= self.hi:
                self.tie = 0  # the window's records all carry its last millisecond: read it by id
            else:
                self.hi = ts[0]  # a full page of one millisecond: try the window up to it
        else:
            # about half the ceiling's worth at the page's density, when that is below hi; else just
            # before the page's last value (every record below that is on the page: the window fits)
            # (nothing lies between lo and the first record: the density is the page's own)
            estimate = ts[0] - 1 + (ts[-1] - ts[0] + 1) * (self.ceiling // 2) // len(ts)
            self.hi = estimate if ts[-1] - 1 <= estimate < self.hi else ts[-1] - 1

    def _restart(self) -> None:
        """Read the window again from just below the last cursor value read (ties there are read again)."""
        if self.last is not None and self.last - 1 > self.lo:
            self.lo = self.last - 1
        self.after, self.total, self.last = None, None, None

    def _window_done(self) -> None:
        self.lo = self.hi
        self.hi = self.end
        self.after, self.total, self.last, self.tie = None, None, None, None


@dataclass
class Archived:
    """Reading ``GET /crm/v3/objects/{type}?archived=true`` for records archived in ``(lo, end]`` (epoch ms).

    The list answers ``{results: [{id, properties, createdAt, updatedAt,
    archived: true, archivedAt}], paging: {next: {after}}}`` in id order and
    has no filter on ``archivedAt``: a pass pages through the whole list and
    keeps the records whose ``archivedAt`` lies in its range. A record
    archived while the pass reads is later than ``end`` (the pass's start
    less ``settle``): the next pass takes it. Resumable from :meth:`marks`.
    """

    lo: int
    end: int
    after: str | None = None  # the next page's cursor
    limit: int = 100  # the list allows 100 per page
    done: bool = False

    def marks(self) -> tuple[Any, ...]:
        return (self.lo, self.end, self.after)

    @classmethod
    def restore(cls, marks: Any, limit: int) -> Archived:
        lo, end, after = marks
        return cls(lo, end, after, min(limit, 100))

    def params(self, properties: list[str]) -> dict[str, str]:
        """The query string of the next page."""
        params = {"archived": "true", "limit": str(min(self.limit, 100)), "properties": ",".join(properties)}
        if self.after is not None:
            params["after"] = self.after
        return params

    def advance(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """Take a page's answer; the records in it archived inside the pass's range."""
        results = answer.get("results")
        if not isinstance(results, list):
            raise ValueError("a list answer needs results: [...]")
        nxt = ((answer.get("paging") or {}).get("next") or {}).get("after")
        if nxt and results:
            self.after = str(nxt)
        else:
            self.after, self.done = None, True
        kept = []
        for r in results:
            at = cursor_ms(r.get("archivedAt")) if isinstance(r, dict) else None
            if at is not None and self.lo < at <= self.end:
                kept.append(r)
        return kept
