"""Setup checks in plain words, the assembler's positions and batches, spill files, config — no database."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tidesync.registry import REGISTRY
from tidesync.sources.postgres.assembler import FULL, IDLE, Assembler
from tidesync.sources.postgres.config import PostgresSourceConfig, default_name
from tidesync.sources.postgres.pgoutput import PgoutputDecodeError, RelationColumn
from tidesync.sources.postgres.setup import SetupFacts, SlotState, TableFacts, problems, slot_problem, warnings
from tidesync.sources.postgres.spill import SpillDir
from tidesync.sources.postgres.types import TypeMap

GOOD = SetupFacts(
    150000, "logical", "app", True, "UTF8", "db", (TableFacts("t", 1, "public.t", "public.t", "d", True),)
)


def test_a_good_setup_has_no_problems() -> None:
    assert problems(GOOD) == []
    assert warnings(GOOD) == []


@pytest.mark.parametrize(
    ("table", "words"),
    [
        (TableFacts("t", 1, "public.t", "public.t", "d", False), "no primary key and REPLICA IDENTITY DEFAULT"),
        (TableFacts("t", 1, "public.t", "public.t", "n", True), "REPLICA IDENTITY NOTHING"),
    ],
)
def test_a_keyless_table_is_captured_append_only_with_a_warning(table: TableFacts, words: str) -> None:
    facts = replace(GOOD, tables=(table,))
    assert problems(facts) == []  # inserts are still captured: not a reason to refuse to start
    (warning,) = warnings(facts)
    assert words in warning and "only its inserts are captured" in warning
    assert "ALTER TABLE public.t REPLICA IDENTITY FULL;" in warning


@pytest.mark.parametrize(
    ("facts", "words"),
    [
        (dict(wal_level="replica"), "ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL"),
        (dict(can_replicate=False), "ALTER ROLE app WITH REPLICATION;"),
        (dict(server_version=120000), "13 and newer"),
        (dict(tables=(TableFacts("nope", None),)), "table 'nope' does not exist"),
        (
            dict(tables=(TableFacts("t", 1, "public.t", "public.t", "d", True, can_select=False),)),
            "GRANT SELECT ON public.t TO app;",
        ),
        (dict(tables=(TableFacts("v", 1, "public.v", "public.v", "d", True, is_table=False),)), "not a table"),
        (dict(encoding="MULE_INTERNAL"), "encoding MULE_INTERNAL is not supported"),
    ],
)
def test_each_problem_says_what_to_change(facts: dict[str, Any], words: str) -> None:
    import dataclasses

    found = problems(dataclasses.replace(GOOD, **facts))
    assert len(found) == 1 and words in found[0], found


def test_protocol_2_needs_postgres_14() -> None:
    import dataclasses

    assert "set proto_version: 1" in problems(dataclasses.replace(GOOD, server_version=130005), proto_version=2)[0]


def test_slot_problems() -> None:
    ok = SlotState("s", "pgoutput", "db", None, "reserved", 1, 2)
    assert slot_problem(ok, "db") is None
    assert "invalidated" in (slot_problem(SlotState("s", "pgoutput", "db", None, "lost", None, None), "db") or "")
    assert "test_decoding" in (slot_problem(SlotState("s", "test_decoding", "db", None, "reserved", 1, 1), "db") or "")
    assert "belongs to database" in (
        slot_problem(SlotState("s", "pgoutput", "other", None, "reserved", 1, 1), "db") or ""
    )


def test_config_rejects_unknown_keys_and_derives_names() -> None:
    with pytest.raises(ValidationError):
        PostgresSourceConfig(dsn="x", tables=["t"], tabels=["t"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PostgresSourceConfig(dsn="x", tables=[])
    cfg = PostgresSourceConfig(dsn="x", tables=["t"])
    assert cfg.slot_name("CRM-to billing") == "tidesync_crm_to_billing" == default_name("CRM-to billing")
    assert len(cfg.slot_name("x" * 100)) == 63
    assert REGISTRY.get("source", "postgres").model() is PostgresSourceConfig


# --- the assembler, fed with encoded messages -------------------------------


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def relation(oid: int = 10, xid: int | None = None) -> bytes:
    cols = [RelationColumn(1, "id", 23, -1), RelationColumn(0, "v", 25, -1)]
    out = (
        b"R"
        + (struct.pack(">I", xid) if xid is not None else b"")
        + struct.pack(">I", oid)
        + cstr("public")
        + cstr("t")
    )
    out += b"d" + struct.pack(">h", len(cols))
    for c in cols:
        out += bytes([c.flags]) + cstr(c.name) + struct.pack(">Ii", c.type_oid, c.typmod)
    return out


def tup(*vals: bytes | None) -> bytes:
    out = struct.pack(">h", len(vals))
    for v in vals:
        out += b"n" if v is None else b"t" + struct.pack(">i", len(v)) + v
    return out


def insert(i: int, xid: int | None = None) -> bytes:
    return (
        b"I"
        + (struct.pack(">I", xid) if xid is not None else b"")
        + struct.pack(">I", 10)
        + b"N"
        + tup(str(i).encode(), b"v")
    )


def begin(lsn: int, xid: int = 5) -> bytes:
    return b"B" + struct.pack(">QqI", lsn, 0, xid)


def commit(lsn: int, end: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, lsn, end, 0)


def make(tmp_path: Path, after: Any = None) -> Assembler:
    asm = Assembler(TypeMap(), SpillDir(tmp_path), after=after)
    asm.spill.open()
    return asm


def run_all(asm: Assembler, limit: int = 1000) -> int:
    """Drive ``asm.run``, answering each NeedRelation from nothing (built-in types)."""
    from tidesync.sources.postgres.relation import RelationFacts

    gen = asm.run(limit)
    try:
        need = next(gen)
        while True:
            assert need.oid == 10
            need = gen.send(RelationFacts(("id",)))
    except StopIteration as stop:
        return int(stop.value)


def test_batches_end_at_transaction_ends_and_carry_the_tail_over(tmp_path: Path) -> None:
    asm = make(tmp_path)
    asm.feed([relation(), begin(100), insert(1), insert(2), commit(100, 120), begin(200), insert(3)])
    assert run_all(asm) == IDLE
    events, pos = asm.take(10, partial=True)
    assert [e.key for e in events] == [(1,), (2,)] and pos == (120, -1)
    assert [e.position for e in events] == [(100, 0), (100, 1)]
    # the unfinished transaction stays; a partial take returns it without a position
    events, pos = asm.take(10, partial=True)
    assert [e.key for e in events] == [(3,)] and pos is None
    asm.feed([insert(4), commit(200, 220)])
    run_all(asm)
    events, pos = asm.take(10, partial=False)
    assert [e.position for e in events] == [(200, 1)] and pos == (220, -1)


def test_a_transaction_bigger_than_a_batch_is_cut_without_a_position(tmp_path: Path) -> None:
    asm = make(tmp_path)
    asm.feed([relation(), begin(100), *[insert(i) for i in range(5)], commit(100, 150)])
    assert run_all(asm, limit=3) == FULL
    events, pos = asm.take(3, partial=False)
    assert len(events) == 3 and pos is None
    run_all(asm, limit=3)
    events, pos = asm.take(3, partial=False)
    assert len(events) == 2 and pos == (150, -1)


def test_resume_skips_everything_at_or_before_after(tmp_path: Path) -> None:
    msgs = [
        relation(),
        begin(100),
        insert(1),
        insert(2),
        commit(100, 120),
        begin(200),
        insert(3),
        insert(4),
        commit(200, 220),
    ]
    for after, keys in [
        ((120, -1), [3, 4]),
        ((100, 0), [2, 3, 4]),
        ((200, 0), [4]),
        ((220, -1), []),
        (None, [1, 2, 3, 4]),
    ]:
        asm = make(tmp_path, after)
        asm.feed(list(msgs))
        run_all(asm)
        events, _ = asm.take(100, partial=True)
        assert [e.key[0] for e in events] == keys, after


def test_streamed_transaction_is_spilled_and_replayed_on_commit(tmp_path: Path) -> None:
    asm = make(tmp_path)
    stream_start = b"S" + struct.pack(">IB", 77, 1)
    stream_commit = b"c" + struct.pack(">IBQQq", 77, 0, 300, 330, 0)
    asm.feed([relation(), stream_start, relation(xid=77), insert(1, 77), insert(2, 78), b"E"])
    assert run_all(asm) == IDLE
    assert asm.take(10, partial=True) == ([], None)  # nothing before the commit
    assert list(tmp_path.glob("*.spill"))
    abort_sub = b"A" + struct.pack(">II", 77, 78)  # subtransaction 78 rolled back
    asm.feed([abort_sub, begin(200), insert(9), commit(200, 220), stream_commit])
    run_all(asm)
    events, pos = asm.take(10, partial=True)
    assert [(e.key, e.position) for e in events] == [((9,), (200, 0)), ((1,), (300, 0))]
    assert pos == (330, -1)
    assert not list(tmp_path.glob("*.spill"))


def test_a_change_before_its_relation_is_a_decode_error(tmp_path: Path) -> None:
    asm = make(tmp_path)
    asm.feed([begin(1), insert(1)])
    with pytest.raises(PgoutputDecodeError, match="before its Relation"):
        run_all(asm)


# --- where a source starts ---------------------------------------------------


def test_start_without_a_slot() -> None:
    from tidesync.errors import SourceError
    from tidesync.sources.postgres.startup import plan_start

    s = plan_start(slot="s", slot_exists=False, after=None, saved=None, mode="initial", pipeline="p")
    assert (s.create_slot, s.snapshot, s.plan.run, s.plan.complete, s.save_plan) == (True, "exported", 1, False, True)
    s = plan_start(slot="s", slot_exists=False, after=None, saved=None, mode="never", pipeline="p")
    assert (s.create_slot, s.snapshot, s.plan.complete) == (True, "none", True)
    for after in [(123, -1), (0, 1, 0, 3, 100)]:
        with pytest.raises(SourceError, match=r"no longer exists.*will not silently start again"):
            plan_start(slot="s", slot_exists=False, after=after, saved=None, mode="initial", pipeline="p")


def test_start_with_a_slot() -> None:
    from tidesync.sources.postgres.snapshot import SnapshotPlan, TableProgress
    from tidesync.sources.postgres.startup import plan_start

    unfinished = SnapshotPlan("s", run=2, tables={"public.t": TableProgress(False, ["9"])})
    # a stream checkpoint means the snapshot is done, whatever was stored
    s = plan_start(slot="s", slot_exists=True, after=(500, 3), saved=unfinished, mode="initial", pipeline="p")
    assert (s.create_slot, s.snapshot, s.plan.complete, s.save_plan) == (False, "none", True, True)
    # a snapshot checkpoint: resume as a new run whose positions sort after it
    unfinished = SnapshotPlan("s", run=2, tables={"public.t": TableProgress(False, ["9"])})
    # (positions are (0, table_index, run, chunk, row): the resumed table's rows come after the checkpoint)
    s = plan_start(slot="s", slot_exists=True, after=(0, 1, 4, 7, 100), saved=unfinished, mode="initial", pipeline="p")
    assert (s.snapshot, s.plan.run, s.plan.tables["public.t"].last_key) == ("fresh", 5, ["9"])
    assert (0, 1, s.plan.run, 0, 0) > (0, 1, 4, 7, 100)
    # an existing slot without a stored plan and no checkpoint: snapshot in a fresh snapshot
    s = plan_start(slot="s", slot_exists=True, after=None, saved=None, mode="initial", pipeline="p")
    assert (s.snapshot, s.plan.run) == ("fresh", 1)
    done = SnapshotPlan("s", run=1, complete=True)
    s = plan_start(slot="s", slot_exists=True, after=None, saved=done, mode="initial", pipeline="p")
    assert (s.snapshot, s.save_plan) == ("none", False)
    s = plan_start(slot="s", slot_exists=True, after=None, saved=None, mode="never", pipeline="p")
    assert s.snapshot == "none"


def test_snapshot_plan_records_only_committed_chunks() -> None:
    from tidesync.sources.postgres.snapshot import Chunk, SnapshotPlan

    plan = SnapshotPlan("s", run=1)
    plan.read(Chunk([], (0, 1, 0, 0, 100), "public.a", ["100"], False))
    plan.read(Chunk([], (0, 1, 0, 1, 40), "public.a", ["140"], True))
    assert plan.committed((0, 1, 0, 0, 100)) is True
    assert plan.tables["public.a"].last_key == ["100"] and not plan.complete
    assert plan.committed((0, 1, 0, 0, 100)) is False
    assert plan.committed((0, 1, 0, 1, 40)) is True and plan.complete
    assert SnapshotPlan.from_state(plan.to_state()).tables["public.a"].done is True


def test_the_snapshot_progress_bar_renders_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from tidesync.sources.postgres.progress import SnapshotProgress

    out = io.StringIO()
    bar = SnapshotProgress(
        [("public.a", 300), ("public.b", 0)], console=Console(file=out, force_terminal=True, width=100)
    )
    bar.advance("public.a", 100, False)
    bar.advance("public.a", 150, True)
    bar.advance("public.b", 7, True)
    bar.close()
    text = out.getvalue()
    assert "snapshot public.a" in text and "250/250" in text and "7/7" in text
