"""A spreadsheet file as a two-way sync side: xlsx (and csv) <-> Postgres, edits on both sides, nothing lost.

The person's edits are made as an editor makes them: load the workbook, set a
cell, save to a temporary file and rename it over the original. Like a
careful editor (LibreOffice's "the file was modified since you opened it"),
it checks just before its rename that the file is still the one it loaded,
and loads it again if not: an editor that overwrites a newer file with the
copy it holds undoes the sync's writes to the sheet (README, Known limits).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import random
import uuid
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook

from tests.integration.test_sync_support import Side, SyncHarness, a_conflict_settled_by_the_cli, pg_source, versions
from tidesync.sheets.watch import signature
from tidesync.testing import eventually

PG = "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text)"
COLUMNS = "id, name, qty, note"


def new_xlsx(path: Path, rows: list[tuple[Any, ...]]) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Items"
    ws.append(["id", "name", "qty", "note"])
    for r in rows:
        ws.append(list(r))
    wb.save(path)


def sheet_rows(path: Path) -> list[tuple[Any, ...]]:
    ws = load_workbook(path)["Items"]
    rows = [tuple(r[:4]) for r in ws.iter_rows(min_row=2, values_only=True) if any(v is not None for v in r)]
    return sorted(rows, key=repr)


def person_edits_xlsx(path: Path, key: int, column: str, value: Any) -> None:
    """Set the cell of row ``key``, column ``column`` as an editor does (load, edit, save, rename over)."""
    while True:
        seen = signature(path)
        wb = load_workbook(path)
        ws = wb["Items"]
        header = [c.value for c in ws[1]]
        for row in ws.iter_rows(min_row=2):
            if row[0].value == key:
                row[header.index(column)].value = value
                break
        else:
            raise AssertionError(f"no row {key} in the sheet")
        tmp = path.with_name(f".~{path.name}.{uuid.uuid4().hex[:6]}")
        wb.save(tmp)
        if signature(path) != seen:  # saved by someone else meanwhile: take their version and edit again
            tmp.unlink()
            continue
        os.replace(tmp, path)
        return


def csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(), newline="")))


def person_edits_csv(path: Path, edit: Any) -> None:
    """``edit(rows)`` changes the csv's rows (header first); saved as an editor saves (temporary file, rename)."""
    while True:
        seen = signature(path)
        rows = csv_rows(path)
        edit(rows)
        tmp = path.with_name(f".~{path.name}")
        with open(tmp, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
        if signature(path) != seen:
            tmp.unlink()
            continue
        os.replace(tmp, path)
        return


def sheet_source(path: Path, fmt: str = "xlsx") -> str:
    sheet = ", sheet: Items" if fmt == "xlsx" else ""
    return f'{{type: {fmt}, path: "{path}"{sheet}, key: [id], poll_interval: 0.2s, settle: 0.05s}}'


def config(h: SyncHarness, a: Side, tmp: Path, b_source: str, rules: str = "{default: lww, skew: 0s}") -> str:
    return f"""
state: sqlite:///{tmp / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp / "wa")}, table: items, key: id}}
    b: {{source: {b_source}, key: id}}
    fields: {{id: id, name: name, qty: qty, note: note}}
    rules: {rules}
"""


async def test_xlsx_and_postgres_lose_no_edit(pg_database: str, tmp_path: Path) -> None:
    a = Side("pg", pg_database)
    a.sql(PG)
    a.sql("INSERT INTO items SELECT i, 'n' || i, i, NULL FROM generate_series(1, 10) i")
    book = tmp_path / "items.xlsx"
    new_xlsx(book, [])  # the header only: pairing fills it
    h = SyncHarness(tmp_path, f"x{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, sheet_source(book))
    rng = random.Random(11)
    try:
        await h.start()
        await eventually(lambda: sheet_rows(book) == a.rows(COLUMNS), timeout=30, message="pairing fills the sheet")
        expected = {r[0]: list(r) for r in a.rows(COLUMNS)}
        # Postgres (an application) owns name everywhere and qty on rows 1-5; the person owns note everywhere
        # and qty on rows 6-10: every (row, field) has one writer, so every last edit must be in both places.
        for i in range(40):
            key = rng.randint(1, 10)
            if i % 2 == 0:
                if rng.random() < 0.5 or key > 5:
                    a.sql("UPDATE items SET name = %s WHERE id = %s", (f"app{i}", key))
                    expected[key][1] = f"app{i}"
                else:
                    a.sql("UPDATE items SET qty = %s WHERE id = %s", (100 + i, key))
                    expected[key][2] = 100 + i
            elif rng.random() < 0.5 or key <= 5:
                await asyncio.to_thread(person_edits_xlsx, book, key, "note", f"person{i}")
                expected[key][3] = f"person{i}"
            else:
                await asyncio.to_thread(person_edits_xlsx, book, key, "qty", 200 + i)
                expected[key][2] = 200 + i
            await asyncio.sleep(0.25)  # edits spread over ~10 s, interleaved with the sync's writes
        want = sorted((tuple(v) for v in expected.values()), key=repr)
        await eventually(
            lambda: a.rows(COLUMNS) == want and sheet_rows(book) == want,
            timeout=60,
            message="both sides hold every last edit",
        )
        await h.quiet()
        proc = h.runner.processor
        assert proc is not None
        sheet_side = h.runner.endpoints["b"]
        writes, rewrites = dict(proc.stats.writes), sheet_side.rewrites  # type: ignore[attr-defined]
        before = (versions(a), signature(book))
        await h.quiet(cycles=h.runner.idle_cycles + 8)
        assert proc.stats.writes == writes, "the sync kept writing after the edits stopped"
        assert sheet_side.rewrites == rewrites  # type: ignore[attr-defined]
        assert (versions(a), signature(book)) == before, "a side kept changing after the edits stopped"
        assert proc.stats.echoes + proc.stats.echo_fields > 0  # the sheet's echoes were recognised by the ledger
        assert await h.cli_json("conflicts", "list", str(h.path)) == []
    finally:
        await h.close()


async def test_same_cell_edited_on_both_sides_waits_for_a_person(pg_database: str, tmp_path: Path) -> None:
    a = Side("pg", pg_database)
    a.sql(PG)
    a.sql("INSERT INTO items VALUES (1, 'ada', 1, NULL), (2, 'bob', 2, 'b')")
    book = tmp_path / "items.xlsx"
    new_xlsx(book, [(1, "ada", 1, None), (2, "bob", 2, "b")])
    h = SyncHarness(tmp_path, f"m{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, sheet_source(book), rules="{default: manual}")
    try:
        await a_conflict_settled_by_the_cli(
            h, a, lambda row, col, value: person_edits_xlsx(book, row, col, value), lambda: sheet_rows(book), COLUMNS
        )
    finally:
        await h.close()


async def test_csv_side_insert_update_delete_both_ways(pg_database: str, tmp_path: Path) -> None:
    a = Side("pg", pg_database)
    a.sql(PG)
    a.sql("INSERT INTO items VALUES (1, 'ada', 1, NULL)")
    sheet = tmp_path / "items.csv"
    sheet.write_text("id,name,qty,note\n1,ada,1,\n2,bob,2,from the sheet\n")
    h = SyncHarness(tmp_path, f"c{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, sheet_source(sheet, "csv"))

    def sheet_view() -> list[tuple[Any, ...]]:
        rows = csv_rows(sheet)[1:]
        return sorted(
            ((int(r[0]), r[1], int(r[2]) if r[2] else None, (r[3] if len(r) > 3 else "") or None) for r in rows),
            key=repr,
        )

    async def both(want: list[tuple[Any, ...]], what: str) -> None:
        try:
            await eventually(lambda: a.rows(COLUMNS) == want and sheet_view() == want, timeout=30, message=what)
        except AssertionError as exc:
            proc = h.runner.processor
            extra = ""
            if proc is not None:
                for k in (1, 2, 3, 4):
                    rid = proc.fmap.rid_of("a", (k,))
                    rec = await h.runner.state.shadow_get(proc.scope, "record", [rid])
                    extra += f"\n  {k}: {rec[rid].row if rid in rec else None}"
                extra += f"\n {proc.stats}"
            raise AssertionError(f"{exc}\n  Postgres {a.rows(COLUMNS)}\n  csv {sheet.read_text()!r}{extra}") from None

    try:
        await h.start()
        await both([(1, "ada", 1, None), (2, "bob", 2, "from the sheet")], "pairing copies the sheet's row")
        a.sql("INSERT INTO items VALUES (3, 'cy', 3, 'from the app')")
        a.sql("UPDATE items SET qty = 10 WHERE id = 1")
        await both(
            [(1, "ada", 10, None), (2, "bob", 2, "from the sheet"), (3, "cy", 3, "from the app")], "app -> sheet"
        )

        def edit(rows: list[list[str]]) -> None:
            rows[:] = [r for r in rows if r[0] != "3"]  # delete row 3
            for r in rows:
                if r[0] == "2":
                    r[1] = "bob (person)"  # update row 2
            rows.append(["4", "dee", "4", "typed in"])  # insert row 4

        await asyncio.to_thread(person_edits_csv, sheet, edit)
        await both(
            [(1, "ada", 10, None), (2, "bob (person)", 2, "from the sheet"), (4, "dee", 4, "typed in")],
            "sheet -> app",
        )
        a.sql("DELETE FROM items WHERE id = 1")
        await both([(2, "bob (person)", 2, "from the sheet"), (4, "dee", 4, "typed in")], "a delete in the app")
        assert csv_rows(sheet)[0] == ["id", "name", "qty", "note"]
    finally:
        await h.close()
