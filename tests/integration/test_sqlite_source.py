"""SQLite trigger capture against real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tidesync.errors import SourceError, SourceTransientError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sources.sqlite import SqliteSource, SqliteSourceConfig
from tidesync.state import open_state_store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB, qty INTEGER)")
        conn.execute("CREATE TABLE pairs (a TEXT, b INTEGER, note TEXT, PRIMARY KEY (a, b))")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?)", [(i, f"n{i}", i * 1.5, None, i) for i in range(1, 4)]
        )
    return path


async def open_source(db: Path, tmp_path: Path, after=None, **kw) -> SqliteSource:  # type: ignore[no-untyped-def]
    cfg = SqliteSourceConfig(path=str(db), tables=kw.pop("tables", ["items", "pairs"]), **kw)
    src = SqliteSource(cfg)
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await src.open(Context(pipeline="p", name="source", state=store), after)
    return src


async def drain(src: SqliteSource) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    while True:
        batch = await src.read(1000, 0.01)
        if not batch.events:
            return out
        out.extend(batch.events)


def execute(db: Path, *statements: str, params=()) -> None:  # type: ignore[no-untyped-def]
    with sqlite3.connect(db, isolation_level=None) as conn:
        for s in statements:
            conn.execute(s, params) if params else conn.execute(s)


async def test_initial_snapshot_then_changes_with_before_after_and_changed(db: Path, tmp_path: Path) -> None:
    src = await open_source(db, tmp_path)
    snap = await drain(src)
    assert [(e.op, e.key) for e in snap] == [("snapshot", (1,)), ("snapshot", (2,)), ("snapshot", (3,))]
    assert snap[0].after == {"id": 1, "name": "n1", "price": 1.5, "data": None, "qty": 1}
    execute(
        db,
        "INSERT INTO items VALUES (10, 'ten', 0.1, x'00ff10', 5)",
        "UPDATE items SET price = 0.30000000000000004 WHERE id = 10",
        "UPDATE items SET qty = qty WHERE id = 10",  # no change: no event
        "DELETE FROM items WHERE id = 2",
        "INSERT INTO pairs VALUES ('x', 1, 'hello')",
    )
    events = await drain(src)
    assert [(e.entity, e.op, e.key) for e in events] == [
        ("items", "insert", (10,)),
        ("items", "update", (10,)),
        ("items", "delete", (2,)),
        ("pairs", "insert", ("x", 1)),
    ]
    ins, upd, dele, pair = events
    assert ins.after == {"id": 10, "name": "ten", "price": 0.1, "data": b"\x00\xff\x10", "qty": 5}
    assert upd.changed == ("price",) and upd.after["price"] == 0.30000000000000004  # exact float
    assert upd.before["price"] == 0.1
    assert dele.before["name"] == "n2" and dele.after is None
    assert pair.after == {"a": "x", "b": 1, "note": "hello"}
    assert all(e.committed_at > 1.7e9 for e in events)
    positions = [e.position for e in snap + events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    await src.close()


async def test_primary_key_change_is_a_delete_and_an_insert(db: Path, tmp_path: Path) -> None:
    src = await open_source(db, tmp_path, snapshot="never")
    execute(db, "UPDATE items SET id = 99 WHERE id = 1")
    events = await drain(src)
    assert [(e.op, e.key) for e in events] == [("delete", (1,)), ("insert", (99,))]
    await src.close()


async def test_resume_after_checkpoint_and_trim(db: Path, tmp_path: Path) -> None:
    src = await open_source(db, tmp_path)
    first = await drain(src)
    checkpoint = first[1].position
    await src.commit(checkpoint)
    await src.close()
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT count(*) FROM _tidesync_log_p").fetchone()[0]
    assert left == 1  # trimmed through the checkpoint
    execute(db, "INSERT INTO items VALUES (20, 'x', 1.0, NULL, 1)")
    src2 = await open_source(db, tmp_path, after=checkpoint)
    again = await drain(src2)
    assert all(e.position > checkpoint for e in again)
    assert [e.key for e in again] == [(3,), (20,)]
    await src2.close()
    await src2.close()  # idempotent


async def test_schema_change_recreates_triggers_and_captures_new_column(db: Path, tmp_path: Path) -> None:
    src = await open_source(db, tmp_path, snapshot="never")
    execute(db, "ALTER TABLE items ADD COLUMN color TEXT")
    await drain(src)  # notices the schema change
    execute(db, "UPDATE items SET color = 'red' WHERE id = 1")
    events = await drain(src)
    assert events[-1].changed == ("color",) and events[-1].after["color"] == "red"
    await src.close()


async def test_missing_table_is_a_clear_error(db: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="table 'nope' does not exist"):
        await open_source(db, tmp_path, tables=["nope"])


async def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(SourceError, match="not a valid database or is corrupt"):
        await open_source(bad, tmp_path, tables=["items"])


async def test_locked_file_is_a_transient_error(db: Path, tmp_path: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(SourceTransientError, match="locked by another process"):
            await open_source(db, tmp_path, busy_timeout_ms=50)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    src = await open_source(db, tmp_path)  # works once the lock is gone
    assert len(await drain(src)) == 3
    await src.close()
