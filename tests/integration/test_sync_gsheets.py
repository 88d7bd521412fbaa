"""A Google sheet as a two-way sync side: the endpoint's outcomes, and Postgres <-> Google Sheets through the engine.

The Sheets API is the local fake (:mod:`tidesync.testing.gsheets`), served on
loopback in this process (the ``google`` fixture of ``test_gsheets.py``). A
person's edits are made on the fake's cells directly, as the Sheets UI makes
them (each one a new revision of the spreadsheet).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration import test_gsheets as gsheets_tests
from tests.integration.test_gsheets import SID, Google, brief, events_of
from tests.integration.test_sync_support import Side, SyncHarness, a_conflict_settled_by_the_cli, pg_source, versions
from tidesync.config import load_config
from tidesync.errors import ConfigError
from tidesync.protocols import Context
from tidesync.sheets.gsheets_config import GSheetsSourceConfig
from tidesync.sheets.gsheets_endpoint import GSheetsEndpoint
from tidesync.sheets.gsheets_source import GSheetsSource
from tidesync.sheets.table import Records, Table
from tidesync.sync.build import build_parts
from tidesync.sync.endpoint import DeleteOp, FieldWrite, InsertOp, UpdateOp
from tidesync.testing import eventually

google = gsheets_tests.google  # the fixture: the fake served on loopback, with a service account's key
ctx = gsheets_tests.ctx  # the fixture: a Context on a SQLite state store
HEADER = ["id", "name", "qty", "note"]
PG = "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text)"
COLUMNS = "id, name, qty, note"


def endpoint(google: Google, **extra: Any) -> GSheetsEndpoint:
    return GSheetsEndpoint(GSheetsSourceConfig.model_validate(google.conf(**extra)), ["id"])


# --- the endpoint on its own --------------------------------------------------------------------


async def test_update_outcomes_per_field_in_one_batch_update(google: Google) -> None:
    google.fake.add_spreadsheet(SID, {"Customers": [HEADER, [1, "ada", 10], [2, "bob", 12.5, "x"], [3, "cy", 0]]})
    ep = endpoint(google)
    await ep.open()
    seen = len(google.fake.seen)
    res = await ep.apply(
        [
            UpdateOp(
                (1,),
                (
                    FieldWrite("name", "ada l", expected="ada"),  # ok
                    FieldWrite("qty", 11, expected=99),  # conflict: the cell holds 10
                    FieldWrite("note", None, expected="gone"),  # already: the cell is empty
                ),
            ),
            UpdateOp((2,), (FieldWrite("qty", Decimal("13.75"), expected=Decimal("12.50")),)),  # 12.5 == 12.50
            UpdateOp((9,), (FieldWrite("name", "z", expected=None),)),  # missing
            UpdateOp((3,), (FieldWrite("name", "forced", expected="not cy", conditional=False),)),  # unconditional
        ]
    )
    assert [(r.status, dict(r.columns)) for r in res] == [
        ("ok", {"name": "ok", "qty": "conflict", "note": "already"}),
        ("ok", {"qty": "ok"}),
        ("missing", {"name": "missing"}),
        ("ok", {"name": "ok"}),
    ]
    assert google.fake.values(SID, "Customers") == [HEADER, [1, "ada l", 10], [2, "bob", 13.75, "x"], [3, "forced", 0]]
    calls = [(r.method, r.path.rsplit("/", 1)[1]) for r in google.fake.seen[seen:] if r.path != "/token"]
    assert calls == [  # a read, then the cells in one batchUpdate
        ("GET", "values:batchGet"),
        ("POST", "values:batchUpdate"),
    ], calls
    assert ep.rewrites == 1

    again = await ep.apply([UpdateOp((1,), (FieldWrite("name", "ada l", expected="ada"),))])  # repeated
    assert [dict(r.columns) for r in again] == [{"name": "already"}] and ep.rewrites == 1  # nothing sent
    await ep.close()


async def test_insert_exists_delete_and_values_as_cells_store_them(google: Google) -> None:
    google.fake.add_spreadsheet(SID, {"Customers": [HEADER, [1, "ada", 10], [2, "bob", 2, "x"], [3, "cy", 3]]})
    ep = endpoint(google)
    handed: list[tuple[Table, Records, float]] = []
    ep.listener = lambda t, r, at: handed.append((t, r, at))
    await ep.open()
    day = dt.date(2024, 1, 15)
    res = await ep.apply(
        [
            InsertOp({"name": "dee", "qty": 4, "born": day}, key=(4,)),  # ok; a new column for born
            InsertOp({"name": "ada again"}, key=(1,)),  # exists, with the row
            InsertOp({"name": "keyless"}),  # a sheet makes no keys
            DeleteOp((2,), expected={"name": "bob", "note": "x"}),  # ok
            DeleteOp((3,), expected={"name": "not cy"}),  # conflict: edited
            DeleteOp((9,)),  # missing
        ]
    )
    assert [r.status for r in res] == ["ok", "exists", "failed", "ok", "conflict", "missing"]
    assert res[1].row is not None and res[1].row["name"] == "ada"
    assert "makes no keys" in res[2].error
    assert google.fake.values(SID, "Customers") == [
        [*HEADER, "born"],
        [1, "ada", 10],
        [3, "cy", 3],
        [4, "dee", 4, "", "2024-01-15"],
    ]
    # The version written went to the listener: exactly what the sheet holds.
    ((table, records, _),) = handed
    assert table.header == (*HEADER, "born") and sorted(k[0] for k in records.rows) == [1, 3, 4]
    assert records.rows[(4,)]["born"] == day
    assert records.rows == {(r["id"],): r for r in await ep.scan()}  # a fresh read of the sheet: the same rows

    repeat = await ep.apply(
        [
            InsertOp({"name": "dee", "qty": 4, "born": day}, key=(4,)),
            DeleteOp((2,), expected={"name": "bob"}),
            UpdateOp((4,), (FieldWrite("qty", Decimal("4.0"), expected=3), FieldWrite("born", day, expected=None))),
            UpdateOp((1,), (FieldWrite("qty", 10.0, expected=1),)),  # 10 == 10.0 == Decimal("10")
        ]
    )  # a call repeated after a lost answer: nothing to send
    assert [(r.status, dict(r.columns)) for r in repeat] == [
        ("exists", {}),
        ("missing", {}),
        ("ok", {"qty": "already", "born": "already"}),
        ("ok", {"qty": "already"}),
    ]
    assert ep.rewrites == 1 and len(handed) == 1

    assert await ep.fetch([(4,), (9,)]) == {(4,): {"id": 4, "name": "dee", "qty": 4, "note": None, "born": day}}
    assert [k for k, _ in await ep.find({"qty": Decimal("3")})] == [(3,)]
    assert [r["id"] for r in await ep.scan()] == [1, 3, 4]
    await ep.close()


async def test_a_person_edit_since_the_read_is_a_conflict_and_a_missing_sheet_fails_at_open(google: Google) -> None:
    google.fake.add_spreadsheet(SID, {"Customers": [HEADER, [1, "ada", 1]]})
    ep = endpoint(google)
    await ep.open()
    google.fake.set(SID, "Customers", "B2", "ada (person)")  # typed in after the sync last saw "ada"
    (res,) = await ep.apply([UpdateOp((1,), (FieldWrite("name", "ada (app)", expected="ada"),))])
    assert dict(res.columns) == {"name": "conflict"}
    assert google.fake.values(SID, "Customers")[1][1] == "ada (person)"  # never overwritten
    await ep.close()

    missing = endpoint(google, sheet="Nope")
    try:
        await missing.open()
    except Exception as exc:
        assert "no such sheet" in str(exc)
    else:
        raise AssertionError("a missing sheet was accepted")
    finally:
        await missing.close()


async def test_a_row_the_sync_added_and_a_person_deleted_at_once_is_seen(google: Google, ctx: Context) -> None:
    google.fake.add_spreadsheet(SID, {"Customers": [HEADER, [1, "ada", 1]]})
    src = GSheetsSource(GSheetsSourceConfig.model_validate(google.conf(poll_interval=0.05)))
    await src.open(ctx, None)
    first, _ = await events_of(src, ctx, 1)
    assert brief(first) == [("insert", (1,), None)]
    ep = endpoint(google)
    ep.listener, ep.lock = src.observe, src.gate  # as a sync wires them
    await ep.open()
    (res,) = await ep.apply([InsertOp({"name": "bob", "qty": 2}, key=(2,))])
    assert res.status == "ok"
    google.fake.delete_row(SID, "Customers", 3)  # removed by a person before the source checked the sheet again
    events, _ = await events_of(src, ctx, 2)
    assert brief(events) == [("insert", (2,), None), ("delete", (2,), None)]  # the version written was diffed
    await ep.close()
    await src.close()


# --- Postgres <-> Google Sheets through the engine -----------------------------------------------


def sheet_rows(google: Google) -> list[tuple[Any, ...]]:
    """The Items sheet's data rows as Postgres would hold them (empty cells as None, integral numbers as int)."""

    def value(v: Any) -> Any:
        if v == "":
            return None
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    rows = google.fake.values(SID, "Items")[1:]
    return sorted((tuple(value(v) for v in (r + [""] * 4)[:4]) for r in rows if any(v != "" for v in r)), key=repr)


def cell_of(google: Google, key: int, column: str) -> str:
    """The A1 address of row ``key``'s cell in ``column`` (found by the key, as a person finds the row)."""
    rows = google.fake.values(SID, "Items")
    for i, r in enumerate(rows[1:], start=2):
        if r and r[0] == key:
            return f"{'ABCD'[HEADER.index(column)]}{i}"
    raise AssertionError(f"no row {key} in the sheet")


def config(h: SyncHarness, a: Side, tmp: Path, google: Google, rules: str = "{default: lww, skew: 0s}") -> str:
    b = (
        f'{{type: gsheets, spreadsheet_id: {SID}, key: [id], credentials: "${{file:{google.key}}}", '
        f'base_url: "{google.url}", drive_url: "{google.url}", rate_limit: {{per_second: 1000}}, poll_interval: 0.1s}}'
    )
    return f"""
state: sqlite:///{tmp / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp / "wa")}, table: items, key: id}}
    b: {{source: {b}, table: Items, key: id}}
    fields: {{id: id, name: name, qty: qty, note: note}}
    rules: {rules}
"""


async def test_postgres_and_a_google_sheet_lose_no_edit(pg_database: str, tmp_path: Path, google: Google) -> None:
    a = Side("pg", pg_database)
    a.sql(PG)
    a.sql("INSERT INTO items SELECT i, 'n' || i, i, NULL FROM generate_series(1, 10) i")
    book = google.fake.add_spreadsheet(SID, {"Items": [HEADER]})  # the header only: pairing fills it
    h = SyncHarness(tmp_path, f"g{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, google)
    rng = random.Random(19)
    try:
        await h.start()
        await eventually(lambda: sheet_rows(google) == a.rows(COLUMNS), timeout=30, message="pairing fills the sheet")
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
                google.fake.set(SID, "Items", cell_of(google, key, "note"), f"person{i}")
                expected[key][3] = f"person{i}"
            else:
                google.fake.set(SID, "Items", cell_of(google, key, "qty"), 200 + i)
                expected[key][2] = 200 + i
            await asyncio.sleep(0.1)  # edits spread over ~4 s, interleaved with the sync's writes
        want = sorted((tuple(v) for v in expected.values()), key=repr)
        await eventually(
            lambda: a.rows(COLUMNS) == want and sheet_rows(google) == want,
            timeout=60,
            message="both sides hold every last edit",
        )
        await h.quiet()
        proc = h.runner.processor
        assert proc is not None
        sheet_side = h.runner.endpoints["b"]
        assert isinstance(sheet_side, GSheetsEndpoint)
        writes, rewrites = dict(proc.stats.writes), sheet_side.rewrites
        before = (versions(a), book.version)
        await h.quiet(cycles=h.runner.idle_cycles + 8)
        await asyncio.sleep(0.5)  # several revision checks of the sheet
        await h.quiet(cycles=h.runner.idle_cycles + 2)
        assert proc.stats.writes == writes, "the sync kept writing after the edits stopped"
        assert sheet_side.rewrites == rewrites
        assert (versions(a), book.version) == before, "a side kept changing after the edits stopped"
        assert proc.stats.echoes + proc.stats.echo_fields > 0  # the sheet's echoes were recognised by the ledger
        assert await h.cli_json("conflicts", "list", str(h.path)) == []
    finally:
        await h.close()


async def test_same_cell_edited_on_both_sides_waits_for_a_person(
    pg_database: str, tmp_path: Path, google: Google
) -> None:
    a = Side("pg", pg_database)
    a.sql(PG)
    a.sql("INSERT INTO items VALUES (1, 'ada', 1, NULL), (2, 'bob', 2, 'b')")
    google.fake.add_spreadsheet(SID, {"Items": [HEADER, [1, "ada", 1], [2, "bob", 2, "b"]]})
    h = SyncHarness(tmp_path, f"m{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, google, rules="{default: manual}")
    try:

        def person_edits(key: int, column: str, value: Any) -> None:  # the cell of that record (in key order)
            google.fake.set(SID, "Items", f"{'ABCD'[HEADER.index(column)]}{key + 1}", value)

        await a_conflict_settled_by_the_cli(h, a, person_edits, lambda: sheet_rows(google), COLUMNS)
    finally:
        await h.close()


async def test_rows_inserted_and_deleted_on_either_side(pg_database: str, tmp_path: Path, google: Google) -> None:
    a = Side("pg", pg_database)
    a.sql(PG)
    a.sql("INSERT INTO items VALUES (1, 'ada', 1, NULL)")
    google.fake.add_spreadsheet(SID, {"Items": [HEADER, [1, "ada", 1], [2, "bob", 2, "from the sheet"]]})
    h = SyncHarness(tmp_path, f"r{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, tmp_path, google)

    async def both(want: list[tuple[Any, ...]], what: str) -> None:
        try:
            await eventually(lambda: a.rows(COLUMNS) == want and sheet_rows(google) == want, timeout=30, message=what)
        except AssertionError as exc:
            proc = h.runner.processor
            raise AssertionError(
                f"{exc}\n  Postgres {a.rows(COLUMNS)}\n  sheet {google.fake.values(SID, 'Items')}"
                f"\n  {proc.stats if proc else None}"
            ) from None

    try:
        await h.start()
        await both([(1, "ada", 1, None), (2, "bob", 2, "from the sheet")], "pairing copies the sheet's row")
        a.sql("INSERT INTO items VALUES (3, 'cy', 3, 'from the app')")
        a.sql("UPDATE items SET qty = 10 WHERE id = 1")
        await both(
            [(1, "ada", 10, None), (2, "bob", 2, "from the sheet"), (3, "cy", 3, "from the app")], "app -> sheet"
        )
        google.fake.delete_row(SID, "Items", int(cell_of(google, 3, "id")[1:]))  # a person removes row 3
        google.fake.set(SID, "Items", cell_of(google, 2, "name"), "bob (person)")
        google.fake.insert_row(SID, "Items", 2, [4, "dee", 4, "typed in"])  # and inserts a row at the top
        await both(
            [(1, "ada", 10, None), (2, "bob (person)", 2, "from the sheet"), (4, "dee", 4, "typed in")],
            "sheet -> app",
        )
        a.sql("DELETE FROM items WHERE id = 1")
        await both([(2, "bob (person)", 2, "from the sheet"), (4, "dee", 4, "typed in")], "a delete in the app")
        assert google.fake.values(SID, "Items")[0] == HEADER
    finally:
        await h.close()


def test_a_gsheets_side_is_configured_like_an_xlsx_side(tmp_path: Path) -> None:
    (tmp_path / "sa.json").write_text("{}")

    def load(b: str) -> Any:
        path = tmp_path / "sync.yaml"
        path.write_text(f"""
syncs:
  - name: leads
    a: {{source: {{type: sqlite, path: "{tmp_path / "a.db"}", tables: [items]}}, table: items, key: id}}
    b: {b}
    fields: {{id: id, name: name}}
""")
        return load_config(path)

    source = f'type: gsheets, spreadsheet_id: {SID}, key: [id], credentials: "${{file:{tmp_path / "sa.json"}}}"'
    spec = load(f"{{source: {{{source}}}, table: Leads, key: id}}").syncs[0]
    assert spec.b_source.sheet == "Leads"  # the side's table: names the sheet the source reads
    ep = build_parts(spec).endpoints["b"]
    assert isinstance(ep, GSheetsEndpoint) and ep.sheet == "Leads" and ep.key == ("id",)
    for bad, why in [
        (f"{{source: {{{source}, sheet: Other}}, table: Leads, key: id}}", "names the sheet"),
        (f"{{source: {{{source}, sheet: Leads}}, dsn: 'sqlite:///x.db', key: id}}", "remove dsn"),
        (f"{{source: {{{source}, sheet: Leads}}, key: [name]}}", "the source's key"),
    ]:
        try:
            load(bad)
        except ConfigError as exc:
            assert why in str(exc), exc
        else:
            raise AssertionError(f"accepted: {bad}")
