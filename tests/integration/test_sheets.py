"""File spreadsheets as sources and sinks: exact events from edits, bad cells, half-written files, and
Postgres → xlsx through ``tidesync run`` while a person re-saves the workbook, and Postgres → an xlsx sink
without ``key:`` (rows found by a hidden ``_tidesync_id`` column).

The sources are driven in-process over a real file and a SQLite state store;
the end-to-end test runs ``tidesync run`` in a subprocess.
"""

from __future__ import annotations

import csv
import os
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest
from openpyxl.styles import Font

from tests.integration.e2e_support import running, start_engine, stop_engine
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sheets.config import SheetSourceConfig
from tidesync.sheets.source import SheetSource
from tidesync.state import open_state_store
from tidesync.testing import read_batches, wait_until

HEADER = ["id", "name", "qty", "phone"]
ROWS = [[1, "Ada", 5, "0123"], [2, "Bob", 7, "0456"], [3, "Cy", 9, None]]


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    yield Context(pipeline="sheets", name="source", state=store)
    await store.close()


class SheetFile:
    """One test sheet, written as csv or xlsx, in place or by rename-and-replace."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt

    def write(self, rows: list[list[Any]], *, replace: bool = False) -> None:
        target = self.path.with_name(".~" + self.path.name) if replace else self.path
        if self.fmt == "xlsx":
            wb = openpyxl.Workbook()
            ws = wb.active
            assert ws is not None
            ws.title = "Customers"
            ws.append(HEADER)
            for row in rows:
                ws.append(row)
            wb.save(target)
        else:
            with open(target, "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(HEADER)
                w.writerows([["" if v is None else v for v in row] for row in rows])
        if replace:
            os.replace(target, self.path)  # an editor's save: a new inode under the old name

    def source(self, **extra: Any) -> SheetSource:
        sheet = {"sheet": "Customers"} if self.fmt == "xlsx" else {}
        cfg = {"type": self.fmt, "path": str(self.path), "key": ["id"], "settle": 0.05, "poll_interval": 0.05}
        return SheetSource(SheetSourceConfig.model_validate({**cfg, **sheet, **extra}))


async def events_of(source: SheetSource, ctx: Context, count: int) -> list[ChangeEvent]:
    """Read ``count`` events (and commit their state, as the engine would); then check nothing more comes."""
    batches = await read_batches(source, count, timeout=20)
    for b in batches:
        if b.state is not None:
            await ctx.state.commit(ctx.pipeline, b.state)
    extra = await source.read(100, 0.3)
    assert extra.events == [] and extra.rejected == [], extra
    return [e for b in batches for e in b.events]


def brief(events: list[ChangeEvent]) -> list[tuple[str, tuple[Any, ...], tuple[str, ...] | None]]:
    return [(e.op, e.key, e.changed) for e in events]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
async def test_edits_become_exact_events(tmp_path: Path, ctx: Context, fmt: str) -> None:
    sheet = SheetFile(tmp_path / f"customers.{fmt}", fmt)
    rows = [list(r) for r in ROWS]
    sheet.write(rows)
    src = sheet.source()
    await src.open(ctx, None)
    first = await events_of(src, ctx, 3)
    assert brief(first) == [("insert", (1,), None), ("insert", (2,), None), ("insert", (3,), None)]
    assert first[0].after == {"id": 1, "name": "Ada", "qty": 5, "phone": "0123"}  # the leading zero kept
    assert first[2].after is not None and first[2].after["phone"] is None

    rows[1][1] = "Bobby"  # a single-cell edit
    sheet.write(rows)
    (upd,) = await events_of(src, ctx, 1)
    assert brief([upd]) == [("update", (2,), ("name",))]
    assert upd.before is not None and upd.before["name"] == "Bob" and upd.after is not None
    assert upd.after["name"] == "Bobby"

    rows.append([4, "Dee", 1, "0789"])  # a row insert
    sheet.write(rows)
    assert brief(await events_of(src, ctx, 1)) == [("insert", (4,), None)]

    del rows[0]  # a row delete
    sheet.write(rows)
    (gone,) = await events_of(src, ctx, 1)
    assert brief([gone]) == [("delete", (1,), None)] and gone.before is not None and gone.before["name"] == "Ada"

    rows[0][2] = 8  # saved by rename-and-replace
    sheet.write(rows, replace=True)
    assert brief(await events_of(src, ctx, 1)) == [("update", (2,), ("qty",))]
    positions = [e.position for e in first]
    assert positions == sorted(positions)
    await src.close()

    # A restart diffs against what was handed on, not from scratch: only the edit made while stopped.
    rows[1][1] = "Cyril"
    sheet.write(rows)
    again = sheet.source()
    await again.open(ctx, upd.position)
    (after_restart,) = await events_of(again, ctx, 1)
    assert brief([after_restart]) == [("update", (3,), ("name",))]
    assert after_restart.position > upd.position
    await again.close()


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
async def test_a_bad_cell_is_dead_lettered_with_its_address_and_the_rest_flow(
    tmp_path: Path, ctx: Context, fmt: str
) -> None:
    sheet = SheetFile(tmp_path / f"customers.{fmt}", fmt)
    rows = [list(r) for r in ROWS]
    rows[1][2] = "abc"
    sheet.write(rows)
    src = sheet.source(columns={"qty": "number"})
    await src.open(ctx, None)
    batches = await read_batches(src, 3, timeout=20)
    events = [e for b in batches for e in b.events]
    rejected = [r for b in batches for r in b.rejected]
    for b in batches:
        await ctx.state.commit(ctx.pipeline, b.state)
    assert brief(events) == [("insert", (1,), None), ("insert", (3,), None)]
    name = "Customers" if fmt == "xlsx" else "customers"
    assert [(e.key, reason) for e, reason in rejected] == [((2,), f"{name}!C3: 'abc' is not a number")]

    rows[0][1] = "Ada L."  # another edit: the bad row is not reported again
    sheet.write(rows)
    assert brief(await events_of(src, ctx, 1)) == [("update", (1,), ("name",))]

    rows[1][2] = 12  # fixed: it flows
    sheet.write(rows)
    (fixed,) = await events_of(src, ctx, 1)
    assert fixed.op == "insert" and fixed.key == (2,) and fixed.after is not None and fixed.after["qty"] == 12
    await src.close()


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
async def test_a_half_written_file_is_not_read_as_a_truncated_sheet(tmp_path: Path, ctx: Context, fmt: str) -> None:
    sheet = SheetFile(tmp_path / f"customers.{fmt}", fmt)
    rows = [[i, f"name {i}", i, None] for i in range(1, 201)]
    sheet.write(rows)
    src = sheet.source(watch="poll")
    await src.open(ctx, None)
    assert len(await events_of(src, ctx, 200)) == 200

    rows[199][1] = "last one edited"
    sheet.write(rows)
    full = sheet.path.read_bytes()
    cut = full[: len(full) * 2 // 3] if fmt == "xlsx" else full[: full.rindex(b"last one") + 4]
    sheet.path.write_bytes(cut)  # a writer stopped half-way: the file holds still, incomplete
    nothing = await src.read(100, 0.6)
    assert nothing.events == [], "a half-written file was read as a sheet"
    assert src.unreadable >= 1  # it was looked at, and found incomplete
    reads = src.reads
    sheet.path.write_bytes(full)  # the writer finishes
    assert brief(await events_of(src, ctx, 1)) == [("update", (200,), ("name",))]
    assert src.reads == reads + 1
    await src.close()


# --- Postgres -> xlsx through `tidesync run` --------------------------------------------------------

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: pg_xlsx
    source: {{type: postgres, dsn: "{dsn}", tables: [customers], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill"}}
    sink: {{type: xlsx, path: "{out}", sheet: Customers, key: [id]}}
    batch: {{max_events: 500, max_wait_ms: 50}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""


class Load:
    """Single-row changes to ``customers`` in their own transactions until ``total`` are made."""

    def __init__(self, dsn: str, total: int, seed: int) -> None:
        self.dsn, self.total, self.rng = dsn, total, random.Random(seed)
        self.done = 0
        self.next_id = 1000
        self.error: BaseException | None = None

    def run(self, count: int) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                # Each change still commits alone, in the same order and WAL; the commit only does not wait for
                # its WAL flush (about 3 ms here), which made the load, not the pipeline, most of the test's time.
                conn.execute("SET synchronous_commit TO off")
                ids = [r[0] for r in conn.execute("SELECT id FROM customers").fetchall()]
                for _ in range(count):
                    roll = self.rng.random()
                    if roll < 0.3 or len(ids) < 10:
                        conn.execute(
                            "INSERT INTO customers VALUES (%s, %s, %s, %s)",
                            (self.next_id, f"c{self.next_id}", self.rng.randint(0, 99), f"0{self.next_id}"),
                        )
                        ids.append(self.next_id)
                        self.next_id += 1
                    elif roll < 0.85:
                        conn.execute("UPDATE customers SET qty = qty + 1 WHERE id = %s", (self.rng.choice(ids),))
                    else:
                        conn.execute("DELETE FROM customers WHERE id = %s", (ids.pop(self.rng.randrange(len(ids))),))
                    self.done += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def table_rows(dsn: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: tuple(r) for r in conn.execute("SELECT id, name, qty, phone FROM customers")}


def file_rows(path: Path) -> dict[int, tuple[Any, ...]] | None:
    try:
        ws = openpyxl.load_workbook(path)["Customers"]
    except Exception:  # not there yet, or replaced while being read
        return None
    header = [c.value for c in ws[1]]
    cols = [header.index(n) for n in ("id", "name", "qty", "phone")]
    out = {}
    for values in ws.iter_rows(min_row=2, values_only=True):
        if values[cols[0]] is not None:
            out[values[cols[0]]] = tuple(values[c] for c in cols)
    return out


def person_resaves(path: Path) -> None:
    """Open the workbook, make the header bold, add a formula column and a width, and save it."""
    wb = openpyxl.load_workbook(path)
    ws = wb["Customers"]
    width = len([c for c in ws[1] if c.value is not None])
    col = openpyxl.utils.get_column_letter(width + 1)
    ws[f"{col}1"] = "double_qty"
    for r in range(2, ws.max_row + 1):
        ws[f"{col}{r}"] = f"=C{r}*2"
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.column_dimensions["B"].width = 33
    wb.create_sheet("Notes")["A1"] = "kept"
    wb.save(path)


TOTAL = 5000  # single-row changes, in two bursts with the person's re-save between them


@pytest.mark.slow
def test_postgres_to_xlsx_under_load_while_a_person_resaves_the_workbook(tmp_path: Path, pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id integer PRIMARY KEY, name text, qty integer, phone text)")
        conn.execute("INSERT INTO customers SELECT g, 'c' || g, g % 10, '0' || g FROM generate_series(1, 200) g")
    out = tmp_path / "exports" / "customers.xlsx"
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path, dsn=pg_database, out=out))
    log = tmp_path / "engine.log"
    proc = start_engine(config, log)
    load = Load(pg_database, TOTAL, seed=19)
    try:
        same: Callable[[], bool] = lambda: running(proc, log) and file_rows(out) == table_rows(pg_database)  # noqa: E731
        wait_until(same, timeout=60, interval=0.2, message="the snapshot in the workbook")
        first = threading.Thread(target=load.run, args=(TOTAL // 2,))
        first.start()
        first.join(120)
        wait_until(same, timeout=60, interval=0.2, message=f"the first {TOTAL // 2:,} changes in the workbook")
        person_resaves(out)  # between two bursts: a stale copy saved over newer rows would undo them
        second = threading.Thread(target=load.run, args=(TOTAL - TOTAL // 2,))
        second.start()
        second.join(120)
        assert load.error is None, load.error
        assert load.done == TOTAL
        wait_until(same, timeout=60, interval=0.2, message=f"all {TOTAL:,} changes in the workbook")
    finally:
        stop_engine(proc, log)
    wb = openpyxl.load_workbook(out)
    ws = wb["Customers"]
    assert ws["A1"].font.b and ws.column_dimensions["B"].width == 33
    assert wb["Notes"]["A1"].value == "kept"
    header = [c.value for c in ws[1]]
    formula = header.index("double_qty")
    for r in range(2, ws.max_row + 1):
        cell = ws.cell(row=r, column=formula + 1).value
        assert cell is None or cell == f"=C{r}*2", (r, cell)  # moved rows keep formulas pointing at their own row
    kept = sum(1 for r in range(2, ws.max_row + 1) if ws.cell(row=r, column=formula + 1).value)
    assert kept > 0


# --- a bad cell through `tidesync run`: dead-lettered with its address, the rest applied ----------------

CSV_TO_SQLITE = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: csv_sqlite
    source: {{type: csv, path: "{csv}", key: [id], columns: {{qty: integer}}, settle: 0.05, poll_interval: 0.1}}
    sink: {{type: sqlite, path: "{db}", create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 20}}
"""


def test_a_bad_cell_reaches_the_dead_letter_queue_through_the_engine(tmp_path: Path) -> None:
    import json
    import sqlite3
    import subprocess
    import sys

    sheet = SheetFile(tmp_path / "customers.csv", "csv")
    rows = [list(r) for r in ROWS]
    rows[2][2] = "nine"
    sheet.write(rows)
    db = tmp_path / "out.db"
    config = tmp_path / "tidesync.yaml"
    config.write_text(CSV_TO_SQLITE.format(tmp=tmp_path, csv=sheet.path, db=db))
    log = tmp_path / "engine.log"
    proc = start_engine(config, log)

    def applied() -> list[tuple[Any, ...]]:
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute("SELECT id, name, qty, phone FROM customers ORDER BY id").fetchall()
            except sqlite3.OperationalError:
                return []

    try:
        wait_until(lambda: running(proc, log) and len(applied()) == 2, timeout=30, message="the two good rows")
        rows[2][2] = 9  # fixed in the sheet: it waits behind its dead letter (per-key order)
        rows[0][1] = "Ada L."
        sheet.write(rows)
        wait_until(lambda: running(proc, log) and applied()[0][1] == "Ada L.", timeout=30, message="the edit")
    finally:
        stop_engine(proc, log)
    assert applied() == [(1, "Ada L.", 5, "0123"), (2, "Bob", 7, "0456")]
    out = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "dlq", "list", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    letters = json.loads(out.stdout)
    assert [(d["key"], d["error_class"], d["error"]) for d in letters] == [
        ([3], "transform", "customers!C4: 'nine' is not an integer"),
        ([3], "blocked", letters[1]["error"]),
    ], letters


# --- the xlsx sink keeps what it does not write ------------------------------------------------------


async def test_the_xlsx_sink_writes_only_its_cells_and_keeps_the_rest(tmp_path: Path, ctx: Context) -> None:
    from tidesync.sheets.config import SheetSinkConfig
    from tidesync.sheets.sink import SheetSink

    path = tmp_path / "book.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Customers"
    ws.append(["id", "name", "qty", "double"])
    for i in range(1, 5):
        ws.append([i, f"n{i}", i * 10, f"=C{i + 1}*2"])
    ws["B3"].font = Font(italic=True)
    ws.column_dimensions["B"].width = 40
    wb.create_sheet("Other")["A1"] = "untouched"
    wb.save(path)

    def event(op: str, k: int, pos: int, changed: tuple[str, ...] | None = None, **row: Any) -> ChangeEvent:
        return ChangeEvent("customers", (k,), op, after={"id": k, **row} if op != "delete" else None,
                           changed=changed, position=(pos,))  # fmt: skip

    sink = SheetSink(SheetSinkConfig(type="xlsx", path=str(path), sheet="Customers", key=["id"]))
    await sink.open(ctx)
    batch = [
        event("delete", 1, 1),
        event("update", 2, 2, ("name",), name='=HYPERLINK("x")', qty=999),  # qty not in changed: not written
        event("insert", 9, 3, name="new", qty=1),
    ]
    await sink.write(batch)
    await sink.write(batch)  # a re-delivery: nothing changes
    assert sink.rewrites == 1
    got = openpyxl.load_workbook(path)
    ws = got["Customers"]
    assert [[c.value for c in row] for row in ws.iter_rows()] == [
        ["id", "name", "qty", "double"],
        [2, '=HYPERLINK("x")', 20, "=C2*2"],  # moved up a row, its formula with it
        [3, "n3", 30, "=C3*2"],
        [4, "n4", 40, "=C4*2"],
        [9, "new", 1, None],
    ]
    assert ws["B2"].data_type == "s"  # text that looks like a formula stays text
    assert ws["B2"].font.i and ws.column_dimensions["B"].width == 40  # B3's style moved up with its row
    assert got["Other"]["A1"].value == "untouched"

    marking = SheetSink(SheetSinkConfig(type="xlsx", path=str(path), sheet="Customers", key=["id"], deletes="mark"))
    await marking.open(Context(pipeline="sheets", name="marking", state=ctx.state))
    await marking.write([event("delete", 3, 10)])
    ws = openpyxl.load_workbook(path)["Customers"]
    assert ws["E1"].value == "_deleted" and ws["E3"].value is True and ws["A3"].value == 3
    await marking.write([event("update", 3, 11, ("qty",), qty=31)])
    ws = openpyxl.load_workbook(path)["Customers"]
    assert ws["E3"].value is None and ws["C3"].value == 31


# --- Postgres -> an xlsx sink without key: a hidden _tidesync_id column --------------------------------------

KEYLESS = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{dsn}", tables: [lines], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill"}}
    sink: {{type: xlsx, path: "{out}", sheet: Lines}}
    batch: {{max_events: 200, max_wait_ms: 50}}
"""


def lines_in_table(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return sorted(tuple(r) for r in conn.execute("SELECT order_id, line, sku, qty FROM lines"))


def lines_in_book(path: Path) -> list[tuple[Any, ...]] | None:
    """Every data row of the sheet as (order_id, line, sku, qty, _tidesync_id), duplicates kept; sorted."""
    try:
        ws = openpyxl.load_workbook(path)["Lines"]
    except Exception:  # not there yet, or replaced while being read
        return None
    header = [c.value for c in ws[1]]
    cols = [header.index(n) for n in ("order_id", "line", "sku", "qty", "_tidesync_id")]
    rows = [tuple(values[c] for c in cols) for values in ws.iter_rows(min_row=2, values_only=True)]
    return sorted(r for r in rows if any(v is not None for v in r))


@pytest.mark.slow
def test_postgres_to_an_xlsx_sink_without_key_upserts_by_a_hidden_id_column(tmp_path: Path, pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE lines (order_id integer, line integer, sku text, qty integer, "
                     "PRIMARY KEY (order_id, line))")  # fmt: skip
        conn.execute("INSERT INTO lines SELECT g / 3, g % 3, 's' || g, g FROM generate_series(3, 62) g")
    out = tmp_path / "exports" / "lines.xlsx"
    name = "keyless_" + pg_database.rsplit("_", 1)[-1]  # a slot of its own (slots are per server)

    def matches() -> bool:
        book = lines_in_book(out)
        want = [(*r, f"[{r[0]},{r[1]}]") for r in lines_in_table(pg_database)]
        return book == want  # each row once, with its composite key as JSON in _tidesync_id

    def run(pipeline: str, then: Callable[[], None] | None = None) -> None:
        config = tmp_path / f"{pipeline}.yaml"
        config.write_text(KEYLESS.format(tmp=tmp_path, name=pipeline, dsn=pg_database, out=out))
        log = tmp_path / f"{pipeline}.log"
        proc = start_engine(config, log)
        try:
            wait_until(lambda: running(proc, log) and matches(), timeout=60, interval=0.2, message="the snapshot")
            if then is not None:
                then()
                wait_until(lambda: running(proc, log) and matches(), timeout=60, interval=0.2, message="the changes")
        finally:
            stop_engine(proc, log)

    def change() -> None:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE lines SET qty = qty * 100 WHERE line = 1")
            conn.execute("UPDATE lines SET sku = 'renamed' WHERE order_id = 5 AND line = 2")
            conn.execute("DELETE FROM lines WHERE order_id IN (2, 10)")
            conn.execute("INSERT INTO lines VALUES (2, 0, 'again', 1), (99, 0, 'new', 7)")

    run(name + "_a", change)
    ws = openpyxl.load_workbook(out)["Lines"]
    header = [c.value for c in ws[1]]
    assert header == ["order_id", "line", "sku", "qty", "_tidesync_id"]
    assert ws.column_dimensions["E"].hidden and not ws.column_dimensions["D"].hidden

    # A new pipeline into the same workbook snapshots every row again: each lands on its row, none is added.
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("UPDATE lines SET sku = 'while stopped' WHERE order_id = 99")  # last in key order
    run(name + "_b")
    book = lines_in_book(out)
    assert book is not None and len(book) == len(lines_in_table(pg_database)) == 56
    assert "while stopped" in {r[2] for r in book}
    assert openpyxl.load_workbook(out)["Lines"].column_dimensions["E"].hidden
