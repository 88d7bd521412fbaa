"""Reconciliation on SQLite files: the CLI, repairs that fail into the dead-letter queue, transform
failures, the rate limit, and the schedule in the pipeline config."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidesync.cli import app
from tidesync.config import LoadedConfig, load_config
from tidesync.reconcile.config import ReconcileOptions
from tidesync.reconcile.run import reconcile_pipeline
from tidesync.reconcile.schedule import ReconcileSchedules
from tidesync.state import open_state_store
from tidesync.state.store import DeadLetterFilter
from tidesync.testing import FakeClock, eventually

SOURCE = "CREATE TABLE items (id INTEGER PRIMARY KEY, code TEXT, qty INTEGER NOT NULL, updated_at TEXT NOT NULL)"
DEST = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, code INTEGER, qty INTEGER NOT NULL CHECK (qty >= 0),"
    " updated_at TEXT NOT NULL)"
)


def setup(tmp_path: Path, *, rows: int = 3000, transforms: str = "[{cast: {code: int}}]", extra: str = "") -> Path:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    data = [(i, str(i * 3), i % 40, "2024-01-01 00:00:00") for i in range(1, rows + 1)]
    with sqlite3.connect(src) as c:
        c.execute(SOURCE)
        c.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", data)
    with sqlite3.connect(dst) as c:
        c.execute(DEST)
        c.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", [(i, int(code), q, u) for i, code, q, u in data])
        c.execute("DELETE FROM items WHERE id IN (10, 1500)")
        c.execute("UPDATE items SET qty = qty + 1 WHERE id = 2999")
        c.execute("INSERT INTO items VALUES (5000, 1, 1, '2024-01-01 00:00:00')")
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""
state: sqlite:///{tmp_path / "state.db"}
pipelines:
  - name: p
    source: {{type: sql_poll, dsn: "sqlite:///{src}", tables: [items], cursor: updated_at}}
    transforms: {transforms}
    sink: {{type: sqlite, path: "{dst}"}}
{extra}
"""
    )
    return config


def dest_rows(tmp_path: Path) -> dict[int, tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "dst.db") as c:
        return {r[0]: r[1:] for r in c.execute("SELECT id, code, qty FROM items")}


def test_cli_reports_drift_then_repairs_it(tmp_path: Path) -> None:
    config = setup(tmp_path)
    cli = CliRunner()
    found = cli.invoke(app, ["reconcile", str(config), "p", "--chunk-size", "500", "--json"])
    assert found.exit_code == 1, found.output
    report = json.loads(found.stdout)
    (t,) = report["tables"]
    assert (t["missing"], t["extra"], t["different"]) == (2, 1, 1)
    assert {(d["kind"], tuple(d["key"])) for d in t["differences"]} == {
        ("missing", (10,)),
        ("missing", (1500,)),
        ("extra", (5000,)),
        ("different", (2999,)),
    }
    # Each row once, then the re-check of the 3 suspects the source has (the extra one it has not).
    assert t["read"]["source"]["rows_fetched"] == 3000 + 3
    repaired = cli.invoke(app, ["reconcile", str(config), "p", "--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert "4 repaired" in repaired.output
    clean = cli.invoke(app, ["reconcile", str(config), "p"])
    assert clean.exit_code == 0 and "no drift" in clean.output
    rows = dest_rows(tmp_path)
    assert rows[10] == (30, 10) and 5000 not in rows and rows[2999] == (8997, 2999 % 40)


async def test_a_repair_the_destination_rejects_goes_to_the_dead_letter_queue(tmp_path: Path) -> None:
    config = load_config(setup(tmp_path))
    with sqlite3.connect(tmp_path / "src.db") as c:
        c.execute("UPDATE items SET qty = -5 WHERE id = 10")  # the destination's CHECK refuses it
        c.execute("UPDATE items SET code = 'abc' WHERE id = 20")  # the cast to int fails: unmappable
    report = await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=700, repair=True))
    (t,) = report.tables
    assert t.result.unmappable == 1  # id 20: neither compared nor repaired
    assert t.result.dead_lettered == 1 and t.result.repaired == 3 and report.unrepaired == 1
    store = open_state_store(config.state_url)
    await store.open()
    try:
        (letter,) = await store.dlq_list(DeadLetterFilter(pipeline="p"))
        assert letter.sink == "sink" and letter.key == (10,) and letter.error_class == "permanent"
        assert letter.event.after is not None and letter.event.after["qty"] == -5
    finally:
        await store.close()
    assert 10 not in dest_rows(tmp_path) and 1500 in dest_rows(tmp_path)


async def test_the_rate_limit_paces_reads_on_the_clock(tmp_path: Path) -> None:
    config = load_config(setup(tmp_path, rows=2000))
    clock = FakeClock()
    report = await reconcile_pipeline(config, "p", ReconcileOptions(chunk_size=500, rate=1000), clock=clock)
    (t,) = report.tables
    read = t.source_counters.rows_read + t.dest_counters.rows_read
    # Each side may read 1000 rows a second: the waits add up to what was read over the rate.
    assert sum(clock.sleeps) == pytest.approx(read / 1000)
    assert t.seconds >= t.source_counters.rows_read / 1000


async def test_the_schedule_in_the_config_repairs_while_running(tmp_path: Path) -> None:
    config: LoadedConfig = load_config(
        setup(tmp_path, rows=500, extra="    reconcile: {every: 50ms, repair: true, chunk_size: 100}")
    )
    assert config.pipeline("p").config.reconcile is not None
    schedules = ReconcileSchedules(config, ["p"]).start()
    try:
        await eventually(lambda: "p" in schedules.reports, timeout=20, message="a scheduled run")
        assert schedules.reports["p"].drift == 2  # id 10 missing, id 5000 extra (the others are beyond 500)
        with sqlite3.connect(tmp_path / "dst.db") as c:
            c.execute("DELETE FROM items WHERE id = 7")
        await eventually(lambda: 7 in dest_rows(tmp_path), timeout=20, message="the next run repairs id 7")
    finally:
        await schedules.stop()
    assert dest_rows(tmp_path)[10] == (30, 10)


def test_a_bad_schedule_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    config = setup(tmp_path, extra="    reconcile: {every: often}")
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    assert "pipelines[0].reconcile.every" in result.output and "cannot read duration" in result.output
