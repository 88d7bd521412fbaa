"""Confirming suspects by key, and repairing them through the pipeline's delivery path.

A running pipeline keeps writing while a reconciliation walks the tables, so a
difference seen during the walk may be an event in flight. Each suspect is
read again from both sides by key (in groups of ``confirm_batch``) right
before it is reported; one that now matches is counted as *settled*, not as
drift. With ``repair``, each group's confirmed drift is written at once, from
that fresh read:

- missing (source row, no destination row): the transformed row as a ``snapshot`` (an upsert);
- different: the transformed row as an ``update`` whose ``changed`` names only the
  differing fields, so other fields edited in the destination meanwhile survive;
- extra (destination row, no source row): a ``delete`` of its key.

Repair events carry no position, so a destination's exactly-once bookkeeping
(which skips positions at or before the applied one) never skips them and
is not moved by them. They go through the engine's RetryingWriter and
DeadLetterWriter: what cannot be written is parked in the pipeline's
dead-letter queue (a key already parked there is parked behind it, keeping
per-key order), and writing them again changes nothing.

The race that remains: between the re-read and the write (milliseconds), the
pipeline may write a newer change of the same record, which the repair then
overwrites with the value just read. The destination is then stale for that
record until its next change or the next reconciliation. A reconciliation
without ``repair`` writes nothing and has no such race.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tidesync.event import DELETE, SNAPSHOT, UPDATE, ChangeEvent, Key, Row
from tidesync.reconcile.compare import CKey, Entry, Lineup, Suspect
from tidesync.reconcile.side import Reader

Repair = Callable[[list[ChangeEvent]], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str  # missing, extra, different
    key: Key
    fields: tuple[str, ...] = ()
    source: Row | None = None  # the expected destination row (transformed)
    dest: Row | None = None


@dataclass
class Settled:
    missing: int = 0
    extra: int = 0
    different: int = 0
    settled: int = 0
    unmappable: int = 0
    repaired: int = 0
    dead_lettered: int = 0
    listed: list[Difference] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return self.missing + self.extra + self.different


async def settle(
    lineup: Lineup,
    src: Reader,
    dst: Reader,
    suspects: dict[CKey, Suspect],
    *,
    batch: int,
    max_listed: int,
    now: Callable[[], float],
    repair: Repair | None = None,
) -> Settled:
    out = Settled()
    items = list(suspects.items())
    for i in range(0, len(items), batch):
        group = items[i : i + batch]
        src_keys = [s.source_key or s.dest_key for _, s in group]
        dst_keys = [s.dest_key or s.source_key for _, s in group]
        exp, failed = lineup.expected(await src.rows_by_key(_unique(src_keys)))
        act = lineup.actual(await dst.rows_by_key(_unique(dst_keys)))
        events: list[ChangeEvent] = []
        for ck, _ in group:
            if ck in failed:
                out.unmappable += 1
                continue
            diff, event = _judge(lineup, exp.get(ck), act.get(ck), now())
            if diff is None:
                out.settled += 1
                continue
            setattr(out, diff.kind, getattr(out, diff.kind) + 1)
            if len(out.listed) < max_listed:
                out.listed.append(diff)
            if event is not None:
                events.append(event)
        if repair is not None and events:
            parked = await repair(events)
            out.dead_lettered += parked
            out.repaired += len(events) - parked
    return out


def _unique(keys: Sequence[Key | None]) -> list[Key]:
    return list(dict.fromkeys(k for k in keys if k is not None))


def _judge(
    lineup: Lineup, e: Entry | None, a: Entry | None, now: float
) -> tuple[Difference | None, ChangeEvent | None]:
    if e is not None and a is not None:
        if e.hash == a.hash:
            return None, None
        fields = lineup.differing_fields(e, a)
        assert e.event is not None
        event = e.event.replace(op=UPDATE, before=None, changed=fields, position=(), committed_at=now)
        return Difference("different", e.key, fields, e.row, a.row), event
    if e is not None:
        assert e.event is not None
        event = e.event.replace(op=SNAPSHOT, before=None, changed=None, position=(), committed_at=now)
        return Difference("missing", e.key, (), e.row, None), event
    if a is not None:
        event = ChangeEvent(lineup.pair.entity, a.key, DELETE, before=a.row, committed_at=now)
        return Difference("extra", a.key, (), None, a.row), event
    return None, None
