"""The assembler's fast path agrees with the pure decoder on random pgoutput streams.

Random streams of Relation, Begin, Insert, Update, Delete, Truncate and Commit
messages, with random tuple data (text values, NULLs, unchanged TOAST 'u'),
are encoded by the test encoder of ``test_pgoutput_decoder`` and fed to both:

- the assembler, driven as the source drives it (its NeedRelation requests
  answered with catalog facts, in random chunks and with random batch limits);
- a reference written here on :func:`decode_message` and the converters, which
  follows the rules of ``assembler.py``'s docstring step by step.

They must produce the same events (entity, key, op, before, after, changed,
position, commit time, transaction id) and the same transaction ends, also
when resuming after a random position.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_pgoutput_decoder import encode
from tidesync.event import DELETE, INSERT, TRUNCATE, UPDATE, ChangeEvent, Position, diff_fields
from tidesync.sources.postgres.assembler import FULL, IDLE, Assembler, NeedRelation
from tidesync.sources.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    RelationColumn,
    Truncate,
    Update,
    commit_time,
    decode_message,
)
from tidesync.sources.postgres.relation import RelationFacts, RelationInfo, build_relation
from tidesync.sources.postgres.spill import SpillDir
from tidesync.sources.postgres.types import TypeMap

TEXT, INT4 = 25, 23
OIDS = (1001, 1002)

# --- random streams ------------------------------------------------------------------------------


@st.composite
def relations(draw: st.DrawFn, oid: int) -> tuple[Relation, RelationFacts]:
    n = draw(st.integers(1, 5))
    types = draw(st.lists(st.sampled_from([TEXT, INT4]), min_size=n, max_size=n))
    ident = draw(st.sampled_from("dfi"))
    nkey = draw(st.integers(1, n)) if ident != "f" else 0
    cols = tuple(RelationColumn(1 if i < nkey or ident == "f" else 0, f"c{i}", t, -1) for i, t in enumerate(types))
    pk = tuple(f"c{i}" for i in range(draw(st.integers(0, n))))
    rel = Relation(None, oid, "public", f"t{oid}", ident, cols)
    return rel, RelationFacts(pk, frozenset(pk))


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@st.composite
def tuples(draw: st.DrawFn, rel: Relation, toast: bool = True) -> tuple[Any, ...]:
    values: list[Any] = []
    for c in rel.columns:
        options = [st.none(), st.integers(-(2**31), 2**31 - 1).map(lambda i: str(i).encode())]
        if c.type_oid == TEXT:
            options.append(texts.map(str.encode))
        if toast:
            options.append(st.just(UNCHANGED))
        values.append(draw(st.one_of(*options)))
    return tuple(values)


@st.composite
def change(draw: st.DrawFn, rels: dict[int, Relation]) -> Any:
    oid = draw(st.sampled_from(sorted(rels)))
    rel = rels[oid]
    kind = draw(st.sampled_from(["I", "U", "D", "T"]))
    if kind == "I":
        return Insert(None, oid, draw(tuples(rel, toast=False)))
    if kind == "U":
        old_kind = draw(st.sampled_from([None, "K", "O"]))
        old = None if old_kind is None else draw(tuples(rel, toast=False))
        return Update(None, oid, old_kind, old, draw(tuples(rel)))
    if kind == "D":
        return Delete(None, oid, draw(st.sampled_from("KO")), draw(tuples(rel, toast=False)))
    unknown = draw(st.lists(st.integers(5000, 5002), max_size=1))  # a relation this stream never described
    return Truncate(None, 0, tuple(draw(st.lists(st.sampled_from(sorted(rels)), min_size=1, max_size=2)) + unknown))


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Any], dict[Relation, RelationFacts]]:
    """Messages of whole transactions, each starting at a later LSN; Relation messages in between.

    Also the catalog facts of each Relation message (a message sent again keeps its facts).
    """
    rels: dict[int, Relation] = {}
    facts: dict[Relation, RelationFacts] = {}
    msgs: list[Any] = []
    lsn = 1000
    for _ in range(draw(st.integers(1, 6))):
        for oid in OIDS:
            if oid not in rels or draw(st.booleans()):  # a first description, or a (maybe new) shape
                rel, f = draw(relations(oid))
                rels[oid] = rel
                facts.setdefault(rel, f)
                msgs.append(rel)
        changes = draw(st.lists(change(rels), max_size=8))
        final = lsn + draw(st.integers(1, 50))
        end = final + draw(st.integers(1, 50))
        ts = draw(st.integers(0, 2**50))
        xid = draw(st.integers(1, 2**32 - 1))
        msgs += [Begin(final, ts, xid), *changes, Commit(0, final, end, ts)]
        lsn = end
    return msgs, facts


# --- the reference: decode_message, then the rules of assembler.py's docstring -----------------------


def reference(
    raw: list[bytes], facts: dict[Relation, RelationFacts], after: Position | None
) -> tuple[list[ChangeEvent], list[Position]]:
    types = TypeMap()
    rels: dict[int, RelationInfo] = {}
    events: list[ChangeEvent] = []
    ends: list[Position] = []
    lsn, ts, xid, idx = 0, 0.0, 0, 0

    def row(info: RelationInfo, values: tuple[Any, ...]) -> tuple[dict[str, Any], list[str]]:
        out: dict[str, Any] = {}
        missing = []
        for name, conv, v in zip(info.names, info.converters, values, strict=True):
            if v is UNCHANGED:
                missing.append(name)
            else:
                out[name] = None if v is None else conv(v)
        return out, missing

    def emit(info: RelationInfo, key: Any, op: str, before: Any, new: Any, changed: Any) -> None:
        nonlocal idx
        position = (lsn, idx)
        idx += 1
        if after is None or position > after:
            events.append(ChangeEvent(info.entity, key, op, before, new, changed, position, ts, None, xid))

    for data in raw:
        msg = decode_message(data)
        if isinstance(msg, Relation):
            rels[msg.oid] = build_relation(msg, types, facts[msg])
        elif isinstance(msg, Begin):
            lsn, ts, xid, idx = msg.final_lsn, commit_time(msg.commit_ts), msg.xid, 0
        elif isinstance(msg, Commit):
            if after is None or (msg.end_lsn, -1) > after:
                ends.append((msg.end_lsn, -1))
        elif isinstance(msg, Insert):
            info = rels[msg.relation_oid]
            new, _ = row(info, msg.new)
            emit(info, info.key_of(new), INSERT, None, new, None)
        elif isinstance(msg, Delete):
            info = rels[msg.relation_oid]
            old, _ = row(info, msg.old)
            if msg.old_kind == "K":
                old = {n: old[n] for n in info.identity if n in old}
            emit(info, info.key_of(old), DELETE, old, None, None)
        elif isinstance(msg, Update):
            info = rels[msg.relation_oid]
            new, missing = row(info, msg.new)
            before = None
            if msg.old is not None:
                before, _ = row(info, msg.old)
                if msg.old_kind == "K":
                    before = {n: before[n] for n in info.identity if n in before}
                else:  # a whole old row fills the unchanged TOASTed values
                    new.update({n: before[n] for n in missing if n in before})
            new_key = info.key_of(new)
            if before is not None:
                old_key = info.key_of(before)
                if old_key != new_key and (msg.old_kind == "O" or all(k in before for k in info.key)):
                    emit(info, old_key, DELETE, before, None, None)
                    emit(info, new_key, INSERT, None, new, None)
                    continue
            whole = msg.old_kind == "O"
            emit(
                info, new_key, UPDATE, before if whole else None, new, diff_fields(before, new) if whole else tuple(new)
            )
        elif isinstance(msg, Truncate):
            for oid in msg.relation_oids:
                if oid in rels:
                    emit(rels[oid], (), TRUNCATE, None, None, None)
    return events, ends


# --- the assembler, driven as the source drives it ------------------------------------------------


def assemble(
    raw: list[bytes],
    facts: dict[Relation, RelationFacts],
    after: Position | None,
    tmp: Path,
    cuts: list[int],
    limit: int,
) -> tuple[list[ChangeEvent], list[Position], int]:
    spill = SpillDir(tmp)
    spill.open()
    asm = Assembler(TypeMap(), spill, after=after)
    events: list[ChangeEvent] = []
    ends: list[Position] = []
    asked = 0
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    for chunk in chunks:
        asm.feed(chunk)
        while True:
            run = asm.run(limit)
            try:
                need = next(run)
                while True:
                    assert isinstance(need, NeedRelation)
                    asked += 1
                    need = run.send(facts[need.relation])
            except StopIteration as stop:
                status = stop.value
            batch, position = asm.take(limit, partial=True)
            events += batch
            if position is not None:
                ends.append(position)
            if status == IDLE and not batch:
                break
            assert status in (IDLE, FULL)
    asm.close()
    return events, ends, asked


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=streams(), data=st.data())
def test_assembler_and_pure_decoder_agree(
    stream: tuple[list[Any], dict[Relation, RelationFacts]], data: Any, tmp_path_factory: Any
) -> None:
    msgs, facts = stream
    raw = [encode(m) for m in msgs]
    positions = [p for m in msgs if isinstance(m, Begin) for p in ((m.final_lsn, 0), (m.final_lsn, 2))]
    positions += [(m.end_lsn, -1) for m in msgs if isinstance(m, Commit)]
    after = data.draw(st.one_of(st.none(), st.sampled_from(positions)), label="after")
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=4), label="cuts")))
    cuts = [c for c in cuts if c < len(raw)]
    limit = data.draw(st.integers(1, 20), label="limit")
    tmp = tmp_path_factory.mktemp("spill")

    want_events, want_ends = reference(raw, facts, after)
    got_events, got_ends, asked = assemble(raw, facts, after, tmp, cuts, limit)

    assert got_events == want_events
    # batches end at transaction ends, so every end within reach of a batch is reported, in order
    assert got_ends == [e for e in want_ends if e in got_ends] and set(got_ends) <= set(want_ends)
    assert got_ends[-1:] == want_ends[-1:]  # the stream's last transaction end always is
    assert asked >= 1  # the first Relation of each table was asked for


def test_a_request_left_unanswered_is_asked_again(tmp_path: Path) -> None:
    rel = Relation(None, 1001, "public", "t", "d", (RelationColumn(1, "id", INT4, -1),))
    raw = [encode(rel), encode(Begin(10, 0, 1)), encode(Insert(None, 1001, (b"7",))), encode(Commit(0, 10, 20, 0))]
    spill = SpillDir(tmp_path)
    spill.open()
    asm = Assembler(TypeMap(), spill)
    asm.feed(raw)
    run = asm.run(100)
    assert next(run) == NeedRelation(rel)
    run.close()  # the driver failed to fetch the facts (the catalog was down)
    run = asm.run(100)
    need = next(run)
    assert need.oid == 1001
    try:
        run.send(RelationFacts(("id",)))
    except StopIteration as stop:
        assert stop.value == IDLE
    events, position = asm.take(100, partial=True)
    assert [(e.key, e.after) for e in events] == [((7,), {"id": 7})] and position == (20, -1)


def test_the_encoder_writes_what_the_assembler_reads() -> None:
    # guards the test above against an encoder that both sides would misread alike
    raw = encode(Insert(None, 5, (b"x", None, UNCHANGED)))
    assert raw == b"I" + struct.pack(">I", 5) + b"N" + struct.pack(">h", 3) + b"t" + struct.pack(">i", 1) + b"xnu"
