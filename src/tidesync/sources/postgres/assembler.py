"""Raw pgoutput messages in, ChangeEvents and checkpointable positions out.

Synchronous and free of I/O except the spill files: the source feeds it the
bytes the replication thread received and asks for batches.

Positions (all tuples of ints, totally ordered):

- an event of a transaction: ``(commit_lsn, index_in_tx)``, index from 0 in
  the order of the transaction's changes, so replays number them the same;
- the end of a transaction: ``(end_lsn, -1)``, where ``end_lsn`` is the end
  of its commit record. It sorts after every event of the transaction (their
  ``commit_lsn`` is smaller) and before every event of a later one (whose
  commit record starts at or after ``end_lsn``; -1 sorts first at equal LSN).
  Sending ``end_lsn`` as the flush position is exactly "everything up to
  here is handled": the server skips transactions that committed before it;
- snapshot rows: ``(0, table_index, run, chunk, row)`` (keyless tables:
  ``(0, table_index, 0, ordinal, 0)``), before every stream position.

A batch's position is the end of the last whole transaction in it; a batch
cut inside a transaction bigger than ``max_events`` carries None. Events
after the last complete transaction stay for the next batch, so a batch
rarely ends mid-transaction.

Updates: pgoutput sends the new row, plus the old key ('K', only when a key
column changed, replica identity DEFAULT/INDEX) or the whole old row ('O',
REPLICA IDENTITY FULL). Unchanged TOASTed columns ('u') are absent from
``after`` and from ``changed``; with a whole old row they are filled from it
(an unchanged value equals the old one). ``changed``: with a whole old row,
the columns whose value differs; without it, every column present in the new
row (Postgres does not say which ones the UPDATE touched; the row shadows,
:mod:`.fields`, narrow it to the columns that changed, by default). An update that changes the key is
emitted as a delete of the old key followed by an insert of the new row.

Driving it: the source hands over received messages with :meth:`Assembler.feed`
and runs :meth:`Assembler.run`, a generator. A Relation message whose catalog
facts (key, NOT NULL columns, type rows) are not known yet suspends it with a
:class:`NeedRelation` request; the driver fetches the facts (loading the type
rows into the shared :class:`TypeMap`) and sends them back with
``gen.send(facts)``. The generator's return value says why it stopped:
:data:`FULL` (``limit`` events wait) or :data:`IDLE` (input ran out). A
request that is never answered (the generator closed, or an error thrown in)
leaves the Relation message unconsumed, so the next run asks again.
A Relation message whose shape differs from the one known for its table
publishes the new :class:`~tidesync.schema.EntitySchema` (``on_schema``) with
``since`` = the position the next event will take: pgoutput sends it right
before the first change of the table after the DDL, so every event of the
old shape is before it and every event of the new shape at or after it.
Rows are read with :func:`~tidesync.sources.postgres.pgoutput.read_tuple` and
the header layouts of ``pgoutput.py``: the wire format is known in one place.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any, Final

from tidesync.event import DELETE, INSERT, SNAPSHOT, TRUNCATE, UPDATE, ChangeEvent, Position, diff_fields
from tidesync.schema import EntitySchema
from tidesync.sources.postgres.pgoutput import (
    BEGIN,
    COMMIT,
    STREAMABLE,
    U32,
    Message,
    PgoutputDecodeError,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    commit_time,
    decode_message,
    read_tuple,
)
from tidesync.sources.postgres.relation import RelationFacts, RelationInfo, build_relation, entity_name
from tidesync.sources.postgres.spill import SpillDir, SpillFile
from tidesync.sources.postgres.types import TypeMap

IDLE: Final = 0  # no more input
FULL: Final = 1  # limit reached

_unpack_u32 = U32.unpack_from
_unpack_begin = BEGIN.unpack_from
_unpack_commit = COMMIT.unpack_from

HEARTBEAT_PREFIX: Final = "tidesync.heartbeat"
WATERMARK_PREFIX: Final = "tidesync.watermark"

WatermarkHook = Callable[[Message, "Assembler"], None]


@dataclass(frozen=True, slots=True)
class NeedRelation:
    """What :meth:`Assembler.run` yields: send back the :class:`RelationFacts` of ``relation``.

    Before answering, the driver loads the type rows of the relation's columns
    into the assembler's :class:`TypeMap` (``Catalog.resolve`` does both).
    """

    relation: Relation

    @property
    def oid(self) -> int:
        return self.relation.oid


Run = Generator[NeedRelation, RelationFacts, int]


class Assembler:
    """Turns pgoutput messages into events; see the module docstring for positions and updates.

    ``after``: events at or before this position are not produced (resume).
    ``on_schema`` is called with each new or changed entity schema.
    ``on_watermark`` gets every ``tidesync.watermark`` message, in stream order.
    """

    def __init__(
        self,
        types: TypeMap,
        spill: SpillDir,
        *,
        after: Position | None = None,
        on_schema: Callable[[EntitySchema], None] = lambda s: None,
        on_watermark: WatermarkHook | None = None,
    ) -> None:
        self.types = types
        self.spill = spill
        self.on_schema = on_schema
        self.on_watermark = on_watermark
        self.facts: dict[int, RelationFacts] = {}
        self.relations: dict[int, RelationInfo] = {}
        self._fetched: dict[int, Relation] = {}  # last Relation per oid whose facts were fetched
        self._versions: dict[str, int] = {}
        self.live: deque[bytes] = deque()
        self.events: list[ChangeEvent] = []
        self.boundaries: list[tuple[int, Position]] = []
        self.watch: _Watch | None = None
        self.set_after(after)
        # transaction state
        self.lsn = 0
        self.ts = 0.0
        self.xid: int | None = None
        self.origin: str | None = None
        self.idx = 0
        self.skip = False
        self.in_tx = False
        self.last_commit_ts = 0.0
        # streaming state
        self._block: SpillFile | None = None
        self._replay: Iterator[bytes] | None = None
        self._replay_end: tuple[int, SpillFile] | None = None

    # --- resume and reset -------------------------------------------------

    def set_after(self, after: Position | None) -> None:
        self.after = after
        if after is not None and after[0] > 0:
            self.after_lsn = int(after[0])
            self.after_idx = int(after[1]) if len(after) > 1 else -1
        else:
            self.after_lsn = 0
            self.after_idx = -1

    def reset(self, after: Position | None) -> None:
        """Forget everything received but not taken (before reading the stream again after a reconnect)."""
        self.live.clear()
        self.events.clear()
        self.boundaries.clear()
        self.watch = None
        self._fetched.clear()
        self.in_tx = False
        self._block = None
        self._replay = None
        self._replay_end = None
        self.spill.clear()
        self.set_after(after)

    def feed(self, chunk: list[bytes]) -> None:
        self.live.extend(chunk)

    def wants_input(self, max_events: int) -> bool:
        """Fewer than ``max_events`` received messages wait: feeding more will not pile up unboundedly."""
        return len(self.live) < max_events

    @property
    def has_input(self) -> bool:
        """Received messages wait to be decoded."""
        return bool(self.live)

    def close(self) -> None:
        """Delete the spill files (the source is closing)."""
        self.spill.clear()

    # --- relations --------------------------------------------------------

    def needs_lookup(self, rel: Relation) -> bool:
        if self._fetched.get(rel.oid) != rel:
            return True
        return bool(self.types.missing([c.type_oid for c in rel.columns]))

    def resolved(self, rel: Relation, facts: RelationFacts) -> None:
        """The catalog facts (and type rows) for ``rel`` are known."""
        self.facts[rel.oid] = facts
        self._fetched[rel.oid] = rel

    def register(self, rel: Relation, facts: RelationFacts) -> RelationInfo:
        """Know ``rel`` (read from the catalog, for a snapshot) as its Relation message would make it known."""
        self.resolved(rel, facts)
        return self.add_relation(rel)

    def add_relation(self, rel: Relation) -> RelationInfo:
        old = self.relations.get(rel.oid)
        facts = self.facts.get(rel.oid)
        info = build_relation(rel, self.types, facts, self._versions.get(entity_name(rel.namespace, rel.name), 0))
        if old is not None and old.same_shape(info):
            info.schema = old.schema
            self.relations[rel.oid] = info
            return info
        entity = info.entity
        version = self._versions.get(entity, -1) + 1
        self._versions[entity] = version
        info = build_relation(rel, self.types, facts, version)
        # The new shape holds from the next event on: a sink changes the destination before
        # writing that event and after every earlier one (tidesync.schema, SchemaRegistry.shape_at).
        info.schema = replace(info.schema, since=(self.lsn, self.idx) if self.lsn else None)
        self.relations[rel.oid] = info
        self.on_schema(info.schema)
        return info

    def relation_by_entity(self, entity: str) -> RelationInfo | None:
        for info in self.relations.values():
            if info.entity == entity:
                return info
        return None

    # --- the loop ---------------------------------------------------------

    def run(self, limit: int) -> Run:
        """Decode input until ``limit`` events wait (returns FULL) or input runs out (returns IDLE).

        A generator: it yields a :class:`NeedRelation` for each Relation message
        whose facts are not known yet and continues with the facts sent back.
        """
        events = self.events
        append = events.append
        live = self.live
        rels = self.relations
        lsn, ts, xid, origin = self.lsn, self.ts, self.xid, self.origin
        skip = self.skip
        filtering = lsn == self.after_lsn
        after_idx = self.after_idx
        while len(events) < limit:
            if self._replay is not None:
                data = next(self._replay, None)
                if data is None:
                    self._finish_replay()
                    continue
                off = 5
                aborted = self._replay_end[1].aborted if self._replay_end is not None else None
                if aborted and data[0] in STREAMABLE and _unpack_u32(data, 1)[0] in aborted:
                    continue  # a change of a rolled-back subtransaction
            elif live:
                data = live[0]
                if self._block is not None:
                    if data[0] == 82:  # 'R': a streamed transaction's rows are decoded at its commit
                        rel_msg = decode_message(data, in_stream=True)
                        assert isinstance(rel_msg, Relation)
                        if self.needs_lookup(rel_msg):
                            self.resolved(rel_msg, (yield NeedRelation(rel_msg)))
                    self._spill(data)
                    live.popleft()
                    continue
                live.popleft()
                off = 1
            else:
                return IDLE
            kind = data[0]
            try:
                if kind == 73:  # 'I' insert
                    if skip:
                        continue
                    rel = rels[_unpack_u32(data, off)[0]]
                    row, _missing, _ = read_tuple(data, off + 5, rel.cols)
                    idx = self.idx
                    self.idx = idx + 1
                    if filtering and idx <= after_idx:
                        continue
                    append(
                        ChangeEvent(rel.entity, rel.key_of(row), INSERT, None, row, None, (lsn, idx), ts, origin, xid)
                    )
                elif kind == 85:  # 'U' update
                    if skip:
                        continue
                    self._update(data, off, filtering, after_idx)
                elif kind == 68:  # 'D' delete
                    if skip:
                        continue
                    rel = rels[_unpack_u32(data, off)[0]]
                    old_kind = data[off + 4]
                    old, _missing, _ = read_tuple(data, off + 5, rel.cols)
                    if old_kind == 75:  # 'K': only the identity columns are real
                        old = {n: old[n] for n in rel.identity if n in old}
                    idx = self.idx
                    self.idx = idx + 1
                    if filtering and idx <= after_idx:
                        continue
                    append(
                        ChangeEvent(rel.entity, rel.key_of(old), DELETE, old, None, None, (lsn, idx), ts, origin, xid)
                    )
                elif kind == 66:  # 'B' begin
                    final_lsn, commit_ts, bxid = _unpack_begin(data, 1)
                    self.lsn = lsn = final_lsn
                    self.ts = ts = commit_time(commit_ts)
                    self.xid = xid = bxid
                    self.origin = origin = None
                    self.idx = 0
                    self.in_tx = True
                    self.skip = skip = final_lsn < self.after_lsn
                    filtering = final_lsn == self.after_lsn
                elif kind == 67:  # 'C' commit
                    _flags, _commit_lsn, end_lsn, _ts = _unpack_commit(data, 1)
                    self._boundary(end_lsn)
                    self.in_tx = False
                elif kind == 82:  # 'R' relation
                    rel_msg = decode_message(data, in_stream=off == 5)
                    assert isinstance(rel_msg, Relation)
                    if off == 1 and self.needs_lookup(rel_msg):
                        live.appendleft(data)  # consumed only once answered: see the module docstring
                        self.resolved(rel_msg, (yield NeedRelation(rel_msg)))
                        live.popleft()
                    self.add_relation(rel_msg)
                elif kind == 79:  # 'O' origin
                    self.origin = origin = decode_message(data).name  # type: ignore[union-attr]
                elif kind == 84:  # 'T' truncate
                    if not skip:
                        self._truncate(data, off == 5, filtering, after_idx)
                elif kind == 77:  # 'M' logical decoding message
                    msg = decode_message(data, in_stream=off == 5)
                    assert isinstance(msg, Message)
                    if msg.prefix == WATERMARK_PREFIX and self.on_watermark is not None and not skip:
                        self.on_watermark(msg, self)
                elif kind == 89:  # 'Y' type: names only; type details come from the catalog
                    pass
                elif kind == 83:  # 'S' stream start
                    start = decode_message(data)
                    assert isinstance(start, StreamStart)
                    self._block = self.spill.start(start.xid) if start.first_segment else self.spill.get(start.xid)
                elif kind == 69:  # 'E' stream stop (outside a block: nothing to do)
                    self._block = None
                elif kind == 99:  # 'c' stream commit
                    self._stream_commit(data)
                    lsn, ts, xid, origin = self.lsn, self.ts, self.xid, self.origin
                    skip = self.skip
                    filtering = lsn == self.after_lsn
                elif kind == 65:  # 'A' stream abort
                    abort = decode_message(data)
                    assert isinstance(abort, StreamAbort)
                    if abort.subxid == abort.xid:
                        f = self.spill.take(abort.xid)
                        if f is not None:
                            f.drop()
                    else:
                        f = self.spill.files.get(abort.xid)
                        if f is not None:
                            f.aborted.add(abort.subxid)
                else:
                    raise PgoutputDecodeError(f"unexpected pgoutput message type {chr(kind)!r}")
            except KeyError as exc:
                raise PgoutputDecodeError(f"change for relation oid {exc} before its Relation message") from exc
            except (IndexError, struct.error) as exc:
                raise PgoutputDecodeError(f"malformed pgoutput message {chr(kind)!r}: {exc}") from exc
        return FULL

    # --- watermark windows (on-demand snapshots, see backfill.py) ----------

    def open_watch(self, entity: str) -> None:
        """Start collecting the keys of ``entity`` that change from here on."""
        self.watch = _Watch(entity, set(), len(self.events))

    def close_watch(self) -> set[Any] | None:
        """Stop collecting; the keys seen since ``open_watch`` (None: a truncate, every key is stale)."""
        w = self.watch
        self.watch = None
        if w is None:
            return set()
        w.collect(self.events, len(self.events))
        return None if w.truncated else w.keys

    def emit_rows(self, entity: str, rows: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        """Emit rows read by an on-demand snapshot as ``snapshot`` events of the current transaction."""
        for key, row in rows:
            idx = self.idx
            self.idx = idx + 1
            self.events.append(
                ChangeEvent(entity, key, SNAPSHOT, None, row, None, (self.lsn, idx), self.ts, self.origin, self.xid)
            )

    def _next_pos(self, filtering: bool, after_idx: int) -> Position | None:
        idx = self.idx
        self.idx = idx + 1
        if filtering and idx <= after_idx:
            return None
        return (self.lsn, idx)

    def _update(self, data: bytes, off: int, filtering: bool, after_idx: int) -> None:
        rel = self.relations[_unpack_u32(data, off)[0]]
        pos = off + 4
        marker = data[pos]
        before: dict[str, Any] | None = None
        old_kind = 0
        if marker == 75 or marker == 79:  # 'K' / 'O'
            old_kind = marker
            before, _old_missing, pos = read_tuple(data, pos + 1, rel.cols)
            if marker == 75:
                before = {n: before[n] for n in rel.identity if n in before}
            marker = data[pos]
        if marker != 78:
            raise PgoutputDecodeError(f"update: expected 'N', got {marker!r}")
        after, missing, _ = read_tuple(data, pos + 1, rel.cols)
        if missing and old_kind == 79 and before is not None:
            for name in missing:
                if name in before:
                    after[name] = before[name]
        new_key = rel.key_of(after)
        if before is not None:
            old_key = rel.key_of(before)
            if old_key != new_key and (old_kind == 79 or all(k in before for k in rel.key)):
                p1 = self._next_pos(filtering, after_idx)
                if p1 is not None:
                    self.events.append(
                        ChangeEvent(rel.entity, old_key, DELETE, before, None, None, p1, self.ts, self.origin, self.xid)
                    )
                p2 = self._next_pos(filtering, after_idx)
                if p2 is not None:
                    self.events.append(
                        ChangeEvent(rel.entity, new_key, INSERT, None, after, None, p2, self.ts, self.origin, self.xid)
                    )
                return
        position = self._next_pos(filtering, after_idx)
        if position is None:
            return
        changed = diff_fields(before, after) if old_kind == 79 else tuple(after)
        self.events.append(
            ChangeEvent(
                rel.entity,
                new_key,
                UPDATE,
                before if old_kind == 79 else None,
                after,
                changed,
                position,
                self.ts,
                self.origin,
                self.xid,
            )
        )

    def _truncate(self, data: bytes, in_stream: bool, filtering: bool, after_idx: int) -> None:
        msg = decode_message(data, in_stream=in_stream)
        for oid in msg.relation_oids:  # type: ignore[union-attr]
            rel = self.relations.get(oid)
            if rel is None:
                continue
            position = self._next_pos(filtering, after_idx)
            if position is not None:
                self.events.append(
                    ChangeEvent(rel.entity, (), TRUNCATE, None, None, None, position, self.ts, self.origin, self.xid)
                )

    def _boundary(self, end_lsn: int) -> None:
        self.last_commit_ts = self.ts
        if end_lsn > self.after_lsn:
            self.boundaries.append((len(self.events), (end_lsn, -1)))

    def _spill(self, data: bytes) -> None:
        """Append a message of a stream block to its file (a Stream Stop ends the block)."""
        assert self._block is not None
        if data[0] == 69:  # 'E' stream stop
            self._block = None
            return
        self._block.append(data)

    def _stream_commit(self, data: bytes) -> None:
        msg = decode_message(data)
        assert isinstance(msg, StreamCommit)
        f = self.spill.take(msg.xid)
        self.lsn = msg.commit_lsn
        self.ts = commit_time(msg.commit_ts)
        self.xid = msg.xid
        self.origin = None
        self.idx = 0
        self.skip = msg.commit_lsn < self.after_lsn
        if f is None:
            if self.skip:
                self._boundary(msg.end_lsn)
                return
            # every streamed transaction starts with a Stream Start, which opens its file
            raise PgoutputDecodeError(f"stream commit of transaction {msg.xid} whose changes were never streamed")
        if self.skip:
            f.drop()
            self._boundary(msg.end_lsn)
            return
        self._replay = f.replay()
        self._replay_end = (msg.end_lsn, f)

    def _finish_replay(self) -> None:
        assert self._replay_end is not None
        end_lsn, _f = self._replay_end
        self._replay = None
        self._replay_end = None
        self._boundary(end_lsn)

    # --- batches ----------------------------------------------------------

    def take(self, max_events: int, *, partial: bool) -> tuple[list[ChangeEvent], Position | None]:
        """The next batch: events up to the last transaction end within ``max_events``, with that end.

        When no transaction ends within ``max_events`` events, a batch is cut
        only when ``partial`` (or when ``max_events`` events are waiting), and
        its position is None.
        """
        events = self.events
        bounds = self.boundaries
        cut = -1
        position: Position | None = None
        n = 0
        for i, (at, pos) in enumerate(bounds):
            if at > max_events:
                break
            cut, position, n = at, pos, i + 1
        if position is not None:
            del bounds[:n]
        elif len(events) >= max_events:
            cut = max_events
        elif partial and events:
            cut = len(events)
        else:
            return [], None
        if self.watch is not None and cut > 0:
            self.watch.collect(events, cut)
            self.watch.start = max(0, self.watch.start - cut)
        out = events[:cut]
        del events[:cut]
        if cut:
            self.boundaries = [(at - cut, pos) for at, pos in bounds]
        return out, position

    def ready(self, max_events: int) -> bool:
        return bool(self.boundaries) or len(self.events) >= max_events


class _Watch:
    __slots__ = ("entity", "keys", "start", "truncated")

    def __init__(self, entity: str, keys: set[Any], start: int) -> None:
        self.entity = entity
        self.keys = keys
        self.start = start
        self.truncated = False

    def collect(self, events: list[ChangeEvent], end: int) -> None:
        if end <= self.start:
            return
        entity = self.entity
        for e in events[self.start : end]:
            if e.entity == entity:
                if e.op == TRUNCATE:
                    self.truncated = True
                else:
                    self.keys.add(e.key)
        self.start = end
