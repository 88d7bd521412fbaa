"""A sync between two SQLite files through ``tidesync run`` (trigger capture on both sides), and the review flow:
a parked conflict resolved with ``--remember`` becomes a rule, so the next conflict of that field settles itself.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import uuid
from pathlib import Path

from tests.integration.test_sync_support import Side, SyncHarness
from tidesync.testing import eventually

TABLE = "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, name TEXT, score INTEGER)"


async def run_cli(path: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tidesync.cli", "run", str(path), stdout=asyncio.subprocess.DEVNULL, stderr=err
        )


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_run_resolve_and_remember(tmp_path: Path) -> None:
    paths = {s: tmp_path / f"{s}.db" for s in ("a", "b")}
    for p in paths.values():
        with sqlite3.connect(p) as conn:
            conn.execute(TABLE)
    a, b = Side("sqlite", f"sqlite:///{paths['a']}"), Side("sqlite", f"sqlite:///{paths['b']}")
    a.sql("INSERT INTO people VALUES (1, 'x@y', 'Ann', 10), (2, 'z@y', 'Zed', 0)")
    h = SyncHarness(tmp_path, f"q{uuid.uuid4().hex[:8]}", "")

    def side(s: str) -> str:
        return (
            f"{{source: {{type: sqlite, path: '{paths[s]}', tables: [people], snapshot: never}}, "
            "table: people, key: id}"
        )

    h.config_text = f"""
state: sqlite:///{tmp_path / "state.db"}
syncs:
  - name: {h.name}
    a: {side("a")}
    b: {side("b")}
    fields: {{id: id, email: email, name: name, score: score}}
    rules: {{default: manual, fields: {{score: sum}}}}
"""
    h.write()
    log = tmp_path / "run.log"
    code, out, _ = await h.cli("validate", str(h.path))
    assert code == 0 and f"1 sync(s): {h.name}" in out
    proc = await run_cli(h.path, log)
    try:
        await eventually(lambda: b.rows("*", "people") == a.rows("*", "people"), timeout=30, message="pairing")
        await stop(proc)
        a.sql("UPDATE people SET name = 'Ann A', score = score + 1 WHERE id = 1")
        b.sql("UPDATE people SET name = 'Ann B', score = score + 2 WHERE id = 1")
        proc = await run_cli(h.path, log)
        await eventually(
            lambda: a.rows("score", "people") == b.rows("score", "people") == [(0,), (13,)],
            timeout=30,
            message="counter merged",
        )
        conflicts = await eventually(
            lambda: h.cli_json("conflicts", "list", str(h.path)), timeout=30, message="the name conflict parked"
        )
        assert [(c["field"], c["a"]["value"], c["b"]["value"], c["rule"]) for c in conflicts] == [
            ("name", "Ann A", "Ann B", "manual")
        ]
        code, out, err = await h.cli("conflicts", "show", str(h.path), conflicts[0]["id"])
        assert code == 0 and '"Ann B"' in out, err
        code, out, err = await h.cli(
            "conflicts", "resolve", str(h.path), conflicts[0]["id"], "--take", "a", "--remember"
        )
        assert code == 0, err
        assert "name: {prefer: a}" in out  # the line to add to the config
        await eventually(
            lambda: b.rows("name", "people") == [("Ann A",), ("Zed",)],
            timeout=30,
            message="the resolution written to B",
        )
        await stop(proc)

        # the same field conflicts again: the remembered rule settles it, nothing is parked
        a.sql("UPDATE people SET name = 'Zed A' WHERE id = 2")
        b.sql("UPDATE people SET name = 'Zed B' WHERE id = 2")
        proc = await run_cli(h.path, log)
        await eventually(
            lambda: b.rows("name", "people") == [("Ann A",), ("Zed A",)],
            timeout=30,
            message="prefer a from the remembered rule",
        )
        assert await h.cli_json("conflicts", "list", str(h.path)) == []
        history = await h.cli_json("sync", "history", str(h.path), h.name)
        assert [(e["field"], e["rule"], e["winner"], e["by"]) for e in history if e["winner"]][-3:] == [
            ("score", "sum", "merge", "rule"),
            ("name", "manual", "a", "cli"),
            ("name", "prefer:a", "a", "rule"),
        ]
        await stop(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
