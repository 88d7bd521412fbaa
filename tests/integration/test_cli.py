"""The CLI end to end, in subprocesses: run/stop, status, the dead-letter queue, plugins, demo, clear failures."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tidesync.testing import wait_until

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: shop
    source: {{type: sqlite, path: {tmp}/src.db, tables: [orders], poll_interval_ms: 5}}
    transforms:
      - cast: {{amount: int}}
    sink: {{type: sqlite, path: {tmp}/dst.db}}
    batch: {{max_events: 100, max_wait_ms: 5}}
"""


def tidesync(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def start(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-2000:]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """Source orders table; the destination refuses negative amounts (CHECK constraint)."""
    with sqlite3.connect(tmp_path / "src.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount TEXT, note TEXT)")
    with sqlite3.connect(tmp_path / "dst.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER CHECK (amount >= 0), note TEXT)")
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    return config


def src_exec(tmp: Path, sql: str, rows: list[tuple[object, ...]]) -> None:
    with sqlite3.connect(tmp / "src.db") as conn:
        conn.executemany(sql, rows)


def dst_rows(tmp: Path) -> dict[int, tuple[object, ...]]:
    with sqlite3.connect(tmp / "dst.db") as conn:
        return {r[0]: r for r in conn.execute("SELECT id, amount, note FROM orders")}


def status(config: Path) -> dict[str, object]:
    result = tidesync("status", str(config), "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    return row  # type: ignore[no-any-return]


def test_run_status_dead_letters_and_replay(shop: Path, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    proc = start(shop, log)
    try:
        wait_until(lambda: status(shop)["state"] == "running", timeout=60, message="running")
        src_exec(tmp_path, "INSERT INTO orders VALUES (?, ?, ?)", [(i, str(i * 10), "n") for i in range(1, 101)])
        # two records the destination rejects (negative), one that the cast cannot convert
        src_exec(
            tmp_path, "INSERT INTO orders VALUES (?, ?, ?)", [(101, "-5", "bad"), (102, "-7", "bad"), (103, "ten", "x")]
        )
        src_exec(tmp_path, "UPDATE orders SET note = ? WHERE id = ?", [("later", 101), ("later", 1)])
        wait_until(lambda: status(shop)["events_applied"] == 101, timeout=60, message="applied")
        row = status(shop)
        assert row["state"] == "degraded" and row["dlq_depth"] == 4  # running; its DLQ grew lately
    finally:
        stop(proc, log)
    assert status(shop)["state"] == "stopped"
    assert len(dst_rows(tmp_path)) == 100 and dst_rows(tmp_path)[1][2] == "later"

    listed = tidesync("dlq", "list", str(shop), "--json")
    entries = sorted(json.loads(listed.stdout), key=lambda e: (e["key"], e["id"]))
    assert [(e["key"], e["op"], e["error_class"]) for e in entries] == [
        ([101], "insert", "permanent"),
        ([101], "update", "blocked"),  # the later update of 101 waits behind its insert
        ([102], "insert", "permanent"),
        ([103], "insert", "transform"),
    ]
    assert "CHECK constraint" in entries[0]["error"] and "'ten'" in entries[3]["error"]
    shown = tidesync("dlq", "show", str(shop), str(entries[0]["id"]))
    assert shown.returncode == 0 and '"amount": -5' in shown.stdout.replace('"amount":-5', '"amount": -5')

    # a replay without fixing anything fails again and keeps the entries
    again = tidesync("dlq", "replay", str(shop), "--error", "permanent")
    assert again.returncode == 1 and "failed" in again.stdout
    # fix the destination, discard the unconvertible one, replay the rest
    with sqlite3.connect(tmp_path / "dst.db") as conn:
        conn.executescript(
            "CREATE TABLE o2 (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT);"
            "INSERT INTO o2 SELECT * FROM orders; DROP TABLE orders; ALTER TABLE o2 RENAME TO orders;"
        )
    discarded = tidesync("dlq", "discard", str(shop), str(entries[3]["id"]))
    assert discarded.returncode == 0 and "discarded 1" in discarded.stdout
    replayed = tidesync("dlq", "replay", str(shop), "--all")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "written 3" in replayed.stdout
    rows = dst_rows(tmp_path)
    assert rows[101] == (101, -5, "later") and rows[102] == (102, -7, "bad") and 103 not in rows
    assert status(shop)["dlq_depth"] == 0


def test_corrupt_state_file_is_a_clear_error(shop: Path, tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"garbage" * 1000)
    result = tidesync("run", str(shop))
    assert result.returncode == 1
    assert "state.db" in result.stderr and "Traceback" not in result.stderr
    assert "not a tidesync state database" in result.stderr or "corrupt" in result.stderr


def test_missing_source_table_is_a_clear_error(shop: Path, tmp_path: Path) -> None:
    shop.write_text(shop.read_text().replace("tables: [orders]", "tables: [nope]"))
    result = tidesync("run", str(shop))
    assert result.returncode == 1
    assert "table 'nope' does not exist" in result.stderr and "Traceback" not in result.stderr


def test_a_third_party_plugin_registers_through_an_entry_point(tmp_path: Path) -> None:
    """A package installed beside tidesync adds a sink type, validated like the built-ins."""
    pkg = tmp_path / "site"
    (pkg / "tsplugin").mkdir(parents=True)
    (pkg / "tsplugin" / "__init__.py").write_text(
        textwrap.dedent(
            """
            import json
            from typing import Literal
            from pydantic import BaseModel, ConfigDict
            from tidesync.registry import Plugin

            class JsonlConfig(BaseModel):
                model_config = ConfigDict(extra="forbid")
                type: Literal["jsonl"] = "jsonl"
                path: str

            class JsonlSink:
                def __init__(self, config):
                    self.path = config.path
                async def open(self, ctx): pass
                async def write(self, events, *, replay=False):
                    with open(self.path, "a") as f:
                        for e in events:
                            f.write(json.dumps({"key": list(e.key), "op": e.op}) + "\\n")
                async def close(self): pass

            def plugin():
                return Plugin("sink", "jsonl", JsonlConfig, JsonlSink, "append events to a file")
            """
        )
    )
    dist = pkg / "tsplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tsplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[tidesync.sinks]\njsonl = tsplugin:plugin\n")
    with sqlite3.connect(tmp_path / "src.db") as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
    config = tmp_path / "plug.yaml"
    base = (
        f"state: sqlite:///{tmp_path}/state.db\npipelines:\n  - name: plug\n"
        f"    source: {{type: sqlite, path: {tmp_path}/src.db, tables: [t]}}\n"
    )
    env = {"PYTHONPATH": str(pkg)}
    config.write_text(base + f"    sink: {{type: jsonl, path: {tmp_path}/out.jsonl, colour: red}}\n")
    bad = tidesync("validate", str(config), env=env)
    assert bad.returncode == 2 and "plug.yaml:5: pipelines[0].sink.colour: unknown key" in bad.stderr
    config.write_text(base + f"    sink: {{type: jsonl, path: {tmp_path}/out.jsonl}}\n")
    assert tidesync("validate", str(config), env=env).returncode == 0
    log = tmp_path / "plug.log"
    proc = start(config, log, env=env)
    try:
        wait_until(
            lambda: (tmp_path / "out.jsonl").exists() and len((tmp_path / "out.jsonl").read_text().splitlines()) == 5,
            timeout=60,
        )
    finally:
        stop(proc, log)
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["key"] for x in lines] == [[i] for i in range(5)] and {x["op"] for x in lines} == {"snapshot"}


def test_demo_reports_destination_equals_source(tmp_path: Path) -> None:
    result = tidesync("demo", "--duration", "3", "--rate", "1500", "--rows", "300", "--no-live", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK destination == source" in result.stdout
