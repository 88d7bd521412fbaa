"""`tidesync run --once`, end to end in a subprocess: read up to the source's end as of the start, apply, exit."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.integration.e2e_support import current_lsn, slot_flushed


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "run", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def pg_rows(dsn: str) -> dict[int, tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: tuple(r) for r in conn.execute("SELECT id, version, payload FROM items")}


def sqlite_rows(path: Path, columns: str = "id, version, payload") -> dict[int, tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return {r[0]: tuple(r) for r in conn.execute(f"SELECT {columns} FROM items")}


def test_once_on_a_postgres_backlog_exits_0_with_the_destination_equal_to_the_source(
    tmp_path: Path, pg_database: str
) -> None:
    src, dst = pg_database, tmp_path / "dst.db"
    name = "once_" + src.rsplit("_", 1)[1]
    sql(
        src,
        "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text)",
        "INSERT INTO items SELECT g, 1, 'snap' FROM generate_series(1, 500) g",
    )
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}", tables: [items], progress: false, work_dir: "{tmp_path}/spill"}}
    sink: {{type: sqlite, path: "{dst}", create_tables: true}}
    batch: {{max_events: 500, max_wait_ms: 10}}
"""
    )
    first = run_once(config)  # the initial snapshot, then the stream up to the end
    assert first.returncode == 0, first.stderr[-4000:]
    assert f"pipeline {name}: 500 event(s) applied" in first.stdout
    assert sqlite_rows(dst) == pg_rows(src)

    # A backlog in the slot while nothing runs: inserts, updates, deletes in many transactions.
    sql(src, "INSERT INTO items SELECT g, 1, 'new' FROM generate_series(501, 2500) g")
    for k in range(10):
        sql(src, f"UPDATE items SET version = version + 1, payload = 'u{k}' WHERE id % 10 = {k}")
    sql(src, "DELETE FROM items WHERE id % 7 = 0")
    expected, end = pg_rows(src), current_lsn(src)

    second = run_once(config)
    assert second.returncode == 0, second.stderr[-4000:]
    assert sqlite_rows(dst) == expected
    assert slot_flushed(src, f"tidesync_{name}") >= end  # checkpointed past the end as of the start
    third = run_once(config)  # nothing new: a run that applies nothing and still ends
    assert third.returncode == 0, third.stderr[-4000:]
    assert f"pipeline {name}: 0 event(s) applied" in third.stdout


def _sqlite_source(tmp_path: Path, sink: str) -> tuple[Path, Path]:
    src = tmp_path / "src.db"
    with sqlite3.connect(src) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, payload TEXT)")
        conn.executemany("INSERT INTO items VALUES (?, 1, ?)", [(i, "ok" if i % 50 else "bad") for i in range(1, 201)])
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: lite
    source: {{type: sqlite, path: "{src}", tables: [items]}}
    sink: {sink}
    batch: {{max_events: 100, max_wait_ms: 10}}
"""
    )
    return src, config


def test_once_on_a_sqlite_capture_source_reads_to_its_newest_change(tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    src, config = _sqlite_source(tmp_path, f'{{type: sqlite, path: "{dst}", create_tables: true}}')
    first = run_once(config)
    assert first.returncode == 0, first.stderr[-4000:]
    assert sqlite_rows(dst) == sqlite_rows(src)
    with sqlite3.connect(src) as conn:
        conn.execute("UPDATE items SET version = 2, payload = 'changed' WHERE id <= 20")
        conn.execute("DELETE FROM items WHERE id > 190")
    second = run_once(config)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "pipeline lite: 30 event(s) applied" in second.stdout
    assert sqlite_rows(dst) == sqlite_rows(src)


def test_once_exits_non_zero_and_says_why_when_a_row_dead_letters(tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    with sqlite3.connect(dst) as conn:
        conn.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER, payload TEXT CHECK (payload <> 'bad'))"
        )
    _, config = _sqlite_source(tmp_path, f'{{type: sqlite, path: "{dst}"}}')
    done = run_once(config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pipeline lite: 196 event(s) applied" in done.stderr
    assert "4 event(s) dead-lettered (see `tidesync dlq list`), the first items [50]: " in done.stderr
    assert "CHECK constraint failed" in done.stderr
    assert set(sqlite_rows(dst)) == {i for i in range(1, 201) if i % 50}  # everything else is applied
