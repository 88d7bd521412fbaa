"""Helpers for the two-way sync integration tests (no tests here).

A :class:`Side` is one real database (Postgres, MariaDB or SQLite) with
blocking SQL helpers; a :class:`SyncHarness` writes a config, runs the engine
in the test's event loop, stops it, runs CLI commands in a subprocess, and
cleans up the cluster-wide replication origins the sync created.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from tidesync.config import load_config
from tidesync.engine.build import build_engine
from tidesync.engine.engine import Engine
from tidesync.sync.build import origin_name
from tidesync.sync.runner import SyncRunner
from tidesync.testing import eventually

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Side:
    kind: str  # "pg", "mariadb", "sqlite"
    dsn: str

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        if self.kind == "pg":
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                cur = conn.execute(statement, params)
                return list(cur.fetchall()) if cur.description else []
        if self.kind == "mariadb":
            db = self.dsn.rsplit("/", 1)[1]
            conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db, autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(statement, params)
                    return list(cur.fetchall())
            finally:
                conn.close()
        conn2 = sqlite3.connect(self.dsn.removeprefix("sqlite:///"), isolation_level=None, timeout=10)
        try:
            return conn2.execute(statement, params or ()).fetchall()
        finally:
            conn2.close()

    def rows(self, columns: str, table: str = "items") -> list[tuple[Any, ...]]:
        return sorted(self.sql(f"SELECT {columns} FROM {table}"), key=repr)


@dataclass
class SyncHarness:
    tmp: Path
    name: str
    config_text: str
    engine: Engine | None = None
    task: asyncio.Task[int] | None = None
    pg_origins: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.tmp / "sync.yaml"

    def write(self) -> Path:
        self.path.write_text(self.config_text)
        return self.path

    async def start(self) -> SyncRunner:
        self.write()
        self.engine = build_engine(load_config(self.path))
        self.task = asyncio.create_task(self.engine.run(install_signals=False))
        runner = self.engine.syncs[0]
        await eventually(lambda: runner.state_name == "running" or self.task.done(), timeout=60, message="sync running")
        if self.task.done():
            self.task.result()
        return runner

    async def start_expecting_failure(self, text: str) -> None:
        """Run the engine and require the sync to fail at start with ``text`` in its error."""
        self.write()
        engine = build_engine(load_config(self.path))
        code = await asyncio.wait_for(engine.run(install_signals=False), 60)
        assert code == 1 and len(engine.failed) == 1, engine.failed
        error = str(next(iter(engine.failed.values())))
        assert text in error, error

    @property
    def runner(self) -> SyncRunner:
        assert self.engine is not None
        return self.engine.syncs[0]  # type: ignore[no-any-return]

    async def stop(self) -> None:
        if self.engine is None or self.task is None:
            return
        self.engine.request_stop()
        code = await asyncio.wait_for(self.task, 60)
        self.engine = None
        self.task = None
        assert code == 0, "the engine reported a failed sync"

    async def quiet(self, cycles: int = 4) -> None:
        """Wait until the sync has caught up and stayed idle for ``cycles`` loop turns in a row."""
        runner = self.runner
        await eventually(lambda: runner.idle_cycles >= cycles, timeout=60, message="the sync to go quiet")

    async def cli(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidesync.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    async def cli_json(self, *args: str) -> Any:
        code, out, err = await self.cli(*args, "--json")
        assert code in (0, 1), err
        return json.loads(out)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop()
        for side in ("a", "b"):
            with contextlib.suppress(psycopg.Error), psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = %s",
                    (origin_name(self.name, side),),
                )


def versions(side: Side, table: str = "items") -> list[tuple[Any, ...]]:
    """Something that changes whenever a row is written: Postgres' xmin, MariaDB's auto-updated updated_at."""
    if side.kind == "pg":
        return side.rows("id, xmin::text", table)
    return side.rows("id, updated_at", table)


def pg_source(dsn: str, table: str, work: Path) -> str:
    return (
        f'{{type: postgres, dsn: "{dsn}", tables: [{table}], snapshot: never, progress: false, '
        f'heartbeat_interval: 0, work_dir: "{work}"}}'
    )


def poll_source(dsn: str, table: str) -> str:
    return (
        f'{{type: sql_poll, dsn: "{dsn}", tables: [{table}], cursor: updated_at, poll_interval: 0.1s, '
        f"lookback: 2s, key_scan: {{every: 0.5s}}}}"
    )
