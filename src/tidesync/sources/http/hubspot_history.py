"""Per-property change times of HubSpot records, from ``propertiesWithHistory`` (pure, but for one read).

HubSpot keeps the values each property held. ``POST /crm/v3/objects/{type}/batch/read``
with ``{inputs: [{id}], properties: [...], propertiesWithHistory: [...]}``
answers, per record, ``propertiesWithHistory: {name: [{value, timestamp,
sourceType, sourceId, sourceLabel, updatedByUserId}]}``, newest first
(``timestamp`` ISO 8601). With history a call takes at most 50 inputs
(:data:`HISTORY_BATCH`; HubSpot refuses more with 400, "The maximum number of
inputs supported in a batch request for property histories is 50"), half the
100 of a plain batch read. A record the read cannot find (archived since the
search) is in the answer's ``errors`` (207): it has no history here.

An update the source read (a record against its shadow: ``changed``) becomes
:func:`steps`, one per distinct time, oldest first. A changed property's time
is that of its newest history entry holding the value the search read (a
change made after the search is newer and is skipped: the next pass reads
it), never later than the record's cursor time; a property without such an
entry takes the cursor time. The record's own modification-time properties
(the cursor, ``hs_lastmodifieddate``, ``lastmodifieddate``) change with every
edit and go with the last step, so they never make a step of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.event import Row
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.hubspot_search import cursor_ms

HISTORY_BATCH = 50  # inputs per batch read with propertiesWithHistory (100 without)
MODIFIED = frozenset({"hs_lastmodifieddate", "lastmodifieddate"})

History = dict[str, list[tuple[str, int]]]  # property -> [(value as text, epoch ms)], newest first


@dataclass(frozen=True, slots=True)
class Step:
    """The properties of an update last changed at ``at_ms`` (epoch ms), in the update's ``changed`` order."""

    at_ms: int
    changed: tuple[str, ...]


def _text(value: Any) -> str:
    """A value as HubSpot's history holds it: text, an unset property as empty text."""
    return "" if value is None else str(value)


def parse(answer: Any) -> dict[str, History]:
    """A batch read's answer as ``{record id: {property: [(value, ms)]}}`` (entries without a time are left out)."""
    out: dict[str, History] = {}
    results = answer.get("results") if isinstance(answer, dict) else None
    for r in results if isinstance(results, list) else ():
        if not isinstance(r, dict) or not isinstance(r.get("id"), (str, int)):
            continue
        history: History = {}
        for name, entries in (r.get("propertiesWithHistory") or {}).items():
            kept = []
            for e in entries if isinstance(entries, list) else ():
                ms = cursor_ms(e.get("timestamp")) if isinstance(e, dict) else None
                if ms is not None:
                    kept.append((_text(e.get("value")), ms))
            history[name] = sorted(kept, key=lambda vm: -vm[1])  # newest first, whatever order came
        out[str(r["id"])] = history
    return out


async def read(client: ApiClient, object_type: str, ids: Sequence[str], names: Sequence[str]) -> dict[str, History]:
    """The history of ``names`` for records ``ids``, :data:`HISTORY_BATCH` records a request."""
    out: dict[str, History] = {}
    for i in range(0, len(ids), HISTORY_BATCH):
        body = {"inputs": [{"id": rid} for rid in ids[i : i + HISTORY_BATCH]], "properties": list(names),
                "propertiesWithHistory": list(names)}  # fmt: skip
        out.update(parse(await client.post(f"/crm/v3/objects/{object_type}/batch/read", body)))
    return out


def changed_at(entries: Iterable[tuple[str, int]], value: Any) -> int | None:
    """When a property took ``value``: the newest entry holding it (None when no entry does)."""
    text = _text(value)
    for held, ms in entries:
        if held == text:
            return ms
    return None


def steps(changed: Sequence[str], row: Mapping[str, Any], history: History | None, *, record_ms: int,
          cursor: str) -> list[Step]:  # fmt: skip
    """The update's properties grouped by the time each last changed, oldest first (see the module docstring)."""
    modified = MODIFIED | {cursor}
    times: dict[str, int] = {}
    for name in changed:
        if name in modified:
            continue
        at = changed_at((history or {}).get(name, ()), row.get(name))
        times[name] = record_ms if at is None else min(at, record_ms)
    if not times:
        return [Step(record_ms, tuple(changed))]
    order = sorted(set(times.values()))
    last = order[-1]
    return [
        Step(t, tuple(n for n in changed if times.get(n) == t or (t == last and n in modified and n not in times)))
        for t in order
    ]


def rows(shadow: Row, row: Row, plan: Sequence[Step]) -> list[tuple[Row, Row]]:
    """``(before, after)`` of each step: the shadow with the properties of the steps so far set as read;
    the last step's ``after`` is the record as read."""
    out: list[tuple[Row, Row]] = []
    current = dict(shadow)
    for i, step in enumerate(plan):
        if i == len(plan) - 1:
            after = dict(row)
        else:
            after = dict(current)
            for name in step.changed:
                if name in row:
                    after[name] = row[name]
                else:
                    after.pop(name, None)
        out.append((current, after))
        current = after
    return out
