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
from collections.abc import AsyncIterator, Awaitable, Callable
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


async def divergence(
    h: SyncHarness, a: Side, b: Side, expected: list[tuple[Any, ...]], columns: str, limit: int = 20
) -> str:
    """What differs from ``expected`` (rows of ``columns``, key first), side by side, with the sync's view.

    For each differing key: the expected row, both sides' rows, side B's cursor where it is polled, the
    record state the sync keeps (shadow, images, announced writes) and the poller's shadow of the B row,
    then the runner's restarts and last error: enough to tell an edit never read from one never written.
    """
    want = {r[0]: r for r in expected}
    rows_a = {r[0]: r for r in a.rows(columns)}
    rows_b = {r[0]: r for r in b.rows(columns)}
    b_cursor = dict(b.rows("id, updated_at")) if b.kind == "mariadb" else {}
    bad = sorted(k for k in want if rows_a.get(k) != want[k] or rows_b.get(k) != want[k])
    lines = [f"{len(bad)} of {len(want)} row(s) differ ({columns}); the first {min(limit, len(bad))}:"]
    runner = h.runner if h.engine is not None else None
    proc = runner.processor if runner is not None else None
    for k in bad[:limit]:
        lines.append(f"  key {k}: expected {want[k]}  A {rows_a.get(k)}  B {rows_b.get(k)}")
        if k in b_cursor:
            lines.append(f"    B updated_at {b_cursor[k]}")
        if runner is None or proc is None:
            continue
        rid = proc.fmap.rid_of("a", (k,))
        rec = await runner.state.shadow_get(proc.scope, "record", [rid])
        if rid in rec:
            row = rec[rid].row
            lines.append(f"    shadow {row['s']}")
            lines.append(f"    images {row['i']}")
            lines.append(f"    announced {row['w']}  conflicts {row['c']}")
        polled = await runner.state.shadow_get(f"{h.name}.b", "items", [(k,)])
        if (k,) in polled:
            lines.append(f"    poller's shadow of B {polled[(k,)].row}")
    if runner is not None:
        lines.append(f"  runner: restarts {runner.restarts}, last error {runner.last_error!r}")
        poller = runner.sources.get("b")
        if hasattr(poller, "rows_read"):
            lines.append(f"  B poller: rows read {poller.rows_read}")
        if proc is not None:
            lines.append(f"  processor: {proc.stats}")
    return "\n".join(lines)


# A CPU burner spins; an I/O burner writes and fsyncs a file in a loop (what stalls a database's commits).
# Both stop on their own after the given seconds, so a killed test run leaves nothing behind for long.
_CPU_BURNER = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass\n"
_IO_BURNER = (
    "import os, sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "block = os.urandom(1 << 20)\n"
    "with open(sys.argv[2], 'wb') as f:\n"
    "    while time.monotonic() < end:\n"
    "        for _ in range(8): f.write(block)\n"
    "        f.flush(); os.fsync(f.fileno()); f.seek(0)\n"
)


@contextlib.asynccontextmanager
async def burners(work: Path, *, cpu: int, io: int, seconds: float) -> AsyncIterator[None]:
    """Load the machine with ``cpu`` spinning and ``io`` fsyncing processes for at most ``seconds``.

    They are killed (by their own process ids) when the block ends, and end by themselves after
    ``seconds`` in any case.
    """
    procs = []
    try:
        for _ in range(cpu):
            procs.append(await asyncio.create_subprocess_exec(sys.executable, "-c", _CPU_BURNER, str(seconds)))
        for i in range(io):
            target = str(work / f"io-burner-{i}.bin")
            procs.append(await asyncio.create_subprocess_exec(sys.executable, "-c", _IO_BURNER, str(seconds), target))
        yield
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        for p in procs:
            await p.wait()
        for i in range(io):
            (work / f"io-burner-{i}.bin").unlink(missing_ok=True)


async def a_conflict_settled_by_the_cli(
    h: SyncHarness,
    a: Side,
    edit_sheet: Callable[[int, str, Any], None],
    sheet_rows: Callable[[], list[tuple[Any, ...]]],
    columns: str,
    settle: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """A sheet side and Postgres side ``a`` (items: id, name, qty, note; rows (1, 'ada', 1, NULL) and
    (2, 'bob', 2, 'b')) under a ``manual`` rule for ``name`` (``rules: {default: manual}``, or ``manual``
    for that field): the same field edited on both sides while the sync is stopped waits in the review
    queue, neither side overwritten, until ``conflicts resolve`` settles it on both; another record edited
    meanwhile still syncs. ``edit_sheet(id, column, value)`` is a person's edit of the other side (any side
    whose rows ``sheet_rows`` shows as ``columns``, by Postgres' ids). ``settle`` waits until the first run
    has caught up (default :meth:`SyncHarness.quiet`; a side whose polls commit positions never looks
    idle to it)."""
    await h.start()
    await (settle or h.quiet)()
    await h.stop()
    # both edits land before the sync sees either: the same field changed on both sides
    a.sql("UPDATE items SET name = 'ada (app)' WHERE id = 1")
    edit_sheet(1, "name", "ada (person)")
    edit_sheet(2, "note", "b2")  # another record: synced meanwhile
    await h.start()
    await eventually(lambda: a.rows("id, note") == [(1, None), (2, "b2")], timeout=30, message="note synced")
    conflicts: list[dict[str, Any]] = []

    async def queued() -> bool:
        conflicts[:] = await h.cli_json("conflicts", "list", str(h.path), "--sync", h.name)
        return len(conflicts) == 1

    await eventually(queued, timeout=30, message="the conflict in the review queue")
    c = conflicts[0]
    assert (c["field"], c["a"]["value"], c["b"]["value"], c["shadow"]["value"]) == (
        "name",
        "ada (app)",
        "ada (person)",
        "ada",
    )
    assert a.rows("id, name") == [(1, "ada (app)"), (2, "bob")]  # neither side overwritten while it waits
    assert [r[:2] for r in sheet_rows()] == [(1, "ada (person)"), (2, "bob")]
    code, _, err = await h.cli("conflicts", "resolve", str(h.path), c["id"], "--take", "b", "--by", "ada")
    assert code == 0, err
    await eventually(
        lambda: a.rows(columns) == sheet_rows() == [(1, "ada (person)", 1, None), (2, "bob", 2, "b2")],
        timeout=30,
        message="the resolution written to both sides",
    )
    assert await h.cli_json("conflicts", "list", str(h.path)) == []
    history = await h.cli_json("sync", "history", str(h.path), h.name)
    assert [(e["field"], e["winner"], e["by"]) for e in history if e["winner"]] == [("name", "b", "ada")]
