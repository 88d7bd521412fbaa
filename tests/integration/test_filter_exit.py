"""Filters and casts through a real pipeline, Postgres -> Postgres: a row leaving ``filter:`` is deleted from the
destination (or kept with ``on_exit: keep``), a row entering it appears with all its fields, and an update that
repairs a value the cast could not convert is applied instead of being dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg

from tidesync.config import load_config_text
from tidesync.engine.build import build_engine
from tidesync.engine.engine import Engine
from tidesync.testing import eventually

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: drop_{run}
    source: {{type: postgres, dsn: "{src}", tables: [public.customers, public.plain], heartbeat_interval: 1,
              progress: false, work_dir: "{tmp}/spill1"}}
    transforms:
      - filter: "status != 'deleted'"
      - cast: {{age: int}}
    sink: {{type: postgres, dsn: "{dst}", create_tables: true, position_table: applied_drop}}
    batch: {{max_events: 100, max_wait_ms: 20}}
  - name: keep_{run}
    source: {{type: postgres, dsn: "{src}", tables: [public.customers], heartbeat_interval: 1,
              progress: false, work_dir: "{tmp}/spill2"}}
    transforms:
      - filter: {{when: "status != 'deleted'", on_exit: keep}}
      - cast: {{age: int}}
    sink: {{type: postgres, dsn: "{dst}", create_tables: true, position_table: applied_keep,
            tables: {{public.customers: public.kept}}}}
    batch: {{max_events: 100, max_wait_ms: 20}}
  - name: heal_{run}
    source: {{type: postgres, dsn: "{src}", tables: [public.scores], heartbeat_interval: 1, snapshot: never,
              progress: false, work_dir: "{tmp}/spill3"}}
    transforms:
      - cast: {{age: int}}
    sink: {{type: postgres, dsn: "{dst}", position_table: applied_heal}}
    batch: {{max_events: 100, max_wait_ms: 20}}
"""


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def rows(dsn: str, table: str) -> dict[int, tuple[Any, ...]]:
    try:
        with psycopg.connect(dsn) as conn:
            return {r[0]: tuple(r[1:]) for r in conn.execute(f"SELECT id, status, name, age FROM {table}")}
    except psycopg.errors.UndefinedTable:
        return {}


def scores(dsn: str) -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT id, age FROM scores").fetchall())  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def engine_for(text: str, path: Path) -> AsyncIterator[Engine]:
    path.write_text(text)
    engine = build_engine(load_config_text(text, path))
    task = asyncio.create_task(engine.run(install_signals=False))
    try:
        await eventually(
            lambda: task.done() or all(r.state_name == "running" for r in engine.runners),
            timeout=30,
            message="every pipeline running",
        )
        assert not task.done(), engine.failed
        yield engine
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, 30)
    assert engine.failed == {}


async def test_filter_exit_entry_and_healing_update(tmp_path: Path, pg_database: str, pg_database_b: str) -> None:
    src, dst = pg_database, pg_database_b
    sql(
        src,
        "CREATE TABLE customers (id int PRIMARY KEY, status text NOT NULL, name text NOT NULL, age text)",
        "ALTER TABLE customers REPLICA IDENTITY FULL",  # before images: a row entering is known to enter
        "CREATE TABLE plain (id int PRIMARY KEY, status text NOT NULL, name text NOT NULL, age text)",
        "INSERT INTO customers VALUES (1, 'active', 'ann', '31'), (2, 'active', 'bob', '42'),"
        " (3, 'deleted', 'cy', '53'), (5, 'deleted', 'eve', 'n/a'), (6, 'deleted', 'fay', 'x')",
        "INSERT INTO plain VALUES (1, 'active', 'pa', '1'), (2, 'deleted', 'pb', '2')",
        "CREATE TABLE scores (id int PRIMARY KEY, age text)",
        "ALTER TABLE scores REPLICA IDENTITY FULL",
        "INSERT INTO scores VALUES (1, 'n/a'), (2, '7')",  # before the pipeline: never read by it
    )
    sql(dst, "CREATE TABLE scores (id int PRIMARY KEY, age bigint)", "INSERT INTO scores VALUES (2, 7)")
    run = dst.rsplit("_", 1)[1]  # slot names are cluster-wide
    text = CONFIG.format(tmp=tmp_path, src=src, dst=dst, run=run)
    async with engine_for(text, tmp_path / "tidesync.yaml") as engine:
        want = {1: ("active", "ann", 31), 2: ("active", "bob", 42)}
        await eventually(lambda: rows(dst, "customers") == want, timeout=60, message="the snapshot")
        await eventually(lambda: rows(dst, "kept") == want, timeout=60, message="the snapshot (keep)")
        await eventually(lambda: rows(dst, "plain") == {1: ("active", "pa", 1)}, timeout=60, message="plain")

        sql(
            src,
            "UPDATE customers SET status = 'deleted' WHERE id = 1",  # leaves the filter
            "UPDATE customers SET status = 'active' WHERE id = 3",  # enters it: every field must arrive
            "UPDATE customers SET status = 'active', age = '50' WHERE id = 5",  # enters, repairing age 'n/a'
            "UPDATE customers SET age = '43' WHERE id = 2",  # stays inside
            "UPDATE customers SET age = '60' WHERE id = 6",  # repairs 'x' but stays outside: filtered out
            "UPDATE plain SET status = 'deleted' WHERE id = 1",  # leaves, no before image
            "UPDATE plain SET status = 'active' WHERE id = 2",  # enters, no before image
        )
        await eventually(
            lambda: (
                rows(dst, "customers") == {2: ("active", "bob", 43), 3: ("active", "cy", 53), 5: ("active", "eve", 50)}
            ),
            timeout=60,
            message="the left row deleted, the entered rows complete",
        )
        await eventually(
            lambda: (
                rows(dst, "kept")
                == {
                    1: ("active", "ann", 31),  # kept as it was when it last matched
                    2: ("active", "bob", 43),
                    3: ("active", "cy", 53),
                    5: ("active", "eve", 50),
                }
            ),
            timeout=60,
            message="on_exit: keep",
        )
        await eventually(lambda: rows(dst, "plain") == {2: ("active", "pb", 2)}, timeout=60, message="plain exit")

        # The update repairing 'n/a' carries it in its before image only: it is applied, not dead-lettered.
        sql(src, "UPDATE scores SET age = '11' WHERE id = 1", "UPDATE scores SET age = '8' WHERE id = 2")
        await eventually(lambda: scores(dst) == {1: 11, 2: 8}, timeout=60, message="the healing update applied")
        for name in (f"drop_{run}", f"keep_{run}", f"heal_{run}"):
            assert await engine.state.dlq_count(name) == 0, name
