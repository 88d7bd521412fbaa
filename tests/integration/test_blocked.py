"""Failures every event would hit block the pipeline, visibly, and it resumes by itself once fixed.

SQLite source → Postgres / MariaDB sink on the real servers: a missing
destination table, a missing column, a missing grant. The pipeline must show
``blocked`` (state store status as ``tidesync status --json`` prints it, the
admin API's pipeline view, the metric), log one ERROR line naming the table,
fire the built-in alert, park nothing and keep its checkpoint; after the fix
it resumes with no replay and the destination equals the source.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tidesync.api.runtime import ApiRuntime
from tidesync.api.views import pipeline_infos
from tidesync.config import load_config_text
from tidesync.engine.build import build_engine
from tidesync.observe.alerts import CLEARED, FIRED
from tidesync.observe.exposition import render
from tidesync.observe.monitor import Monitor
from tidesync.testing import eventually

N = 200
CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: blk
    source: {{type: sqlite, path: {tmp}/src.db, tables: [items]}}
    sink: {sink}
    batch: {{max_events: 50, max_wait_ms: 10}}
    probe: {{initial_delay: 0.05, max_delay: 0.2}}
"""


def source_db(tmp: Path) -> Path:
    path = tmp / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"n{i}", i) for i in range(1, N + 1)])
    return path


def source_rows(tmp: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp / "src.db") as conn:
        return conn.execute("SELECT id, name, qty FROM items ORDER BY id").fetchall()


class Pipeline:
    """The engine of CONFIG running in this process, with a monitor ticked by hand."""

    def __init__(self, tmp: Path, sink: str) -> None:
        self.tmp = tmp
        self.path = tmp / "tidesync.yaml"
        self.path.write_text(CONFIG.format(tmp=tmp, sink=sink))
        self.loaded = load_config_text(self.path.read_text(), self.path)
        self.engine = build_engine(self.loaded)
        self.runner = self.engine.runner("blk")
        self.monitor = Monitor.for_config(self.loaded, self.engine)
        self.task: Any = None

    async def __aenter__(self) -> Pipeline:
        import asyncio

        await self.monitor.state.open()
        self.task = asyncio.create_task(self.engine.run(install_signals=False))
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        self.engine.request_stop()
        assert await asyncio.wait_for(self.task, 30) == 0
        await self.monitor.state.close()

    async def status(self) -> Any:
        return await self.engine.state.status_get("blk")

    def cli_status(self) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "tidesync.cli", "status", str(self.path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        return row  # type: ignore[no-any-return]

    async def api_row(self) -> Any:
        (info,) = await pipeline_infos(ApiRuntime(engine=self.engine, config=self.loaded, monitor=self.monitor))
        return info


async def assert_blocked(p: Pipeline, caplog: pytest.LogCaptureFixture, table: str, words: str) -> list[Any]:
    """Every visible sign of the blocked state; returns the alert notices of the first tick."""
    r = p.runner
    await eventually(lambda: r.state_name == "blocked", timeout=30, message="pipeline blocked")
    await eventually(lambda: r.delivery.probes >= 3, timeout=30, message="probing")
    st = await eventually(lambda: _blocked(p), message="blocked status stored")
    assert table in st.last_error and words in st.last_error.lower()
    assert st.extra["blocked_entity"] == "items"
    row = p.cli_status()  # the real CLI, reading the state store
    assert row["state"] == "blocked" and table in row["last_error"] and row["dlq_depth"] == 0
    info = await p.api_row()
    assert info.state == "blocked" and info.blocked_entity == "items" and info.dlq_depth == 0
    notices = await p.monitor.tick()
    assert [(n.rule, n.kind) for n in notices] == [("pipeline-blocked", FIRED)]
    metrics = render(p.monitor.collector).decode()
    assert 'tidesync_pipeline_state{pipeline="blk",state="blocked"} 1.0' in metrics
    assert 'tidesync_alert_firing{alert="pipeline-blocked",pipeline="blk"} 1.0' in metrics
    assert await p.engine.state.dlq_count("blk") == 0  # nothing dead-lettered
    assert await p.engine.state.load_checkpoint("blk") is None  # the position is kept
    errors = [x.getMessage() for x in caplog.records if x.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # one line, not one per probe
    assert "pipeline blk blocked on items" in errors[0] and table in errors[0]
    return notices


async def _blocked(p: Pipeline) -> Any:
    st = await p.status()
    return st if st is not None and st.state == "blocked" else None


async def assert_recovered(p: Pipeline, caplog: pytest.LogCaptureFixture, rows: Any) -> None:
    r = p.runner
    await eventually(lambda: r.stats.events_written >= N and r.state_name == "running", timeout=30, message="resumed")
    await eventually(lambda: rows() == source_rows(p.tmp), timeout=30, message="destination equals source")
    assert await p.engine.state.dlq_count("blk") == 0
    assert [(n.rule, n.kind) for n in await p.monitor.tick()] == [("pipeline-blocked", CLEARED)]
    infos = [x for x in caplog.records if "unblocked" in x.getMessage()]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO
    assert p.cli_status()["state"] == "running"


@pytest.fixture
def pg(pg_database: str) -> AsyncIterator[Any]:
    def run(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    return run  # type: ignore[return-value]


async def test_missing_postgres_table_blocks_then_resumes_once_created(
    tmp_path: Path, pg_database: str, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tidesync")
    source_db(tmp_path)
    async with Pipeline(tmp_path, f'{{type: postgres, dsn: "{pg_database}"}}') as p:
        await assert_blocked(p, caplog, "items", "does not exist")
        pg("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)")
        await assert_recovered(p, caplog, lambda: pg("SELECT id, name, qty FROM items ORDER BY id"))


async def test_missing_mariadb_column_blocks_then_resumes_once_added(
    tmp_path: Path, mariadb_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tidesync")
    db = mariadb_database.rsplit("/", 1)[1]

    def my(sql: str) -> list[tuple[Any, ...]]:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    # The destination predates the source's qty column: every event writes a column it lacks.
    my("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    source_db(tmp_path)
    async with Pipeline(tmp_path, f'{{type: mariadb, dsn: "{mariadb_database}"}}') as p:
        await assert_blocked(p, caplog, "items", "qty")
        my("ALTER TABLE items ADD COLUMN qty INTEGER")
        await assert_recovered(p, caplog, lambda: my("SELECT id, name, qty FROM items ORDER BY id"))


async def test_postgres_permission_denied_blocks_then_resumes_after_grant(
    tmp_path: Path, pg_database: str, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tidesync")
    role = f"ts_nogrant_{uuid.uuid4().hex[:8]}"
    pg(f"CREATE ROLE {role} LOGIN")
    try:
        pg("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)")
        pg(f"GRANT SELECT ON items TO {role}")
        pg(f"GRANT CREATE ON SCHEMA public TO {role}")  # the sink makes its position table itself
        source_db(tmp_path)
        dsn = pg_database.replace("postgresql://postgres@", f"postgresql://{role}@")
        async with Pipeline(tmp_path, f'{{type: postgres, dsn: "{dsn}"}}') as p:
            await assert_blocked(p, caplog, "items", "permission denied")
            pg(f"GRANT INSERT, UPDATE, DELETE ON items TO {role}")
            await assert_recovered(p, caplog, lambda: pg("SELECT id, name, qty FROM items ORDER BY id"))
    finally:
        pg(f"DROP OWNED BY {role}")
        pg(f"DROP ROLE {role}")


async def test_a_sink_that_refuses_to_open_blocks_the_start_then_starts_once_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination database that does not exist yet (the credentials a deploy has not rolled out): the
    pipeline does not fail at start, it shows blocked with one ERROR line and starts once the database exists."""
    from tests.conftest import drop_pg_database, pg_dsn, unique

    caplog.set_level(logging.INFO, "tidesync")
    name = unique("tsmissing")
    source_db(tmp_path)
    try:
        async with Pipeline(tmp_path, f'{{type: postgres, dsn: "{pg_dsn(name)}"}}') as p:
            r = p.runner
            await eventually(lambda: r.state_name == "blocked", timeout=30, message="blocked at start")
            st = await eventually(lambda: _blocked(p), message="blocked status stored")
            assert name in st.last_error and "blocked opening the sink" in st.last_error
            assert p.cli_status()["state"] == "blocked"
            await eventually(lambda: r.next_attempt_at is not None, message="a probe scheduled")
            with psycopg.connect(pg_dsn("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            with psycopg.connect(pg_dsn(name), autocommit=True) as conn:
                conn.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, qty integer)")

            def rows() -> list[tuple[Any, ...]]:
                with psycopg.connect(pg_dsn(name)) as conn:
                    return conn.execute("SELECT id, name, qty FROM items ORDER BY id").fetchall()

            await eventually(lambda: rows() == source_rows(tmp_path), timeout=30, message="rows after the start")
            assert r.state_name == "running"
            errors = [x.getMessage() for x in caplog.records if x.levelno >= logging.ERROR]
            assert len(errors) == 1 and "refuses to open" in errors[0], errors
    finally:
        drop_pg_database(name)
